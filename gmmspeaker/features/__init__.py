"""Feature front end: MFCC, deltas, energy VAD and normalisation.

The entry point is :func:`extract` with a :class:`FeatureConfig`; the building blocks live in
:mod:`~gmmspeaker.features.mfcc`, :mod:`~gmmspeaker.features.deltas`,
:mod:`~gmmspeaker.features.vad` and :mod:`~gmmspeaker.features.normalize`.
"""

from __future__ import annotations

from gmmspeaker.features.deltas import add_deltas, delta
from gmmspeaker.features.extract import (
    RATE_DEFAULTS,
    FeatureConfig,
    Features,
    extract,
    extract_many,
    resolve_sample_rate,
)
from gmmspeaker.features.normalize import cmn, cmvn, feature_warping, normalize, sliding_cmn
from gmmspeaker.features.vad import energy_vad, frame_energy_db

__all__ = [
    "FeatureConfig",
    "Features",
    "RATE_DEFAULTS",
    "resolve_sample_rate",
    "extract",
    "extract_many",
    "add_deltas",
    "delta",
    "cmn",
    "cmvn",
    "sliding_cmn",
    "feature_warping",
    "normalize",
    "energy_vad",
    "frame_energy_db",
]
