"""The ISV system: speaker offsets with session variability removed, linear scoring (issue #21).

Training (the recipe's ``isv_train`` stage) learns the session subspace U from the
UBM's Baum-Welch statistics of the speaker-labelled training list
(:func:`gmmspeaker.isv.train.train_isv`); enrolment (``isv_enroll``) gives each model
its offset ``d E[z]`` with the session factors of its recordings integrated out
(:func:`gmmspeaker.isv.score.enroll_offset`); scoring (``isv_score``) is linear scoring
with each test's session offset removed, normalised with the cohort as for GMM-UBM.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.systems.base import NormCohort, Tests, TrainedSystem, fingerprint

__all__ = ["Isv"]


class Isv(TrainedSystem):
    """ISV: ``ubm.h5``, ``isv.h5`` (U), ``isv_models.h5`` (speaker offsets)."""

    name = "isv"
    score_stage = "isv_score"
    stages = ("statistics", "isv_train", "isv_enroll", "isv_score")
    config_section = "isv"

    def __init__(self, wd: Any, recipe: Any) -> None:
        super().__init__(wd, recipe)
        self._model: Any = None
        self._stats: Any = None
        self._stats_index: dict[str, int] | None = None

    @property
    def model(self) -> Any:
        if self._model is None:
            from gmmspeaker.isv.train import ISVModel

            if not self.wd.isv.is_file():
                raise ModelError(f"{self.wd.isv}: not found; run the recipe through its isv_train stage")
            self._model = ISVModel.load(self.wd.isv)
        return self._model

    def set_model(self, model: Any) -> None:
        self._model = model

    # -- statistics of tests ------------------------------------------------------------
    def _run_stats(self) -> Any:
        """The run's statistics file (``ivector_stats.h5``), or None."""
        if self._stats is None and self.wd.ivector_stats.is_file():
            from gmmspeaker.ivector.stats import UtteranceStats

            self._stats = UtteranceStats.load(self.wd.ivector_stats)
            self._stats_index = {u: i for i, u in enumerate(self._stats.ids)}
        return self._stats

    def stats_of(self, tests: Tests) -> tuple[list[int], Any]:
        """Statistics of the tests that have features: (their columns, UtteranceStats)."""
        from gmmspeaker.ivector.stats import UtteranceStats, compute_stats
        from gmmspeaker.store import FeatureStore

        src = tests.source
        have = [j for j, u in enumerate(tests.ids) if u in src]
        if not have:
            return [], None
        ids = [tests.ids[j] for j in have]
        run = self._run_stats() if isinstance(src, FeatureStore) else None
        index = self._stats_index or {}
        if run is not None and all(u in index for u in ids):
            rows = [index[u] for u in ids]
            return have, UtteranceStats(ids, run.n[rows], run.f[rows], run.ubm_fingerprint)
        if isinstance(src, FeatureStore):
            return have, compute_stats(((u, src.get(u)) for u in ids), self.ubm)
        return have, compute_stats(((u, np.asarray(src[u])) for u in ids), self.ubm)

    # -- models ------------------------------------------------------------------------
    def recipe_models_file(self) -> tuple[Path, str]:
        return self.wd.isv_models, "isv_enroll"

    def load_models_file(self, path: PathLike) -> Any:
        from gmmspeaker.isv.models import ISVSpeakers

        return ISVSpeakers.load(path)

    def enrol(self, model_ids: Sequence[str], frames: Sequence[Sequence[FloatArray]]) -> Any:
        """Offsets of models from their enrolment utterances' frames (one statistics row each)."""
        from gmmspeaker.isv.models import ISVSpeakers, isv_fingerprint
        from gmmspeaker.isv.score import enroll_offset
        from gmmspeaker.ivector.stats import compute_stats

        m = self.model
        rows = []
        for mid, fs in zip(model_ids, frames):
            st = compute_stats(((f"{mid}#{i}", np.asarray(X)) for i, X in enumerate(fs)), self.ubm)
            rows.append(enroll_offset(m, st.n, st.f))
        K, D = m.n_components, m.n_dims
        offsets = np.vstack(rows) if rows else np.empty((0, K * D))
        return ISVSpeakers(list(model_ids), offsets, isv_fingerprint(m))

    def enrol_stats(self, enrollments: Sequence[Any], stats: Any) -> Any:
        """Models of an enrolment list from the run's statistics."""
        from gmmspeaker.isv.models import ISVSpeakers, isv_fingerprint
        from gmmspeaker.isv.score import enroll_offsets

        have = set(stats.ids)
        lists: dict[str, list[str]] = {}
        for e in enrollments:
            utts = [u.utt_id for u in e.utterances if u.utt_id in have]
            if not utts:
                files = ", ".join(str(u.path) for u in e.utterances[:5]) + (
                    ", ..." if len(e.utterances) > 5 else ""
                )
                raise DataError(
                    f"model {e.model_id!r}: none of its {len(e.utterances)} enrolment files has features "
                    f"or statistics ({files}): check they are readable and hold speech, then run the recipe again"
                )
            lists[e.model_id] = utts
        ids, offsets = enroll_offsets(self.model, stats, lists)
        pos = {m: i for i, m in enumerate(ids)}
        order = [pos[e.model_id] for e in enrollments]
        return ISVSpeakers([e.model_id for e in enrollments], offsets[order], isv_fingerprint(self.model))

    def enrol_store(
        self,
        store: Any,
        enrollments: Sequence[Any],
        *,
        jobs: int = 1,
        progress: bool = False,
        desc: str = "enroll",
    ) -> Any:
        """Models of an enrolment list from the run's statistics file (``ivector_stats.h5``)."""
        from gmmspeaker.ivector.stats import read_stats_rows, stats_ids

        have = set(stats_ids(self.wd.ivector_stats))
        ids = sorted({u.utt_id for e in enrollments for u in e.utterances} & have)
        return self.enrol_stats(enrollments, read_stats_rows(self.wd.ivector_stats, ids))

    def model_signature(self, models: Any) -> str:
        return fingerprint([list(models.model_ids), np.asarray(models.offsets)])

    def dependencies(self) -> dict[str, str]:
        from gmmspeaker.gmm.map import ubm_fingerprint
        from gmmspeaker.isv.models import isv_fingerprint

        return {
            "ubm": ubm_fingerprint(self.ubm),
            "isv": isv_fingerprint(self.model),
            "config": json.dumps(self.recipe.section("isv"), sort_keys=True),
        }

    # -- scoring ---------------------------------------------------------------------------
    def score_matrix(self, models: Any, tests: Tests, *, jobs: int = 1, progress: bool = False) -> FloatArray:
        from gmmspeaker.isv.models import score_matrix

        out = np.full((len(models), len(tests.ids)), np.nan)
        have, stats = self.stats_of(tests)
        if have and len(models):
            out[:, have] = score_matrix(self.model, models, stats)
        return out

    # -- normalisation ---------------------------------------------------------------------
    def cohort_models(self, cohort: NormCohort) -> Any:
        """One model per cohort recording, enrolled from it alone (cheap: recomputed, not stored)."""
        from gmmspeaker.isv.models import ISVSpeakers, isv_fingerprint
        from gmmspeaker.isv.score import enroll_offset

        _, stats = self.stats_of(self.cohort_tests(cohort))
        m = self.model
        offsets = np.vstack(
            [enroll_offset(m, stats.n[i : i + 1], stats.f[i : i + 1]) for i in range(len(stats))]
        )
        return ISVSpeakers([f"cohort:{u}" for u in stats.ids], offsets, isv_fingerprint(m))
