"""Audio files as a trained experiment takes them when serving.

A file of another sampling rate is resampled to the system's (logged: see
:func:`gmmspeaker.audio.load_for_system` for why serving resamples rather than refuses), a
multi-channel file is averaged with a warning unless a channel is chosen, verify and
identify can skip unusable files (``on_bad_audio="skip"``) and an enrolment file listed
twice is used once, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import AudioError, ConfigError, DataError
from gmmspeaker.systems import Tests

__all__ = ["audio_features", "frame_shift", "audio_tests", "enrolment_paths"]

# the serving API's messages keep the logger name users see on the command line
logger = logging.getLogger("gmmspeaker.system")


def audio_features(
    path: PathLike, features: dict[str, Any], *, source: str, channel: int | str | None = None
) -> FloatArray:
    """Feature frames of one audio file with a recipe's ``features`` configuration.

    Parameters
    ----------
    path : path-like
    features : dict
        The recipe's ``features`` section.
    source : str
        Where ``features`` comes from, for configuration errors.
    channel : int, "mix" or None
        Channel of a multi-channel file (0 = first); None averages them with a warning.

    Returns
    -------
    ndarray, shape (n_frames, dim), float32

    Raises
    ------
    AudioError, DataError
        Unreadable or unusable audio, or no frames kept (the message names the file).
    """
    from gmmspeaker.audio import load_for_system
    from gmmspeaker.features import FeatureConfig, extract

    cfg = FeatureConfig.from_dict(features, source=source)
    signal, src = load_for_system(
        path, sample_rate=cfg.sample_rate, channel=channel, min_samples=cfg.frame_length_samples
    )
    for level, message in src.notices():
        logger.log(level, "%s", message)
    frames = extract(signal, cfg, name=str(path)).frames
    if frames.shape[0] == 0:
        raise DataError(f"{path}: no feature frames left after voice activity detection")
    return np.ascontiguousarray(frames, dtype=np.float32)


def frame_shift(features: dict[str, Any]) -> float:
    """Seconds between feature frames of a recipe's ``features`` configuration."""
    from gmmspeaker.features import FeatureConfig

    return float(FeatureConfig.from_dict(features).frame_shift)


def audio_tests(
    paths: Sequence[PathLike], features: Callable[[PathLike], FloatArray], *, on_bad_audio: str = "error"
) -> tuple[Tests, dict[int, str]]:
    """The usable files as tests, and ``{position: error}`` of those skipped.

    Parameters
    ----------
    paths : sequence of path-like
    features : callable
        Path -> feature frames (raising AudioError / DataError on unusable audio).
    on_bad_audio : {"error", "skip"}
        ``"skip"``: an unusable file is logged, left out and its error returned;
        ``"error"``: its error is raised.
    """
    if on_bad_audio not in ("error", "skip"):
        raise ConfigError(f"on_bad_audio must be 'error' or 'skip', got {on_bad_audio!r}")
    ids, source, kept, errors = [], {}, [], {}
    for i, p in enumerate(paths):
        try:
            X = features(p)
        except (AudioError, DataError) as exc:
            if on_bad_audio != "skip":
                raise
            logger.warning("skipped %s", exc)
            errors[i] = str(exc)
            continue
        u = f"audio{i}:{p}"
        ids.append(u)
        source[u] = X
        kept.append(str(p))
    return Tests(ids=ids, source=source, paths=kept), errors


def enrolment_paths(paths: Sequence[PathLike], model_id: str) -> tuple[list[PathLike], list[PathLike]]:
    """(the files to enrol ``model_id`` from, each once; the files listed more than once).

    A file listed twice, under any spelling of its path, is used once, with a warning.
    """
    from gmmspeaker.audio import unique_paths

    unique, dups = unique_paths(list(paths))
    for d in dups:
        logger.warning("%s: listed more than once for model %r; used once", d, model_id)
    return list(unique), list(dups)
