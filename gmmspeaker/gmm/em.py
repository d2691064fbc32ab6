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

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, ConvergenceWarning, DataError, DataWarning
from gmmspeaker.gmm.checkpoint import Checkpoint, EMRun
from gmmspeaker.gmm.data import ArrayData, StreamData, merge_moments
from gmmspeaker.gmm.init import initial_params, kmeans_plusplus, split_components
from gmmspeaker.gmm.kernel import blocks, resolve_dtype
from gmmspeaker.gmm.mstep import m_step
from gmmspeaker.gmm.params import MixtureParams, as_params, n_free_parameters

if TYPE_CHECKING:
    from gmmspeaker.gmm.model import GaussianMixture

__all__ = [
    "EMResult",
    "fit_array",
    "fit_sources",
    "iter_array_chunks",
    "m_step",
    "split_components",
    "kmeans_plusplus",
]

logger = logging.getLogger(__name__)

#: EM iterations at each intermediate size of the binary splitting.
SPLIT_ITERS = 10
#: Frames of the uniform subsample the binary splitting runs on, per component of the
#: final size (its largest intermediate size has K/2 components, so about 400 frames
#: each). As Kaldi's ``train_diag_ubm.sh`` (500,000 frames in memory for the
#: initialisation), only the EM iterations at the final size see every frame; the
#: splitting costs 10 x (1 + 2 + ... + K/2) ~ 10 K component-passes over the data
#: otherwise, as much as the final iterations. 0: every split level sees every frame.
SPLIT_FRAMES_PER_COMPONENT = 200
#: Least size of the uniform frame subsample kept by the first pass (k-means++ seeds and
#: random starts are drawn from it; at least 16 frames per component).
INIT_SAMPLE_FRAMES = 10_000


@dataclass(frozen=True)
class EMResult:
    """What a fit found: the kept run's parameters and its training trace.

    Attributes
    ----------
    params : MixtureParams
        Parameters of the kept run (float64).
    converged : bool
    n_iter : int
        EM iterations of the kept run at the final size.
    lower_bound : float
        Mean log-likelihood per frame at the last E-step.
    history : list of float
        Mean log-likelihood per frame at every EM iteration (final size).
    split_history : list of (int, float)
        (size, mean log-likelihood) of the iterations run while splitting.
    variance_floor : ndarray, shape (D,), float64
        The absolute per-dimension floor applied.
    n_reseeded : int
        Degenerate components re-seeded during the kept run.
    n_frames : int
        Frames seen in one pass.
    """

    params: MixtureParams
    converged: bool
    n_iter: int
    lower_bound: float
    history: list[float]
    split_history: list[tuple[int, float]]
    variance_floor: FloatArray
    n_reseeded: int
    n_frames: int


def _seed_sequence(random_state: Any) -> np.random.SeedSequence:
    if isinstance(random_state, np.random.Generator):
        return np.random.SeedSequence(int(random_state.integers(2**63)))
    if random_state is None:
        return np.random.SeedSequence()
    return np.random.SeedSequence(int(random_state))


def fit_array(gmm: GaussianMixture, X: Any) -> EMResult:
    """Run EM with the (validated) options of ``gmm`` on in-memory frames X (n, D); ``gmm`` is not changed."""
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
    return _fit(gmm, ArrayData(X, gmm.chunk_size, gmm.n_jobs), where="X")


def fit_sources(gmm: GaussianMixture, sources: Sequence[Callable[[], Iterable[Any]]]) -> EMResult:
    """Run EM with the (validated) options of ``gmm`` on a sequence of chunk sources; ``gmm`` is not changed."""
    return _fit(gmm, StreamData(sources, gmm.chunk_size, gmm.n_jobs), where="fit_stream")


def _subsample_split(counts: list[int], m: int, seq: np.random.SeedSequence) -> list[int]:
    """How many rows of each source the initialisation subsample of ``min(m, N)`` rows takes."""
    c = np.asarray(counts, dtype=np.int64)
    take = np.random.default_rng(seq).multivariate_hypergeometric(c, min(m, int(c.sum())))
    return [int(t) for t in take]


def _fit(gmm: GaussianMixture, data: ArrayData | StreamData, *, where: str) -> EMResult:
    K, cov_type = int(gmm.n_components), gmm.covariance_type
    dtype = resolve_dtype(gmm.dtype, cov_type)
    ss = _seed_sequence(gmm.random_state)
    seq_sample, seq_combine, seq_inits = ss.spawn(3)
    init_seeds = seq_inits.spawn(gmm.n_init)
    m = max(INIT_SAMPLE_FRAMES, 16 * K)
    if gmm.init == "split":
        m = max(m, SPLIT_FRAMES_PER_COMPONENT * K)

    # The initialisation subsample: each source keeps its m rows of smallest random keys,
    # then `take` (a hypergeometric split of min(m, N) over the sources' frame counts)
    # says how many of each source's first rows the sample takes. Sources that declare
    # their frame count (FeatureStore.sources) let `take` be drawn before the pass, so
    # each keeps only its share: min(m, N) rows in all instead of m per source (memory
    # flat in the number of sources), and the very same sample.
    declared = data.declared_frames() if isinstance(data, StreamData) else None
    take = None
    if declared is not None:
        take = _subsample_split(declared, m, seq_combine)
    summaries = data.summaries(m if take is None else take, seq_sample.spawn(data.n_sources))
    counts = np.array([s.n_frames for s in summaries], dtype=np.int64)
    if declared is not None and counts.tolist() != declared:
        bad = int(np.flatnonzero(counts != np.asarray(declared))[0])
        raise DataError(
            f"{where}: source {bad} yielded {counts[bad]} frames but declares n_frames = {declared[bad]}"
        )
    n_total, mean, m2 = 0, summaries[0].mean, summaries[0].m2 * 0
    for s in summaries:  # fixed order
        n_total, mean, m2 = merge_moments(n_total, mean, m2, s.n_frames, s.mean, s.m2)
    gvar = m2 / n_total
    D = mean.shape[0]
    if n_total < K:
        raise DataError(
            f"{where}: {n_total} frames for {K} components; need at least as many frames as "
            "components (use fewer components or more data)"
        )
    _warn_few_frames(where, n_total, K, D, cov_type)
    if take is None:
        take = _subsample_split(counts.tolist(), m, seq_combine)
    sample = np.concatenate([s.rows[:t] for s, t in zip(summaries, take)])
    del summaries
    # the splitting runs on the subsample when it is smaller than the data (threads over
    # its chunks, summed in order: the result does not depend on n_jobs)
    split_data: ArrayData | StreamData = data
    if gmm.init == "split" and SPLIT_FRAMES_PER_COMPONENT > 0 and sample.shape[0] < n_total:
        split_data = ArrayData(sample.astype(dtype, copy=False), data.chunk_size, gmm.n_jobs)
    floor = np.maximum(gmm.variance_floor * gvar, gmm.variance_floor_abs)
    if (gvar <= gmm.variance_floor_abs).any():
        logger.warning(
            "%s: dimension(s) %s are constant; their variances are floored at %.3g",
            where,
            np.flatnonzero(gvar <= gmm.variance_floor_abs)[:10].tolist(),
            gmm.variance_floor_abs,
        )

    given: MixtureParams | None = None
    if not isinstance(gmm.init, str):  # a fitted model (validated by GaussianMixture)
        given = as_params(gmm.init)
        if given.means.shape != (K, D) or given.covariance_type != cov_type:
            raise ConfigError(
                f"{where}: the initial model has {given.means.shape[0]} components of dimension "
                f"{given.means.shape[1]} ({given.covariance_type}); expected {K} x {D} ({cov_type})"
            )

    ck = None
    run: EMRun | None = None
    best: EMRun | None = None
    if gmm.checkpoint is not None:
        cfg = {k: v for k, v in gmm.get_config().items() if k not in ("n_jobs", "max_iter", "chunk_size")}
        fingerprint = {**cfg, "n_frames": int(n_total), "n_dims": int(D)}
        ck = Checkpoint(gmm.checkpoint, fingerprint, np.concatenate([mean, gvar]))
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
                params = initial_params(
                    str(gmm.init),
                    K,
                    cov_type,
                    sample,
                    gvar,
                    mean,
                    floor,
                    np.random.default_rng(init_seeds[i]),
                )
            run = EMRun(init_index=i, params=params, phase="split" if gmm.init == "split" else "main")
        _run_em(
            gmm,
            data,
            run,
            best,
            floor=floor,
            dtype=dtype,
            checkpoint=ck,
            init_seed=init_seeds[i],
            split_data=split_data,
        )
        if best is None or run.lower_bound > best.lower_bound:
            best = run
        if ck is not None:
            ck.save(run, best)
    assert best is not None

    result = EMResult(
        params=best.params,
        converged=bool(best.converged),
        n_iter=len(best.history),
        lower_bound=float(best.lower_bound),
        history=list(best.history),
        split_history=list(best.split_history),
        variance_floor=floor,
        n_reseeded=int(best.n_reseeded),
        n_frames=int(n_total),
    )
    if ck is not None:
        ck.remove()
    if not best.converged and gmm.max_iter > 0:
        warnings.warn(
            f"EM did not converge in max_iter={gmm.max_iter} iterations (last change "
            f"{_last_change(best.history):.3g} > tol={gmm.tol}); raise max_iter or tol",
            ConvergenceWarning,
            stacklevel=3,
        )
    return result


#: Fewer training frames per free parameter than this draws a :class:`DataWarning`.
MIN_FRAMES_PER_PARAMETER = 1.0


def _warn_few_frames(where: str, n_frames: int, K: int, D: int, cov_type: str) -> None:
    """Warn when the mixture has more free parameters than frames to estimate them from.

    With fewer frames than parameters the mixture can place components on single frames
    (variances end at the floor): the likelihood it reaches says nothing about unseen data.
    """
    n_par = n_free_parameters(K, D, cov_type)
    if n_frames < MIN_FRAMES_PER_PARAMETER * n_par:
        warnings.warn(
            f"{where}: {n_frames} frames for a {K}-component {cov_type} mixture of {n_par} free "
            f"parameters ({n_frames / n_par:.2g} frames per parameter); the model will overfit: "
            "use fewer components or more data",
            DataWarning,
            stacklevel=4,
        )


def _last_change(history: list[float]) -> float:
    return abs(history[-1] - history[-2]) if len(history) >= 2 else float("inf")


def _run_em(
    gmm: GaussianMixture,
    data: ArrayData | StreamData,
    run: EMRun,
    best: EMRun | None,
    *,
    floor: FloatArray,
    dtype: np.dtype,
    checkpoint: Checkpoint | None,
    init_seed: np.random.SeedSequence,
    split_data: ArrayData | StreamData | None = None,
) -> None:
    """Advance ``run`` to completion, one EM iteration (or one split) at a time.

    The iterations of the binary splitting run on ``split_data`` (default ``data``).

    With ``gmm.progress`` a tqdm bar on stderr advances per EM iteration and shows the
    current size and mean log-likelihood per frame.
    """
    from tqdm import tqdm

    with tqdm(
        total=_iterations_left(gmm, run),
        desc=f"EM run {run.init_index}",
        unit="iter",
        disable=not gmm.progress,
        dynamic_ncols=True,
    ) as bar:
        _em_loop(
            gmm,
            data,
            run,
            best,
            floor=floor,
            dtype=dtype,
            checkpoint=checkpoint,
            init_seed=init_seed,
            bar=bar,
            split_data=data if split_data is None else split_data,
        )
    logger.info(
        "EM run %d: %d iterations at %d components, mean log-lik %.6f%s",
        run.init_index,
        len(run.history),
        run.params.n_components,
        run.lower_bound,
        " (converged)" if run.converged else "",
    )


def _iterations_left(gmm: GaussianMixture, run: EMRun) -> int:
    """Upper bound of the EM iterations ``run`` still has to do (splitting levels included)."""
    K, k = int(gmm.n_components), run.params.n_components
    main = max(int(gmm.max_iter) - len(run.history), 0)
    if run.phase != "split" or k >= K:
        return main
    levels = int(np.ceil(np.log2(K / k)))
    per_level = min(SPLIT_ITERS, max(int(gmm.max_iter), 1))
    return levels * per_level - run.level_iter + main


def _em_loop(
    gmm: GaussianMixture,
    data: ArrayData | StreamData,
    run: EMRun,
    best: EMRun | None,
    *,
    floor: FloatArray,
    dtype: np.dtype,
    checkpoint: Checkpoint | None,
    init_seed: np.random.SeedSequence,
    bar: Any,
    split_data: ArrayData | StreamData,
) -> None:
    K = int(gmm.n_components)
    log = logger.debug
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

        stats = (split_data if run.phase == "split" else data).stats(run.params, dtype)
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
        bar.update(1)
        bar.set_postfix_str(f"K={run.params.n_components} loglik={ll:.4f}", refresh=False)
        run.params = params
        run.n_reseeded += len(reseeded)
        run.last_reseeded = bool(reseeded)
        if checkpoint is not None:
            checkpoint.save(run, best)


def iter_array_chunks(X: FloatArray, chunk_size: int) -> Iterator[FloatArray]:
    """Chunks of rows of X (a helper to build sources from arrays or memmaps)."""
    for a, b in blocks(np.asarray(X).shape[0], chunk_size):
        yield X[a:b]
