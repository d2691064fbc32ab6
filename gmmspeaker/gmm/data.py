"""Data adapters of EM training: the first pass over the data (validation, moments and a
uniform subsample) and the E-step of every pass, over an in-memory array (threads over
chunks) or a sequence of chunk sources (joblib workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.gmm.kernel import (
    Stats,
    accumulate_prepared,
    blocks,
    prep_is_full,
    prepare,
    prepared_stats,
    unshift,
)
from gmmspeaker.gmm.params import MixtureParams

__all__ = ["ArrayData", "StreamData", "SourceSummary", "merge_moments", "n_workers"]


@dataclass
class SourceSummary:
    """What the first pass learns about one source."""

    n_frames: int
    mean: FloatArray  # (D,)
    m2: FloatArray  # (D,) sum of squared deviations from the mean
    keys: FloatArray  # (m,) sorted random keys of the subsample
    rows: FloatArray  # (m, D) float64 subsample, in key order


def merge_moments(
    n1: int, mean1: FloatArray, m21: FloatArray, n2: int, mean2: FloatArray, m22: FloatArray
) -> tuple[int, FloatArray, FloatArray]:
    n = n1 + n2
    if n1 == 0:
        return n2, mean2, m22
    delta = mean2 - mean1
    mean = mean1 + delta * (n2 / n)
    m2 = m21 + m22 + delta**2 * (n1 * n2 / n)
    return n, mean, m2


def summarize_chunks(
    chunks: Iterable[Any], *, m: int, seed: np.random.SeedSequence, where: str, dim: int | None = None
) -> SourceSummary:
    """Validate chunks, accumulate moments and keep a uniform subsample (bottom-m random keys).

    Drawing one key per frame in order makes the subsample independent of how the frames
    are cut into chunks.
    """
    rng = np.random.default_rng(seed)
    n, D = 0, dim
    mean = m2 = None
    keys = np.empty(0)
    rows: np.ndarray | None = None
    for i, chunk in enumerate(chunks):
        X = np.asarray(chunk)
        if X.ndim != 2:
            raise DataError(f"{where}, chunk {i}: expected a 2-D (frames, dims) array, got shape {X.shape}")
        if X.dtype.kind not in "fiu":
            raise DataError(f"{where}, chunk {i}: expected numeric frames, got dtype {X.dtype}")
        if D is None:
            D = X.shape[1]
        elif X.shape[1] != D:
            raise DataError(f"{where}, chunk {i}: {X.shape[1]} dimensions, expected {D}")
        if X.shape[0] == 0:
            continue
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            r = int(np.argmin(finite))
            raise DataError(
                f"{where}, chunk {i}, row {r}: NaN or inf in the features; clean or drop this input"
            )
        Xf = X.astype(np.float64)
        cm = Xf.mean(axis=0)
        cm2 = ((Xf - cm) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2 = X.shape[0], cm, cm2
        else:
            n, mean, m2 = merge_moments(n, mean, m2, X.shape[0], cm, cm2)
        k = rng.random(X.shape[0])
        keys = np.concatenate([keys, k])
        rows = Xf if rows is None else np.concatenate([rows, Xf])
        if keys.size > m:
            keep = np.argpartition(keys, m - 1)[:m]
            keys, rows = keys[keep], rows[keep]
    if n == 0 or mean is None or rows is None:
        raise DataError(
            f"{where}: no frames (an empty input, or a source that cannot be iterated twice; "
            "sources must be zero-argument callables returning a fresh iterable)"
        )
    order = np.argsort(keys, kind="stable")
    return SourceSummary(n, mean, m2, keys[order], rows[order])


def summarize_source(
    source: Callable[[], Iterable[Any]], index: int, m: int, seed: np.random.SeedSequence
) -> SourceSummary:
    return summarize_chunks(call_source(source, index), m=m, seed=seed, where=f"source {index}")


def call_source(source: Callable[[], Iterable[Any]], index: int) -> Iterable[Any]:
    if not callable(source):
        raise ConfigError(
            f"source {index} is a {type(source).__name__}, not a callable; pass zero-argument factories "
            "(e.g. functools.partial(read_chunks, path)) so each EM pass can re-read the data"
        )
    return source()


def source_stats(
    source: Callable[[], Iterable[Any]],
    index: int,
    params: MixtureParams,
    dtype: np.dtype,
    chunk_size: int,
    blas_threads: int | None,
    n_expected: int,
) -> Stats:
    """E-step statistics of one source (a joblib task)."""
    if blas_threads is not None:
        from gmmspeaker._blas import blas_limit

        ctx: Any = blas_limit(blas_threads)  # one controller per process: no library scan per pass
    else:
        ctx = nullcontext()
    with ctx:
        prep = prepare(params, dtype)
        total = None
        for chunk in call_source(source, index):
            X = np.asarray(chunk)
            if X.ndim != 2 or X.shape[0] == 0:
                continue
            if X.shape[1] != params.n_dims:
                raise DataError(f"source {index}: {X.shape[1]} dimensions, expected {params.n_dims}")
            if X.dtype.kind != "f":
                X = X.astype(np.float64)
            part = accumulate_prepared(X, prep, True, chunk_size, 1)
            if total is None:
                total = part
            else:
                total.n += part.n
                total.f += part.f
                if total.s is not None and part.s is not None:
                    total.s += part.s
                total.loglik += part.loglik
                total.n_frames += part.n_frames
    if total is None or total.n_frames != n_expected:
        got = 0 if total is None else total.n_frames
        raise DataError(
            f"source {index}: yielded {got} frames in this pass but {n_expected} in the first; "
            "a source must yield the same frames on every call"
        )
    return unshift(total, prep.shift, prep_is_full(prep))


def n_workers(n_jobs: int) -> int:
    """Workers for ``n_jobs``: itself, or for -1 the CPUs this process may really use.

    -1 counts what the machine offers *to this process*: the CPU affinity mask and the
    container (cgroup) CPU quota, as ``joblib.cpu_count`` reports them -- not
    ``os.cpu_count()``, which counts every core of the host.
    """
    if n_jobs != -1:
        return int(n_jobs)
    from joblib import cpu_count

    return max(1, int(cpu_count()))


class ArrayData:
    """In-memory frames: threads over chunks, each with one BLAS thread."""

    n_sources = 1

    def __init__(self, X: np.ndarray, chunk_size: int, n_jobs: int) -> None:
        self.X = X
        self.chunk_size = chunk_size
        self.n_threads = n_workers(n_jobs)

    def summaries(self, m: int, seeds: list[np.random.SeedSequence]) -> list[SourceSummary]:
        X = self.X
        if X.ndim != 2:
            raise DataError(f"X: expected a 2-D (frames, dims) array, got shape {X.shape}")
        chunks = (X[a:b] for a, b in blocks(X.shape[0], self.chunk_size))
        return [summarize_chunks(chunks, m=m, seed=seeds[0], where="X", dim=X.shape[1])]

    def stats(self, params: MixtureParams, dtype: np.dtype) -> Stats:
        prep = prepare(params, dtype)
        return prepared_stats(
            self.X, prep, second_order=True, chunk_size=self.chunk_size, n_threads=self.n_threads
        )


class StreamData:
    """A sequence of chunk sources: one joblib task per source, summed in source order."""

    def __init__(self, sources: Sequence[Callable[[], Iterable[Any]]], chunk_size: int, n_jobs: int) -> None:
        if isinstance(sources, np.ndarray) or not isinstance(sources, Sequence):
            raise ConfigError(
                "fit_stream: sources must be a sequence (list/tuple) of zero-argument callables "
                f"returning iterables of chunks, got {type(sources).__name__}; use fit() for an array"
            )
        if len(sources) == 0:
            raise DataError("fit_stream: no sources given (empty list)")
        for i, s in enumerate(sources):
            check_source(s, i)
        self.sources = list(sources)
        self.n_sources = len(self.sources)
        self.chunk_size = chunk_size
        self.n_jobs = min(n_workers(n_jobs), self.n_sources)
        self.n_frames: list[int] = []

    def _map(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        if self.n_jobs <= 1:
            return [fn(*a) for a in args]
        from joblib import Parallel, delayed

        return list(Parallel(n_jobs=self.n_jobs)(delayed(fn)(*a) for a in args))

    def declared_frames(self) -> list[int] | None:
        """Each source's ``n_frames`` attribute (rows it says it yields), or None unless all declare one."""
        counts = [getattr(s, "n_frames", None) for s in self.sources]
        if any(not isinstance(c, (int, np.integer)) or isinstance(c, bool) for c in counts):
            return None
        return [int(c) for c in counts]  # type: ignore[arg-type]

    def summaries(self, m: int | Sequence[int], seeds: list[np.random.SeedSequence]) -> list[SourceSummary]:
        """First pass over every source; ``m`` rows of subsample kept per source (one int for
        all, or one per source)."""
        ms = [int(m)] * self.n_sources if isinstance(m, (int, np.integer)) else [int(x) for x in m]
        out = self._map(summarize_source, [(s, i, ms[i], seeds[i]) for i, s in enumerate(self.sources)])
        dims = {int(o.rows.shape[1]) for o in out}
        if len(dims) > 1:
            raise DataError(f"fit_stream: sources have different dimensions {sorted(dims)}")
        self.n_frames = [o.n_frames for o in out]
        return out

    def stats(self, params: MixtureParams, dtype: np.dtype) -> Stats:
        blas = None if self.n_jobs <= 1 else max(1, n_workers(-1) // self.n_jobs)
        parts = self._map(
            source_stats,
            [
                (s, i, params, dtype, self.chunk_size, blas, self.n_frames[i])
                for i, s in enumerate(self.sources)
            ],
        )
        total = parts[0]
        for p in parts[1:]:  # fixed order: the result does not depend on n_jobs
            total = total + p
        return total


def check_source(source: Any, index: int) -> None:
    if not callable(source):
        call_source(source, index)
