"""Enrolled ISV speaker models and their linear scores.

:class:`ISVSpeakers` holds the speaker offsets ``d E[z_s]`` of enrolled models (the
session factors of their enrolment recordings integrated out,
:func:`gmmspeaker.isv.score.enroll_offset`); :func:`score_matrix` scores them on
recordings by linear scoring with every test's session offset removed. Trial scoring
and cohort normalisation are the system's (:class:`gmmspeaker.systems.Isv`, the one
path the recipe and serving share).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ModelError
from gmmspeaker.isv.score import compensated_stats
from gmmspeaker.isv.train import ISVModel
from gmmspeaker.ivector.stats import UtteranceStats

__all__ = ["ISVSpeakers", "isv_fingerprint", "score_matrix"]

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

    def __len__(self) -> int:
        return len(self.model_ids)

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
