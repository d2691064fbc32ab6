"""Score fusion: linear logistic regression (BOSARIS / FoCal style) and equal weights.

:class:`LinearFusion` maps the scores of several systems for one trial to one natural-log
likelihood ratio ``llr = weights . s + bias``. As in FoCal and BOSARIS
(``train_linear_fuser``), ``weights`` and ``bias`` minimise the prior-weighted
cross-entropy on development trials

.. math::

    C(w, b) = \\frac{P}{N_t} \\sum_{tar} \\log(1 + e^{-(w \\cdot s + b + \\mathrm{logit} P)})
            + \\frac{1 - P}{N_n} \\sum_{non} \\log(1 + e^{w \\cdot s + b + \\mathrm{logit} P}),

so that targets and non-targets count as if their proportion were the training prior
``P`` and ``w . s + b`` is a log-likelihood ratio (not posterior log-odds). With one system
this is exactly :class:`gmmspeaker.scoring.calibration.LinearCalibration`. The objective
is convex; it is minimised by L-BFGS on standardised scores.
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

__all__ = ["LinearFusion", "equal_weight_fusion"]

logger = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]


def _score_matrix(scores: npt.ArrayLike, *, allow_nan: bool) -> FloatArray:
    S = np.asarray(scores, dtype=np.float64)
    if S.ndim == 1:
        S = S[:, None]
    if S.ndim != 2 or S.shape[1] == 0:
        raise DataError(f"fusion scores must have shape (n_trials, n_systems), got {np.shape(scores)}")
    if not allow_nan and not np.all(np.isfinite(S)):
        raise DataError(
            f"fusion training scores hold {int(np.count_nonzero(~np.isfinite(S)))} NaN/inf value(s)"
        )
    return S


def _objective(
    theta: FloatArray, Z: FloatArray, y: FloatArray, w: FloatArray, logit_p: float
) -> tuple[float, FloatArray]:
    """Weighted cross-entropy (nats) and its gradient in ``theta = (weights..., bias)``."""
    u = Z @ theta[:-1] + theta[-1] + logit_p
    sign = 2.0 * y - 1.0
    f = float(np.sum(w * np.logaddexp(0.0, -sign * u)))
    r = w * (expit(u) - y)
    return f, np.concatenate([Z.T @ r, [np.sum(r)]])


@dataclass(frozen=True, kw_only=True)
class LinearFusion:
    """An affine map from several systems' scores to one log-likelihood ratio.

    Attributes
    ----------
    weights : ndarray, shape (n_systems,), float64
        One weight per system.
    bias : float
        Offset, in nats.
    p_target : float
        Training prior ``P`` (kept for the record; the output is an LLR).
    """

    weights: FloatArray
    bias: float
    p_target: float = 0.5

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)):
            raise ConfigError(f"LinearFusion.weights must be a finite 1-D array, got {self.weights!r}")
        if not math.isfinite(self.bias):
            raise ConfigError(f"LinearFusion.bias must be finite, got {self.bias!r}")
        if not 0.0 < self.p_target < 1.0:
            raise ConfigError(f"LinearFusion.p_target must lie in (0, 1), got {self.p_target!r}")
        object.__setattr__(self, "weights", w)

    @classmethod
    def fit(
        cls,
        scores: FloatArray,
        is_target: BoolArray,
        *,
        p_target: float = 0.5,
        max_iter: int = 1000,
    ) -> LinearFusion:
        """Fit the weights and bias on development trials (prior-weighted logistic regression).

        Parameters
        ----------
        scores : ndarray, shape (n_trials, n_systems), float
            Development scores, one column per system (a 1-D array is one system).
        is_target : ndarray, shape (n_trials,), bool
            Key of each trial.
        p_target : float, default 0.5
            Training prior ``P`` in (0, 1).
        max_iter : int, default 1000
            Iteration limit of L-BFGS.

        Returns
        -------
        LinearFusion

        Raises
        ------
        DataError
            Bad shapes, NaN scores, no target or no non-target trial.
        ConfigError
            ``p_target`` outside (0, 1).

        Warns
        -----
        ConvergenceWarning
            L-BFGS stopped early (e.g. separable scores, whose optimal weights are unbounded).
        """
        if not 0.0 < p_target < 1.0:
            raise ConfigError(f"fusion p_target must lie strictly between 0 and 1, got {p_target!r}")
        S = _score_matrix(scores, allow_nan=False)
        key = np.asarray(is_target, dtype=bool).ravel()
        if key.shape[0] != S.shape[0]:
            raise DataError(f"fusion: {key.shape[0]} keys for {S.shape[0]} trials")
        n_t, n_n = int(key.sum()), int((~key).sum())
        if n_t == 0 or n_n == 0:
            raise DataError(f"fusion training needs target and non-target trials, got {n_t} / {n_n}")
        loc = S.mean(axis=0)
        spread = S.std(axis=0)
        spread[spread == 0.0] = 1.0
        Z = (S - loc) / spread
        y = key.astype(np.float64)
        w = np.where(key, p_target / n_t, (1.0 - p_target) / n_n)
        logit_p = math.log(p_target) - math.log1p(-p_target)
        res = minimize(
            _objective,
            x0=np.zeros(S.shape[1] + 1),
            args=(Z, y, w, logit_p),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": 1e-12, "ftol": 1e-15, "maxcor": 20},
        )
        if not res.success and "ABNORMAL" not in str(res.message).upper():
            warnings.warn(
                f"fusion: L-BFGS stopped before convergence ({res.message}); the weights may be inaccurate",
                ConvergenceWarning,
                stacklevel=2,
            )
        wz, bz = res.x[:-1], float(res.x[-1])
        weights = wz / spread
        bias = bz - float(np.sum(wz * loc / spread))
        fusion = cls(weights=weights, bias=bias, p_target=float(p_target))
        logger.info(
            "linear fusion of %d systems on %d target / %d non-target trials: weights=%s bias=%.6g "
            "(p_target=%g, cross-entropy %.6g nats)",
            S.shape[1],
            n_t,
            n_n,
            np.array2string(weights, precision=5),
            bias,
            p_target,
            res.fun,
        )
        return fusion

    def apply(self, scores: FloatArray) -> FloatArray:
        """Fuse scores.

        Parameters
        ----------
        scores : ndarray, shape (n_trials, n_systems), float
            NaN in any system gives NaN for that trial.

        Returns
        -------
        ndarray, shape (n_trials,), float64
            Log-likelihood ratios.
        """
        S = _score_matrix(scores, allow_nan=True)
        if S.shape[1] != self.weights.size:
            raise DataError(f"fusion expects {self.weights.size} systems, got scores of {S.shape[1]}")
        return S @ self.weights + self.bias

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"weights": [...], "bias", "p_target"}``."""
        return {
            "weights": [float(x) for x in self.weights],
            "bias": float(self.bias),
            "p_target": self.p_target,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearFusion:
        """Inverse of :meth:`to_dict`; missing or unknown keys are a ConfigError."""
        if set(d) - {"weights", "bias", "p_target"} or not {"weights", "bias"} <= set(d):
            raise ConfigError(f"fusion dict: expected keys weights, bias[, p_target], got {sorted(d)}")
        try:
            return cls(
                weights=np.asarray(d["weights"], dtype=np.float64),
                bias=float(d["bias"]),
                p_target=float(d.get("p_target", 0.5)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"fusion dict has a non-numeric value: {exc}") from None


def equal_weight_fusion(scores: FloatArray) -> FloatArray:
    """Average of already normalised scores (no training data needed).

    Parameters
    ----------
    scores : ndarray, shape (n_trials, n_systems), float
        Each column normalised beforehand to a common scale (e.g. Z-/S-norm against a cohort).

    Returns
    -------
    ndarray, shape (n_trials,), float64
        Row means; NaN where any system is NaN.
    """
    S = _score_matrix(scores, allow_nan=True)
    return S.mean(axis=1)
