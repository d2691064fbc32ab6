"""The GMM-UBM system: MAP-adapted speaker models scored by frame-averaged LLR against the UBM."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.systems.base import NormCohort, Tests, TrainedSystem, fingerprint

__all__ = ["GmmUbm", "concat_models"]


def concat_models(a: Any, b: Any) -> Any:
    """Rows of ``a`` then rows of ``b`` as one SpeakerModels (same adapted parameters)."""
    from gmmspeaker.gmm.map import SpeakerModels

    if b is None or len(b) == 0:
        return a
    if a is None or len(a) == 0:
        return b
    if a.adapt != b.adapt:
        raise ModelError(f"cannot combine models adapting {a.adapt} and {b.adapt}")

    def cat(x: Any, y: Any) -> Any:
        return (
            None if x is None else np.concatenate([np.asarray(x), np.asarray(y).astype(np.asarray(x).dtype)])
        )

    return SpeakerModels(
        model_ids=[*a.model_ids, *b.model_ids],
        means=cat(a.means, b.means),
        counts=cat(a.counts, b.counts),
        weights=cat(a.weights, b.weights),
        variances=cat(a.variances, b.variances),
        relevance=a.relevance,
        ubm_fingerprint=a.ubm_fingerprint or b.ubm_fingerprint,
    )


def _as_trials(pairs: Sequence[tuple[str, str]]) -> list[Any]:
    """``(model_id, test_id)`` pairs as the trial records of :mod:`gmmspeaker.gmm.batch`."""
    from gmmspeaker.corpora.lists import Trial, Utterance

    return [
        Trial(model_id=m, test=Utterance(utt_id=u, path=Path(u)), target=None, line=i + 1)
        for i, (m, u) in enumerate(pairs)
    ]


class GmmUbm(TrainedSystem):
    """GMM-UBM: ``ubm.h5``, MAP models (``models.h5``), top-C / full / linear LLR scoring."""

    name = "gmm_ubm"
    score_stage = "score"
    stages = ("enroll", "score")
    config_section = "scoring"

    def __init__(self, wd: Any, recipe: Any) -> None:
        super().__init__(wd, recipe)
        self._cohort_models: Any = None

    # -- models ------------------------------------------------------------------------
    def recipe_models_file(self) -> tuple[Path, str]:
        return self.wd.models, "enroll"

    def load_models_file(self, path: PathLike) -> Any:
        from gmmspeaker.gmm.map import SpeakerModels

        return SpeakerModels.load(path)

    def enrol(self, model_ids: Sequence[str], frames: Sequence[Sequence[FloatArray]]) -> Any:
        from gmmspeaker.gmm.batch import adapt_model
        from gmmspeaker.gmm.map import SpeakerModels, ubm_fingerprint

        m = self.recipe.map
        adapted = [
            adapt_model(np.concatenate(list(fs)), self.ubm, relevance=m.relevance, adapt=m.adapt)
            for fs in frames
        ]
        return SpeakerModels.from_adapted(
            list(model_ids), adapted, relevance=float(m.relevance), ubm_fingerprint=ubm_fingerprint(self.ubm)
        )

    def enrol_store(
        self,
        store: Any,
        enrollments: Sequence[Any],
        *,
        jobs: int = 1,
        progress: bool = False,
        desc: str = "enroll",
    ) -> Any:
        """Models of the recipe's enrolment list, from the feature store (in parallel)."""
        from gmmspeaker.gmm.batch import enroll_models

        m = self.recipe.map
        return enroll_models(
            store,
            enrollments,
            self.ubm,
            relevance=m.relevance,
            adapt=m.adapt,
            jobs=jobs,
            progress=progress,
            desc=desc,
        )

    def join(self, a: Any, b: Any) -> Any:
        return concat_models(a, b)

    def model_signature(self, models: Any) -> str:
        return fingerprint([list(models.model_ids), np.asarray(models.means)])

    def dependencies(self) -> dict[str, str]:
        from gmmspeaker.gmm.map import ubm_fingerprint

        m = self.recipe.map
        return {
            "ubm": ubm_fingerprint(self.ubm),
            "map": json.dumps({"relevance": float(m.relevance), "adapt": sorted(m.adapt)}),
            "scoring": json.dumps({"method": self.recipe.scoring.method, "top_c": self.recipe.scoring.top_c}),
        }

    # -- scoring ---------------------------------------------------------------------------
    def score_matrix(self, models: Any, tests: Tests, *, jobs: int = 1, progress: bool = False) -> FloatArray:
        from gmmspeaker.store import FeatureStore

        sc = self.recipe.scoring
        if isinstance(tests.source, FeatureStore):
            from gmmspeaker.gmm.batch import score_matrix

            return score_matrix(
                tests.source,
                tests.ids,
                self.ubm,
                models,
                method=sc.method,
                top_c=sc.top_c,
                jobs=jobs,
                progress=progress,
            )
        from gmmspeaker.scoring.llr import ScoringContext, score_all_models

        # the function the store path's workers call (gmm.batch.score_matrix): the same numbers
        ctx = ScoringContext.build(self.ubm, models)
        return score_all_models([tests.source[u] for u in tests.ids], ctx, method=sc.method, top_c=sc.top_c)

    def score_trials(
        self,
        models: Any,
        trials: Sequence[tuple[str, str]],
        tests: Tests,
        *,
        jobs: int = 1,
        progress: bool = False,
        parts_dir: Path | None = None,
    ) -> FloatArray:
        """Raw LLRs of ``(model_id, test_id)`` pairs; each test passes through the UBM once."""
        from gmmspeaker.store import FeatureStore

        sc = self.recipe.scoring
        if isinstance(tests.source, FeatureStore):
            from gmmspeaker.gmm.batch import score_trials

            return score_trials(
                tests.source,
                _as_trials(trials),
                self.ubm,
                models,
                method=sc.method,
                top_c=sc.top_c,
                jobs=jobs,
                parts_dir=parts_dir,
                progress=progress,
            )
        from gmmspeaker.scoring.llr import score_trials as score_in_memory

        for m, _ in trials:
            if m not in models.model_ids:
                raise DataError(f"unknown model {m!r}")
        return score_in_memory(
            dict(tests.source), list(trials), self.ubm, models, method=sc.method, top_c=sc.top_c
        )

    def score_trials_with_cohort(
        self,
        models: Any,
        trials: Sequence[tuple[str, str]],
        tests: Tests,
        cohort: NormCohort | None,
        *,
        jobs: int = 1,
        progress: bool = False,
        parts_dir: Path | None = None,
    ) -> tuple[FloatArray, FloatArray | None]:
        """Raw LLRs of the trials and of the cohort models on every test (when the cohort's
        method has a T side), from one UBM pass per test of a feature store (the recipe's
        scoring stage); tests given as frames are scored by the separate passes."""
        from gmmspeaker.store import FeatureStore
        from gmmspeaker.systems.base import cohort_sides

        if cohort is None or not cohort_sides(cohort.method)[1] or not isinstance(tests.source, FeatureStore):
            return super().score_trials_with_cohort(
                models, trials, tests, cohort, jobs=jobs, progress=progress, parts_dir=parts_dir
            )
        from gmmspeaker.gmm.batch import score_trials_with_cohort

        sc = self.recipe.scoring
        return score_trials_with_cohort(
            tests.source,
            _as_trials(trials),
            self.ubm,
            models,
            self.cohort_models(cohort),
            tests.ids,
            method=sc.method,
            top_c=sc.top_c,
            jobs=jobs,
            parts_dir=parts_dir,
            progress=progress,
            tmp_dir=self.wd.tmp,
        )

    # -- normalisation -----------------------------------------------------------------------
    def prepare_cohort(self, cohort: NormCohort, *, jobs: int = 1, progress: bool = False) -> None:
        """T side: one MAP model per cohort utterance, saved beside the cohort statistics."""
        from gmmspeaker.corpora.lists import Enrollment, Utterance
        from gmmspeaker.systems.base import cohort_sides

        if not cohort_sides(cohort.method)[1]:
            return
        tests = self.cohort_tests(cohort)
        paths = cohort.cohort_paths or cohort.cohort_ids
        enrollments = [
            Enrollment(model_id=f"cohort:{u}", utterances=(Utterance(utt_id=u, path=Path(p)),))
            for u, p in zip(cohort.cohort_ids, paths)
        ]
        models = self.enrol_store(
            tests.source, enrollments, jobs=jobs, progress=progress, desc="cohort enroll"
        )
        models.save(self.wd.cohort_models(self.name))
        self._cohort_models = models

    def cohort_files(self) -> list[Path]:
        from gmmspeaker.systems.base import cohort_sides

        out = super().cohort_files()
        if out and cohort_sides(self.cohort_method())[1]:
            out.append(self.wd.cohort_models(self.name))
        return out

    def cohort_models(self, cohort: NormCohort) -> Any:
        if self._cohort_models is None:
            from gmmspeaker.gmm.map import SpeakerModels

            path = self.wd.cohort_models(self.name)
            if not path.is_file():
                raise ModelError(f"{path}: not found; run the recipe again (its score stage writes it)")
            self._cohort_models = SpeakerModels.load(path)
        return self._cohort_models
