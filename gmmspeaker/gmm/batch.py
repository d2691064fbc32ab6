"""GMM-UBM over a feature store: train a UBM, enrol models, score trials.

The store-level batch API: each function takes its inputs (a feature store, lists,
models) and returns its result; none reads a recipe. Parallel work goes through joblib,
so the active ``joblib.parallel_config`` (loky, threading, dask) decides where it runs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._io import atomic_write_json, make_temp_dir
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import DataError

if TYPE_CHECKING:
    from gmmspeaker.corpora.lists import Enrollment, Trial
    from gmmspeaker.gmm.map import SpeakerModels
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.store import FeatureStore

__all__ = [
    "train_ubm",
    "ubm_subsample_step",
    "subsample_phases",
    "enroll_models",
    "adapt_model",
    "score_trials",
    "score_trials_with_cohort",
    "score_matrix",
]

logger = logging.getLogger(__name__)

#: UBM training: at least one work unit (joblib task per EM pass) per this many frames.
UBM_UNIT_FRAMES = 200_000
#: UBM training on every n-th frame (``subsample``) keeps at least this many frames per
#: component: the step is lowered to ``N // (SUBSAMPLE_FRAMES_PER_COMPONENT * K)`` (at
#: least 1) for N frames and K components.
SUBSAMPLE_FRAMES_PER_COMPONENT = 500


def ubm_subsample_step(n_frames: int, components: int, subsample: int) -> int:
    """The frame step UBM training uses: ``subsample``, lowered so that at least
    :data:`SUBSAMPLE_FRAMES_PER_COMPONENT` frames per component remain (1 = every frame).

    With a step ``s > 1`` the frames used, about ``n_frames / s``, are at least
    ``SUBSAMPLE_FRAMES_PER_COMPONENT * components``; a corpus with fewer than twice that
    many frames trains on every frame.
    """
    cap = int(n_frames) // (SUBSAMPLE_FRAMES_PER_COMPONENT * max(1, int(components)))
    return max(1, min(int(subsample), cap))


def subsample_phases(utt_ids: Sequence[str], step: int, seed: int) -> list[int]:
    """The first frame (``0 <= phase < step``) each utterance's every-``step``-th frames start
    from: seeded by ``seed`` and drawn in the order of ``utt_ids`` (not of any worker split)."""
    if step <= 1:
        return [0] * len(utt_ids)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2]))
    return rng.integers(0, step, size=len(utt_ids)).tolist()


def _progress(iterable: Any, *, total: int, desc: str, unit: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit)


# ---------------------------------------------------------------------------
# UBM
# ---------------------------------------------------------------------------


def train_ubm(
    store: FeatureStore,
    utt_ids: Sequence[str],
    *,
    components: int = 64,
    iterations: int = 10,
    init: str = "split",
    variance_floor: float = 1e-3,
    tol: float | None = None,
    n_init: int = 1,
    dtype: str = "float32",
    chunk_frames: int = 20_000,
    max_frames: int | None = None,
    subsample: int = 1,
    seed: int = 0,
    jobs: int = 1,
    n_parts: int = 8,
    checkpoint: PathLike | None = None,
    progress: bool = False,
    cache_dir: PathLike | None = None,
) -> GaussianMixture:
    """Train a diagonal-covariance UBM by EM on the frames of ``utt_ids``, streamed from ``store``.

    ``subsample`` n > 1 trains (initialisation and every EM iteration) on every n-th frame
    of each utterance, as Kaldi's ``train_diag_ubm.sh --subsample``, from a seeded phase
    per utterance (:func:`subsample_phases`); n is lowered by :func:`ubm_subsample_step`
    so that enough frames per component remain (small corpora train on every frame).

    The frames are split into fixed work units (map-reduce over joblib workers): at least
    ``n_parts``, and at least one per ``UBM_UNIT_FRAMES`` frames, so ``jobs`` may exceed
    ``n_parts`` on large data; the split does not depend on ``jobs``, so neither does the
    model. ``max_frames`` keeps a
    seeded random subset of utterances with about that many frames. ``tol=None`` runs
    exactly ``iterations`` EM iterations (as speaker toolkits do), without a convergence
    warning; a number stops early when the mean log-likelihood gains less than it.

    ``cache_dir`` (with a step ``n > 1``): the subsampled frames of each work unit are read
    from the store once and saved there as ``.npy`` files (1/n of the frames), which every
    EM pass then reads (memory-mapped) instead of the store's full frames; the same chunks,
    so the same model. Put it where the workers can read (the workdir on a cluster); the
    files are removed on return.
    """
    from gmmspeaker.gmm.model import GaussianMixture

    ids = sorted(set(utt_ids) & set(store.ids))
    if not ids:
        raise DataError(f"{store.path}: none of the {len(utt_ids)} UBM utterances has features")
    if max_frames is not None:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        order = rng.permutation(len(ids))
        counts = np.array([store.n_frames(ids[i]) for i in order])
        keep = order[: int(np.searchsorted(np.cumsum(counts), max_frames)) + 1]
        ids = [ids[i] for i in sorted(keep)]
    n_frames = sum(store.n_frames(u) for u in ids)
    step = ubm_subsample_step(n_frames, components, subsample)
    logger.info(
        "training a %d-component UBM on %d frames of %d utterances%s",
        components,
        n_frames,
        len(ids),
        "" if step == 1 else f" (EM on every {step}th frame of each utterance)",
    )
    gmm = GaussianMixture(
        components,
        covariance_type="diag",
        init=init,
        n_init=n_init,
        max_iter=iterations,
        tol=0.0 if tol is None else tol,
        variance_floor=variance_floor,
        dtype=dtype,
        chunk_size=chunk_frames,
        random_state=seed,
        n_jobs=jobs,
        checkpoint=checkpoint,
        progress=progress,
    )
    sources = store.sources(
        ids,
        n_parts=n_parts,
        chunk_frames=chunk_frames,
        unit_frames=UBM_UNIT_FRAMES,
        every=step,
        phases=subsample_phases(ids, step, seed),
    )
    cache = None
    if cache_dir is not None and step > 1:
        import shutil

        cache = make_temp_dir(cache_dir, "ubm-frames-")  # removed by the next run if killed
        sources = _cache_sources(sources, cache, chunk_frames, store.dim)
    try:
        if tol is None:
            import warnings

            from gmmspeaker.errors import ConvergenceWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return gmm.fit_stream(sources)
        return gmm.fit_stream(sources)
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)


def _cache_sources(sources: Sequence[Any], folder: Path, chunk_frames: int, dim: int) -> list[Any]:
    """Each source's frames saved once as ``folder/unit-i.npy``; sources that read them back."""
    import functools

    out = []
    for i, src in enumerate(sources):
        chunks = list(src())
        X = np.concatenate(chunks) if chunks else np.empty((0, dim), dtype=np.float32)
        path = folder / f"unit-{i:05d}.npy"
        np.save(path, X)
        src = functools.partial(_npy_chunks, str(path), int(chunk_frames))
        src.n_frames = int(X.shape[0])  # type: ignore[attr-defined]  # declared, as store sources
        out.append(src)
    return out


def _npy_chunks(path: str, chunk_frames: int) -> Any:
    """Consecutive chunks of ``chunk_frames`` rows of a saved unit (the chunks the store's
    source yielded: full chunks, then the rest)."""
    X = np.load(path, mmap_mode="r")
    for a in range(0, X.shape[0], chunk_frames):
        yield np.asarray(X[a : a + chunk_frames])


# ---------------------------------------------------------------------------
# Enrollment
# ---------------------------------------------------------------------------


def _enroll_batch(
    store_dir: str,
    batch: list[tuple[str, list[tuple[str, str, int, int]]]],
    ubm: GaussianMixture,
    relevance: float,
    adapt: tuple[str, ...],
) -> list[tuple[str, Any]]:
    """Worker: [(model_id, store items of its utterances)] -> [(model_id, AdaptedModel)]."""
    from gmmspeaker.store import iter_utterances

    # the batch's utterances in one read (each shard opened once, not once per model)
    feats = dict(iter_utterances(store_dir, [it for _, items in batch for it in items]))
    out = []
    for model_id, items in batch:
        X = np.concatenate([feats[it[0]] for it in items])
        out.append((model_id, adapt_model(X, ubm, relevance=relevance, adapt=adapt)))
    return out


def adapt_model(X: np.ndarray, ubm: GaussianMixture, *, relevance: float, adapt: Sequence[str]) -> Any:
    """MAP-adapt ``ubm`` to the pooled frames ``X`` (n_frames, dim) of one model: an AdaptedModel.

    The one enrolment step: batch enrolment (:func:`enroll_models`) and enrolment from
    audio (:class:`gmmspeaker.systems.gmm_ubm.GmmUbm`) both call it.
    """
    from gmmspeaker.gmm.map import map_adapt
    from gmmspeaker.gmm.stats import accumulate

    stats = accumulate(X, ubm, second_order="variances" in adapt)
    return map_adapt(stats, ubm, relevance=float(relevance), adapt=tuple(adapt))


def enroll_models(
    store: FeatureStore,
    enrollments: Sequence[Enrollment],
    ubm: GaussianMixture,
    *,
    relevance: float = 16.0,
    adapt: Sequence[str] = ("means",),
    jobs: int = 1,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "enroll",
) -> SpeakerModels:
    """MAP-adapt ``ubm`` to every enrollment (pooling the frames of its utterances).

    ``progress`` shows a bar named ``desc`` that moves per model.

    Raises
    ------
    DataError
        An enrollment none of whose utterances has features (all skipped as bad audio).
    """
    from joblib import Parallel, delayed

    from gmmspeaker.gmm.map import SpeakerModels, ubm_fingerprint

    # workers get the store locations of their frames (not the whole manifest)
    work: list[tuple[str, list[tuple[str, str, int, int]]]] = []
    for e in enrollments:
        items = [store.item(u.utt_id) for u in e.utterances if u.utt_id in store]
        if not items:
            raise DataError(
                f"model {e.model_id!r}: none of its {len(e.utterances)} enrollment files has features "
                f"(skipped as unusable audio: {', '.join(str(u.path) for u in e.utterances[:3])}"
                f"{', ...' if len(e.utterances) > 3 else ''}); fix them or leave the model out of the list"
            )
        work.append((e.model_id, items))
    batches = [work[i : i + batch_size] for i in range(0, len(work), batch_size)]
    results = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_enroll_batch)(str(store.path), b, ubm, float(relevance), tuple(adapt)) for b in batches
    )
    adapted: list[tuple[str, Any]] = []
    bar = _progress(None, total=len(work), desc=desc, unit="model", enabled=progress)
    for part in results:
        adapted.extend(part)
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    return SpeakerModels.from_adapted(
        [mid for mid, _ in adapted],
        [m for _, m in adapted],
        relevance=float(relevance),
        ubm_fingerprint=ubm_fingerprint(ubm),
    )


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------


def _score_block(
    store_dir: str,
    block: list[tuple[tuple[str, str, int, int], list[int], list[int]]],
    ctx: Any,
    method: str,
    top_c: int,
    cohort: Any = None,
    select: np.ndarray | None = None,
) -> tuple[list[tuple[list[int], np.ndarray]], np.ndarray | None]:
    """Worker: [(test store item, trial indices, rows of ``ctx``)] -> ([(trial indices,
    scores)], cohort scores (n_cohort, len(block)) or None).

    ``ctx`` (a :class:`~gmmspeaker.scoring.llr.ScoringContext`) holds only the models this
    block's trials name, so a worker's memory does not grow with the number of enrolled
    speakers -- or, with ``select``, all of them memory-mapped (:meth:`ScoringContext.shared`)
    and the worker keeps those rows; ``cohort`` (all cohort models, sharing ``ctx``'s
    prepared UBM) is scored on every test of the block from the same UBM pass.
    """
    from gmmspeaker.scoring.llr import score_tests
    from gmmspeaker.store import iter_utterances

    if select is not None:
        ctx = ctx.select(select)

    feats = dict(iter_utterances(store_dir, [item for item, _, _ in block]))
    trial, coh = score_tests(
        [feats[item[0]] for item, _, _ in block],
        ctx,
        [np.asarray(rows, dtype=np.int64) for _, _, rows in block],
        cohort,
        method=method,
        top_c=top_c,
    )
    return [(trial_idx, s) for (_, trial_idx, _), s in zip(block, trial)], coh


def score_trials(
    store: FeatureStore,
    trials: Sequence[Trial],
    ubm: GaussianMixture,
    models: SpeakerModels,
    *,
    method: str = "top_c",
    top_c: int = 5,
    jobs: int = 1,
    block_size: int = 64,
    parts_dir: PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Average per-frame LLR of every trial, grouped by test utterance.

    Each test utterance is read and passed through the UBM once, then scored against all
    the models of its trials in one product. Work is split into blocks of ``block_size``
    test utterances; when ``parts_dir`` is given each finished block is saved there
    (temporary name, then rename) and reused by a resumed run.

    Returns
    -------
    ndarray, shape (n_trials,), float64, in the order of ``trials``. Trials whose test
    utterance has no features (skipped bad audio) score NaN.
    """

    scores, _ = _score_groups(
        store,
        _trial_groups(trials, models),
        len(trials),
        ubm,
        models,
        method=method,
        top_c=top_c,
        jobs=jobs,
        block_size=block_size,
        parts_dir=parts_dir,
        progress=progress,
        desc="score",
    )
    return scores


def _trial_groups(trials: Sequence[Trial], models: SpeakerModels) -> dict[str, tuple[list[int], list[int]]]:
    """{test id: (trial indices, model rows)} in trial order."""
    index = {m: i for i, m in enumerate(models.model_ids)}
    groups: dict[str, tuple[list[int], list[int]]] = {}
    for i, t in enumerate(trials):
        if t.model_id not in index:
            raise DataError(f"trial {i + 1} (line {t.line}): unknown model {t.model_id!r}")
        g = groups.setdefault(t.test.utt_id, ([], []))
        g[0].append(i)
        g[1].append(index[t.model_id])
    return groups


def score_trials_with_cohort(
    store: FeatureStore,
    trials: Sequence[Trial],
    ubm: GaussianMixture,
    models: SpeakerModels,
    cohort_models: SpeakerModels,
    test_ids: Sequence[str],
    *,
    method: str = "top_c",
    top_c: int = 5,
    jobs: int = 1,
    block_size: int = 64,
    parts_dir: PathLike | None = None,
    progress: bool = False,
    tmp_dir: PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`score_trials` and the cohort models on every test, from one UBM pass per test.

    Each test utterance of ``test_ids`` (which must include every trial's test) is read
    and passed through the UBM once; that pass scores its trials' models (the numbers of
    :func:`score_trials`) and every cohort model (those of :func:`score_matrix`: the T
    side of S-/T-norm). ``tmp_dir``: where process workers get the prepared models from
    (files written once; the workdir's ``tmp`` in a recipe), not their copies per block.

    Returns
    -------
    scores : ndarray (n_trials,) float64
        As :func:`score_trials` returns them.
    cohort_scores : ndarray (n_cohort_models, len(test_ids)) float64
        NaN for tests without features.
    """
    groups = _trial_groups(trials, models)
    unknown = sorted(set(groups) - set(test_ids))
    if unknown:
        raise DataError(f"trial test {unknown[0]!r} is not among test_ids")
    for u in test_ids:
        groups.setdefault(u, ([], []))
    scores, by_test = _score_groups(
        store,
        groups,
        len(trials),
        ubm,
        models,
        method=method,
        top_c=top_c,
        jobs=jobs,
        block_size=block_size,
        parts_dir=parts_dir,
        progress=progress,
        desc="score",
        cohort_models=cohort_models,
        tmp_dir=tmp_dir,
    )
    out = np.full((len(cohort_models.model_ids), len(test_ids)), np.nan)
    for j, u in enumerate(test_ids):
        if u in by_test:
            out[:, j] = by_test[u]
    return scores, out


#: Utterances per task of :func:`score_matrix` (fixed: the pooling of utterances inside a
#: task must not depend on the number of workers).
MATRIX_BLOCK = 128


def _score_matrix_block(
    store_dir: str, items: list[tuple[str, str, int, int]], ctx: Any, method: str, top_c: int
) -> np.ndarray:
    """Worker: scores (M, len(items)) of every model of ``ctx`` on the items' utterances."""
    from gmmspeaker.scoring.llr import score_all_models
    from gmmspeaker.store import iter_utterances

    feats = dict(iter_utterances(store_dir, items))
    return score_all_models([feats[it[0]] for it in items], ctx, method=method, top_c=top_c)


def score_matrix(
    store: FeatureStore,
    utt_ids: Sequence[str],
    ubm: GaussianMixture,
    models: SpeakerModels,
    *,
    method: str = "top_c",
    top_c: int = 5,
    jobs: int = 1,
    block_size: int = MATRIX_BLOCK,
    progress: bool = False,
) -> np.ndarray:
    """Scores of every model against every utterance (e.g. for a normalisation cohort).

    The models are prepared once (:class:`~gmmspeaker.scoring.llr.ScoringContext`) and
    sent to the workers with blocks of ``block_size`` utterances; each block is scored by
    :func:`~gmmspeaker.scoring.llr.score_all_models` (one UBM pass per utterance shared
    by all models, top-C products of all models per component). Utterances without
    features score NaN (with a warning).

    Returns
    -------
    ndarray, shape (n_models, n_utterances), float64.
    """
    from joblib import Parallel, delayed

    from gmmspeaker.scoring.llr import ScoringContext

    out = np.full((len(models.model_ids), len(utt_ids)), np.nan)
    have = [j for j, u in enumerate(utt_ids) if u in store]
    for j in sorted(set(range(len(utt_ids))) - set(have)):
        logger.warning("no features for utterance %s: its %d scores are NaN", utt_ids[j], out.shape[0])
    if not have or out.shape[0] == 0:
        return out
    ctx = ScoringContext.build(ubm, models)
    bs = max(1, int(block_size))
    blocks = [have[i : i + bs] for i in range(0, len(have), bs)]
    results = Parallel(n_jobs=jobs, return_as="generator")(
        delayed(_score_matrix_block)(
            str(store.path), [store.item(utt_ids[j]) for j in blk], ctx, method, top_c
        )
        for blk in blocks
    )
    for blk, res in _progress(
        zip(blocks, results), total=len(blocks), desc="cohort", unit="block", enabled=progress
    ):
        out[:, blk] = res
    return out


def _score_groups(
    store: FeatureStore,
    groups: dict[str, tuple[list[int], list[int]]],
    n_out: int,
    ubm: GaussianMixture,
    models: SpeakerModels,
    *,
    method: str,
    top_c: int,
    jobs: int,
    block_size: int,
    parts_dir: PathLike | None,
    progress: bool,
    desc: str,
    cohort_models: SpeakerModels | None = None,
    tmp_dir: PathLike | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Score {test_id: (output indices, model indices)} in blocks of test utterances.

    The UBM and the models are prepared once (one
    :class:`~gmmspeaker.scoring.llr.ScoringContext`, of which each block gets the rows
    it needs); with ``cohort_models`` every test is also scored against all of them from
    the same UBM pass. With ``tmp_dir`` and process workers, the prepared models are
    shared through files in a temporary folder there (:meth:`ScoringContext.shared`),
    removed on return. Returns the scores (n_out,) and {test id: cohort scores
    (n_cohort,)} ({} without cohort models).
    """
    from joblib import Parallel, delayed

    from gmmspeaker.scoring.llr import ScoringContext

    scores = np.full(n_out, np.nan)
    by_test: dict[str, np.ndarray] = {}
    missing = [u for u in groups if u not in store]
    for u in missing:
        logger.warning("no features for utterance %s: its %d trials score NaN", u, len(groups[u][0]))
    tests = sorted(u for u in groups if u in store)
    blocks = [[(u, *groups[u]) for u in tests[i : i + block_size]] for i in range(0, len(tests), block_size)]
    pdir = Path(parts_dir) if parts_dir is not None else None
    salt = None if cohort_models is None else list(cohort_models.model_ids)
    todo = []
    for b, block in enumerate(blocks):
        done = _load_part(pdir, b, block, salt) if pdir is not None else None
        if done is not None:
            scores[done[0]] = done[1]
            by_test.update(zip([u for u, _, _ in block], done[2]))
        else:
            todo.append((b, block))
    if pdir is not None and len(todo) < len(blocks):
        logger.info(
            "scoring: %d of %d blocks reused from an interrupted run", len(blocks) - len(todo), len(blocks)
        )
    if not todo:
        return scores, by_test
    ctx = ScoringContext.build(ubm, models)
    cohort = None if cohort_models is None else ScoringContext.build(ubm, cohort_models, prepared=ctx.ubm)
    share = None
    if tmp_dir is not None and jobs != 1 and len(todo) > 1:
        # process workers map the models from files written once (not hashed and copied
        # by joblib for every block, nor the pooled weights rebuilt by every task)
        import shutil

        share = make_temp_dir(tmp_dir, "score-")
        ctx = ctx.shared(share / "trials")
        if cohort is not None:
            cohort = cohort.shared(share / "cohort")

    def task(block: list[tuple[str, list[int], list[int]]]) -> Any:
        named = [np.asarray(m, dtype=np.int64) for _, _, m in block]
        needed = np.unique(np.concatenate(named)) if named else np.empty(0, dtype=np.int64)
        row_of = np.full(len(models.model_ids), -1, dtype=np.int64)
        row_of[needed] = np.arange(needed.size)
        local = [(store.item(u), i, row_of[m].tolist()) for (u, i, _), m in zip(block, named)]
        if share is not None:  # the worker keeps the rows it needs of the mapped models
            return delayed(_score_block)(str(store.path), local, ctx, method, top_c, cohort, needed)
        return delayed(_score_block)(str(store.path), local, ctx.select(needed), method, top_c, cohort)

    try:
        results = Parallel(n_jobs=jobs, return_as="generator")(task(block) for _, block in todo)
        for (b, block), (res, coh) in _progress(
            zip(todo, results), total=len(todo), desc=desc, unit="block", enabled=progress
        ):
            idx = np.concatenate([np.asarray(i, dtype=np.int64) for i, _ in res])
            val = np.concatenate([s for _, s in res])
            scores[idx] = val
            if coh is not None:
                by_test.update(zip([u for u, _, _ in block], coh.T))
            if pdir is not None:
                _save_part(pdir, b, block, idx, val, salt, coh)
    finally:
        if share is not None:
            shutil.rmtree(share, ignore_errors=True)
    return scores, by_test


def _block_key(block: list[tuple[str, list[int], list[int]]], salt: Any = None) -> str:
    return hashlib.sha1(json.dumps(block if salt is None else [block, salt]).encode()).hexdigest()


def _save_part(
    pdir: Path,
    b: int,
    block: Any,
    idx: np.ndarray,
    val: np.ndarray,
    salt: Any = None,
    cohort: np.ndarray | None = None,
) -> None:
    rec: dict[str, Any] = {
        "key": _block_key(block, salt),
        "idx": idx.tolist(),
        "scores": [repr(float(v)) for v in val],
    }
    if cohort is not None:  # (n_cohort, len(block)): the float64 bytes, exact and fast to write
        rec["cohort_shape"] = list(cohort.shape)
        rec["cohort"] = base64.b64encode(np.ascontiguousarray(cohort, dtype="<f8").tobytes()).decode("ascii")
    atomic_write_json(pdir / f"block-{b:05d}.json", rec, indent=None)


def _load_part(
    pdir: Path, b: int, block: Any, salt: Any = None
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]] | None:
    path = pdir / f"block-{b:05d}.json"
    try:
        rec = json.loads(path.read_text())
        if rec["key"] != _block_key(block, salt):
            return None
        cohort: list[np.ndarray] = []
        if salt is not None:
            raw = np.frombuffer(base64.b64decode(rec["cohort"]), dtype="<f8")
            cohort = list(raw.reshape(rec["cohort_shape"]).T.astype(np.float64))
        return (
            np.asarray(rec["idx"], dtype=np.int64),
            np.asarray([float(v) for v in rec["scores"]]),
            cohort,
        )
    except (OSError, ValueError, KeyError):
        return None
