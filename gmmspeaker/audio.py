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
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmmspeaker._typing import PathLike
from gmmspeaker.errors import AudioError

__all__ = ["AudioSource", "load_audio", "read_audio", "load_for_system", "resample", "unique_paths"]

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


def read_audio(
    path: PathLike,
    *,
    sample_rate: int | None = None,
    resample_audio: bool = False,
    min_samples: int = 1,
    start: float = 0.0,
    end: float | None = None,
    channel: int | str | None = None,
) -> tuple[np.ndarray, int, int]:
    """:func:`load_audio`, and the number of channels of the file (from the same open).

    Parameters, checks and errors are those of :func:`load_audio` (which calls this).

    Returns
    -------
    signal : ndarray, shape (n_samples,), float32
        As :func:`load_audio`.
    rate : int
        Sampling rate of ``signal`` in Hz.
    n_channels : int
        Channels in the file.
    """
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: audio file not found")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    integer = False  # samples scaled from 16-bit integers
    try:
        with sf.SoundFile(str(p)) as fh:  # one open: rate, channels, subtype and the samples
            rate, n_frames = fh.samplerate, fh.frames
            count = -1
            if start or end is not None:
                first = int(round(start * rate))
                last = n_frames if end is None else int(round(end * rate))
                if not 0 <= first < n_frames or last <= first or last > n_frames + rate // 2:
                    raise AudioError(
                        f"{p}: segment {start:g}-{'end' if end is None else f'{end:g}'} s is outside the "
                        f"recording ({n_frames / rate:g} s)"
                    )
                fh.seek(first)
                count = min(last, n_frames) - first
            integer = fh.subtype == "PCM_16"
            if integer:
                # libsndfile's float32 of 16-bit PCM is x / 32768 (exact); reading int16 and
                # scaling gives the same numbers in a third of the time
                raw = fh.read(count, dtype="int16", always_2d=True)
                data = np.multiply(raw, np.float32(1.0 / 32768.0), dtype=np.float32)
            else:
                data = fh.read(count, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        try:
            empty = p.stat().st_size == 0
        except OSError:
            empty = False
        if empty:  # libsndfile's words for it are "Format not recognised"
            raise AudioError(f"{p}: empty file (0 bytes), not audio") from exc
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise AudioError(f"{p}: not a readable audio file ({reason})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{p}: audio is empty (0 samples)")
    if not integer and not np.isfinite(data).all():  # scaled integers are always finite
        n_bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(f"{p}: audio contains {n_bad} NaN or infinite samples")
    if channel is not None and channel != "mix":
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)):
            raise AudioError(f"{p}: channel must be an index (0 = first) or 'mix', got {channel!r}")
        if not 0 <= channel < data.shape[1]:
            raise AudioError(
                f"{p}: has {data.shape[1]} channel(s); channel {channel} does not exist "
                f"(channels are numbered from 0)"
            )
        signal = data[:, int(channel)]
    elif data.shape[1] > 1:
        signal = data.mean(axis=1, dtype=np.float64).astype(np.float32)
    else:
        signal = data[:, 0]
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
    return np.ascontiguousarray(signal, dtype=np.float32), rate, int(data.shape[1])


def load_audio(
    path: PathLike,
    *,
    sample_rate: int | None = None,
    resample_audio: bool = False,
    min_samples: int = 1,
    start: float = 0.0,
    end: float | None = None,
    channel: int | str | None = None,
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
    channel : int, "mix" or None
        Which channel of a multi-channel file: an index (0 = the first, the left of a
        stereo file), or ``"mix"`` / None for the mean of the channels.

    Returns
    -------
    signal : ndarray, shape (n_samples,), float32
        The chosen channel, or the mono mix-down (mean of the channels); integer PCM
        scaled to [-1, 1).
    rate : int
        Sampling rate of ``signal`` in Hz.

    Raises
    ------
    AudioError
        The file is missing, a directory, not audio, empty, shorter than ``min_samples``,
        contains NaN or infinite samples, is entirely zero, has the wrong rate or lacks
        the asked ``channel``.
    """
    signal, rate, _ = read_audio(
        path,
        sample_rate=sample_rate,
        resample_audio=resample_audio,
        min_samples=min_samples,
        start=start,
        end=end,
        channel=channel,
    )
    return signal, rate


@dataclass(frozen=True)
class AudioSource:
    """What an audio file was, and what :func:`load_for_system` made of it.

    Attributes
    ----------
    path : str
    source_rate : int
        The file's sampling rate (Hz).
    rate : int
        The rate of the returned signal: the system's (Hz).
    n_channels : int
        Channels in the file.
    channel : int, "mix" or None
        The channel used; ``"mix"``: averaged as asked; None: averaged by default.
    """

    path: str
    source_rate: int
    rate: int
    n_channels: int
    channel: int | str | None

    def notices(self) -> list[tuple[int, str]]:
        """``(logging level, message)`` for what was done to the file beyond reading it.

        Resampling down is an INFO notice; resampling up (the band above the file's
        Nyquist frequency is empty) and averaging several channels are WARNINGs.
        """
        out: list[tuple[int, str]] = []
        if self.source_rate > self.rate:
            out.append(
                (
                    logging.INFO,
                    f"{self.path}: resampled from {self.source_rate} Hz to the system's {self.rate} Hz",
                )
            )
        elif self.source_rate < self.rate:
            out.append(
                (
                    logging.WARNING,
                    f"{self.path}: resampled up from {self.source_rate} Hz to the system's {self.rate} Hz; "
                    f"it has nothing above {self.source_rate // 2} Hz, so its scores are less reliable",
                )
            )
        if self.n_channels > 1 and self.channel is None:
            out.append(
                (
                    logging.WARNING,
                    f"{self.path}: {self.n_channels} channels averaged to one; if they hold different "
                    "speakers (a stereo call), choose one: --channel N on the command line, channel=N in "
                    "Python (0 = first/left, 1 = second/right), or --channel mix to average without this warning",
                )
            )
        return out


def load_for_system(
    path: PathLike, *, sample_rate: int, channel: int | str | None = None, min_samples: int = 1
) -> tuple[np.ndarray, AudioSource]:
    """Read audio for a trained system: any rate (resampled to ``sample_rate``), any channel.

    A trained system has one rate; a file of another rate is resampled to it (as a recipe
    with ``data.resample: true`` does), and :meth:`AudioSource.notices` says so. Serving
    resamples automatically, rather than refusing, because the features must be computed at
    the system's rate whatever the recording's: refusing only sends the user to resample by
    hand with another tool.

    Parameters
    ----------
    path : path-like
    sample_rate : int
        The system's rate (Hz).
    channel : int, "mix" or None
        See :func:`load_audio`; None averages the channels, and :meth:`AudioSource.notices`
        warns when there are several.
    min_samples : int
        Fewest samples (after resampling) the caller can use.

    Returns
    -------
    signal : ndarray, shape (n_samples,), float32
    source : AudioSource

    Raises
    ------
    AudioError
        As :func:`load_audio`.
    """
    import soundfile as sf

    signal, rate = load_audio(
        path, sample_rate=sample_rate, resample_audio=True, min_samples=min_samples, channel=channel
    )
    info = sf.info(str(path))  # readable: load_audio just read it
    src = AudioSource(
        path=str(path),
        source_rate=int(info.samplerate),
        rate=int(rate),
        n_channels=int(info.channels),
        channel=channel if channel is None or channel == "mix" else int(channel),
    )
    return signal, src


def unique_paths(paths: Sequence[PathLike]) -> tuple[list[PathLike], list[PathLike]]:
    """``(unique, duplicates)``: ``paths`` in order without repeats of the same file.

    Two names are the same file when they resolve to the same real path (relative or
    absolute spelling, ``./``, ``..``, symbolic links). The first occurrence is kept.
    """
    seen: set[str] = set()
    unique: list[PathLike] = []
    duplicates: list[PathLike] = []
    for p in paths:
        key = os.path.realpath(os.fspath(p))
        if key in seen:
            duplicates.append(p)
        else:
            seen.add(key)
            unique.append(p)
    return unique, duplicates
