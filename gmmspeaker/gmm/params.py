"""The parameters of a Gaussian mixture (:class:`MixtureParams`), read from any mixture object.

gmmspeaker's :class:`~gmmspeaker.gmm.model.GaussianMixture`, a scikit-learn
``GaussianMixture`` or any object with the fitted attributes ``weights_``, ``means_``,
``covariances_`` (and ``covariance_type``) is read through :func:`as_params`, the one public
way the E-step, MAP adaptation and scoring take a UBM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ModelError

__all__ = ["MixtureParams", "COVARIANCE_TYPES", "as_params", "covariance_shape", "n_free_parameters"]

COVARIANCE_TYPES = ("diag", "spherical", "full", "tied")


@dataclass(frozen=True)
class MixtureParams:
    """Plain parameters of a Gaussian mixture (what the E-step and the workers need).

    Attributes
    ----------
    weights : ndarray, shape (K,), float64
    means : ndarray, shape (K, D), float64
    covariances : ndarray, float64
        (K, D) diag, (K,) spherical, (K, D, D) full, (D, D) tied.
    covariance_type : str
    """

    weights: FloatArray
    means: FloatArray
    covariances: FloatArray
    covariance_type: str

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    @property
    def n_dims(self) -> int:
        return int(self.means.shape[1])

    def diag_variances(self) -> FloatArray:
        """Per-dimension variances (K, D) of a diag or spherical mixture."""
        if self.covariance_type == "spherical":
            return np.repeat(self.covariances[:, None], self.n_dims, axis=1)
        return self.covariances


def covariance_shape(covariance_type: str, n_components: int, n_dims: int) -> tuple[int, ...]:
    """Shape of ``covariances_`` for a covariance type: (K, D), (K,), (K, D, D) or (D, D)."""
    K, D = n_components, n_dims
    return {"diag": (K, D), "spherical": (K,), "full": (K, D, D), "tied": (D, D)}[covariance_type]


def _infer_covariance_type(cov: np.ndarray, K: int, D: int) -> str:
    if cov.shape == (K,):
        return "spherical"
    if cov.shape == (K, D, D):
        return "full"
    if cov.shape == (K, D):
        return "diag"
    if cov.shape == (D, D):
        return "tied"
    return "unknown"


def as_params(gmm: Any) -> MixtureParams:
    """The parameters of a fitted Gaussian mixture as float64 :class:`MixtureParams`.

    Parameters
    ----------
    gmm : MixtureParams or object
        A :class:`MixtureParams` (returned as is), or any object with ``weights_`` (K,),
        ``means_`` (K, D) and ``covariances_`` (shape by type) -- gmmspeaker's or
        scikit-learn's ``GaussianMixture``. Its ``covariance_type`` attribute ("diag",
        "spherical", "full", "tied") says how to read ``covariances_``; without that
        attribute the type is inferred from the shape (a (K, D) array, also when K = D,
        is read as diagonal).

    Returns
    -------
    MixtureParams
        weights (K,), means (K, D), covariances, all float64, and the covariance type.

    Raises
    ------
    ModelError
        A missing attribute, an unknown covariance type, or covariances whose shape does
        not match the type; the message names the object's class.
    """
    if isinstance(gmm, MixtureParams):
        return gmm
    name = type(gmm).__name__
    try:
        w = np.asarray(gmm.weights_, dtype=np.float64)
        mu = np.asarray(gmm.means_, dtype=np.float64)
        cov = np.asarray(gmm.covariances_, dtype=np.float64)
    except AttributeError as exc:
        raise ModelError(
            f"{name} lacks weights_/means_/covariances_ (not a fitted Gaussian mixture): {exc}"
        ) from None
    if mu.ndim != 2 or w.shape != (mu.shape[0],):
        raise ModelError(
            f"{name}: weights_ {w.shape} and means_ {mu.shape} do not match; expected (K,), (K, D)"
        )
    K, D = mu.shape
    ctype = getattr(gmm, "covariance_type", None)
    if ctype is None:
        ctype = _infer_covariance_type(cov, K, D)
    if ctype not in COVARIANCE_TYPES:
        raise ModelError(f"{name}: unsupported covariance_type {ctype!r}; expected one of {COVARIANCE_TYPES}")
    expected = covariance_shape(str(ctype), K, D)
    if cov.shape != expected:
        raise ModelError(f"{name}: {ctype} covariances_ must have shape {expected}, got {cov.shape}")
    return MixtureParams(w, mu, cov, str(ctype))


def n_free_parameters(n_components: int, n_dims: int, covariance_type: str) -> int:
    """Free parameters of a mixture: weights K-1, means K*D, covariances by type."""
    K, D = int(n_components), int(n_dims)
    cov = {"diag": K * D, "spherical": K, "full": K * D * (D + 1) // 2, "tied": D * (D + 1) // 2}
    return int(K - 1 + K * D + cov[covariance_type])
