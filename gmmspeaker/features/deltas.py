"""Delta (regression) coefficients over time, HTK / Kaldi style."""

from __future__ import annotations

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError

__all__ = ["delta", "add_deltas"]


def delta(X: FloatArray, *, window: int = 2) -> FloatArray:
    """Regression deltas of each feature dimension over time.

    ``d[t] = sum_{n=1..N} n (X[t+n] - X[t-n]) / (2 sum_{n=1..N} n**2)`` with ``N = window``,
    where out-of-range frames are replaced by the first / last frame (edge replication, as
    HTK and Kaldi). A single frame gives zeros.

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
        Features, frames as rows.
    window : int
        Half-width ``N`` of the regression window, in frames (>= 1).

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims)
        Deltas.
    """
    if window < 1:
        raise ConfigError(f"delta_window: expected an int >= 1, got {window!r}")
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    out = np.zeros(X.shape, dtype=np.float32)
    if n == 0:
        return out
    padded = np.empty((n + 2 * window, X.shape[1]), dtype=np.float32)  # edge replication
    padded[:window] = X[0]
    padded[window : window + n] = X
    padded[window + n :] = X[-1]
    for k in range(1, window + 1):  # loop over the (few) lags, not over frames
        out += np.float32(k) * (padded[window + k : window + k + n] - padded[window - k : window - k + n])
    out *= np.float32(1.0 / (2.0 * sum(k * k for k in range(1, window + 1))))
    return out


def add_deltas(X: FloatArray, *, order: int = 2, window: int = 2) -> FloatArray:
    """Append deltas (and deltas of deltas) to the static features.

    Parameters
    ----------
    X : ndarray of float, shape (n_frames, n_dims)
        Static features.
    order : {0, 1, 2}
        0: ``X`` only; 1: ``[X, dX]``; 2: ``[X, dX, ddX]`` with ``ddX = delta(dX)``.
    window : int
        Regression half-width in frames, see :func:`delta`.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_dims * (1 + order))
        Stacked features.
    """
    if order not in (0, 1, 2):
        raise ConfigError(f"deltas: expected 0, 1 or 2, got {order!r}")
    X = np.asarray(X, dtype=np.float32)
    parts = [X]
    for _ in range(order):
        parts.append(delta(parts[-1], window=window))
    return np.ascontiguousarray(np.concatenate(parts, axis=1)) if order else X
