"""Per-utterance feature normalisation: CMN, CMVN, sliding-window CMN, feature warping.

Every function takes frames as rows ``X (n_frames, n_dims)`` and returns float32 of the same
shape, finite for any finite input, including 0, 1 or 2 frames and constant dimensions:
variances are floored, so a dimension with no spread maps to 0 instead of NaN. Statistics
are accumulated in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError

__all__ = ["NORMALIZATIONS", "VAR_FLOOR", "cmn", "cmvn", "sliding_cmn", "feature_warping", "normalize"]

#: Absolute floor of the per-dimension variance used by :func:`cmvn`.
VAR_FLOOR = 1e-8

#: float32 features computed in blocks differ by up to ~1e-6 of the matrix's largest magnitude
#: even for identical frames (the DCT spreads c0's rounding over every coefficient). CMVN
#: floors each standard deviation at ``CMVN_REL_FLOOR`` times that magnitude, and warping
#: treats values closer than ``WARP_REL_TIE`` times it as ties, so rounding noise is not
#: blown up to unit scale.
CMVN_REL_FLOOR = 1e-4
WARP_REL_TIE = 1e-5

#: Names accepted by :func:`normalize`.
NORMALIZATIONS = ("none", "cmn", "cmvn", "sliding_cmn", "warp")

# Elements of the (frames x window x dims) comparison block of feature_warping per chunk.
_WARP_BLOCK = 1 << 22


def cmn(X: FloatArray) -> FloatArray:
    """Subtract the per-dimension mean over the utterance.

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
    """
    X = np.asarray(X)
    if X.shape[0] == 0:
        return np.zeros(X.shape, dtype=np.float32)
    mean = X.mean(axis=0, dtype=np.float64)
    return (X - mean).astype(np.float32)


def cmvn(X: FloatArray, *, var_floor: float = VAR_FLOOR) -> FloatArray:
    """Zero mean and unit variance per dimension over the utterance.

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
    var_floor : float
        Absolute floor of the variance; the standard deviation is also floored at
        ``CMVN_REL_FLOOR`` times the largest magnitude in ``X``. A constant dimension, or a
        1-frame utterance, gives zeros, not NaN nor amplified rounding noise.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
    """
    X = np.asarray(X)
    if X.shape[0] == 0:
        return np.zeros(X.shape, dtype=np.float32)
    X64 = X.astype(np.float64)
    mean = X64.mean(axis=0)
    centred = X64 - mean
    var = np.mean(centred * centred, axis=0)
    floor = max(var_floor, (CMVN_REL_FLOOR * float(np.abs(X64).max())) ** 2)
    return (centred / np.sqrt(np.maximum(var, floor))).astype(np.float32)


def _window_bounds(n: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Start/end of a ``window``-frame window centred on each frame, shifted to stay inside
    ``[0, n)`` (Kaldi ``apply-cmvn-sliding --center=true``); the whole utterance if shorter."""
    w = min(window, n)
    t = np.arange(n)
    start = np.clip(t - window // 2, 0, n - w)
    return start, start + w


def sliding_cmn(X: FloatArray, *, window: int = 301) -> FloatArray:
    """Subtract a sliding-window mean (centred window, shifted inside the utterance).

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
    window : int
        Window length in frames (>= 1). Utterances shorter than it get plain CMN.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
    """
    if window < 1:
        raise ConfigError(f"norm_window: expected an int >= 1, got {window!r}")
    X = np.asarray(X)
    n = X.shape[0]
    if n == 0:
        return np.zeros(X.shape, dtype=np.float32)
    start, end = _window_bounds(n, window)
    csum = np.zeros((n + 1, X.shape[1]), dtype=np.float64)
    np.cumsum(X, axis=0, dtype=np.float64, out=csum[1:])
    mean = (csum[end] - csum[start]) / (end - start)[:, None]
    return (X - mean).astype(np.float32)


def feature_warping(X: FloatArray, *, window: int = 301) -> FloatArray:
    """Feature warping (Pelecanos & Sridharan, 2001): map each value to a standard normal
    quantile by its rank within a sliding window.

    For frame ``t`` with window ``W`` of ``N`` frames (centred, shifted inside the
    utterance), ``y = Phi^-1((r + (e - 1) / 2 + 1/2) / N)`` where ``r`` counts the window
    values below ``x`` and ``e`` those equal to it (ties share the mid rank, so a constant
    dimension maps to 0). Values closer than ``WARP_REL_TIE`` times the largest magnitude
    in ``X`` count as equal (rounding noise must not be spread over the normal range).

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
    window : int
        Window length in frames (>= 1); the whole utterance when shorter.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
        Warped features, approximately standard normal per dimension.
    """
    if window < 1:
        raise ConfigError(f"norm_window: expected an int >= 1, got {window!r}")
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    out = np.zeros((n, d), dtype=np.float32)
    if n == 0:
        return out
    w = min(window, n)
    start, _ = _window_bounds(n, window)
    windows = np.lib.stride_tricks.sliding_window_view(X, w, axis=0)  # (n - w + 1, d, w)
    tol = np.float32(WARP_REL_TIE * float(np.abs(X).max()))
    chunk = max(1, _WARP_BLOCK // max(1, w * d))
    for a in range(0, n, chunk):  # chunks of frames, each a vectorised block
        b = min(a + chunk, n)
        win = windows[start[a:b]]  # (b - a, d, w)
        x = X[a:b, :, None]
        below = np.count_nonzero(win < x - tol, axis=2)
        equal = np.count_nonzero(win <= x + tol, axis=2) - below
        p = (below + 0.5 * (equal - 1) + 0.5) / w
        out[a:b] = ndtri(p)
    return out


def normalize(X: FloatArray, method: str, *, window: int = 301) -> FloatArray:
    """Apply the normalisation named ``method``.

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
    method : {"none", "cmn", "cmvn", "sliding_cmn", "warp"}
    window : int
        Window in frames for ``"sliding_cmn"`` and ``"warp"``.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
    """
    if method == "none":
        return np.asarray(X, dtype=np.float32)
    if method == "cmn":
        return cmn(X)
    if method == "cmvn":
        return cmvn(X)
    if method == "sliding_cmn":
        return sliding_cmn(X, window=window)
    if method == "warp":
        return feature_warping(X, window=window)
    raise ConfigError(f"normalize: expected one of {NORMALIZATIONS}, got {method!r}")
