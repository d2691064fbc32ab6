"""The Gaussian-mixture kernel: one implementation of every per-frame formula.

EM (:mod:`gmmspeaker.gmm.em`), MAP enrolment (:mod:`gmmspeaker.gmm.map`), scoring
(:mod:`gmmspeaker.scoring.llr`) and the public E-step API (:mod:`gmmspeaker.gmm.stats`)
all call this module; it owns

* the **prepared mixture** (:func:`prepare`): natural parameters stacked for one fused
  GEMM, in coordinates shifted by the weighted mean of the means (float32 conditioning);
* **frame log-densities** ``log w_k + log N(x | k)``, diagonal (:func:`diag_augmented` @
  ``W``) and full/tied (:func:`full_logdens`), both through :func:`component_logdens`;
* **posteriors** with the underflow guard (:func:`shifted_exp`, :func:`clipped_exp`) and
  the package's one **log-sum-exp** (:func:`logsumexp`);
* **top-C selection** of components per frame (:func:`top_c`);
* the **zeroth/first/second-order statistics** over chunks (:func:`block_stats`,
  :func:`accumulate_prepared`, :func:`prepared_stats`), with their float32 error bound.

Names without a leading underscore are the interface within the package; none of them is
re-exported by :mod:`gmmspeaker.gmm` (the public API is :mod:`gmmspeaker.gmm.stats`).
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gmmspeaker._blas import blas_limit, blas_threads
from gmmspeaker._typing import FloatArray, IntArray
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.gmm.params import MixtureParams, as_params

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
#: float32 statistics are computed by GEMMs over sub-blocks of this many frames: a float32
#: GEMM sums at most ``_STAT_BLOCK`` products, whatever the BLAS kernel's summation order.
_STAT_BLOCK = 128
#: ... and the results of this many consecutive sub-blocks are added up in float32 (each
#: added once to a float32 sum) before one float64 addition: a float64 addition per
#: sub-block costs 0.4 ns per frame and component (the (K, 2D+1) result, read and added
#: with a cast, per 128 frames), 5 % of the E-step; a float32 one half of that. A term of
#: the statistics thus goes through at most ``b - 1 + g - 1`` float32 additions and one
#: product, plus 4 roundings of its operands (``x - c``, its square, ``1/s``, the scaling),
#: which bounds the float32 rounding error by ``gamma_(b+g+3)`` of the sum of the terms'
#: magnitudes whatever the BLAS kernel's order (:data:`STAT_ROUNDINGS`; see
#: :func:`accumulate`).
_STAT_GROUP = 8
#: ``m`` of the float32 statistics' error bound ``gamma_m`` (``b + g + 3`` = 139).
STAT_ROUNDINGS = _STAT_BLOCK + _STAT_GROUP + 3
#: Components whose squared distance from the shift exceeds this many variances (in some
#: dimension, at the current parameters) get their statistics in float64: for them the
#: float32 error, proportional to ``E[(x-c)**2] / var``, would no longer be bounded by a
#: small constant (see :func:`accumulate`).
_FAR = 64.0
#: ... on the frames where their (unnormalised) posterior exceeds this (``2**-40``); the
#: rest of their weight, at most this per frame, stays in the float32 product.
_FAR_TAU = 2.0**-40
#: Elements of one (frames x K) posterior tile: the E-step runs over tiles of
#: :func:`tile_rows` frames so the element-wise passes stay in cache (2**17 float32 =
#: 512 KiB, one core's L2; measured faster than 2**21 at K = 512).
_TILE = 1 << 17
#: Tiles in one work unit of the diag E-step: a thread runs a unit's tiles in order in its
#: own reused buffers and returns their float64 sum; units are summed in order, so the
#: result does not depend on the number of threads (the boundaries depend on K and the
#: chunk size only). 8 tiles = 2,048 frames at K = 512: ~60 units on FSDD's 128k frames
#: balance two threads within a few %.
_UNIT_TILES = 8
#: ... but fewer on small data, so that there are at least this many units (when there are
#: as many tiles) for the threads to balance.
_MIN_UNITS = 32
_LOG_2PI = float(np.log(2.0 * np.pi))
#: Element budget of one temporary block in the full-covariance E-step (8M doubles = 64 MB).
_FULL_BUDGET = 8_000_000


def resolve_dtype(dtype: Any, covariance_type: str) -> np.dtype:
    """The compute dtype: ``dtype`` (float32 or float64), or by default float32 for diag and
    spherical mixtures and float64 for full and tied ones; ValueError for anything else."""
    if dtype is None:
        return np.dtype(np.float32) if covariance_type in ("diag", "spherical") else np.dtype(np.float64)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


@dataclass(frozen=True)
class PreparedDiag:
    """Natural parameters of a diag mixture stacked for one fused GEMM.

    ``L = [(x-c)**2, x-c, 1] @ W`` gives ``log w_k + log N(x | k)`` for every component.
    """

    W: np.ndarray  # (2D+1, K) in the compute dtype
    shift: FloatArray  # (D,) float64, subtracted from every frame (conditioning in float32)
    dtype: np.dtype
    n_dims: int
    #: components whose statistics are computed in float64 (float32 only; see ``_FAR``)
    far: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    #: ``W``'s columns in the E-step's order, the far components last (a contiguous block
    #: of the posterior tile, so :class:`FarSum` slices instead of gathering), and the
    #: component of each of its columns; None when no component is far (``W``'s order).
    stats_W: np.ndarray | None = None
    stats_order: np.ndarray | None = None


@dataclass(frozen=True)
class PreparedFull:
    """Cholesky factors of the precisions (full or tied), means in shifted coordinates."""

    prec_chol: FloatArray  # (K, D, D) full or (D, D) tied; x @ prec_chol whitens
    means: FloatArray  # (K, D), shifted
    const: FloatArray  # (K,) log w_k - D/2 log 2pi + log det prec_chol
    shift: FloatArray  # (D,)
    tied: bool
    dtype: np.dtype
    n_dims: int


def precision_cholesky(cov: FloatArray) -> FloatArray:
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


def prepare(params: MixtureParams, dtype: np.dtype) -> PreparedDiag | PreparedFull:
    """Prepare a mixture for the E-step and scoring in compute dtype ``dtype``.

    All variants work in coordinates shifted by ``c = sum_k w_k mu_k / sum_k w_k`` (rounded
    to ``dtype``), which keeps the float32 products well conditioned on features that are
    not centred.

    Returns
    -------
    PreparedDiag
        diag/spherical: ``W`` (2D+1, K) with ``[(x-c)**2, x-c, 1] @ W = log w_k + log N(x|k)``,
        and (float32) the components accumulated in float64 (``far``).
    PreparedFull
        full/tied: Cholesky factors of the precisions and the constant terms (float64).
    """
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
        order = None
        if far.size:
            is_far = np.zeros(K, dtype=bool)
            is_far[far] = True
            order = np.concatenate([np.flatnonzero(~is_far), far])
        return PreparedDiag(
            W=np.ascontiguousarray(W, dtype=dtype),
            shift=shift,
            dtype=dtype,
            n_dims=D,
            far=far,
            stats_W=None if order is None else np.ascontiguousarray(W[:, order], dtype=dtype),
            stats_order=order,
        )
    tied = params.covariance_type == "tied"
    pc = precision_cholesky(np.asarray(params.covariances, dtype=np.float64))
    log_det = np.log(np.diagonal(pc, axis1=-2, axis2=-1)).sum(-1)
    const = log_w - 0.5 * D * _LOG_2PI + log_det
    return PreparedFull(
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


def diag_augmented(X: np.ndarray, prep: PreparedDiag) -> np.ndarray:
    """``[(x-c)**2, x-c, 1]``, shape (n, 2D+1), in the compute dtype."""
    n, D = X.shape
    A = np.empty((n, 2 * D + 1), dtype=prep.dtype)
    np.subtract(X, prep.shift.astype(prep.dtype), out=A[:, D : 2 * D], casting="unsafe")
    np.square(A[:, D : 2 * D], out=A[:, :D])
    A[:, 2 * D] = 1.0
    return A


def full_logdens(X: np.ndarray, prep: PreparedFull) -> np.ndarray:
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


def _exp_minus_row_max(L: np.ndarray) -> np.ndarray:
    """In place: ``L <- exp(max(L - row max, clip))``; returns the row maxima (L's dtype)."""
    m = L.max(axis=1)
    m[~np.isfinite(m)] = 0.0  # a frame with -inf everywhere (zero weights only) stays -inf
    L -= m[:, None]
    clipped_exp(L, out=L)
    return m


def shifted_exp(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In place: ``L <- exp(L - max)`` (clipped), returns (row max, row sum) in L's dtype.

    The unnormalised posteriors of the E-step: ``log p(x_t) = max_t + log sum_t`` and the
    posteriors are ``L / sum_t`` (folded into the statistics GEMM by :func:`block_stats`).
    """
    m = _exp_minus_row_max(L)
    return m, L.sum(axis=1)


def posteriors(L: np.ndarray) -> np.ndarray:
    """In place: component posteriors (T, K) from weighted log-densities ``L`` (T, K).

    ``exp(L - max)`` with the underflow clip, divided by its row sum (summed in float64,
    then rounded to L's dtype). Returns ``L``.
    """
    _exp_minus_row_max(L)
    L /= L.sum(axis=1, keepdims=True, dtype=np.float64).astype(L.dtype)
    return L


@dataclass
class BlockStats:
    """Statistics of one block in (possibly) shifted coordinates."""

    n: np.ndarray
    f: np.ndarray
    s: np.ndarray | None
    loglik: float
    n_frames: int


def tile_rows(n_components: int) -> int:
    """Frames per tile of the diag E-step: ``_TILE // K`` rounded down to a multiple of
    ``_STAT_BLOCK`` (at least one sub-block), so every statistics GEMM of a tile sums
    exactly ``_STAT_BLOCK`` frames (the last tile of a chunk may sum fewer)."""
    return max(_STAT_BLOCK, (_TILE // max(1, n_components)) // _STAT_BLOCK * _STAT_BLOCK)


class DiagWorkspace:
    """Buffers of the diag E-step for tiles of up to ``rows`` frames, reused from tile to tile.

    A fresh (rows x K) array per tile is a fresh mapping of the allocator: measured 364 page
    faults per 256 x 512 tile, half of the tile's time. One workspace serves one thread.
    """

    def __init__(self, rows: int, n_components: int, n_dims: int, dtype: np.dtype, frames: int = 0) -> None:
        D = n_dims
        self.rows = rows
        self.A = np.empty((rows, 2 * D + 1), dtype=dtype)  # augmented frames, then scaled by 1/s
        self.L = np.empty((rows, n_components), dtype=dtype)  # log-densities, then exp(L - m)
        # row maxima and sums of exp(L - m) of up to ``frames`` frames (a unit's tiles), for
        # one log-likelihood sum per unit
        self.m = np.empty(max(rows, frames), dtype=dtype)
        self.s = np.empty(max(rows, frames), dtype=dtype)
        self.inv = np.empty(rows, dtype=dtype)  # 1 / s
        self.clip = np.full((rows, 1), _CLIP[np.dtype(dtype)], dtype=dtype)
        self.ones = np.ones(n_components, dtype=dtype)
        self.tmp = np.empty((n_components, 2 * D + 1), dtype=dtype)  # one sub-block's product
        self.C = np.empty((n_components, 2 * D + 1), dtype=dtype)  # a group's sum (StatSum)


def diag_tile(
    X: np.ndarray, prep: PreparedDiag, ws: DiagWorkspace, offset: int = 0
) -> tuple[np.ndarray, ...]:
    """The operands of the statistics GEMM of one tile X (n <= ws.rows frames), in ``ws``
    (``m`` and ``s`` at ``offset`` in its per-frame buffers).

    Returns views ``(P, A, m, s)`` into the workspace (valid until its next use): ``P`` (n, K)
    holds ``exp(max(L - m, clip))`` (unnormalised posteriors, :func:`clipped_exp`) and ``A``
    (n, 2D+1) the augmented frames ``[(x-c)**2, x-c, 1]`` scaled by ``1/s``, both in the
    compute dtype; ``m`` and ``s`` are each frame's max of ``L`` and sum of ``P``'s row.

    Five element-wise passes over the (n, K) tile between the two GEMMs: row max, subtract,
    clip, exp, and the row sum as a matrix-vector product (a GEMV: 3x faster than a numpy
    row reduction). The clip compares with a (n, 1) column, not a scalar (numpy's SIMD loop
    takes the broadcast column 2x faster than the scalar). The posterior normalisation is
    folded into the statistics GEMM: the (n, 2D+1) frames are scaled by 1/s, not the (n, K)
    posteriors.
    """
    n, D = X.shape
    A, P, m, s = ws.A[:n], ws.L[:n], ws.m[offset : offset + n], ws.s[offset : offset + n]
    np.subtract(X, prep.shift.astype(prep.dtype), out=A[:, D : 2 * D], casting="unsafe")
    np.square(A[:, D : 2 * D], out=A[:, :D])
    A[:, 2 * D] = 1.0
    np.matmul(A, prep.W if prep.stats_W is None else prep.stats_W, out=P)  # the one fused GEMM
    np.max(P, axis=1, out=m)
    if not np.isfinite(m.sum()):
        m[~np.isfinite(m)] = 0.0  # a frame with -inf everywhere (zero weights only) stays -inf
    np.subtract(P, m[:, None], out=P)
    np.maximum(P, ws.clip[:n], out=P)
    np.exp(P, out=P)
    np.matmul(P, ws.ones, out=s)
    inv = np.divide(1.0, s, out=ws.inv[:n])
    np.multiply(A, inv[:, None], out=A)
    return P, A, m, s


def diag_operands(X: np.ndarray, prep: PreparedDiag) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Operands of the statistics GEMM of one block: ``(P, A, m, s)`` (:func:`diag_tile`,
    with the block as one tile, in new arrays)."""
    ws = DiagWorkspace(max(1, X.shape[0]), prep.W.shape[1], prep.n_dims, prep.dtype)
    P, A, m, s = diag_tile(X, prep, ws)
    if prep.stats_order is not None:  # back to the components' order
        P = P[:, np.argsort(prep.stats_order)]
    return P, A, m, s


class StatSum:
    """``R += P.T @ A`` over tiles, in float64 ``R`` (K, c), by compute-dtype GEMMs.

    Each GEMM sums ``block`` frames (a sub-block); the results of ``group`` consecutive
    sub-blocks are added in the compute dtype (in ``C``) before one addition to ``R``
    (:data:`STAT_ROUNDINGS`). ``R``'s content is overwritten by the first addition. Call
    :meth:`flush` after the last tile.
    """

    def __init__(self, R: np.ndarray, ws: DiagWorkspace, block: int, group: int) -> None:
        self.R, self.block, self.group = R, block, group
        self.C, self.tmp = ws.C[:, : R.shape[1]], ws.tmp[:, : R.shape[1]]
        self.count = 0  # sub-blocks summed in C
        self.empty = True  # R holds no sum yet (its first flush assigns)

    def add(self, P: np.ndarray, A: np.ndarray) -> None:
        """Add ``P.T @ A`` for one tile (P (n, K), A (n, c), compute dtype)."""
        for a in range(0, P.shape[0], self.block):
            if self.count == 0:
                np.matmul(P[a : a + self.block].T, A[a : a + self.block], out=self.C)
            else:
                np.matmul(P[a : a + self.block].T, A[a : a + self.block], out=self.tmp)
                self.C += self.tmp
            self.count += 1
            if self.count == self.group:
                self.flush()

    def flush(self) -> None:
        """Add the pending compute-dtype sum to ``R``."""
        if self.count:
            if self.empty:
                np.copyto(self.R, self.C)
                self.empty = False
            else:
                self.R += self.C
            self.count = 0
        elif self.empty:
            self.R.fill(0.0)
            self.empty = False


class FarSum:
    """float64 statistics of the far components on the frames where they have weight.

    :meth:`take` moves, in place on a tile ``P`` from :func:`diag_tile` (its last
    ``n_far`` columns are the far components), their posteriors on the frames where they
    exceed ``_FAR_TAU`` out of ``P`` (set to 0, so the float32 GEMM no longer sees them),
    divided by ``s`` in float64; :meth:`stats` returns their float64 product with the
    frames, ``(P_far / s).T @ [(x-c)**2, x-c, 1]`` over those frames: (K_far, 2D+1), or
    (K_far, D+1) without the first block when not ``second_order``. Far components are
    narrow: a few % of the frames carry their weight. One product per unit of tiles, not per
    tile (a float64 GEMM on a few dozen frames costs its call, not its flops).

    The frames are chosen by the sum of their far posteriors (a GEMV; a numpy row max over
    a few strided columns costs 5x more): a frame left in ``P`` has every far posterior at
    most ``_FAR_TAU``, as the error bound requires.
    """

    def __init__(self, n_far: int, dtype: np.dtype) -> None:
        self.n_far = n_far
        self.ones = np.ones(n_far, dtype=dtype)
        self.rows: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []

    def take(self, P: np.ndarray, s: np.ndarray, offset: int) -> None:
        """Move the far posteriors of tile ``P`` (frames ``offset + i``; row sums ``s``) out."""
        Pf = P[:, P.shape[1] - self.n_far :]  # (n, K_far), a view
        rows = np.flatnonzero(Pf @ self.ones > _FAR_TAU)
        if rows.size:
            w = Pf[rows].astype(np.float64)
            Pf[rows] = 0.0
            w *= (1.0 / s[rows].astype(np.float64))[:, None]
            self.weights.append(w)
            self.rows.append(rows + offset)

    def stats(self, X: np.ndarray, shift: FloatArray, second_order: bool) -> np.ndarray:
        """The float64 product over every frame taken (X: the frames the offsets index)."""
        D = X.shape[1]
        if not self.rows:
            return np.zeros((self.n_far, 2 * D + 1 if second_order else D + 1))
        rows = np.concatenate(self.rows)
        w = np.concatenate(self.weights)
        A = np.empty((rows.size, 2 * D + 1))
        np.subtract(X[rows], shift, out=A[:, D : 2 * D])
        A[:, 2 * D] = 1.0
        if not second_order:
            return w.T @ A[:, D:]
        np.square(A[:, D : 2 * D], out=A[:, :D])
        return w.T @ A


def diag_unit_stats(
    X: np.ndarray, prep: PreparedDiag, second_order: bool, ws: DiagWorkspace, R: np.ndarray
) -> float:
    """Statistics (shifted coordinates) of frames X (n, D) under a diag mixture, tile by tile.

    Each tile of ``ws.rows`` frames: :func:`diag_tile`, the far components' float64 part
    (:class:`FarSum`), and the statistics GEMM ``P.T @ A`` in sub-blocks of
    ``_STAT_BLOCK`` frames, in groups of ``_STAT_GROUP`` summed in float64
    (:class:`StatSum`), all in ``ws``'s buffers.

    ``ws`` holds at least n frames' maxima and sums (its ``frames``). Writes ``R`` (K, 2D+1) = ``[S, F, N]`` (or (K, D+1) = ``[F, N]`` when not
    ``second_order``), float64, its rows in the E-step's order (``prep.stats_order``;
    :func:`diag_block_stats` puts them back); returns the log-likelihood of the frames.
    """
    n, D = X.shape
    cols = slice(0, 2 * D + 1) if second_order else slice(D, 2 * D + 1)
    # float64: one GEMM per tile (no sub-blocks needed)
    acc = StatSum(R, ws, _STAT_BLOCK if prep.dtype == np.float32 else ws.rows, _STAT_GROUP)
    far = FarSum(prep.far.size, prep.dtype) if prep.far.size else None
    for a in range(0, n, ws.rows):
        P, A, m, s = diag_tile(X[a : a + ws.rows], prep, ws, a)
        if far is not None:
            far.take(P, s, a)
        acc.add(P, A[:, cols])
    acc.flush()
    if far is not None:
        R[R.shape[0] - far.n_far :] += far.stats(X, prep.shift, second_order)
    return float(np.sum(ws.m[:n], dtype=np.float64) + np.sum(np.log(ws.s[:n].astype(np.float64))))


def diag_block_stats(
    R: np.ndarray, loglik: float, n_frames: int, prep: PreparedDiag, second_order: bool
) -> BlockStats:
    """:class:`BlockStats` from a sum of :func:`diag_unit_stats` results (rows put back in
    the components' order)."""
    D = prep.n_dims
    if prep.stats_order is not None:
        R = R[np.argsort(prep.stats_order)]
    if second_order:
        return BlockStats(R[:, 2 * D].copy(), R[:, D : 2 * D].copy(), R[:, :D].copy(), loglik, n_frames)
    return BlockStats(R[:, D].copy(), R[:, :D].copy(), None, loglik, n_frames)


def block_stats(X: np.ndarray, prep: PreparedDiag | PreparedFull, second_order: bool) -> BlockStats:
    """Statistics (shifted coordinates) of one block X (n, D): one fused log-density GEMM,
    clipped posteriors, one statistics GEMM (diag, :func:`diag_unit_stats`) or whitened
    products (full/tied)."""
    D = X.shape[1]
    if isinstance(prep, PreparedDiag):
        K = prep.W.shape[1]
        rows = min(max(1, X.shape[0]), tile_rows(K))
        R = np.empty((K, 2 * D + 1 if second_order else D + 1))
        ws = DiagWorkspace(rows, K, D, prep.dtype, frames=X.shape[0])
        ll = diag_unit_stats(X, prep, second_order, ws, R)
        return diag_block_stats(R, ll, X.shape[0], prep, second_order)
    L = full_logdens(X, prep)
    m, s = shifted_exp(L)
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
    return BlockStats(n_k, f, S, loglik, X.shape[0])


def unshift(total: BlockStats, shift: FloatArray, full: bool) -> Stats:
    """Statistics about the origin from statistics about the shift ``c``:
    ``F = F_c + N c``, ``S = S_c + 2 F_c c + N c^2`` (diag; the matrix analogue for full and tied)."""
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


def check_block(X: Any, D: int) -> np.ndarray:
    """X as a 2-D float array (n, D); integers become float64; DataError on another shape."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != D:
        raise DataError(f"expected frames of shape (n, {D}), got {X.shape}")
    if X.dtype.kind != "f":
        X = X.astype(np.float64)
    return X


def blocks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in blocks of ``chunk_size`` rows."""
    chunk_size = max(1, int(chunk_size))
    return [(a, min(n, a + chunk_size)) for a in range(0, n, chunk_size)]


def run_blocks(fn: Callable[[int, int], Any], blocks: list[tuple[int, int]], n_threads: int) -> Iterator[Any]:
    """Apply ``fn`` to every block, in threads (each with one BLAS thread) when asked.

    Results are yielded in block order whatever the number of threads, so sums over them
    do not depend on the parallelism; they are consumed as they come, so memory holds a
    few blocks' results, not all of them.
    """
    if n_threads <= 1 or len(blocks) <= 1:
        yield from (fn(a, b) for a, b in blocks)
        return
    from concurrent.futures import ThreadPoolExecutor

    with blas_limit(1), ThreadPoolExecutor(min(n_threads, len(blocks))) as ex:
        yield from ex.map(lambda ab: fn(*ab), blocks)


def sum_block_stats(parts: Iterable[BlockStats]) -> BlockStats:
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
    return BlockStats(n, f, s, ll, nf)


def accumulate_prepared(
    X: np.ndarray, prep: PreparedDiag | PreparedFull, second_order: bool, chunk_size: int, n_threads: int
) -> BlockStats:
    """Shifted-coordinate statistics of X (non-empty) over blocks of ``chunk_size`` frames.

    Diag: work units of at most ``_UNIT_TILES`` tiles (fewer when X has less than
    ``_MIN_UNITS`` units of them; at most ``chunk_size`` frames),
    each run by one thread in a reused :class:`DiagWorkspace` (one per thread, created
    for this call), summed in unit order.
    """
    if not isinstance(prep, PreparedDiag):
        parts = run_blocks(
            lambda a, b: block_stats(X[a:b], prep, second_order), blocks(X.shape[0], chunk_size), n_threads
        )
        return sum_block_stats(parts)
    K = prep.W.shape[1]
    rows = min(max(1, chunk_size), tile_rows(K))
    n_tiles = -(-X.shape[0] // rows)
    unit_tiles = min(_UNIT_TILES, max(1, -(-n_tiles // _MIN_UNITS)))
    unit_frames = min(max(1, chunk_size), rows * unit_tiles)
    parts_ab = blocks(X.shape[0], unit_frames)
    if n_threads <= 1 and len(parts_ab) > 1:
        # The diag tiles are small GEMMs (cache-sized): split across BLAS threads, each one
        # pays a thread synchronisation (measured 10-80x slower on a loaded 2-core machine).
        # Use as many of our own threads, each with one BLAS thread: the same cores, the
        # same results (units are summed in order).
        n_threads = blas_threads()
    rows = min(rows, X.shape[0])
    shape = (K, 2 * prep.n_dims + 1 if second_order else prep.n_dims + 1)
    # buffers reused across units (fresh ones would cost page faults): workspaces, one per
    # thread, and unit results, back in the pool once added to the total
    workspaces: queue.SimpleQueue[DiagWorkspace] = queue.SimpleQueue()
    results: queue.SimpleQueue[np.ndarray] = queue.SimpleQueue()

    def unit(a: int, b: int) -> tuple[np.ndarray, float]:
        try:
            ws = workspaces.get_nowait()
        except queue.Empty:
            ws = DiagWorkspace(rows, K, prep.n_dims, prep.dtype, frames=unit_frames)
        try:
            R = results.get_nowait()
        except queue.Empty:
            R = np.empty(shape)
        try:
            return R, diag_unit_stats(X[a:b], prep, second_order, ws, R)
        finally:
            workspaces.put(ws)

    total, loglik = np.zeros(shape), 0.0
    for R, ll in run_blocks(unit, parts_ab, n_threads):  # in unit order
        total += R
        loglik += ll
        results.put(R)
    return diag_block_stats(total, loglik, X.shape[0], prep, second_order)


def component_logdens(X: np.ndarray, prep: PreparedDiag | PreparedFull) -> np.ndarray:
    """Weighted log-densities of a block, (n, K), in the compute dtype (float64 for full)."""
    if isinstance(prep, PreparedDiag):
        return diag_augmented(X, prep) @ prep.W
    return full_logdens(X, prep)


def prepared_stats(
    X: np.ndarray,
    prep: PreparedDiag | PreparedFull,
    *,
    second_order: bool,
    chunk_size: int,
    n_threads: int = 1,
) -> Stats:
    """Statistics of non-empty frames X (n, D) under a prepared mixture, in absolute coordinates.

    :func:`accumulate_prepared` over chunks, then :func:`unshift`. ``s`` is (K, D) for a
    diagonal mixture, (K, D, D) full, (1, D, D) tied; all float64.
    """
    return unshift(
        accumulate_prepared(X, prep, second_order, chunk_size, n_threads), prep.shift, prep_is_full(prep)
    )


def prep_is_full(prep: PreparedDiag | PreparedFull) -> bool:
    """True for a full- or tied-covariance preparation (its statistics are matrices)."""
    return isinstance(prep, PreparedFull)


# ---------------------------------------------------------------------------------------
# Log-sum-exp and top-C selection
# ---------------------------------------------------------------------------------------


def logsumexp(a: FloatArray) -> FloatArray:
    """``log sum_k exp(a[..., k])`` over the last axis: the package's one log-sum-exp.

    The row maximum is subtracted and the shifted values go through :func:`clipped_exp`
    (as in the E-step), so no subnormal term is summed; the sum changes by at most
    ``K e**clip`` relative. Rows of all ``-inf`` give ``-inf``.

    Parameters
    ----------
    a : ndarray, shape (..., K), float32 or float64

    Returns
    -------
    ndarray, shape (...), a's dtype
    """
    a = np.asarray(a)
    lead = a.shape[:-1]
    work = np.array(a.reshape(-1, a.shape[-1]), copy=True)
    m, s = shifted_exp(work)
    with np.errstate(divide="ignore"):
        out = m + np.log(s)
    return out.reshape(lead)


def top_c(L: FloatArray, c: int, *, method: str = "argmax") -> IntArray:
    """Indices (T, c) of the ``c`` largest entries of each row of ``L`` (T, K).

    ``"argmax"``: ``c`` rounds of a vectorised row argmax, best first (fast for small
    ``c``); ``"argpartition"``: ``numpy.argpartition``, unordered. Both pick the same set
    up to ties.
    """
    if method == "argpartition":
        k = L.shape[1]
        return np.argpartition(L, k - c, axis=1)[:, k - c :]
    if method != "argmax":
        raise ValueError(f"top_c: method must be 'argmax' or 'argpartition', got {method!r}")
    work = L.copy()
    rows = np.arange(L.shape[0])
    idx = np.empty((L.shape[0], c), dtype=np.intp)
    for j in range(c):  # c rounds (c is small), each a vectorised pass over all frames
        best = work.argmax(axis=1)
        idx[:, j] = best
        work[rows, best] = -np.inf
    return idx


# ---------------------------------------------------------------------------------------
# A diagonal UBM prepared for scoring
# ---------------------------------------------------------------------------------------


def diag_ubm(ubm: Any, *, what: str) -> MixtureParams:
    """A UBM's parameters as a diagonal mixture (spherical variances expanded to (K, D)).

    Raises
    ------
    ModelError
        Full or tied covariances, or non-positive variances / negative weights; ``what``
        names the caller (e.g. ``"scoring"``).
    """
    params = as_params(ubm)
    if params.covariance_type not in ("diag", "spherical"):
        raise ModelError(
            f"{what} supports diagonal-covariance UBMs only; this UBM is {params.covariance_type!r}"
        )
    var = params.diag_variances()
    if np.any(var <= 0) or np.any(params.weights < 0):
        raise ModelError(f"{what}: UBM has non-positive variances or negative weights")
    return MixtureParams(params.weights, params.means, var, "diag")
