"""Enrolled ISV speaker models, and ISV trial scoring with score normalisation.

:class:`ISVSpeakers` holds the speaker offsets ``d E[z_s]`` of enrolled models (the
session factors of their enrolment recordings integrated out,
:func:`gmmspeaker.isv.score.enroll_offset`). :func:`score_isv_trials` scores a trial
list by linear scoring with every test's session offset removed and normalises the
scores against a cohort as the GMM-UBM system does (:mod:`gmmspeaker.scoring.norm`):
the cohort's recordings play the Z-norm impostor tests, and each cohort recording
enrolled alone plays a T-norm cohort model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.isv.score import compensated_stats, enroll_offsets
from gmmspeaker.isv.train import ISVModel
from gmmspeaker.ivector.stats import UtteranceStats

if TYPE_CHECKING:
    from gmmspeaker.corpora.lists import Enrollment, Trial

__all__ = ["ISVSpeakers", "isv_fingerprint", "score_isv_trials", "score_matrix"]

_FORMAT = "gmmspeaker.isv_speakers"


def isv_fingerprint(model: ISVModel) -> str:
    """Short hash of U and the relevance factor (what enrolled offsets depend on)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(model.U, dtype=np.float64).tobytes())
    h.update(repr((float(model.relevance), model.n_components, model.n_dims, model.ubm_fingerprint)).encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ISVSpeakers:
    """Enrolled models: ids and offsets (M, K*D) in the whitened space, and the ISV model's hash."""

    model_ids: list[str]
    offsets: FloatArray
    isv_fingerprint: str = ""

    def __post_init__(self) -> None:
        o = np.asarray(self.offsets)
        if o.ndim != 2 or o.shape[0] != len(self.model_ids):
            raise ModelError(f"ISV speakers: {len(self.model_ids)} ids for offsets of shape {o.shape}")

    def subset(self, rows: Sequence[int] | np.ndarray) -> ISVSpeakers:
        idx = np.asarray(rows, dtype=np.int64)
        return ISVSpeakers(
            [self.model_ids[i] for i in idx], np.asarray(self.offsets)[idx], self.isv_fingerprint
        )

    def concat(self, other: ISVSpeakers) -> ISVSpeakers:
        if self.isv_fingerprint != other.isv_fingerprint:
            raise ModelError("ISV speakers: cannot join models enrolled with different ISV models")
        return ISVSpeakers(
            [*self.model_ids, *other.model_ids],
            np.vstack([self.offsets, other.offsets]),
            self.isv_fingerprint,
        )

    def save(self, path: PathLike) -> None:
        write_h5(
            path,
            _FORMAT,
            {"model_ids": list(self.model_ids), "offsets": np.asarray(self.offsets, dtype=np.float64)},
            {"isv_fingerprint": self.isv_fingerprint},
        )

    @classmethod
    def load(cls, path: PathLike) -> ISVSpeakers:
        arrays, attrs = read_h5(path, _FORMAT, ("model_ids", "offsets"), what="ISV speaker models file")
        return cls(
            list(arrays["model_ids"]),
            np.asarray(arrays["offsets"], dtype=np.float64),
            str(attrs.get("isv_fingerprint", "")),
        )


def score_matrix(model: ISVModel, speakers: ISVSpeakers, stats: UtteranceStats) -> FloatArray:
    """Linear scores (M, T) of enrolled models on recordings (session offsets removed)."""
    if speakers.isv_fingerprint and speakers.isv_fingerprint != isv_fingerprint(model):
        raise ModelError("ISV speaker models were enrolled with another ISV model; enrol them again")
    fc = compensated_stats(model, stats)
    return (np.asarray(speakers.offsets) @ fc.T) / np.maximum(np.asarray(stats.n).sum(1), 1e-10)[None, :]


def score_isv_trials(
    trials: Sequence[Trial],
    enrollments: Sequence[Enrollment],
    stats: UtteranceStats,
    model: ISVModel,
    *,
    cohort: Sequence[str] = (),
    normalization: str = "none",
    top_n: int = 200,
) -> tuple[FloatArray, FloatArray, ISVSpeakers]:
    """Score a trial list with ISV; returns (normalised, raw) scores in trial order and the models.

    ``stats`` holds every enrolment, test and cohort recording's statistics (a test
    without statistics scores NaN). Normalisation methods as
    :func:`gmmspeaker.scoring.norm.normalize_scores`.
    """
    from gmmspeaker.scoring.norm import normalize_scores, self_trial_masks

    have = set(stats.ids)
    enrol: dict[str, list[str]] = {}
    for e in enrollments:
        utts = [u.utt_id for u in e.utterances if u.utt_id in have]
        if not utts:
            raise DataError(
                f"model {e.model_id!r}: none of its {len(e.utterances)} enrolment files has statistics"
            )
        enrol[e.model_id] = utts
    ids, offsets = enroll_offsets(model, stats, enrol)
    speakers = ISVSpeakers(ids, offsets, isv_fingerprint(model))
    mpos = {m: i for i, m in enumerate(ids)}
    for i, t in enumerate(trials):
        if t.model_id not in mpos:
            raise DataError(f"trial {i + 1} (line {t.line}): unknown model {t.model_id!r}")
    tests = sorted({t.test.utt_id for t in trials if t.test.utt_id in have})
    tpos = {u: j for j, u in enumerate(tests)}
    S = score_matrix(model, speakers, stats.subset(tests)) if tests else np.empty((len(ids), 0))
    has = np.array([t.test.utt_id in tpos for t in trials], dtype=bool)
    model_idx = np.array([mpos[t.model_id] for t in trials], dtype=np.int64)
    test_idx = np.array([tpos.get(t.test.utt_id, 0) for t in trials], dtype=np.int64)
    raw = np.full(len(trials), np.nan)
    if tests:
        raw[has] = S[model_idx[has], test_idx[has]]
    if normalization == "none":
        return raw, raw, speakers
    cids = [u for u in cohort if u in have]
    if len(cids) < 2:
        raise DataError(
            f"ISV score normalisation needs at least 2 cohort recordings with statistics, got {len(cids)}"
        )
    cstats = stats.subset(cids)
    _, coffsets = enroll_offsets(model, cstats, {c: [c] for c in cids})
    order = np.argsort(cids)  # enroll_offsets returns sorted ids
    cohort_models = ISVSpeakers(sorted(cids), coffsets, speakers.isv_fingerprint).subset(np.argsort(order))
    own, self_test, self_cohort = self_trial_masks([set(enrol[m]) for m in ids], cids, tests)
    model_cohort = np.ma.MaskedArray(score_matrix(model, speakers, cstats), mask=own)
    cohort_test = (
        np.ma.MaskedArray(score_matrix(model, cohort_models, stats.subset(tests)), mask=self_test)
        if tests
        else np.zeros((len(cids), 1))
    )
    cohort_cohort = (
        np.ma.MaskedArray(score_matrix(model, cohort_models, cstats), mask=self_cohort)
        if normalization == "ztnorm"
        else None
    )
    normed = normalize_scores(
        np.where(has, raw, 0.0),
        method=normalization,
        model_cohort=model_cohort if normalization in ("znorm", "ztnorm", "snorm", "asnorm") else None,
        cohort_test=cohort_test if normalization in ("tnorm", "ztnorm", "snorm", "asnorm") else None,
        cohort_cohort=cohort_cohort,
        model_idx=model_idx,
        test_idx=test_idx,
        top_n=top_n,
    )
    return np.where(has, normed, np.nan), raw, speakers
