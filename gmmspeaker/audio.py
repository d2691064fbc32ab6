"""Loading and validating audio.

Every file goes through :func:`load_audio`, which either returns a clean mono float32
signal at the requested rate or raises :class:`~gmmspeaker.errors.AudioError` naming the
file and the problem.

Resampling uses :func:`scipy.signal.resample_poly` (polyphase filtering with a
Kaiser-windowed FIR anti-aliasing filter, at the exact rational ratio of the two rates).
It is deterministic, needs no extra dependency, works on streams of any length in
O(n) and, unlike FFT resampling, does not assume the signal is periodic (no wrap-around
ringing at the edges of short utterances).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from gmmspeaker._typing import PathLike
from gmmspeaker.errors import AudioError

__all__ = ["load_audio", "resample"]

logger = logging.getLogger(__name__)


def resample(signal: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample a 1-D signal from ``orig_rate`` to ``target_rate`` (Hz).

    Parameters
    ----------
    signal : ndarray, shape (n_samples,)
    orig_rate, target_rate : int
        Sampling rates in Hz.

    Returns
    -------
    ndarray, shape (round(n_samples * target_rate / orig_rate),), float32
    """
    if orig_rate == target_rate:
        return np.asarray(signal, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_rate), int(target_rate))
    up, down = int(target_rate) // g, int(orig_rate) // g
    return resample_poly(np.asarray(signal, dtype=np.float64), up, down).astype(np.float32)


def load_audio(
    path: PathLike,
    *,
    sample_rate: int | None = None,
    resample_audio: bool = False,
    min_samples: int = 1,
    start: float = 0.0,
    end: float | None = None,
) -> tuple[np.ndarray, int]:
    """Read an audio file as a mono float32 signal and check it is usable.

    Parameters
    ----------
    path : path-like
        Any format that soundfile (libsndfile) reads: WAV, FLAC, OGG, ...
    sample_rate : int, optional
        Expected rate in Hz. When the file has another rate it is resampled if
        ``resample_audio`` is true, otherwise an :class:`AudioError` is raised.
    resample_audio : bool
        Allow resampling to ``sample_rate`` (see the module docstring for the method).
    min_samples : int
        Fewest samples (after resampling) the caller can use, e.g. one analysis frame.
    start, end : float, float or None
        Read only ``[start, end)`` seconds of the file (only those frames are read from
        disk); ``end`` None = to the end. An ``end`` past the end of the file by up to
        0.5 s is clipped (Kaldi ``extract-segments`` does the same), more is an error.

    Returns
    -------
    signal : ndarray, shape (n_samples,), float32
        Mono mix-down (mean of the channels); integer PCM scaled to [-1, 1).
    rate : int
        Sampling rate of ``signal`` in Hz.

    Raises
    ------
    AudioError
        The file is missing, a directory, not audio, empty, shorter than ``min_samples``,
        contains NaN or infinite samples, is entirely zero, or has the wrong rate.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: audio file not found")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        if start or end is not None:
            info = sf.info(str(p))
            first = int(round(start * info.samplerate))
            last = info.frames if end is None else int(round(end * info.samplerate))
            if not 0 <= first < info.frames or last <= first or last > info.frames + info.samplerate // 2:
                raise AudioError(
                    f"{p}: segment {start:g}-{'end' if end is None else f'{end:g}'} s is outside the "
                    f"recording ({info.frames / info.samplerate:g} s)"
                )
            data, rate = sf.read(
                str(p), start=first, stop=min(last, info.frames), dtype="float32", always_2d=True
            )
        else:
            data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{p}: not a readable audio file ({reason})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{p}: audio is empty (0 samples)")
    if not np.isfinite(data).all():
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{p}: audio contains {n_bad} NaN or infinite samples")
    signal = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.any(signal):
        raise AudioError(f"{p}: audio is silent (every sample is zero)")
    rate = int(rate)
    if sample_rate is not None and rate != sample_rate:
        if not resample_audio:
            raise AudioError(
                f"{p}: sample rate is {rate} Hz but {sample_rate} Hz is expected; "
                "enable resampling (--resample on the command line, data.resample: true in a recipe, "
                f"resample_audio=True in Python) or use a {rate} Hz feature config"
            )
        signal = resample(signal, rate, sample_rate)
        rate = sample_rate
    if signal.shape[0] < min_samples:
        raise AudioError(
            f"{p}: audio too short: {signal.shape[0]} samples ({signal.shape[0] / rate:.4f} s) "
            f"at {rate} Hz, at least {min_samples} needed for one analysis frame"
        )
    return np.ascontiguousarray(signal, dtype=np.float32), rate
