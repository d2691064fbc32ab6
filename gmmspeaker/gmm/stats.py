"""Sufficient statistics of a Gaussian mixture over frames (the E-step): the public API.

Statistics are small and additive: a chunk's (or a shard's, or a worker's) statistics
are summed with ``+`` and the M-step / MAP adaptation reads the sum. The formulas live in
:mod:`gmmspeaker.gmm.kernel`; this module is the documented entry point (and keeps the
names other code imports from here: :class:`Stats`, :class:`MixtureParams`,
:func:`as_params`, :func:`accumulate`, :func:`log_densities`, :func:`frame_loglik`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ModelError
from gmmspeaker.gmm.kernel import (
    FLOAT32_UNIT_ROUNDOFF,
    PreparedDiag,
    Stats,
    blocks,
    check_block,
    clipped_exp,
    component_logdens,
    diag_operands,
    exp_clip_level,
    logsumexp,
    prepare,
    prepared_stats,
    resolve_dtype,
)
from gmmspeaker.gmm.params import COVARIANCE_TYPES, MixtureParams, as_params

__all__ = [
    "Stats",
    "MixtureParams",
    "accumulate",
    "log_densities",
    "frame_loglik",
    "statistics_operands",
    "as_params",
    "clipped_exp",
    "exp_clip_level",
    "COVARIANCE_TYPES",
    "FLOAT32_UNIT_ROUNDOFF",
]


def statistics_operands(X: FloatArray, gmm: Any, *, dtype: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The two operands of the statistics GEMM for frames X, exactly as the E-step forms them.

    Instrumentation (tests, benchmarks): the E-step computes the statistics of a block as
    ``P.T @ A``; this returns ``P`` and ``A`` for all of X as one block.

    Parameters
    ----------
    X : ndarray, shape (n, D)
    gmm : GaussianMixture or MixtureParams
        A diagonal or spherical mixture.
    dtype : {None, "float32", "float64"}
        Compute dtype (None: the model's option, float32 by default).

    Returns
    -------
    P : ndarray, shape (n, K), compute dtype
        Unnormalised posteriors ``exp(max(L - max_k L, clip))``: every value is 0 (a
        zero-weight component) or ``>= exp(clip)``.
    A : ndarray, shape (n, 2D+1), compute dtype
        ``[(x-c)**2, x-c, 1] / s`` with ``c`` the shift and ``s`` each row sum of ``P``, so
        that ``P.T @ A`` is ``[S, F, N]`` in shifted coordinates.
    """
    params = as_params(gmm)
    dt = resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    prep = prepare(params, dt)
    if not isinstance(prep, PreparedDiag):
        raise ModelError(
            f"statistics_operands needs a diag or spherical mixture, got {params.covariance_type!r}"
        )
    P, A, _, _ = diag_operands(check_block(X, params.n_dims), prep)
    return P, A


def accumulate(
    X: FloatArray,
    gmm: Any,
    *,
    chunk_size: int = 20000,
    second_order: bool = True,
    dtype: Any = None,
    n_threads: int = 1,
) -> Stats:
    """Sufficient statistics of frames under a mixture: the E-step as GEMMs over chunks.

    Parameters
    ----------
    X : ndarray, shape (n_frames, D), float32 or float64
        Frames as rows.
    gmm : GaussianMixture or MixtureParams
        A fitted mixture.
    chunk_size : int
        Frames processed at once; memory is O(chunk_size x K), never O(n_frames x K).
    second_order : bool
        Also accumulate ``S`` (diag: (K, D); full: (K, D, D); tied: (1, D, D), the total
        second moment, which is all the tied M-step needs).
    dtype : {None, "float32", "float64"}
        Precision of the heavy products; None uses the model's ``dtype`` option
        (float32 for diag/spherical, float64 for full/tied). Statistics are always
        accumulated and returned in float64.
    n_threads : int
        Threads over chunks (each with one BLAS thread); 1 leaves BLAS its own threads.

    Returns
    -------
    Stats
        ``n`` (K,), ``f`` (K, D), ``s`` or None, ``loglik`` (sum of ``log p(x_t)``), ``n_frames``.
        Zero frames give zero statistics.

    Notes
    -----
    **float32 error bound (diag, spherical).** Let ``u = 2**-24`` (float32 unit roundoff),
    ``gamma_m = m u / (1 - m u)``, ``r = b + g + 3`` (139, ``STAT_ROUNDINGS`` in
    :mod:`gmmspeaker.gmm.kernel`) with ``b = _STAT_BLOCK`` (128) the frames per float32 GEMM
    and ``g = _STAT_GROUP`` (8) the consecutive GEMM results summed in float32 before a
    float64 addition (so a term meets at most ``b + g - 2`` float32 additions, one product
    and 4 roundings of its operands), ``c`` the shift (weighted mean of the means) and ``g_tk``
    the posteriors the float32 E-step computed (before their float32 normalisation). For
    the posterior-weighted mean ``m_kd`` and variance ``v_kd`` of the data under ``g``, the
    values ``F/N`` and ``S/N - (F/N)**2`` from these statistics satisfy, to first order in u,

    * ``|dv_kd| <= 6 gamma_r Q_kd + 2 gamma_(K+1) v_kd`` with
      ``Q_kd = v_kd + (m_kd - c_d)**2`` (the data's spread about the shift), and
    * ``|dm_kd| <= 2 gamma_r sqrt(Q_kd) + gamma_(K+1) E_k|x_d - m_kd|``.

    The first term would grow with the distance of the component from the shift; it does
    not, because a component with ``(mu_kd - c_d)**2 > _FAR var_kd`` (64 variances) in any
    dimension at the current parameters is accumulated in float64 (same posteriors, frames
    and products in float64) on every frame where its unnormalised posterior exceeds
    ``tau = _FAR_TAU = 2**-40`` (a few % of the frames: far components are narrow); its
    first term becomes ``6 gamma64_n Q_kd + 6 gamma_r tau sum_t (x_td - c_d)**2 / N_k``
    (the float32 remainder of weights ``<= tau``), negligible. So for every component
    ``|dv| / v <= 6 gamma_r (1 + 64) + 2 gamma_(K+1)`` (``~3.2e-3`` worst case at
    ``r = 139``, plus the tau term; a rounding worst case: measured errors are 100-1000x
    smaller),
    independent of the distance from the shift, the data's scale and the BLAS kernel's
    summation order. The second terms come from rounding the posteriors'
    normalisation (a per-frame weight perturbation; a weighted variance moves by at most
    ``2 delta / (1 - delta)`` relative under weights perturbed by ``delta``).

    Not covered: the error of the posteriors themselves (the float32 log-density GEMM of
    ``[(x-c)**2, x-c, 1]`` against the natural parameters, absolute error up to
    ``gamma_(2D+1)`` times the sum of the terms' magnitudes), which perturbs the weights
    ``g`` as above. float64 (``dtype="float64"``) computes everything in float64.

    Underflow: shifted log-likelihoods are clipped at -50 (float32) / -600 (float64) before
    ``exp``, so no subnormal number enters the statistics products (``_CLIP`` in :mod:`gmmspeaker.gmm.kernel`, where these constants live).
    """
    params = as_params(gmm)
    dt = resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = check_block(X, params.n_dims)
    full = params.covariance_type in ("full", "tied")
    K, D = params.n_components, params.n_dims
    if X.shape[0] == 0:
        mode = (
            None
            if not second_order
            else ("diag" if not full else ("full" if params.covariance_type == "full" else "tied"))
        )
        return Stats.zeros(K, D, second_order=mode)
    prep = prepare(params, dt)
    return prepared_stats(X, prep, second_order=second_order, chunk_size=chunk_size, n_threads=n_threads)


def log_densities(X: FloatArray, gmm: Any, *, chunk_size: int = 20000, dtype: Any = "float64") -> FloatArray:
    """Weighted log-densities ``log w_k + log N(x_t | mu_k, Sigma_k)``.

    Parameters
    ----------
    X : ndarray, shape (n_frames, D)
    gmm : GaussianMixture or MixtureParams
    chunk_size : int
        Frames per GEMM block.
    dtype : {"float64", "float32", None}
        Precision of the GEMM (None: the model's option). The result is float64.

    Returns
    -------
    ndarray, shape (n_frames, K), float64
    """
    params = as_params(gmm)
    dt = resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = check_block(X, params.n_dims)
    prep = prepare(params, dt)
    out = np.empty((X.shape[0], params.n_components), dtype=np.float64)
    for a, b in blocks(X.shape[0], chunk_size):
        out[a:b] = component_logdens(X[a:b], prep)
    return out


def frame_loglik(X: FloatArray, gmm: Any, *, chunk_size: int = 20000, dtype: Any = "float64") -> FloatArray:
    """``log p(x_t)`` per frame, shape (n_frames,), float64, computed chunk by chunk."""
    params = as_params(gmm)
    dt = resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = check_block(X, params.n_dims)
    prep = prepare(params, dt)
    out = np.empty(X.shape[0], dtype=np.float64)
    for a, b in blocks(X.shape[0], chunk_size):
        out[a:b] = logsumexp(component_logdens(X[a:b], prep).astype(np.float64, copy=False))
    return out
