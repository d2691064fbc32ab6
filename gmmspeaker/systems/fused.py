"""The fusion of several trained systems: one score per trial from each system's score.

How the columns are combined is decided by the recipe's fusion stage and kept in
``fusion.json``: logistic-regression weights trained on development trials (on each
system's own scores), or the average of scores on a common scale (each system's own
normalisation, or Z-norm against the cohort, or standardisation by the trial scores'
mean and deviation, whose values are kept).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ModelError
from gmmspeaker.systems.base import NormCohort, Tests, TrainedSystem

__all__ = ["Fused", "fusion_input"]


def fusion_input(
    system: TrainedSystem,
    how: str,
    raw: FloatArray,
    score: FloatArray,
    trials: Sequence[tuple[str, str]],
    tests: Tests,
    cohort: NormCohort | None,
    standardize: Sequence[float] | None = None,
) -> FloatArray:
    """One system's column of the fusion: ``score`` put on the scale the fusion record says.

    ``how`` is the system's own normalisation (the column is ``score``), ``"znorm"`` (raw
    scores Z-normed with the cohort's Z side) or ``"standardized"`` ((score - mean) / sd
    with ``standardize = (mean, sd)``).
    """
    if how == "standardized":
        if standardize is None:
            raise ModelError(f"fusion record: no mean/deviation for {system.name}'s standardisation")
        mu, sd = standardize
        return (np.asarray(score, dtype=np.float64) - mu) / sd
    if how == "znorm" and system.normalization == "none":
        return system.normalise(raw, trials, tests, cohort, method="znorm")
    return np.asarray(score, dtype=np.float64)


class Fused(TrainedSystem):
    """Several systems whose scores are fused (``system: [gmm_ubm, ivector]``)."""

    name = "fusion"
    score_stage = "fusion"
    stages = ("fusion",)

    def __init__(self, wd: Any, recipe: Any, systems: Sequence[TrainedSystem]) -> None:
        super().__init__(wd, recipe)
        self.systems = list(systems)

    @property
    def normalization(self) -> str:
        return "none"

    @property
    def cohort_top_n(self) -> int:
        return 0

    def record(self) -> dict[str, Any]:
        """``fusion.json``."""
        return self.wd.read_json(
            self.wd.fusion, what="fusion record (run the recipe through its fusion stage)"
        )

    def combine(self, columns: Sequence[FloatArray], record: dict[str, Any] | None = None) -> FloatArray:
        """Fused scores of the systems' fusion columns (in :attr:`systems` order)."""
        from gmmspeaker.scoring.fusion import LinearFusion, equal_weight_fusion

        rec = self.record() if record is None else record
        S = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
        if rec.get("method") == "logistic_regression":
            return LinearFusion.from_dict(
                {k: rec[k] for k in ("weights", "bias", "p_target") if k in rec}
            ).apply(S)
        return equal_weight_fusion(S)

    def columns(
        self,
        scored: Sequence[tuple[FloatArray, FloatArray]],
        trials: Sequence[tuple[str, str]],
        tests: Sequence[Tests],
        cohorts: Sequence[NormCohort | None],
        record: dict[str, Any] | None = None,
    ) -> list[FloatArray]:
        """Each system's fusion column from its (raw, score) of ``trials``."""
        rec = self.record() if record is None else record
        how = rec.get("normalization") or {}
        std = rec.get("standardize") or {}
        return [
            fusion_input(s, how.get(s.name, s.normalization), raw, score, trials, t, c, std.get(s.name))
            for s, (raw, score), t, c in zip(self.systems, scored, tests, cohorts)
        ]
