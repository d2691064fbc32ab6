"""The EM M-step: maximum-likelihood parameters from summed statistics, variance floors
and the re-seeding of degenerate components."""

from __future__ import annotations

import logging

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.gmm.kernel import Stats
from gmmspeaker.gmm.params import MixtureParams

__all__ = ["m_step", "floor_full", "component_sd", "reseed_components", "SPLIT_EPS", "MIN_COUNT"]

logger = logging.getLogger(__name__)

#: Means of a split (or re-seeded) component move by +/- this many standard deviations.
SPLIT_EPS = 0.2
#: A component with fewer (soft) frames than this is always degenerate.
MIN_COUNT = 1e-6


def floor_full(cov: FloatArray, floor: FloatArray) -> FloatArray:
    """Make each covariance >= diag(floor) (Loewner order), changing only those that are not.

    In the coordinates scaled by ``sqrt(floor)`` the eigenvalues are clipped at 1, so every
    variance stays above its floor and the matrix stays positive definite.
    """
    if not (floor > 0).all():
        return cov
    s = np.sqrt(floor)
    C = cov / (s[:, None] * s[None, :])
    evals, evecs = np.linalg.eigh(C)
    bad = evals.min(axis=-1) < 1.0
    if not bad.any():
        return cov
    out = cov.copy()
    ev = np.maximum(evals[bad], 1.0)
    V = evecs[bad]
    Cf = (V * ev[..., None, :]) @ np.swapaxes(V, -1, -2)
    Cf = 0.5 * (Cf + np.swapaxes(Cf, -1, -2))
    out[bad] = Cf * (s[:, None] * s[None, :])
    return out


def component_sd(params: MixtureParams) -> FloatArray:
    """Per-dimension standard deviations (K, D) of every component."""
    K, D = params.means.shape
    cov = params.covariances
    if params.covariance_type == "diag":
        return np.sqrt(cov)
    if params.covariance_type == "spherical":
        return np.repeat(np.sqrt(cov)[:, None], D, axis=1)
    if params.covariance_type == "full":
        return np.sqrt(np.diagonal(cov, axis1=1, axis2=2))
    return np.repeat(np.sqrt(np.diag(cov))[None, :], K, axis=0)


def m_step(
    stats: Stats,
    *,
    covariance_type: str,
    floor: FloatArray,
    min_weight: float = 0.0,
) -> tuple[MixtureParams, list[int]]:
    """Maximum-likelihood parameters from summed statistics, with floors and re-seeding.

    Parameters
    ----------
    stats : Stats
        Summed E-step statistics (``s`` required; tied: (1, D, D) total second moment).
    covariance_type : {"diag", "spherical", "full", "tied"}
    floor : ndarray, shape (D,), float64
        Absolute per-dimension variance floor (full/tied: the covariance is made
        ``>= diag(floor)``; spherical: the mean floor).
    min_weight : float
        Components with weight below this, or fewer than 1e-6 frames, are degenerate:
        each is re-seeded by splitting the currently heaviest component.

    Returns
    -------
    params : MixtureParams
    reseeded : list of int
        Indices of the re-seeded components (empty in the normal case).
    """
    if stats.s is None:
        raise ValueError("m_step needs second-order statistics")
    n = np.asarray(stats.n, dtype=np.float64)
    K, D = stats.f.shape
    total = float(n.sum())
    degenerate = n < max(min_weight * total, MIN_COUNT)
    if degenerate.all():
        raise DataError("every component lost its frames; the data may be empty or all identical")
    safe_n = np.where(degenerate, 1.0, n)
    means = stats.f / safe_n[:, None]
    if covariance_type in ("diag", "spherical"):
        var = stats.s / safe_n[:, None] - means**2
        if covariance_type == "diag":
            cov = np.maximum(var, floor[None, :])
        else:
            cov = np.maximum(var.mean(axis=1), float(floor.mean()))
    elif covariance_type == "full":
        cov = stats.s / safe_n[:, None, None] - means[:, :, None] * means[:, None, :]
        cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        cov[degenerate] = np.diag(floor if (floor > 0).all() else np.ones(D))
        cov = floor_full(cov, floor)
    elif covariance_type == "tied":
        live = ~degenerate
        between = (stats.f[live].T / safe_n[live]) @ stats.f[live]
        cov = (stats.s[0] - between) / total
        cov = floor_full(0.5 * (cov + cov.T)[None], floor)[0]
    else:
        raise ConfigError(f"unknown covariance_type {covariance_type!r}")
    weights = n / total
    params = MixtureParams(weights, means, cov, covariance_type)
    reseeded = [int(k) for k in np.flatnonzero(degenerate)]
    if reseeded:
        params = reseed_components(params, reseeded)
        logger.warning(
            "%d component(s) %s had (almost) no frames (weight < %.3g); re-seeded by splitting the heaviest",
            len(reseeded),
            reseeded[:10],
            max(min_weight, MIN_COUNT / max(total, 1.0)),
        )
    return params, reseeded


def reseed_components(params: MixtureParams, dead: list[int]) -> MixtureParams:
    """Replace each dead component by one half of the currently heaviest live component."""
    w = params.weights.copy()
    mu = params.means.copy()
    cov = params.covariances.copy()
    sd = component_sd(params)
    live = np.ones(w.shape[0], dtype=bool)
    live[dead] = False
    w[dead] = 0.0
    for k in dead:  # rare event, a handful of components
        j = int(np.argmax(np.where(live, w, -1.0)))
        delta = SPLIT_EPS * sd[j]
        mu[k] = mu[j] + delta
        mu[j] = mu[j] - delta
        w[j] *= 0.5
        w[k] = w[j]
        if params.covariance_type != "tied":
            cov[k] = cov[j]
        sd[k] = sd[j]
        live[k] = True
    return MixtureParams(w / w.sum(), mu, cov, params.covariance_type)
