"""Energy voice-activity detection with a relative threshold and context smoothing.

Like Kaldi's ``compute-vad``, a frame is first marked as speech when its log energy is
above a threshold derived from the utterance itself, then the decision is smoothed over a
context of ``+-context`` frames: a frame is kept when at least ``proportion`` of the
(in-range) frames of its context are marked. Unlike Kaldi, whose threshold
``5.0 + 0.5 * mean(log energy)`` depends on the absolute level (int16 scale) and on how much
silence the file holds, the threshold here is *relative to the loud part of the utterance*:

    threshold = max(percentile(E, reference) - threshold_db, floor_db)

with ``E`` the frame energies in dB (``10 log10`` of the mean square amplitude, i.e. dBFS for
signals in [-1, 1]). Speech frames of a trimmed clip lie within a few tens of dB of its
loudest frames, so they are kept; silence gaps in untrimmed audio lie lower and are dropped;
a clip of digital silence falls under ``floor_db`` and keeps no frame.
"""

from __future__ import annotations

import numpy as np

from gmmspeaker._typing import FloatArray

__all__ = ["frame_energy_db", "energy_vad"]


def frame_energy_db(sum_squares: FloatArray, frame_length: int, *, floor_db: float = -100.0) -> FloatArray:
    """Frame energies in dB of mean square amplitude.

    Parameters
    ----------
    sum_squares : ndarray of float, shape (n_frames,)
        Sum of squared samples of each frame.
    frame_length : int
        Samples per frame.
    floor_db : float
        Lower bound of the result, in dB.

    Returns
    -------
    ndarray of float64, shape (n_frames,)
        ``max(10 log10(sum_squares / frame_length), floor_db)``.
    """
    ms = np.asarray(sum_squares, dtype=np.float64) / float(frame_length)
    return np.maximum(10.0 * np.log10(np.maximum(ms, 10.0 ** (floor_db / 10.0))), floor_db)


def energy_vad(
    energy_db: FloatArray,
    *,
    threshold_db: float = 35.0,
    reference: float = 95.0,
    floor_db: float = -80.0,
    context: int = 2,
    proportion: float = 0.6,
) -> np.ndarray:
    """Speech / non-speech decision per frame from frame energies.

    Parameters
    ----------
    energy_db : ndarray of float, shape (n_frames,)
        Frame energies in dB (see :func:`frame_energy_db`).
    threshold_db : float
        A frame is marked as speech when its energy is more than
        ``percentile(energy_db, reference) - threshold_db``.
    reference : float
        Percentile (0-100) of the utterance's frame energies taken as its loud level.
    floor_db : float
        Absolute floor of the threshold, in dB (frames at or under it are never speech).
    context : int
        Half-width of the smoothing window, in frames (0 = no smoothing).
    proportion : float
        Fraction (0-1] of the in-range frames of the window ``[t - context, t + context]``
        that must be marked for frame ``t`` to be kept.

    Returns
    -------
    ndarray of bool, shape (n_frames,)
        True for the frames to keep.
    """
    e = np.asarray(energy_db, dtype=np.float64)
    n = e.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    level = float(np.percentile(e, reference))
    threshold = max(level - threshold_db, floor_db)
    marked = e > threshold
    if context <= 0:
        return marked
    csum = np.concatenate(([0], np.cumsum(marked, dtype=np.int64)))
    t = np.arange(n)
    lo = np.maximum(t - context, 0)
    hi = np.minimum(t + context + 1, n)
    num = csum[hi] - csum[lo]
    den = hi - lo
    return num >= proportion * den - 1e-9
