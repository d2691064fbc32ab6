"""Recognition systems of a recipe: GMM-UBM, i-vector / PLDA, and their fusion.

A recipe's ``system:`` names ``gmm_ubm`` (default), ``ivector``, or both
(``[gmm_ubm, ivector]``), in which case the systems' scores are fused and the fused
scores become the experiment's ``scores.txt`` (each system's own scores are kept beside
it as ``scores.<system>.txt``). This module says which stages a recipe needs, what each
i-vector stage depends on, and runs those stages:

``statistics``
    zeroth / first-order Baum-Welch statistics of every utterance the i-vector system
    uses (training list, enrolment, tests, cohort), from the UBM -> ``ivector_stats.h5``.
``tv``
    total-variability matrix trained on the ``data.train`` utterances -> ``tv.h5``.
``extract``
    i-vectors of every utterance -> ``ivectors.h5``.
``backend``
    centring / LDA / WCCN / length norm and PLDA (or cosine) trained on ``data.train``,
    trial scores (optionally normalised with the cohort's i-vectors) -> ``backend.h5``,
    ``plda.h5``, the i-vector score file.
``fusion``
    logistic-regression fusion trained on ``data.dev_trials`` when given, otherwise the
    average of normalised scores -> ``scores.txt``, ``fusion.json``.

The pipeline (:mod:`gmmspeaker.recipe._pipeline`) calls :func:`needed_stages`,
:func:`upstream`, :func:`fingerprint_body`, :func:`outputs` and :func:`run_stage`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._io import atomic_write_json
from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import DataError
from gmmspeaker.ivector.trials import load_ivectors, save_ivectors, score_ivector_trials
from gmmspeaker.recipe.config import STAGES, Recipe

if TYPE_CHECKING:
    from gmmspeaker.corpora.lists import Trial, Utterance
    from gmmspeaker.ivector.backend import PLDA, Backend

__all__ = [
    "IVECTOR_STAGES",
    "needed_stages",
    "upstream",
    "score_file",
    "train_utterances",
    "fingerprint_body",
    "outputs",
    "run_stage",
    "add_results",
]

logger = logging.getLogger(__name__)

#: Stages this module runs (the others are the GMM-UBM pipeline's).
IVECTOR_STAGES = ("statistics", "tv", "extract", "backend", "fusion")
_GMM_STAGES = ("enroll", "score")


# ---------------------------------------------------------------------------
# Which stages, in which order, with which inputs
# ---------------------------------------------------------------------------


def needed_stages(recipe: Recipe) -> tuple[str, ...]:
    """The stages a recipe runs, in :data:`~gmmspeaker.recipe.config.STAGES` order."""
    systems = set(recipe.system)
    keep = {"features", "ubm", "evaluate"}
    if "gmm_ubm" in systems:
        keep.update(_GMM_STAGES)
    if "ivector" in systems:
        keep.update(("statistics", "tv", "extract", "backend"))
    if len(systems) > 1:
        keep.add("fusion")
    return tuple(s for s in STAGES if s in keep)


def upstream(recipe: Recipe, stage: str) -> tuple[str, ...]:
    """The stages whose fingerprints enter ``stage``'s fingerprint (its direct inputs).

    For a GMM-UBM recipe this is the previous stage, as before systems existed, so
    existing workdirs stay up to date.
    """
    if stage == "evaluate":
        if len(recipe.system) > 1:
            return ("fusion",)
        return ("score",) if recipe.system == ("gmm_ubm",) else ("backend",)
    return {
        "features": (),
        "ubm": ("features",),
        "enroll": ("ubm",),
        "score": ("enroll",),
        "statistics": ("ubm",),
        "tv": ("statistics",),
        "extract": ("tv",),
        "backend": ("extract",),
        "fusion": ("score", "backend"),
    }[stage]


def score_file(recipe: Recipe, system: str, kind: str = "scores") -> str:
    """File name of a system's scores: ``<kind>.txt`` alone, ``<kind>.<system>.txt`` in a fusion.

    ``kind`` is ``scores``, ``dev_scores`` or ``scores.raw``.
    """
    return f"{kind}.txt" if len(recipe.system) == 1 else f"{kind}.{system}.txt"


# ---------------------------------------------------------------------------
# The speaker-labelled training list
# ---------------------------------------------------------------------------


def train_utterances(recipe: Recipe, root: Path, ubm_list: Sequence[Utterance]) -> list[Utterance]:
    """The i-vector system's labelled training utterances ([] when the recipe has no i-vector system).

    From ``data.train``; for a synthetic corpus, its background list with the speaker
    named by each file's folder (``wav/<speaker>/...``).
    """
    from gmmspeaker.corpora.lists import Utterance

    if "ivector" not in recipe.system:
        return []
    if recipe.data.train is not None:
        from gmmspeaker.corpora.lists import read_train_list

        return read_train_list(recipe.data.train, root=root)
    return [Utterance(utt_id=u.utt_id, path=u.path, speaker=u.path.parent.name) for u in ubm_list]


# ---------------------------------------------------------------------------
# Fingerprints and outputs of the new stages
# ---------------------------------------------------------------------------


def _stats_ids(pipe: Any) -> list[str]:
    ids = {u.utt_id for u in pipe.train}
    ids.update(u.utt_id for e in pipe.enrollments for u in e.utterances)
    ids.update(t.test.utt_id for t in [*pipe.trials, *pipe.dev_trials])
    ids.update(u.utt_id for u in pipe.cohort)
    return sorted(ids)


def _trial_sig(trials: Sequence[Trial]) -> list[Any]:
    return [(t.model_id, t.test.utt_id, t.target) for t in trials]


def fingerprint_body(pipe: Any, stage: str) -> Any:
    """What, besides its inputs' fingerprints, decides a new stage's outputs."""
    r: Recipe = pipe.recipe
    iv = r.section("ivector")
    if stage == "statistics":
        return {"ids": _stats_ids(pipe)}
    if stage == "tv":
        keys = ("rank", "iterations", "min_divergence")
        return {
            "ivector": {k: iv[k] for k in keys},
            "seed": r.seed,
            "train": sorted(u.utt_id for u in pipe.train),
        }
    if stage == "extract":
        return {"ids": _stats_ids(pipe)}
    if stage == "backend":
        keys = (
            "lda_dim",
            "wccn",
            "length_norm",
            "scoring",
            "plda_iterations",
            "normalization",
            "cohort_top_n",
        )
        return {
            "ivector": {k: iv[k] for k in keys},
            "train": [(u.utt_id, u.speaker) for u in pipe.train],
            "models": [(e.model_id, [u.utt_id for u in e.utterances]) for e in pipe.enrollments],
            "trials": _trial_sig(pipe.trials),
            "dev": _trial_sig(pipe.dev_trials),
            "cohort": [u.utt_id for u in pipe.cohort],
            "files": [score_file(r, "ivector"), score_file(r, "ivector", "dev_scores")],
        }
    if stage == "fusion":
        return {
            "fusion": r.section("fusion"),
            "system": list(r.system),
            "normalization": {"gmm_ubm": r.scoring.normalization, "ivector": r.ivector.normalization},
            "trials": _trial_sig(pipe.trials),
            "dev": _trial_sig(pipe.dev_trials),
            "cohort": [u.utt_id for u in pipe.cohort],
        }
    raise KeyError(stage)


def outputs(pipe: Any, stage: str) -> list[str]:
    """Files (relative to the workdir) that must exist for a stage to count as done."""
    r: Recipe = pipe.recipe
    if stage == "score":
        return [score_file(r, "gmm_ubm")]
    return {
        "statistics": ["ivector_stats.h5"],
        "tv": ["tv.h5"],
        "extract": ["ivectors.h5"],
        "backend": ["backend.h5", score_file(r, "ivector")],
        "fusion": ["scores.txt", "fusion.json"],
    }[stage]


# ---------------------------------------------------------------------------
# Stage bodies
# ---------------------------------------------------------------------------


def run_stage(pipe: Any, stage: str) -> dict[str, Any]:
    """Run one of :data:`IVECTOR_STAGES` for the pipeline ``pipe``; returns the stage record's extras."""
    return {
        "statistics": _run_statistics,
        "tv": _run_tv,
        "extract": _run_extract,
        "backend": _run_backend,
        "fusion": _run_fusion,
    }[stage](pipe)


def _load_ubm(pipe: Any) -> Any:
    from gmmspeaker.gmm.model import GaussianMixture

    return GaussianMixture.load(pipe.wd / "ubm.h5")


def _available(pipe: Any, ids: Sequence[str]) -> list[str]:
    from gmmspeaker.store import FeatureStore

    store = FeatureStore(pipe.store_dir)
    have = [u for u in ids if u in store]
    if len(have) < len(ids):
        logger.warning(
            "i-vector statistics: %d of %d utterances have no features", len(ids) - len(have), len(ids)
        )
    return have


def _run_statistics(pipe: Any) -> dict[str, Any]:
    from gmmspeaker.ivector.stats import stats_from_store

    r: Recipe = pipe.recipe
    ids = _available(pipe, _stats_ids(pipe))
    stats = stats_from_store(pipe.store_dir, ids, _load_ubm(pipe), n_jobs=r.jobs, progress=pipe.progress)
    stats.save(pipe.wd / "ivector_stats.h5")
    return {"n_utterances": len(ids)}


def _run_tv(pipe: Any) -> dict[str, Any]:
    from gmmspeaker.ivector.stats import UtteranceStats
    from gmmspeaker.ivector.tv import train_tv

    r: Recipe = pipe.recipe
    stats = UtteranceStats.load(pipe.wd / "ivector_stats.h5")
    have = set(stats.ids)
    train = sorted({u.utt_id for u in pipe.train} & have)
    if len(train) < 2:
        raise DataError(f"the i-vector training list has {len(train)} utterance(s) with features; need more")
    iv = r.ivector
    ckpt = pipe.wd / "tv.checkpoint.h5"
    tv = train_tv(
        stats.subset(train),
        rank=iv.rank,
        iterations=iv.iterations,
        min_divergence=iv.min_divergence,
        rng=np.random.default_rng(np.random.SeedSequence([r.seed, 2])),
        n_jobs=r.jobs,
        batch_size=iv.batch_size,
        checkpoint=ckpt,
        progress=pipe.progress,
    )
    tv.save(pipe.wd / "tv.h5")
    if ckpt.exists():
        ckpt.unlink()
    return {"n_train": len(train), "rank": tv.rank}


def _run_extract(pipe: Any) -> dict[str, Any]:
    from gmmspeaker.ivector.stats import UtteranceStats
    from gmmspeaker.ivector.tv import TotalVariability, extract_ivectors

    stats = UtteranceStats.load(pipe.wd / "ivector_stats.h5")
    tv = TotalVariability.load(pipe.wd / "tv.h5")
    vectors = extract_ivectors(tv, stats, batch_size=pipe.recipe.ivector.batch_size)
    save_ivectors(pipe.wd / "ivectors.h5", stats.ids, vectors)
    return {"n_ivectors": len(stats.ids)}


def _fit_backend(pipe: Any, ivectors: dict[str, FloatArray]) -> tuple[Backend, PLDA | None]:
    from gmmspeaker.ivector.backend import PLDA, Backend

    iv = pipe.recipe.ivector
    train = [u for u in pipe.train if u.utt_id in ivectors]
    X = np.vstack([ivectors[u.utt_id] for u in train])
    labels = [str(u.speaker) for u in train]
    backend = Backend.fit(X, labels, lda_dim=iv.lda_dim, wccn=iv.wccn, length_norm=iv.length_norm)
    plda = None
    if iv.scoring == "plda":
        plda = PLDA.fit(backend.transform(X), labels, iterations=iv.plda_iterations)
    return backend, plda


def _run_backend(pipe: Any) -> dict[str, Any]:
    from gmmspeaker.scoring.trials import write_scores

    r: Recipe = pipe.recipe
    iv = r.ivector
    ivectors = load_ivectors(pipe.wd / "ivectors.h5")
    backend, plda = _fit_backend(pipe, ivectors)
    backend.save(pipe.wd / "backend.h5")
    if plda is not None:
        plda.save(pipe.wd / "plda.h5")
    kw = dict(cohort=[u.utt_id for u in pipe.cohort], normalization=iv.normalization, top_n=iv.cohort_top_n)
    scores, raw = score_ivector_trials(pipe.trials, pipe.enrollments, ivectors, backend, plda, **kw)
    if iv.normalization != "none":
        write_scores(pipe.wd / score_file(r, "ivector", "scores.raw"), pipe.trials, raw)
    if pipe.dev_trials:
        dev, _ = score_ivector_trials(pipe.dev_trials, pipe.enrollments, ivectors, backend, plda, **kw)
        write_scores(pipe.wd / score_file(r, "ivector", "dev_scores"), pipe.dev_trials, dev)
    write_scores(pipe.wd / score_file(r, "ivector"), pipe.trials, scores)
    out: dict[str, Any] = {"n_trials": len(pipe.trials), "dim": backend.dim}
    if plda is not None:
        out["plda_loglik"] = [float(h) for h in plda.history]
    return out


def _normalize_for_fusion(pipe: Any, system: str, scores: FloatArray) -> tuple[FloatArray, str]:
    """A system's trial scores on a common scale for equal-weight fusion.

    Scores already normalised by the recipe are kept; otherwise Z-norm against the
    cohort when there is one, else standardised over the trial list itself.
    """
    r: Recipe = pipe.recipe
    own = r.scoring.normalization if system == "gmm_ubm" else r.ivector.normalization
    if own != "none":
        return scores, own
    if pipe.cohort:
        if system == "gmm_ubm":
            from gmmspeaker.gmm.batch import normalize_trial_scores
            from gmmspeaker.gmm.map import SpeakerModels
            from gmmspeaker.store import FeatureStore

            normed = normalize_trial_scores(
                scores,
                pipe.trials,
                FeatureStore(pipe.store_dir),
                _load_ubm(pipe),
                SpeakerModels.load(pipe.wd / "models.h5"),
                pipe.cohort,
                method="znorm",
                scoring_method=r.scoring.method,
                top_c=r.scoring.top_c,
                jobs=r.jobs,
                progress=pipe.progress,
                enrollments=pipe.enrollments,
            )
        else:
            from gmmspeaker.ivector.backend import PLDA, Backend

            ivectors = load_ivectors(pipe.wd / "ivectors.h5")
            backend = Backend.load(pipe.wd / "backend.h5")
            plda = PLDA.load(pipe.wd / "plda.h5") if r.ivector.scoring == "plda" else None
            normed, _ = score_ivector_trials(
                pipe.trials,
                pipe.enrollments,
                ivectors,
                backend,
                plda,
                cohort=[u.utt_id for u in pipe.cohort],
                normalization="znorm",
            )
        return normed, "znorm"
    ok = np.isfinite(scores)
    mu, sd = float(scores[ok].mean()), float(scores[ok].std())
    return (scores - mu) / (sd if sd > 0 else 1.0), "standardized"


def _run_fusion(pipe: Any) -> dict[str, Any]:
    from gmmspeaker.scoring.fusion import LinearFusion, equal_weight_fusion
    from gmmspeaker.scoring.trials import read_scores, write_scores

    r: Recipe = pipe.recipe
    systems = list(r.system)
    columns = [read_scores(pipe.wd / score_file(r, s))[1] for s in systems]
    S = np.column_stack(columns)
    record: dict[str, Any] = {"systems": systems}
    if pipe.dev_trials:
        D = np.column_stack([read_scores(pipe.wd / score_file(r, s, "dev_scores"))[1] for s in systems])
        key = np.array([bool(t.target) for t in pipe.dev_trials])
        ok = np.all(np.isfinite(D), axis=1)
        fusion = LinearFusion.fit(D[ok], key[ok], p_target=r.fusion.p_target)
        fused = fusion.apply(S)
        write_scores(pipe.wd / "dev_scores.txt", pipe.dev_trials, fusion.apply(D))
        record.update(method="logistic_regression", **fusion.to_dict())
    else:
        normed, how = [], {}
        for s, col in zip(systems, columns):
            z, how[s] = _normalize_for_fusion(pipe, s, col)
            normed.append(z)
        fused = equal_weight_fusion(np.column_stack(normed))
        record.update(method="equal_weight", normalization=how)
    write_scores(pipe.wd / "scores.txt", pipe.trials, fused)
    atomic_write_json(pipe.wd / "fusion.json", record)
    return record


def add_results(pipe: Any, res: dict[str, Any]) -> None:
    """Add the system choice, the i-vector settings and, for a fusion, each system's metrics to ``res``."""
    from gmmspeaker.scoring.trials import evaluate_scores, read_scores

    r: Recipe = pipe.recipe
    res["system"] = list(r.system)
    if "ivector" in r.system and isinstance(res.get("config"), dict):
        res["config"]["ivector"] = r.section("ivector")
    if len(r.system) < 2:
        return
    ev = r.evaluation
    keys = [t.target for t in pipe.trials]
    per: dict[str, Any] = {}
    for s in r.system:
        _, scores, _ = read_scores(pipe.wd / score_file(r, s))
        m = evaluate_scores(scores, keys, p_targets=ev.p_target, c_miss=ev.c_miss, c_fa=ev.c_fa)
        per[s] = {k: m[k] for k in ("eer", "min_dcf", "act_dcf", "cllr", "min_cllr") if k in m}
    per["fusion"] = {k: res[k] for k in ("eer", "min_dcf", "act_dcf", "cllr", "min_cllr") if k in res}
    res["systems"] = per
    res["fusion"] = json.loads((pipe.wd / "fusion.json").read_text())
