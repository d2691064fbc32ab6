"""EM training of :class:`~gmmspeaker.gmm.model.GaussianMixture`.

One first pass over the data validates it (shape, NaN/inf, emptiness), computes the global
mean and variance (for the variance floors) and a uniform random subsample of frames (for
the k-means++ and random initialisations). Each EM iteration is then one pass: the E-step
statistics of every source (or chunk) are computed independently -- in threads for an
array, in joblib workers for a stream -- and summed in a fixed order, so the number of
jobs never changes the result beyond rounding; the M-step reads the sum.

After every EM iteration the run state is written to the checkpoint file (if any), and a
later fit with the same options and data resumes from it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, ConvergenceWarning, DataError
from gmmspeaker.gmm.stats import (
    MixtureParams,
    Stats,
    _accumulate_prepared,
    _blocks,
    _prepare,
    _resolve_dtype,
    _unshift,
)

if TYPE_CHECKING:
    from gmmspeaker.gmm.model import GaussianMixture

__all__ = ["fit_array", "fit_sources", "m_step", "split_components", "kmeans_plusplus"]

logger = logging.getLogger(__name__)

#: EM iterations at each intermediate size of the binary splitting.
SPLIT_ITERS = 10
#: Means of a split component move by +/- this many standard deviations.
SPLIT_EPS = 0.2
#: A component with fewer (soft) frames than this is always degenerate.
_MIN_COUNT = 1e-6


# ---------------------------------------------------------------------------------------
# M-step
# ---------------------------------------------------------------------------------------


def _floor_full(cov: FloatArray, floor: FloatArray) -> FloatArray:
    """Make each covariance >= diag(floor) (Loewner order), changing only those that are not.

    In the coordinates scaled by ``sqrt(floor)`` the eigenvalues are clipped at 1, so every
    variance stays above its floor and the matrix stays positive definite.
    """
    if not (floor > 0).all():
        return cov
    s = np.sqrt(floor)
    C = cov / (s[:, None] * s[None, :])
    evals, evecs = np.linalg.eigh(C)
    bad = evals.min(axis=-1) < 1.0
    if not bad.any():
        return cov
    out = cov.copy()
    ev = np.maximum(evals[bad], 1.0)
    V = evecs[bad]
    Cf = (V * ev[..., None, :]) @ np.swapaxes(V, -1, -2)
    Cf = 0.5 * (Cf + np.swapaxes(Cf, -1, -2))
    out[bad] = Cf * (s[:, None] * s[None, :])
    return out


def _component_sd(params: MixtureParams) -> FloatArray:
    """Per-dimension standard deviations (K, D) of every component."""
    K, D = params.means.shape
    cov = params.covariances
    if params.covariance_type == "diag":
        return np.sqrt(cov)
    if params.covariance_type == "spherical":
        return np.repeat(np.sqrt(cov)[:, None], D, axis=1)
    if params.covariance_type == "full":
        return np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    return np.repeat(np.sqrt(np.diag(cov))[None, :], K, axis=0)


def m_step(
    stats: Stats,
    *,
    covariance_type: str,
    floor: FloatArray,
    min_weight: float = 0.0,
) -> tuple[MixtureParams, list[int]]:
    """Maximum-likelihood parameters from summed statistics, with floors and re-seeding.

    Parameters
    ----------
    stats : Stats
        Summed E-step statistics (``s`` required; tied: (1, D, D) total second moment).
    covariance_type : {"diag", "spherical", "full", "tied"}
    floor : ndarray, shape (D,), float64
        Absolute per-dimension variance floor (full/tied: the covariance is made
        ``>= diag(floor)``; spherical: the mean floor).
    min_weight : float
        Components with weight below this, or fewer than 1e-6 frames, are degenerate:
        each is re-seeded by splitting the currently heaviest component.

    Returns
    -------
    params : MixtureParams
    reseeded : list of int
        Indices of the re-seeded components (empty in the normal case).
    """
    if stats.s is None:
        raise ValueError("m_step needs second-order statistics")
    n = np.asarray(stats.n, dtype=np.float64)
    K, D = stats.f.shape
    total = float(n.sum())
    degenerate = n < max(min_weight * total, _MIN_COUNT)
    if degenerate.all():
        raise DataError("every component lost its frames; the data may be empty or all identical")
    safe_n = np.where(degenerate, 1.0, n)
    means = stats.f / safe_n[:, None]
    if covariance_type in ("diag", "spherical"):
        var = stats.s / safe_n[:, None] - means**2
        if covariance_type == "diag":
            cov = np.maximum(var, floor[None, :])
        else:
            cov = np.maximum(var.mean(axis=1), float(floor.mean()))
    elif covariance_type == "full":
        cov = stats.s / safe_n[:, None, None] - means[:, :, None] * means[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[degenerate] = np.diag(floor if (floor > 0).all() else np.ones(D))
        cov = _floor_full(cov, floor)
    elif covariance_type == "tied":
        live = ~degenerate
        between = (stats.f[live].T / safe_n[live]) @ stats.f[live]
        cov = (stats.s[0] - between) / total
        cov = _floor_full(0.5 * (cov + cov.T)[None], floor)[0]
    else:
        raise ConfigError(f"unknown covariance_type {covariance_type!r}")
    weights = n / total
    params = MixtureParams(weights, means, cov, covariance_type)
    reseeded = [int(k) for k in np.flatnonzero(degenerate)]
    if reseeded:
        params = _reseed(params, reseeded)
        logger.warning(
            "%d component(s) %s had (almost) no frames (weight < %.3g); re-seeded by splitting the heaviest",
            len(reseeded),
            reseeded[:10],
            max(min_weight, _MIN_COUNT / max(total, 1.0)),
        )
    return params, reseeded


def _reseed(params: MixtureParams, dead: list[int]) -> MixtureParams:
    """Replace each dead component by one half of the currently heaviest live component."""
    w = params.weights.copy()
    mu = params.means.copy()
    cov = params.covariances.copy()
    sd = _component_sd(params)
    live = np.ones(w.shape[0], dtype=bool)
    live[dead] = False
    w[dead] = 0.0
    for k in dead:  # rare event, a handful of components
        j = int(np.argmax(np.where(live, w, -1.0)))
        delta = SPLIT_EPS * sd[j]
        mu[k] = mu[j] + delta
        mu[j] = mu[j] - delta
        w[j] *= 0.5
        w[k] = w[j]
        if params.covariance_type != "tied":
            cov[k] = cov[j]
        sd[k] = sd[j]
        live[k] = True
    return MixtureParams(w / w.sum(), mu, cov, params.covariance_type)


def split_components(
    params: MixtureParams, n_new: int, rng: np.random.Generator | None = None
) -> MixtureParams:
    """Split the ``n_new`` heaviest components in two, weights halved.

    The two means move by ``+/- 0.2 sd * z``, with ``z`` a standard normal direction drawn
    from ``rng`` (as Kaldi does), or all ones without ``rng`` (deterministic). The new
    components are appended after the existing ones, in order of decreasing weight.
    """
    K = params.n_components
    n_new = int(min(max(n_new, 0), K))
    order = np.argsort(-params.weights, kind="stable")[:n_new]
    delta = SPLIT_EPS * _component_sd(params)[order]
    if rng is not None:
        delta = delta * rng.standard_normal(delta.shape)
    w = params.weights.copy()
    mu = params.means.copy()
    w[order] *= 0.5
    new_mu = mu[order] + delta
    mu[order] -= delta
    weights = np.concatenate([w, w[order]])
    means = np.concatenate([mu, new_mu])
    if params.covariance_type == "tied":
        cov = params.covariances
    else:
        cov = np.concatenate([params.covariances, params.covariances[order]])
    return MixtureParams(weights / weights.sum(), means, cov, params.covariance_type)


# ---------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------


def kmeans_plusplus(X: FloatArray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_clusters`` greedy k-means++ seeds among the rows of X.

    D^2 sampling with ``2 + log(K)`` candidates per step, keeping the candidate that most
    reduces the potential (as scikit-learn's ``kmeans_plusplus``). Inherently sequential
    over seeds; each step is one GEMM of the frames against the candidates.
    """
    n = X.shape[0]
    n_trials = 2 + int(np.log(n_clusters))
    x2 = (X**2).sum(1)
    idx = np.empty(n_clusters, dtype=np.int64)
    idx[0] = rng.integers(n)
    d2 = np.maximum(x2 - 2.0 * X @ X[idx[0]] + x2[idx[0]], 0.0)
    for j in range(1, n_clusters):
        cum = np.cumsum(d2)
        tot = cum[-1]
        if tot <= 0.0:  # every frame coincides with a seed
            idx[j] = rng.integers(n)
            continue
        cand = np.minimum(np.searchsorted(cum, rng.random(n_trials) * tot, side="right"), n - 1)
        dc = np.maximum(x2[:, None] - 2.0 * X @ X[cand].T + x2[cand][None, :], 0.0)  # (n, trials)
        np.minimum(dc, d2[:, None], out=dc)
        best = int(np.argmin(dc.sum(0)))
        idx[j] = cand[best]
        d2 = dc[:, best].copy()
    return idx


def _hard_stats(X: FloatArray, labels: np.ndarray, K: int, covariance_type: str) -> Stats:
    """Statistics of a hard assignment (one-hot posteriors), as a sparse product."""
    from scipy.sparse import csr_matrix

    m, D = X.shape
    G = csr_matrix((np.ones(m), (labels, np.arange(m))), shape=(K, m))
    n = np.asarray(G.sum(axis=1)).ravel()
    f = np.asarray(G @ X)
    if covariance_type in ("diag", "spherical"):
        s = np.asarray(G @ (X**2))
    elif covariance_type == "tied":
        s = (X.T @ X)[None]
    else:
        iu0, iu1 = np.triu_indices(D)
        su = np.zeros((K, iu0.size))
        step = max(1, 4_000_000 // iu0.size)
        for a in range(0, m, step):
            su += np.asarray(G[:, a : a + step] @ (X[a : a + step, iu0] * X[a : a + step, iu1]))
        s = np.empty((K, D, D))
        s[:, iu0, iu1] = su
        s[:, iu1, iu0] = su
    return Stats(n=n, f=f, s=s, loglik=0.0, n_frames=m)


def _global_params(K: int, D: int, covariance_type: str, means: FloatArray, var: FloatArray) -> MixtureParams:
    w = np.full(K, 1.0 / K)
    if covariance_type == "diag":
        cov = np.tile(var, (K, 1))
    elif covariance_type == "spherical":
        cov = np.full(K, float(var.mean()))
    elif covariance_type == "full":
        cov = np.tile(np.diag(var), (K, 1, 1))
    else:
        cov = np.diag(var)
    return MixtureParams(w, np.asarray(means, dtype=np.float64).reshape(K, D), cov, covariance_type)


def _initial_params(
    init: str,
    K: int,
    covariance_type: str,
    sample: FloatArray,
    gvar: FloatArray,
    gmean: FloatArray,
    floor: FloatArray,
    rng: np.random.Generator,
) -> MixtureParams:
    var = np.maximum(gvar, floor)
    D = sample.shape[1]
    if init == "split":
        return _global_params(1, D, covariance_type, gmean[None, :], var)
    if init == "random":
        rows = sample[rng.choice(sample.shape[0], size=K, replace=False)]
        return _global_params(K, D, covariance_type, rows, var)
    # k-means++ seeds on the subsample, then one hard-assignment M-step
    seeds = sample[kmeans_plusplus(sample, K, rng)]
    labels = np.empty(sample.shape[0], dtype=np.int64)
    c2 = (seeds**2).sum(1)
    for a, b in _blocks(sample.shape[0], 8192):
        labels[a:b] = (c2[None, :] - 2.0 * sample[a:b] @ seeds.T).argmin(1)
    stats = _hard_stats(sample, labels, K, covariance_type)
    params, _ = m_step(stats, covariance_type=covariance_type, floor=floor, min_weight=0.0)
    return params


# ---------------------------------------------------------------------------------------
# Data: an array (threads over chunks) or a sequence of sources (joblib over sources)
# ---------------------------------------------------------------------------------------


@dataclass
class _Summary:
    """What the first pass learns about one source."""

    n_frames: int
    mean: FloatArray  # (D,)
    m2: FloatArray  # (D,) sum of squared deviations from the mean
    keys: FloatArray  # (m,) sorted random keys of the subsample
    rows: FloatArray  # (m, D) float64 subsample, in key order


def _merge_moments(
    n1: int, mean1: FloatArray, m21: FloatArray, n2: int, mean2: FloatArray, m22: FloatArray
) -> tuple[int, FloatArray, FloatArray]:
    n = n1 + n2
    if n1 == 0:
        return n2, mean2, m22
    delta = mean2 - mean1
    mean = mean1 + delta * (n2 / n)
    m2 = m21 + m22 + delta**2 * (n1 * n2 / n)
    return n, mean, m2


def _summarize_chunks(
    chunks: Iterable[Any], *, m: int, seed: np.random.SeedSequence, where: str, dim: int | None = None
) -> _Summary:
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
            n, mean, m2 = _merge_moments(n, mean, m2, X.shape[0], cm, cm2)
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
    return _Summary(n, mean, m2, keys[order], rows[order])


def _summarize_source(
    source: Callable[[], Iterable[Any]], index: int, m: int, seed: np.random.SeedSequence
) -> _Summary:
    return _summarize_chunks(_call_source(source, index), m=m, seed=seed, where=f"source {index}")


def _call_source(source: Callable[[], Iterable[Any]], index: int) -> Iterable[Any]:
    if not callable(source):
        raise ConfigError(
            f"source {index} is a {type(source).__name__}, not a callable; pass zero-argument factories "
            "(e.g. functools.partial(read_chunks, path)) so each EM pass can re-read the data"
        )
    return source()


def _source_stats(
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
        from threadpoolctl import threadpool_limits

        ctx: Any = threadpool_limits(limits=blas_threads, user_api="blas")
    else:
        ctx = nullcontext()
    with ctx:
        prep = _prepare(params, dtype)
        total = None
        for chunk in _call_source(source, index):
            X = np.asarray(chunk)
            if X.ndim != 2 or X.shape[0] == 0:
                continue
            if X.shape[1] != params.n_dims:
                raise DataError(f"source {index}: {X.shape[1]} dimensions, expected {params.n_dims}")
            if X.dtype.kind != "f":
                X = X.astype(np.float64)
            part = _accumulate_prepared(X, prep, True, chunk_size, 1)
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
    return _unshift(total, prep.shift, params.covariance_type in ("full", "tied"))


def _n_workers(n_jobs: int) -> int:
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


class _ArrayData:
    """In-memory frames: threads over chunks, each with one BLAS thread."""

    n_sources = 1

    def __init__(self, X: np.ndarray, chunk_size: int, n_jobs: int) -> None:
        self.X = X
        self.chunk_size = chunk_size
        self.n_threads = _n_workers(n_jobs)

    def summaries(self, m: int, seeds: list[np.random.SeedSequence]) -> list[_Summary]:
        X = self.X
        if X.ndim != 2:
            raise DataError(f"X: expected a 2-D (frames, dims) array, got shape {X.shape}")
        chunks = (X[a:b] for a, b in _blocks(X.shape[0], self.chunk_size))
        return [_summarize_chunks(chunks, m=m, seed=seeds[0], where="X", dim=X.shape[1])]

    def stats(self, params: MixtureParams, dtype: np.dtype) -> Stats:
        prep = _prepare(params, dtype)
        full = params.covariance_type in ("full", "tied")
        return _unshift(
            _accumulate_prepared(self.X, prep, True, self.chunk_size, self.n_threads), prep.shift, full
        )


class _StreamData:
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
            _call_source_check(s, i)
        self.sources = list(sources)
        self.n_sources = len(self.sources)
        self.chunk_size = chunk_size
        self.n_jobs = min(_n_workers(n_jobs), self.n_sources)
        self.n_frames: list[int] = []

    def _map(self, fn: Callable[..., Any], args: list[tuple[Any, ...]]) -> list[Any]:
        if self.n_jobs <= 1:
            return [fn(*a) for a in args]
        from joblib import Parallel, delayed

        return list(Parallel(n_jobs=self.n_jobs)(delayed(fn)(*a) for a in args))

    def summaries(self, m: int, seeds: list[np.random.SeedSequence]) -> list[_Summary]:
        out = self._map(_summarize_source, [(s, i, m, seeds[i]) for i, s in enumerate(self.sources)])
        dims = {int(o.rows.shape[1]) for o in out}
        if len(dims) > 1:
            raise DataError(f"fit_stream: sources have different dimensions {sorted(dims)}")
        self.n_frames = [o.n_frames for o in out]
        return out

    def stats(self, params: MixtureParams, dtype: np.dtype) -> Stats:
        blas = None if self.n_jobs <= 1 else max(1, (os.cpu_count() or 1) // self.n_jobs)
        parts = self._map(
            _source_stats,
            [
                (s, i, params, dtype, self.chunk_size, blas, self.n_frames[i])
                for i, s in enumerate(self.sources)
            ],
        )
        total = parts[0]
        for p in parts[1:]:  # fixed order: the result does not depend on n_jobs
            total = total + p
        return total


def _call_source_check(source: Any, index: int) -> None:
    if not callable(source):
        _call_source(source, index)


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


@dataclass
class _Run:
    """State of one EM run (one of the n_init restarts)."""

    init_index: int
    params: MixtureParams
    phase: str  # "split" | "main"
    history: list[float] = field(default_factory=list)
    split_history: list[tuple[int, float]] = field(default_factory=list)
    level_iter: int = 0
    level_converged: bool = False
    converged: bool = False
    done: bool = False
    n_reseeded: int = 0
    last_reseeded: bool = False
    lower_bound: float = float("-inf")

    def meta(self) -> dict[str, Any]:
        return {
            "init_index": self.init_index,
            "phase": self.phase,
            "history": self.history,
            "split_history": [list(t) for t in self.split_history],
            "level_iter": self.level_iter,
            "level_converged": self.level_converged,
            "converged": self.converged,
            "done": self.done,
            "n_reseeded": self.n_reseeded,
            "last_reseeded": self.last_reseeded,
            "lower_bound": self.lower_bound if np.isfinite(self.lower_bound) else None,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], params: MixtureParams) -> _Run:
        lb = meta.get("lower_bound")
        return cls(
            init_index=int(meta["init_index"]),
            params=params,
            phase=str(meta["phase"]),
            history=[float(v) for v in meta["history"]],
            split_history=[(int(k), float(v)) for k, v in meta["split_history"]],
            level_iter=int(meta["level_iter"]),
            level_converged=bool(meta["level_converged"]),
            converged=bool(meta["converged"]),
            done=bool(meta["done"]),
            n_reseeded=int(meta["n_reseeded"]),
            last_reseeded=bool(meta["last_reseeded"]),
            lower_bound=float("-inf") if lb is None else float(lb),
        )


class _Checkpoint:
    """HDF5 checkpoint: the current run and the best finished run, written atomically."""

    def __init__(self, path: PathLike, fingerprint: dict[str, Any], data_moments: FloatArray) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.moments = data_moments

    def load(self) -> tuple[_Run | None, _Run | None]:
        import h5py

        if not self.path.is_file():
            return None, None
        try:
            with h5py.File(self.path, "r") as h5:
                fp = json.loads(h5.attrs["fingerprint"])
                moments = h5["moments"][()]
                if (
                    fp != self.fingerprint
                    or moments.shape != self.moments.shape
                    or not np.allclose(moments, self.moments, rtol=1e-9, atol=1e-12)
                ):
                    logger.warning("%s: checkpoint is for other options or data; starting afresh", self.path)
                    return None, None
                runs = []
                for name in ("run", "best"):
                    if name not in h5:
                        runs.append(None)
                        continue
                    g = h5[name]
                    params = MixtureParams(
                        g["weights"][()], g["means"][()], g["covariances"][()], fp["covariance_type"]
                    )
                    runs.append(_Run.from_meta(json.loads(g.attrs["meta"]), params))
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("%s: unreadable checkpoint (%s); starting afresh", self.path, exc)
            return None, None
        logger.info(
            "%s: resuming EM (run %d, %s phase)",
            self.path,
            runs[0].init_index if runs[0] else -1,
            runs[0].phase if runs[0] else "-",
        )
        return runs[0], runs[1]

    def save(self, run: _Run, best: _Run | None) -> None:
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as h5:
                h5.attrs["fingerprint"] = json.dumps(self.fingerprint)
                h5.create_dataset("moments", data=self.moments)
                for name, r in (("run", run), ("best", best)):
                    if r is None:
                        continue
                    g = h5.create_group(name)
                    g.create_dataset("weights", data=r.params.weights)
                    g.create_dataset("means", data=r.params.means)
                    g.create_dataset("covariances", data=r.params.covariances)
                    g.attrs["meta"] = json.dumps(r.meta())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# The EM driver
# ---------------------------------------------------------------------------------------


def _seed_sequence(random_state: Any) -> np.random.SeedSequence:
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if random_state is None:
        return np.random.SeedSequence()
    return np.random.SeedSequence(int(random_state))


def fit_array(gmm: GaussianMixture, X: Any) -> None:
    """Fit ``gmm`` (options already validated) to in-memory frames X (n, D)."""
    try:
        X = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"X: cannot be read as an array ({exc})") from exc
    if X.ndim != 2:
        raise DataError(f"X: expected a 2-D (frames, dims) array, got shape {X.shape}")
    if X.dtype.kind not in "fiu":
        raise DataError(f"X: expected numeric frames, got dtype {X.dtype}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    _fit(gmm, _ArrayData(X, gmm.chunk_size, gmm.n_jobs), where="X")


def fit_sources(gmm: GaussianMixture, sources: Sequence[Callable[[], Iterable[Any]]]) -> None:
    """Fit ``gmm`` (options already validated) on a sequence of chunk sources."""
    _fit(gmm, _StreamData(sources, gmm.chunk_size, gmm.n_jobs), where="fit_stream")


def _fit(gmm: GaussianMixture, data: _ArrayData | _StreamData, *, where: str) -> None:
    from gmmspeaker.gmm.model import GaussianMixture

    K, cov_type = int(gmm.n_components), gmm.covariance_type
    dtype = _resolve_dtype(gmm.dtype, cov_type)
    ss = _seed_sequence(gmm.random_state)
    seq_sample, seq_combine, seq_inits = ss.spawn(3)
    init_seeds = seq_inits.spawn(gmm.n_init)
    m = max(10_000, 16 * K)

    summaries = data.summaries(m, seq_sample.spawn(data.n_sources))
    n_total, mean, m2 = 0, summaries[0].mean, summaries[0].m2 * 0
    for s in summaries:  # fixed order
        n_total, mean, m2 = _merge_moments(n_total, mean, m2, s.n_frames, s.mean, s.m2)
    gvar = m2 / n_total
    D = mean.shape[0]
    if n_total < K:
        raise DataError(
            f"{where}: {n_total} frames for {K} components; need at least as many frames as "
            "components (use fewer components or more data)"
        )
    counts = np.array([s.n_frames for s in summaries], dtype=np.int64)
    take = np.random.default_rng(seq_combine).multivariate_hypergeometric(counts, min(m, n_total))
    sample = np.concatenate([s.rows[:t] for s, t in zip(summaries, take)])
    floor = np.maximum(gmm.variance_floor * gvar, gmm.variance_floor_abs)
    if (gvar <= gmm.variance_floor_abs).any():
        logger.warning(
            "%s: dimension(s) %s are constant; their variances are floored at %.3g",
            where,
            np.flatnonzero(gvar <= gmm.variance_floor_abs)[:10].tolist(),
            gmm.variance_floor_abs,
        )

    given: MixtureParams | None = None
    if isinstance(gmm.init, GaussianMixture):
        given = gmm.init._params()
        if given.means.shape != (K, D) or given.covariance_type != cov_type:
            raise ConfigError(
                f"{where}: the initial model has {given.means.shape[0]} components of dimension "
                f"{given.means.shape[1]} ({given.covariance_type}); expected {K} x {D} ({cov_type})"
            )

    ck = None
    run: _Run | None = None
    best: _Run | None = None
    if gmm.checkpoint is not None:
        cfg = {k: v for k, v in gmm.get_config().items() if k not in ("n_jobs", "max_iter", "chunk_size")}
        fingerprint = {**cfg, "n_frames": int(n_total), "n_dims": int(D)}
        ck = _Checkpoint(gmm.checkpoint, fingerprint, np.concatenate([mean, gvar]))
        if given is None:
            run, best = ck.load()
        else:
            ck.remove()

    start = run.init_index if run is not None else 0
    for i in range(start, gmm.n_init):
        if run is None or run.init_index != i:
            if given is not None:
                params = given
            else:
                params = _initial_params(
                    str(gmm.init),
                    K,
                    cov_type,
                    sample,
                    gvar,
                    mean,
                    floor,
                    np.random.default_rng(init_seeds[i]),
                )
            run = _Run(init_index=i, params=params, phase="split" if gmm.init == "split" else "main")
        _run_em(gmm, data, run, best, floor=floor, dtype=dtype, checkpoint=ck, init_seed=init_seeds[i])
        if best is None or run.lower_bound > best.lower_bound:
            best = run
        if ck is not None:
            ck.save(run, best)
    assert best is not None

    gmm._set_params(best.params)
    gmm.converged_ = bool(best.converged)
    gmm.n_iter_ = len(best.history)
    gmm.lower_bound_ = float(best.lower_bound)
    gmm.history_ = list(best.history)
    gmm.split_history_ = list(best.split_history)
    gmm.variance_floor_ = floor
    gmm.n_reseeded_ = int(best.n_reseeded)
    gmm.n_frames_ = int(n_total)
    if ck is not None:
        ck.remove()
    if not best.converged and gmm.max_iter > 0:
        warnings.warn(
            f"EM did not converge in max_iter={gmm.max_iter} iterations (last change "
            f"{_last_change(best.history):.3g} > tol={gmm.tol}); raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )


def _last_change(history: list[float]) -> float:
    return abs(history[-1] - history[-2]) if len(history) >= 2 else float("inf")


def _run_em(
    gmm: GaussianMixture,
    data: _ArrayData | _StreamData,
    run: _Run,
    best: _Run | None,
    *,
    floor: FloatArray,
    dtype: np.dtype,
    checkpoint: _Checkpoint | None,
    init_seed: np.random.SeedSequence,
) -> None:
    """Advance ``run`` to completion, one EM iteration (or one split) at a time."""
    K = int(gmm.n_components)
    log = logger.info if gmm.progress else logger.debug
    while not run.done:
        if run.phase == "split":
            k = run.params.n_components
            if k >= K:
                run.phase = "main"
                continue
            if run.level_iter >= min(SPLIT_ITERS, max(gmm.max_iter, 1)) or run.level_converged:
                # the split direction depends only on the seed of this run and the size, so a
                # resumed run splits exactly as the interrupted one would have
                seed = np.random.SeedSequence(
                    entropy=init_seed.entropy, spawn_key=(*init_seed.spawn_key, 1_000_000 + k)
                )
                run.params = split_components(run.params, min(k, K - k), np.random.default_rng(seed))
                run.level_iter, run.level_converged, run.last_reseeded = 0, False, False
                if run.params.n_components >= K:
                    run.phase = "main"
                log("EM run %d: split %d -> %d components", run.init_index, k, run.params.n_components)
                continue
        elif len(run.history) >= gmm.max_iter or run.converged:
            if not run.history:  # max_iter == 0: only evaluate the initial model
                stats = data.stats(run.params, dtype)
                run.lower_bound = stats.loglik / stats.n_frames
            run.done = True
            break

        stats = data.stats(run.params, dtype)
        if not np.isfinite(stats.loglik) or not np.isfinite(stats.n).all():
            raise DataError(
                "non-finite log-likelihood in the E-step: the data changed between passes or "
                "contain extreme values; check the input features"
            )
        ll = stats.loglik / stats.n_frames
        params, reseeded = m_step(
            stats, covariance_type=gmm.covariance_type, floor=floor, min_weight=gmm.min_weight
        )
        if run.phase == "split":
            prev = run.split_history[-1][1] if run.level_iter > 0 else None
            run.split_history.append((run.params.n_components, ll))
            run.level_iter += 1
            run.level_converged = (
                prev is not None and abs(ll - prev) < gmm.tol and not run.last_reseeded and not reseeded
            )
            log(
                "EM run %d, split size %d, iter %d: mean log-lik %.6f",
                run.init_index,
                run.params.n_components,
                run.level_iter,
                ll,
            )
        else:
            prev = run.history[-1] if run.history else None
            run.history.append(ll)
            run.lower_bound = ll
            run.converged = (
                prev is not None and abs(ll - prev) < gmm.tol and not run.last_reseeded and not reseeded
            )
            log(
                "EM run %d, iter %d: mean log-lik %.6f (change %s)",
                run.init_index,
                len(run.history),
                ll,
                "-" if prev is None else f"{ll - prev:.3g}",
            )
        run.params = params
        run.n_reseeded += len(reseeded)
        run.last_reseeded = bool(reseeded)
        if checkpoint is not None:
            checkpoint.save(run, best)


def iter_array_chunks(X: FloatArray, chunk_size: int) -> Iterator[FloatArray]:
    """Chunks of rows of X (a helper to build sources from arrays or memmaps)."""
    for a, b in _blocks(np.asarray(X).shape[0], chunk_size):
        yield X[a:b]
