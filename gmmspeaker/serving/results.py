"""What the serving calls return: :class:`EnrollResult`, :class:`VerifyResult`,
:class:`IdentifyResult` and :class:`ModelInfo` (re-exported by :mod:`gmmspeaker.system`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EnrollResult", "VerifyResult", "IdentifyResult", "ModelInfo"]


@dataclass(frozen=True)
class EnrollResult:
    """What :meth:`Experiment.enroll` did.

    Attributes
    ----------
    model_id : str
    n_files, n_frames : int
        Audio files and feature frames (after VAD) pooled into the model.
    replaced : str or None
        ``"user"`` when a user model of that id was replaced, ``"recipe"`` when the
        model shadows a recipe model of that id, else None.
    path : Path
        The user models file written (the first system's in a fusion).
    speech_seconds : float
        Speech the model was enrolled from (frames kept by VAD x frame shift).
    duplicates : list of str
        Files listed more than once (each was used once).
    threshold : float or None
        The default threshold :meth:`Experiment.verify` applies to the model (None before
        the run's evaluation).
    """

    model_id: str
    n_files: int
    n_frames: int
    replaced: str | None
    path: Path
    speech_seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)
    threshold: float | None = None


@dataclass(frozen=True)
class VerifyResult:
    """One verification decision.

    Attributes
    ----------
    audio : str
    model : str
    raw_llr : float
        The raw score (GMM-UBM: frame-averaged LLR against the UBM; i-vector: PLDA LLR or
        cosine; in a fusion: the first system's raw score).
    score : float
        The system score ``scores.txt`` holds: raw normalised as the recipe says, or fused.
    calibrated_llr : float or None
        ``score`` through the experiment's calibration (None without one). For a user
        model enrolled from less speech than the run's models, the score is first moved
        by the run's EER threshold minus the model's default threshold (its duration
        offset, :mod:`gmmspeaker.scoring.duration`), so the calibration, fitted on the
        run's models, sees it where a score of theirs at the same operating point would be.
    threshold : float
        By default the run's EER threshold for the recipe's models and, for a user model,
        the EER threshold of models enrolled from as much speech (:meth:`Experiment.threshold`).
    threshold_source : str
        What the threshold is and which score it applies to.
    decision : str
        ``"accept"`` or ``"reject"``; ``"skipped"`` when the file was unusable and the
        call asked to skip (scores NaN).
    system_scores : dict
        In a fusion, each system's own score.
    error : str or None
        Why a skipped file was skipped.
    """

    audio: str
    model: str
    raw_llr: float
    score: float
    calibrated_llr: float | None
    threshold: float
    threshold_source: str
    decision: str
    system_scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        out = {
            "audio": self.audio,
            "model": self.model,
            "raw_llr": self.raw_llr,
            "score": self.score,
            "calibrated_llr": self.calibrated_llr,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "decision": self.decision,
            "error": self.error,
        }
        if self.system_scores:
            out["system_scores"] = dict(self.system_scores)
        return out


@dataclass(frozen=True)
class IdentifyResult:
    """The enrolled models ranked on one audio file.

    Attributes
    ----------
    audio : str
    ranking : list of (model_id, score)
        The ``top_n`` best models, best first, by the score :class:`VerifyResult` reports
        for the same model and file (normalised, or fused in a fusion).
    decision : str
        The best model's id, or ``"unknown"`` when a threshold is set and its score is below
        it; ``"skipped"`` when the file was unusable and the call asked to skip.
    threshold : float or None
    error : str or None
        Why a skipped file was skipped.
    """

    audio: str
    ranking: list[tuple[str, float]]
    decision: str
    threshold: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``audio``, ``ranking`` ([{"model", "score"}], best first), ``decision``,
        ``threshold``, ``error``."""
        return {
            "audio": self.audio,
            "ranking": [{"model": m, "score": s} for m, s in self.ranking],
            "decision": self.decision,
            "threshold": self.threshold,
            "error": self.error,
        }


@dataclass(frozen=True)
class ModelInfo:
    """One model of an experiment, as :meth:`Experiment.list_models` describes it.

    Attributes
    ----------
    model_id : str
    source : str
        ``"recipe"`` (the run's models, from the recipe's enroll list) or ``"user"``
        (``user_models.h5``, from ``enroll``).
    status : str
        ``"active"`` (used by verify and identify), ``"replaced"`` (a recipe model a user
        model of the same id replaces) or ``"stale"`` (a user model whose UBM, features,
        MAP or cohort changed: re-enrol it).
    files : list of str
        The audio it was enrolled from.
    speech_seconds : float or None
        Speech it was enrolled from (frames kept by the VAD times the frame shift).
    enrolled : str or None
        When (UTC, ISO 8601): the user's enrol call, or the run's enroll stage.
    channel : int, str or None
        The channel asked for at enrolment (user models).
    note : str
        Why a model is stale or replaced ("" otherwise).
    """

    model_id: str
    source: str
    status: str
    files: list[str]
    speech_seconds: float | None
    enrolled: str | None
    channel: int | str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field, plus ``n_files``."""
        return {
            "model": self.model_id,
            "source": self.source,
            "status": self.status,
            "n_files": len(self.files),
            "files": list(self.files),
            "speech_seconds": None if self.speech_seconds is None else round(self.speech_seconds, 3),
            "enrolled": self.enrolled,
            "channel": self.channel,
            "note": self.note,
        }
