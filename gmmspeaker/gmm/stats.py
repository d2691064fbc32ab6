"""Sufficient statistics of a Gaussian mixture over frames (the E-step).

Statistics are small and additive: a chunk's (or a shard's, or a worker's) statistics
are summed with ``+`` and the M-step / MAP adaptation reads the sum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import DataError, ModelError

__all__ = ["Stats", "MixtureParams", "accumulate", "log_densities", "frame_loglik", "COVARIANCE_TYPES"]

#: Unit roundoff of float32 (``2**-24``), used in the stated error bounds.
FLOAT32_UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2.0


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
        for a tied mixture (1, D, D), the total ``sum_t x_t x_t^T``; None when not requested.
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

    def __add__(self, other: Stats) -> Stats:
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
    def zeros(cls, n_components: int, n_dims: int, *, second_order: str | None = "diag") -> Stats:
        """Empty statistics; ``second_order`` is ``"diag"``, ``"full"``, ``"tied"`` (1, D, D) or None."""
        if second_order == "diag":
            s: FloatArray | None = np.zeros((n_components, n_dims))
        elif second_order == "full":
            s = np.zeros((n_components, n_dims, n_dims))
        elif second_order == "tied":
            s = np.zeros((1, n_dims, n_dims))
        else:
            s = None
        return cls(np.zeros(n_components), np.zeros((n_components, n_dims)), s, 0.0, 0)


# ---------------------------------------------------------------------------------------
# Model parameters prepared for the E-step
# ---------------------------------------------------------------------------------------

#: Shifted log-likelihoods ``L - max`` are clipped here before ``exp`` (underflow guard).
#: Every ``exp`` result is a factor of a product in the statistics GEMM (posterior times a
#: scaled augmented frame ``[(x-c)**2, x-c, 1] / s``), and a product (or a GEMM partial sum)
#: in the subnormal range costs ~10-60x on x86 (measured: 26 ms instead of 2 ms for one
#: 4096 x 512 float32 statistics product; ``exp`` itself is ~7x slower when its results are
#: subnormal, in float32 as in float64). The level is derived from the factors:
#:
#: * the posterior is ``p = exp(L - max) >= exp(clip)``;
#: * it is multiplied by ``1/s`` with ``1 <= s <= K`` (``s`` sums ``p`` over components, the
#:   largest term is exp(0) = 1), so by a factor ``>= 2**-20`` for ``K <= 2**20``, and by
#:   ``|x-c|`` or ``(x-c)**2``, which we guard down to ``2**-20`` (``|x-c| >= 2**-10``;
#:   smaller feature offsets are rare and merely risk a slow product, never a wrong one);
#: * so every product is ``>= exp(clip) * 2**-40`` and stays normal when
#:   ``exp(clip) >= tiny * 2**40``: float32 ``tiny = 2**-126`` needs ``clip >= -59.6``,
#:   float64 ``tiny = 2**-1022`` needs ``clip >= -680.7``.
#:
#: We take -50 (``e**-50 = 2**-72.1``, margin ``2**13.9`` over float32 ``tiny``) and -600
#: (``2**-865.6``, margin ``2**116``). What it costs: a posterior below ``e**clip`` times
#: the frame's largest is raised to that, which changes a frame's statistics by at most
#: ``K e**clip`` relative (``<= 2**-52`` for ``K <= 2**20`` in float32): below float32's
#: own rounding (``2**-24``).
_CLIP = {np.dtype(np.float32): -50.0, np.dtype(np.float64): -600.0}
#: float32 statistics are summed in float64 over sub-blocks of this many frames: a float32
#: GEMM sums at most ``_STAT_BLOCK`` products before a float64 addition, which bounds its
#: rounding error by ``gamma_(b+4)`` whatever the BLAS kernel's summation order (see
#: :func:`accumulate`).
_STAT_BLOCK = 128
#: Components whose squared distance from the shift exceeds this many variances (in some
#: dimension, at the current parameters) get their statistics in float64: for them the
#: float32 error, proportional to ``E[(x-c)**2] / var``, would no longer be bounded by a
#: small constant (see :func:`accumulate`).
_FAR = 64.0
#: ... on the frames where their (unnormalised) posterior exceeds this (``2**-40``); the
#: rest of their weight, at most this per frame, stays in the float32 product.
_FAR_TAU = 2.0**-40
#: Elements of one (frames x K) posterior tile: the E-step of a chunk runs over tiles of
#: ``_TILE // K`` frames so the element-wise passes stay in cache (2**17 float32 = 512 KiB,
#: within a core's L2; measured faster than 2**21 at K = 512) and threads balance.
_TILE = 1 << 17
_LOG_2PI = float(np.log(2.0 * np.pi))
#: Element budget of one temporary block in the full-covariance E-step (8M doubles = 64 MB).
_FULL_BUDGET = 8_000_000

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


def as_params(gmm: Any) -> MixtureParams:
    """The :class:`MixtureParams` of a fitted ``GaussianMixture`` (or the params themselves)."""
    if isinstance(gmm, MixtureParams):
        return gmm
    to_params = getattr(gmm, "_params", None)
    if to_params is None:
        raise TypeError(f"expected a GaussianMixture or MixtureParams, got {type(gmm).__name__}")
    return to_params()


def _resolve_dtype(dtype: Any, covariance_type: str) -> np.dtype:
    if dtype is None:
        return np.dtype(np.float32) if covariance_type in ("diag", "spherical") else np.dtype(np.float64)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


@dataclass(frozen=True)
class _DiagPrep:
    """Natural parameters of a diag mixture stacked for one fused GEMM.

    ``L = [(x-c)**2, x-c, 1] @ W`` gives ``log w_k + log N(x | k)`` for every component.
    """

    W: np.ndarray  # (2D+1, K) in the compute dtype
    shift: FloatArray  # (D,) float64, subtracted from every frame (conditioning in float32)
    dtype: np.dtype
    n_dims: int
    #: components whose statistics are computed in float64 (float32 only; see ``_FAR``)
    far: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))


@dataclass(frozen=True)
class _FullPrep:
    """Cholesky factors of the precisions (full or tied), means in shifted coordinates."""

    prec_chol: FloatArray  # (K, D, D) full or (D, D) tied; x @ prec_chol whitens
    means: FloatArray  # (K, D), shifted
    const: FloatArray  # (K,) log w_k - D/2 log 2pi + log det prec_chol
    shift: FloatArray  # (D,)
    tied: bool
    dtype: np.dtype
    n_dims: int


def _precision_cholesky(cov: FloatArray) -> FloatArray:
    """Upper factor U with ``U U^T = cov^{-1}`` for a batch (..., D, D), via Cholesky of cov.

    ``cov = L L^T`` so ``cov^{-1} = L^{-T} L^{-1}`` and ``U = L^{-T}``; ``L^{-1}`` is a
    triangular solve against the identity (no general inverse of ``cov``).
    """
    from scipy.linalg import solve_triangular

    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError as exc:
        raise ModelError("a covariance matrix is not positive definite; raise the variance floor") from exc
    eye = np.eye(cov.shape[-1])
    if chol.ndim == 2:
        return solve_triangular(chol, eye, lower=True).T
    out = np.empty_like(chol)
    for k in range(chol.shape[0]):  # small D x D solves, once per model preparation
        out[k] = solve_triangular(chol[k], eye, lower=True).T
    return out


def _prepare(params: MixtureParams, dtype: np.dtype) -> _DiagPrep | _FullPrep:
    w = np.asarray(params.weights, dtype=np.float64)
    mu = np.asarray(params.means, dtype=np.float64)
    K, D = mu.shape
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    shift = w @ mu / max(float(w.sum()), np.finfo(float).tiny)
    # exactly representable in the compute dtype: the frames are shifted by this very value
    shift = shift.astype(dtype).astype(np.float64)
    mu_c = mu - shift
    if params.covariance_type in ("diag", "spherical"):
        var = np.asarray(params.diag_variances(), dtype=np.float64)
        prec = 1.0 / var
        W = np.empty((2 * D + 1, K), dtype=np.float64)
        W[:D] = -0.5 * prec.T
        W[D : 2 * D] = (prec * mu_c).T
        W[2 * D] = log_w - 0.5 * (D * _LOG_2PI + np.log(var).sum(1) + (prec * mu_c**2).sum(1))
        far = np.empty(0, dtype=np.intp)
        if dtype == np.dtype(np.float32):
            far = np.flatnonzero((prec * mu_c**2).max(1) > _FAR)
        return _DiagPrep(W=np.ascontiguousarray(W, dtype=dtype), shift=shift, dtype=dtype, n_dims=D, far=far)
    tied = params.covariance_type == "tied"
    pc = _precision_cholesky(np.asarray(params.covariances, dtype=np.float64))
    log_det = np.log(np.diagonal(pc, axis1=-2, axis2=-1)).sum(-1)
    const = log_w - 0.5 * D * _LOG_2PI + log_det
    return _FullPrep(
        prec_chol=pc,
        means=mu_c,
        const=np.asarray(const, dtype=np.float64),
        shift=shift,
        tied=tied,
        dtype=dtype,
        n_dims=D,
    )


# ---------------------------------------------------------------------------------------
# Block kernels
# ---------------------------------------------------------------------------------------


def _diag_augmented(X: np.ndarray, prep: _DiagPrep) -> np.ndarray:
    """``[(x-c)**2, x-c, 1]``, shape (n, 2D+1), in the compute dtype."""
    n, D = X.shape
    A = np.empty((n, 2 * D + 1), dtype=prep.dtype)
    np.subtract(X, prep.shift.astype(prep.dtype), out=A[:, D : 2 * D], casting="unsafe")
    np.square(A[:, D : 2 * D], out=A[:, :D])
    A[:, 2 * D] = 1.0
    return A


def _full_logdens(X: np.ndarray, prep: _FullPrep) -> np.ndarray:
    """``log w_k + log N(x | k)`` for a full or tied mixture, (n, K) float64."""
    Xc = np.asarray(X, dtype=np.float64) - prep.shift
    n = Xc.shape[0]
    K, D = prep.means.shape
    if prep.tied:
        Y = Xc @ prep.prec_chol
        M = prep.means @ prep.prec_chol
        maha = (Y**2).sum(1)[:, None] - 2.0 * (Y @ M.T) + (M**2).sum(1)[None, :]
        np.maximum(maha, 0.0, out=maha)
        return prep.const[None, :] - 0.5 * maha
    out = np.empty((n, K), dtype=np.float64)
    mu_w = np.einsum("kd,kde->ke", prep.means, prep.prec_chol)  # (K, D) whitened means
    kb = max(1, min(K, _FULL_BUDGET // max(1, n * D)))
    for a in range(0, K, kb):  # groups of components sized to the memory budget
        b = min(K, a + kb)
        Y = np.matmul(Xc[None, :, :], prep.prec_chol[a:b])  # (kb, n, D)
        Y -= mu_w[a:b, None, :]
        out[:, a:b] = (np.einsum("knd,knd->kn", Y, Y)).T
    return prep.const[None, :] - 0.5 * out


def exp_clip_level(dtype: Any) -> float:
    """Floor applied to shifted log-likelihoods before ``exp`` (see ``_CLIP``), float32 or float64."""
    return _CLIP[np.dtype(dtype)]


def clipped_exp(L: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """``exp(max(L, clip))`` for shifted log-likelihoods ``L <= 0`` (float32 or float64).

    Use it wherever an ``exp`` result feeds a product: the result is never subnormal
    (``>= exp(clip)``, see ``_CLIP`` for the derivation of the level), so products with
    the factors of an E-step stay normal numbers. ``out`` may be ``L`` (in place).

    Parameters
    ----------
    L : ndarray, float32 or float64
        Log-likelihoods shifted by their row maximum (values ``<= 0``; ``-inf`` allowed).
    out : ndarray, optional
        Output array of L's shape and dtype.

    Returns
    -------
    ndarray, same shape and dtype as L
    """
    out = np.maximum(L, _CLIP[L.dtype], out=out)
    return np.exp(out, out=out)


def _shifted_log_post(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In place: ``L <- exp(L - max)`` (clipped), returns (row max, row sum) in L's dtype."""
    m = L.max(axis=1)
    m[~np.isfinite(m)] = 0.0  # a frame with -inf everywhere (zero weights only) stays -inf
    L -= m[:, None]
    clipped_exp(L, out=L)
    s = L.sum(axis=1)
    return m, s


@dataclass
class _BlockStats:
    """Statistics of one block in (possibly) shifted coordinates."""

    n: np.ndarray
    f: np.ndarray
    s: np.ndarray | None
    loglik: float
    n_frames: int


def _diag_operands(X: np.ndarray, prep: _DiagPrep) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Operands of the statistics GEMM of one block: ``(P, A, m, s)``.

    ``P`` (n, K) holds ``exp(L - m)`` (clipped, unnormalised posteriors) and ``A`` (n, 2D+1)
    the augmented frames ``[(x-c)**2, x-c, 1]`` scaled by ``1/s``, both in the compute
    dtype; ``m`` and ``s`` are each frame's max and sum of ``P``'s row before the scaling.
    """
    A = _diag_augmented(X, prep)
    L = A @ prep.W  # (n, K): the one fused GEMM
    m, s = _shifted_log_post(L)
    # Posterior normalisation folded into the statistics GEMM: scale the (n, 2D+1)
    # augmented frames by 1/s instead of the (n, K) posteriors.
    A *= (1.0 / s)[:, None]
    return L, A, m, s


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
    dt = _resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    prep = _prepare(params, dt)
    if not isinstance(prep, _DiagPrep):
        raise ModelError(
            f"statistics_operands needs a diag or spherical mixture, got {params.covariance_type!r}"
        )
    P, A, _, _ = _diag_operands(_check_block(X, params.n_dims), prep)
    return P, A


def _gemm_tn_sum(P: np.ndarray, A: np.ndarray, block: int) -> np.ndarray:
    """``P.T @ A`` in float64, as float32 (or float64) GEMMs over sub-blocks of ``block`` rows.

    Each GEMM sums at most ``block`` products in the compute dtype, whatever order the BLAS
    kernel chooses; the sub-block results are summed in float64. The loop runs over blocks of
    frames (a few dozen per tile), each one a GEMM.
    """
    n = P.shape[0]
    if P.dtype == np.float64 or n <= block:
        return np.asarray(P.T @ A, dtype=np.float64)
    R = np.zeros((P.shape[1], A.shape[1]))
    tmp = np.empty((P.shape[1], A.shape[1]), dtype=P.dtype)
    for a in range(0, n, block):
        np.matmul(P[a : a + block].T, A[a : a + block], out=tmp)
        R += tmp
    return R


def _far_stats(
    X: np.ndarray, P: np.ndarray, s: np.ndarray, prep: _DiagPrep, second_order: bool
) -> np.ndarray:
    """float64 statistics of the far components on the frames where they have weight.

    In place on ``P``: the far components' posteriors on the frames where any of them
    exceeds ``_FAR_TAU`` are moved out of ``P`` (set to 0, so the float32 GEMM no longer
    sees them) into the float64 product returned, ``(P_far / s).T @ [(x-c)**2, x-c, 1]``
    over those frames: (K_far, 2D+1), or (K_far, D+1) without the first block when not
    ``second_order``. Far components are narrow: a few % of the frames carry their weight.
    """
    n, D = X.shape
    Pf = np.take(P, prep.far, axis=1)  # (n, K_far)
    rows = np.flatnonzero(Pf.max(axis=1) > _FAR_TAU)
    Pf = Pf[rows].astype(np.float64)
    P[np.ix_(rows, prep.far)] = 0.0
    Pf *= (1.0 / s[rows].astype(np.float64))[:, None]
    A = np.empty((rows.size, 2 * D + 1))
    np.subtract(X[rows], prep.shift, out=A[:, D : 2 * D])
    A[:, 2 * D] = 1.0
    if not second_order:
        return Pf.T @ A[:, D:]
    np.square(A[:, D : 2 * D], out=A[:, :D])
    return Pf.T @ A


def _block_stats(X: np.ndarray, prep: _DiagPrep | _FullPrep, second_order: bool) -> _BlockStats:
    D = X.shape[1]
    if isinstance(prep, _DiagPrep):
        L, A, m, s = _diag_operands(X, prep)
        loglik = float(np.sum(m, dtype=np.float64) + np.sum(np.log(s.astype(np.float64))))
        cols = slice(0, 2 * D + 1) if second_order else slice(D, 2 * D + 1)
        far = _far_stats(X, L, s, prep, second_order) if prep.far.size else None
        R = _gemm_tn_sum(L, A[:, cols], _STAT_BLOCK)  # (K, 2D+1) = [S, F, N] or (K, D+1) = [F, N]
        if far is not None:
            R[prep.far] += far
        if second_order:
            return _BlockStats(
                R[:, 2 * D].copy(), R[:, D : 2 * D].copy(), R[:, :D].copy(), loglik, X.shape[0]
            )
        return _BlockStats(R[:, D].copy(), R[:, :D].copy(), None, loglik, X.shape[0])
    L = _full_logdens(X, prep)
    m, s = _shifted_log_post(L)
    loglik = float(np.sum(m) + np.sum(np.log(s)))
    L /= s[:, None]  # posteriors (n, K)
    Xc = np.asarray(X, dtype=np.float64) - prep.shift
    n_k = L.sum(0)
    f = L.T @ Xc
    S: np.ndarray | None = None
    if second_order:
        if prep.tied:
            S = (Xc.T @ Xc)[None]  # only the total second moment is needed
        else:
            iu0, iu1 = np.triu_indices(D)
            K = L.shape[1]
            Su = np.zeros((K, iu0.size))
            rb = max(1, _FULL_BUDGET // max(1, iu0.size))
            for a in range(0, Xc.shape[0], rb):
                Z = Xc[a : a + rb, iu0] * Xc[a : a + rb, iu1]
                Su += L[a : a + rb].T @ Z
            S = np.empty((K, D, D))
            S[:, iu0, iu1] = Su
            S[:, iu1, iu0] = Su
    return _BlockStats(n_k, f, S, loglik, X.shape[0])


def _unshift(total: _BlockStats, shift: FloatArray, full: bool) -> Stats:
    n, f, s = total.n, total.f, total.s
    f_abs = f + n[:, None] * shift[None, :]
    s_abs = None
    if s is not None:
        if not full:
            s_abs = s + 2.0 * f * shift[None, :] + n[:, None] * shift[None, :] ** 2
        elif s.shape[0] == 1 and n.shape[0] != 1:  # tied: total second moment
            N, Fs = n.sum(), f.sum(0)
            s_abs = s + (np.outer(Fs, shift) + np.outer(shift, Fs) + N * np.outer(shift, shift))[None]
        else:
            cross = f[:, :, None] * shift[None, None, :]
            s_abs = s + cross + cross.transpose(0, 2, 1) + n[:, None, None] * np.outer(shift, shift)[None]
    return Stats(n=n, f=f_abs, s=s_abs, loglik=float(total.loglik), n_frames=int(total.n_frames))


def _check_block(X: Any, D: int) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != D:
        raise DataError(f"expected frames of shape (n, {D}), got {X.shape}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    return X


def _blocks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    chunk_size = max(1, int(chunk_size))
    return [(a, min(n, a + chunk_size)) for a in range(0, n, chunk_size)]


def _run_blocks(
    fn: Callable[[int, int], Any], blocks: list[tuple[int, int]], n_threads: int
) -> Iterator[Any]:
    """Apply ``fn`` to every block, in threads (each with one BLAS thread) when asked.

    Results are yielded in block order whatever the number of threads, so sums over them
    do not depend on the parallelism; they are consumed as they come, so memory holds a
    few blocks' results, not all of them.
    """
    if n_threads <= 1 or len(blocks) <= 1:
        yield from (fn(a, b) for a, b in blocks)
        return
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(min(n_threads, len(blocks))) as ex:
        yield from ex.map(lambda ab: fn(*ab), blocks)


def _sum_block_stats(parts: Iterable[_BlockStats]) -> _BlockStats:
    """Sum block statistics in order (float64 accumulators)."""
    it = iter(parts)
    tot = next(it)
    n, f = tot.n.copy(), tot.f.copy()
    s = None if tot.s is None else tot.s.copy()
    ll, nf = tot.loglik, tot.n_frames
    for p in it:
        n += p.n
        f += p.f
        if s is not None and p.s is not None:
            s += p.s
        ll += p.loglik
        nf += p.n_frames
    return _BlockStats(n, f, s, ll, nf)


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
    ``gamma_m = m u / (1 - m u)``, ``b = _STAT_BLOCK`` (128) the frames per float32 GEMM
    (sub-block sums are float64), ``c`` the shift (weighted mean of the means) and ``g_tk``
    the posteriors the float32 E-step computed (before their float32 normalisation). For
    the posterior-weighted mean ``m_kd`` and variance ``v_kd`` of the data under ``g``, the
    values ``F/N`` and ``S/N - (F/N)**2`` from these statistics satisfy, to first order in u,

    * ``|dv_kd| <= 6 gamma_(b+4) Q_kd + 2 gamma_(K+1) v_kd`` with
      ``Q_kd = v_kd + (m_kd - c_d)**2`` (the data's spread about the shift), and
    * ``|dm_kd| <= 2 gamma_(b+4) sqrt(Q_kd) + gamma_(K+1) E_k|x_d - m_kd|``.

    The first term would grow with the distance of the component from the shift; it does
    not, because a component with ``(mu_kd - c_d)**2 > _FAR var_kd`` (64 variances) in any
    dimension at the current parameters is accumulated in float64 (same posteriors, frames
    and products in float64) on every frame where its unnormalised posterior exceeds
    ``tau = _FAR_TAU = 2**-40`` (a few % of the frames: far components are narrow); its
    first term becomes ``6 gamma64_n Q_kd + 6 gamma_(b+4) tau sum_t (x_td - c_d)**2 / N_k``
    (the float32 remainder of weights ``<= tau``), negligible. So for every component
    ``|dv| / v <= 6 gamma_(b+4) (1 + 64) + 2 gamma_(K+1)`` (``~3.1e-3`` worst case at
    ``b = 128``, plus the tau term; a rounding worst case: measured errors are 100-1000x
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
    ``exp``, so no subnormal number enters the statistics products (``_CLIP``).
    """
    params = as_params(gmm)
    dt = _resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = _check_block(X, params.n_dims)
    full = params.covariance_type in ("full", "tied")
    K, D = params.n_components, params.n_dims
    if X.shape[0] == 0:
        mode = (
            None
            if not second_order
            else ("diag" if not full else ("full" if params.covariance_type == "full" else "tied"))
        )
        return Stats.zeros(K, D, second_order=mode)
    prep = _prepare(params, dt)
    return _unshift(_accumulate_prepared(X, prep, second_order, chunk_size, n_threads), prep.shift, full)


def _accumulate_prepared(
    X: np.ndarray, prep: _DiagPrep | _FullPrep, second_order: bool, chunk_size: int, n_threads: int
) -> _BlockStats:
    """Shifted-coordinate statistics of X (non-empty) over blocks of ``chunk_size`` frames."""
    if isinstance(prep, _DiagPrep):
        chunk_size = min(chunk_size, max(256, _TILE // prep.W.shape[1]))
    blocks = _blocks(X.shape[0], chunk_size)
    if isinstance(prep, _DiagPrep) and n_threads <= 1 and len(blocks) > 1:
        # The diag tiles are small GEMMs (cache-sized): split across BLAS threads, each one
        # pays a thread synchronisation (measured 10-80x slower on a loaded 2-core machine).
        # Use as many of our own threads, each with one BLAS thread: the same cores, the
        # same results (blocks are summed in order).
        n_threads = _blas_threads()
    parts = _run_blocks(lambda a, b: _block_stats(X[a:b], prep, second_order), blocks, n_threads)
    return _sum_block_stats(parts)


def _blas_threads() -> int:
    """Threads the BLAS library would use now (1 when threadpoolctl finds none)."""
    from threadpoolctl import threadpool_info

    return max(
        [int(i.get("num_threads", 1)) for i in threadpool_info() if i.get("user_api") == "blas"] or [1]
    )


def _block_logdens_raw(X: np.ndarray, prep: _DiagPrep | _FullPrep) -> np.ndarray:
    """Weighted log-densities of a block, (n, K), in the compute dtype (float64 for full)."""
    if isinstance(prep, _DiagPrep):
        return _diag_augmented(X, prep) @ prep.W
    return _full_logdens(X, prep)


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
    dt = _resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = _check_block(X, params.n_dims)
    prep = _prepare(params, dt)
    out = np.empty((X.shape[0], params.n_components), dtype=np.float64)
    for a, b in _blocks(X.shape[0], chunk_size):
        out[a:b] = _block_logdens_raw(X[a:b], prep)
    return out


def frame_loglik(X: FloatArray, gmm: Any, *, chunk_size: int = 20000, dtype: Any = "float64") -> FloatArray:
    """``log p(x_t)`` per frame, shape (n_frames,), float64, computed chunk by chunk."""
    params = as_params(gmm)
    dt = _resolve_dtype(dtype if dtype is not None else getattr(gmm, "dtype", None), params.covariance_type)
    X = _check_block(X, params.n_dims)
    prep = _prepare(params, dt)
    out = np.empty(X.shape[0], dtype=np.float64)
    for a, b in _blocks(X.shape[0], chunk_size):
        L = _block_logdens_raw(X[a:b], prep)
        m, s = _shifted_log_post(L)
        out[a:b] = m.astype(np.float64) + np.log(s.astype(np.float64))
    return out
