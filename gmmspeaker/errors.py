"""Exceptions and warnings raised by gmmspeaker.

Every error says what went wrong, where (file, line, key) and, where it can, what to do.
The command line prints ``GmmSpeakerError`` messages as one line and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "GmmSpeakerError",
    "AudioError",
    "ConfigError",
    "DataError",
    "ModelError",
    "DiskFullError",
    "NotFittedError",
    "ConvergenceWarning",
    "SkippedInputWarning",
    "DataWarning",
]


class GmmSpeakerError(Exception):
    """Root of every error that gmmspeaker raises on purpose."""


class AudioError(GmmSpeakerError):
    """An audio file cannot be used: unreadable, empty, silent, NaN, wrong rate, ..."""


class ConfigError(GmmSpeakerError, ValueError):
    """A configuration (recipe, YAML, keyword argument) is invalid."""


class DataError(GmmSpeakerError, ValueError):
    """Input data are invalid: a list line, a feature matrix, a missing file, ..."""


class ModelError(GmmSpeakerError):
    """A model file is missing, corrupt or does not fit the data."""


class NotFittedError(ModelError, ValueError, AttributeError):
    """A model is used before it was fitted or loaded (also a ValueError and an AttributeError,
    as scikit-learn's ``NotFittedError``, so scikit-learn tools recognise it)."""


class DiskFullError(GmmSpeakerError):
    """A file could not be written for lack of disk space (nothing half-written is kept)."""


class ConvergenceWarning(UserWarning):
    """EM stopped at ``max_iter`` before reaching the tolerance."""


class SkippedInputWarning(UserWarning):
    """Some inputs were skipped because the caller asked to skip bad input."""


class DataWarning(UserWarning):
    """The data are usable but too few or too poor for a trustworthy result (e.g. frames per parameter)."""
