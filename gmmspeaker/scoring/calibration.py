"""Linear logistic-regression calibration: raw scores -> log-likelihood ratios.

As in the BOSARIS toolkit (``train_linear_calibration``), a scale ``a`` and an offset
``b`` are fitted on a development trial list by minimising the prior-weighted
cross-entropy

.. math::

    C(a, b) = \\frac{P}{N_t} \\sum_{tar} \\log(1 + e^{-(a s + b + \\mathrm{logit} P)})
            + \\frac{1 - P}{N_n} \\sum_{non} \\log(1 + e^{a s + b + \\mathrm{logit} P}),

where ``P`` is the training prior ``p_target``. The weights make the targets and the
non-targets count as if their proportion were ``P`` whatever the trial counts, and the
``logit P`` term makes ``a s + b`` a log-likelihood ratio rather than posterior
log-odds. Calibrated scores can then be thresholded at the Bayes threshold
(:func:`gmmspeaker.scoring.metrics.bayes_threshold`) for any prior and costs.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize
from scipy.special import expit

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, ConvergenceWarning, DataError

__all__ = ["LinearCalibration", "fit_linear_calibration"]

logger = logging.getLogger(__name__)


def _finite_1d(x: npt.ArrayLike, name: str) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise DataError(f"{name} scores must be a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise DataError(f"no {name} scores: calibration needs at least one {name} trial")
    if not np.all(np.isfinite(a)):
        n_bad = int(np.count_nonzero(~np.isfinite(a)))
        raise DataError(f"{name} scores contain {n_bad} NaN/inf value(s) out of {a.size}")
    return a


def _objective(
    theta: FloatArray, z: FloatArray, y: FloatArray, w: FloatArray, logit_p: float
) -> tuple[float, FloatArray, FloatArray]:
    """Weighted cross-entropy (nats), gradient and Hessian in ``theta = (a, b)``."""
    a, b = theta
    u = a * z + b + logit_p
    sign = 2.0 * y - 1.0  # +1 target, -1 non-target
    f = float(np.sum(w * np.logaddexp(0.0, -sign * u)))
    p = expit(u)
    r = w * (p - y)  # d loss / d u
    grad = np.array([np.sum(r * z), np.sum(r)])
    h = w * p * (1.0 - p)
    hess = np.array([[np.sum(h * z * z), np.sum(h * z)], [np.sum(h * z), np.sum(h)]])
    return f, grad, hess


@dataclass(frozen=True, kw_only=True)
class LinearCalibration:
    """An affine map from raw scores to natural-log likelihood ratios.

    ``llr = scale * score + offset``.

    Attributes
    ----------
    scale : float
        Multiplier of the raw score (positive for a sensible system).
    offset : float
        Additive offset, in nats.
    p_target : float
        Training prior the calibration was fitted with (kept for the record; the output
        is an LLR and does not depend on it at use time).
    """

    scale: float
    offset: float
    p_target: float = 0.5

    def __post_init__(self) -> None:
        for name in ("scale", "offset"):
            v = getattr(self, name)
            if not math.isfinite(v):
                raise ConfigError(f"LinearCalibration.{name} must be finite, got {v!r}")
        if not (0.0 < self.p_target < 1.0):
            raise ConfigError(f"LinearCalibration.p_target must lie in (0, 1), got {self.p_target!r}")

    @classmethod
    def fit(
        cls,
        tar: npt.ArrayLike,
        non: npt.ArrayLike,
        *,
        p_target: float = 0.5,
        max_iter: int = 100,
    ) -> LinearCalibration:
        """Fit scale and offset on development scores (prior-weighted logistic regression).

        Parameters
        ----------
        tar : array_like, shape (n_tar,), float
            Development target scores.
        non : array_like, shape (n_non,), float
            Development non-target scores.
        p_target : float, default 0.5
            Training prior ``P`` of the weighted cross-entropy, in (0, 1).
        max_iter : int, default 100
            Iteration limit of the (Newton trust-region) optimiser.

        Returns
        -------
        LinearCalibration

        Raises
        ------
        DataError
            Empty, non-1-D or non-finite scores.
        ConfigError
            ``p_target`` outside (0, 1).

        Warns
        -----
        ConvergenceWarning
            When the optimiser stops early, e.g. for separable development scores (the
            optimal scale is then infinite and the fitted one merely large).
        """
        if not (0.0 < p_target < 1.0):
            raise ConfigError(f"p_target must lie strictly between 0 and 1, got {p_target!r}")
        t = _finite_1d(tar, "target")
        n = _finite_1d(non, "non-target")
        if t.min() > n.max():
            warnings.warn(
                "calibration: development target and non-target scores are separable; "
                "the maximum-likelihood scale is unbounded and the fitted one is arbitrary",
                ConvergenceWarning,
                stacklevel=2,
            )
        # Standardise for conditioning; map the parameters back at the end.
        s = np.concatenate([t, n])
        loc = float(s.mean())
        spread = float(s.std())
        if spread == 0.0:
            spread = 1.0
        z = (s - loc) / spread
        y = np.concatenate([np.ones(t.size), np.zeros(n.size)])
        w = np.concatenate([np.full(t.size, p_target / t.size), np.full(n.size, (1 - p_target) / n.size)])
        logit_p = math.log(p_target) - math.log1p(-p_target)

        res = minimize(
            lambda th: _objective(th, z, y, w, logit_p)[0],
            x0=np.array([1.0, 0.0]),
            jac=lambda th: _objective(th, z, y, w, logit_p)[1],
            hess=lambda th: _objective(th, z, y, w, logit_p)[2],
            method="trust-exact",
            options={"gtol": 1e-10, "maxiter": max_iter},
        )
        if not res.success:
            warnings.warn(
                f"calibration: optimiser stopped before convergence ({res.message}); "
                "the parameters may be inaccurate",
                ConvergenceWarning,
                stacklevel=2,
            )
        a_z, b_z = (float(v) for v in res.x)
        scale = a_z / spread
        offset = b_z - a_z * loc / spread
        cal = cls(scale=scale, offset=offset, p_target=float(p_target))
        logger.info(
            "linear calibration fitted on %d target / %d non-target trials: scale=%.6g "
            "offset=%.6g (p_target=%g, %d iterations, cross-entropy %.6g nats)",
            t.size,
            n.size,
            scale,
            offset,
            p_target,
            res.nit,
            res.fun,
        )
        return cal

    def __call__(self, scores: npt.ArrayLike) -> FloatArray:
        """Map raw scores to LLRs.

        Parameters
        ----------
        scores : array_like, any shape, float
            Raw scores.

        Returns
        -------
        ndarray, same shape, float64
            Natural-log likelihood ratios ``scale * scores + offset``.
        """
        return self.scale * np.asarray(scores, dtype=np.float64) + self.offset

    def to_dict(self) -> dict[str, float]:
        """A JSON-serialisable dict ``{"scale", "offset", "p_target"}``."""
        return {"scale": float(self.scale), "offset": float(self.offset), "p_target": float(self.p_target)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearCalibration:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ConfigError."""
        keys = {"scale", "offset", "p_target"}
        unknown = set(d) - keys
        missing = {"scale", "offset"} - set(d)
        if unknown or missing:
            raise ConfigError(
                f"calibration dict: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
        try:
            scale = float(d["scale"])
            offset = float(d["offset"])
            p_target = float(d.get("p_target", 0.5))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"calibration dict has a non-numeric value: {exc}") from exc
        return cls(scale=scale, offset=offset, p_target=p_target)


def fit_linear_calibration(
    tar: npt.ArrayLike, non: npt.ArrayLike, *, p_target: float = 0.5
) -> LinearCalibration:
    """Functional alias of :meth:`LinearCalibration.fit`."""
    return LinearCalibration.fit(tar, non, p_target=p_target)
