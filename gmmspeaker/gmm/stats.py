"""Sufficient statistics of a Gaussian mixture over frames (the E-step).

Statistics are small and additive: a chunk's (or a shard's, or a worker's) statistics
are summed with ``+`` and the M-step / MAP adaptation reads the sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmmspeaker._typing import FloatArray

__all__ = ["Stats"]


@dataclass
class Stats:
    """Zero-, first- and second-order statistics of frames under a mixture.

    Attributes
    ----------
    n : ndarray, shape (K,), float64
        Zero-order statistics, ``sum_t gamma_tk``.
    f : ndarray, shape (K, D), float64
        First-order statistics, ``sum_t gamma_tk x_t``.
    s : ndarray, shape (K, D) for diagonal, (K, D, D) for full, float64, or None
        Second-order statistics, ``sum_t gamma_tk x_t**2`` (diag) or ``x_t x_t^T`` (full);
        None when not requested.
    loglik : float
        Total log-likelihood of the frames, ``sum_t log p(x_t)``.
    n_frames : int
        Number of frames accumulated.
    """

    n: FloatArray
    f: FloatArray
    s: FloatArray | None
    loglik: float
    n_frames: int

    def __add__(self, other: "Stats") -> "Stats":
        if self.s is None or other.s is None:
            s = None
        else:
            s = self.s + other.s
        return Stats(
            n=self.n + other.n,
            f=self.f + other.f,
            s=s,
            loglik=float(self.loglik + other.loglik),
            n_frames=int(self.n_frames + other.n_frames),
        )

    @classmethod
    def zeros(cls, n_components: int, n_dims: int, *, second_order: str | None = "diag") -> "Stats":
        """Empty statistics; ``second_order`` is ``"diag"``, ``"full"`` or None."""
        if second_order == "diag":
            s: FloatArray | None = np.zeros((n_components, n_dims))
        elif second_order == "full":
            s = np.zeros((n_components, n_dims, n_dims))
        else:
            s = None
        return cls(np.zeros(n_components), np.zeros((n_components, n_dims)), s, 0.0, 0)
