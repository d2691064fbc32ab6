"""Total-variability (i-vector) model: EM training of T and extraction of i-vectors.

The model (Dehak et al., 2011; Kenny's factor analysis), in the whitened space of
:class:`~gmmspeaker.ivector.stats.UtteranceStats` where every UBM component has zero
mean and unit covariance: an utterance's supervector offset is ``T^T w`` with
``w ~ N(0, I_R)``, ``T`` of shape (R, K*D) and ``T_k = T[:, k*D:(k+1)*D]`` (R, D).
Given statistics ``n_u`` (K,) and ``f_u`` (K*D,) the posterior of ``w_u`` is Gaussian::

    L_u = I + sum_k n_uk T_k T_k^T          precision, (R, R)
    b_u = T f_u                             (R,)
    E[w_u] = L_u^{-1} b_u,   E[w_u w_u^T] = L_u^{-1} + E[w_u] E[w_u]^T

EM re-estimates each ``T_k`` from ``A_k = sum_u n_uk E[w_u w_u^T]`` and
``C = sum_u E[w_u] f_u^T`` by solving ``A_k T_k = C_k``; the minimum-divergence step
then whitens the prior, ``T <- G^T T`` with ``G G^T = (1/U) sum_u E[w_u w_u^T]``.
The objective, which no iteration lowers, is the marginal log-likelihood of the
first-order statistics (constant terms dropped)::

    sum_u  -1/2 log det L_u + 1/2 b_u^T L_u^{-1} b_u

How it runs fast: the packed upper triangles of all ``T_k T_k^T`` (K, R(R+1)/2) are
computed once per iteration; the precisions of a batch of utterances are one GEMM
``n (B, K) @ packed (K, R(R+1)/2)``, unpacked by one gather into float64 R x R buffers
and factored in place by LAPACK ``potrf`` per utterance; the means come from ``potrs``,
the inverse precisions from a blocked triangular inverse and ``lauum`` (``potri``'s
two halves), plus ``E[w] E[w]^T`` by a rank-one ``syr``, packed again by one gather.
The accumulators are two more GEMMs (``n^T @ packed E[ww^T]`` and ``E[w]^T @ f``).
Batches are a map-reduce (joblib):
each returns additive accumulators of size K x R(R+1)/2 + R x K*D, summed in batch
order, so memory is bounded by the batch size and the result does not depend on the
number of jobs. The M-step is a batched solve over components.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.ivector.em_driver import (
    Checkpoint,
    n_cores,
    one_blas_thread,
    run_em,
    share_with_workers,
    shared,
)
from gmmspeaker.ivector.stats import UtteranceStats

__all__ = [
    "TotalVariability",
    "TVAccumulators",
    "train_tv",
    "extract_ivectors",
    "tv_estep",
    "tv_m_step",
    "tv_log_likelihood",
    "packed_gram",
]

logger = logging.getLogger(__name__)

_FORMAT = "gmmspeaker.total_variability"
_CKPT_FORMAT = "gmmspeaker.total_variability_checkpoint"
_FORMAT_VERSION = 1
#: Utterances whose R x R matrices are unpacked at once inside a batch (memory: 3 x this x R^2).
_SUB_BLOCK = 32
#: Components whose R x R Gram or accumulator matrices are unpacked at once.
_COMP_BLOCK = 32
#: Columns per block of the threaded GEMMs.
_GEMM_COLS = 2048
#: Rows per block of the threaded GEMMs whose right factor has at most _GEMM_COLS columns.
_GEMM_ROWS = 64


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TotalVariability:
    """A trained total-variability matrix.

    Attributes
    ----------
    T : ndarray, shape (R, K*D), float64
        Rows span the total-variability subspace, in the whitened space of
        :attr:`UtteranceStats.f` (component-major columns).
    n_components : int
        K, the UBM size.
    n_dims : int
        D, the feature dimension.
    ubm_fingerprint : str
        :func:`gmmspeaker.gmm.map.ubm_fingerprint` of the UBM of the training statistics.
    log_likelihood : tuple of float
        The EM objective (marginal log-likelihood of the statistics, constants dropped)
        before each iteration's update; non-decreasing.
    """

    T: FloatArray
    n_components: int
    n_dims: int
    ubm_fingerprint: str = ""
    log_likelihood: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        T = np.asarray(self.T)
        if T.ndim != 2 or T.shape[1] != self.n_components * self.n_dims:
            raise ModelError(
                f"total variability: T has shape {T.shape}, expected (R, {self.n_components}*{self.n_dims})"
            )

    @property
    def rank(self) -> int:
        """R, the i-vector dimension."""
        return int(self.T.shape[0])

    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically: dataset ``T``, attributes ``format``, ``n_components``,
        ``n_dims``, ``ubm_fingerprint``, ``log_likelihood``, ``version``."""
        write_h5(
            path,
            _FORMAT,
            {"T": np.asarray(self.T, dtype=np.float64)},
            {
                "format_version": _FORMAT_VERSION,
                "n_components": int(self.n_components),
                "n_dims": int(self.n_dims),
                "ubm_fingerprint": self.ubm_fingerprint,
                "log_likelihood": np.asarray(self.log_likelihood, dtype=np.float64),
            },
        )

    @classmethod
    def load(cls, path: PathLike) -> TotalVariability:
        """Read a matrix written by :meth:`save`.

        Raises
        ------
        ModelError
            Missing, unreadable or not a total-variability file; the message names it.
        """
        arrays, attrs = read_h5(path, _FORMAT, ("T",))
        try:
            return cls(
                T=np.asarray(arrays["T"], dtype=np.float64),
                n_components=int(attrs["n_components"]),
                n_dims=int(attrs["n_dims"]),
                ubm_fingerprint=str(attrs.get("ubm_fingerprint", "")),
                log_likelihood=tuple(float(x) for x in np.atleast_1d(attrs.get("log_likelihood", []))),
            )
        except (KeyError, ModelError) as exc:
            raise ModelError(f"{path}: inconsistent total-variability file ({exc})") from None


# ---------------------------------------------------------------------------------------
# Packed symmetric matrices
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _packing(R: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Index helpers for the row-major upper triangle of an R x R matrix.

    Returns ``(i, j, upper, lower, diag)``: the row and column of each packed element
    (``i <= j``), its flat position in the upper and in the (transposed) lower triangle
    of a C-ordered R x R matrix, and the flat positions of the diagonal.
    """
    i, j = np.triu_indices(R)
    return i, j, i * R + j, j * R + i, np.arange(R) * (R + 1)


@functools.lru_cache(maxsize=4)
def _full_index(R: int) -> np.ndarray:
    """Packed position of every element of a C-ordered R x R symmetric matrix.

    ``np.take(packed, _full_index(R), axis=-1)`` unpacks row-major upper triangles
    (shape (..., R(R+1)/2)) into full symmetric matrices (shape (..., R*R)) in one gather.
    """
    r, c = np.divmod(np.arange(R * R), R)
    lo, hi = np.minimum(r, c), np.maximum(r, c)
    return lo * R - lo * (lo - 1) // 2 + (hi - lo)


def _in_threads(fn: Callable[[int, int], None], n: int, block: int, n_threads: int) -> None:
    """Run ``fn(a, b)`` over blocks of ``range(n)`` in threads, each with one BLAS thread.

    For many small matrix factorisations one BLAS thread per call is much faster than a
    threaded BLAS fighting over the same cores; the blocks write disjoint outputs, so the
    result does not depend on ``n_threads``.
    """
    blocks = [(a, min(n, a + block)) for a in range(0, n, block)]
    with one_blas_thread():
        if n_threads <= 1 or len(blocks) <= 1:
            for a, b in blocks:
                fn(a, b)
            return
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(n_threads, len(blocks))) as ex:
            for _ in ex.map(lambda ab: fn(*ab), blocks):
                pass


def _matmul(A: np.ndarray, B: np.ndarray, n_threads: int) -> np.ndarray:
    """``A @ B`` in fixed blocks of columns of B (of rows of A when B has at most
    ``_GEMM_COLS`` columns), in threads with one BLAS thread each.

    The blocks do not depend on ``n_threads`` and each output element is one
    single-threaded dot product over the whole inner dimension, so the result is the
    same whatever the number of threads (and of joblib workers).
    """
    out = np.empty((A.shape[0], B.shape[1]), dtype=np.result_type(A, B))
    if B.shape[1] <= _GEMM_COLS:  # few columns (T f: R = 300): fixed blocks of rows of A instead

        def rows(a: int, b: int) -> None:
            np.matmul(A[a:b], B, out=out[a:b])

        _in_threads(rows, A.shape[0], _GEMM_ROWS, n_threads)
        return out

    def block(a: int, b: int) -> None:
        np.matmul(A, B[:, a:b], out=out[:, a:b])

    _in_threads(block, B.shape[1], _GEMM_COLS, n_threads)
    return out


def packed_gram(T: FloatArray, n_components: int, *, n_threads: int = 1) -> FloatArray:
    """Packed upper triangles of ``T_k T_k^T`` for every component.

    Parameters
    ----------
    T : ndarray, shape (R, K*D), float64
    n_components : int
        K.
    n_threads : int
        Threads over blocks of components.

    Returns
    -------
    ndarray, shape (K, R(R+1)/2), float64
        Row k is the row-major upper triangle of ``T_k T_k^T``.
    """
    R = T.shape[0]
    K = int(n_components)
    D = T.shape[1] // K
    Tk = T.reshape(R, K, D).transpose(1, 0, 2)  # (K, R, D) view
    _, _, upper, _, _ = _packing(R)
    out = np.empty((K, upper.size))

    def block(a: int, b: int) -> None:  # blocks of components bound the (kb, R, R) temporary
        G = np.matmul(Tk[a:b], Tk[a:b].transpose(0, 2, 1))
        out[a:b] = G.reshape(b - a, R * R)[:, upper]

    _in_threads(block, K, _COMP_BLOCK, n_threads)
    return out


#: Order at which the blocked triangular inverse stops splitting and calls LAPACK ``trtri``.
_TRTRI_LEAF = 64


@functools.lru_cache(maxsize=1)
def _lapack() -> dict[str, Any]:
    """LAPACK/BLAS routines of SciPy's Cython API, called through ctypes.

    ``scipy.linalg.lapack`` holds the GIL during every call, so threads over utterances
    would run one at a time; ctypes foreign calls release it. The function pointers come
    from the public ``scipy.linalg.cython_lapack`` / ``cython_blas`` capsules (the same
    LAPACK as SciPy's), with Fortran conventions: every argument is a pointer, matrices
    column-major with a leading dimension.
    """
    import ctypes

    from scipy.linalg import cython_blas, cython_lapack

    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_ptr = ctypes.pythonapi.PyCapsule_GetPointer
    get_ptr.restype, get_ptr.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]

    def bind(module: Any, name: str, n_args: int) -> Any:
        cap = module.__pyx_capi__[name]
        return ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * n_args))(get_ptr(cap, get_name(cap)))

    consts = {k: ctypes.create_string_buffer(k.encode()) for k in ("L", "R", "N")}
    consts.update({"1.0": ctypes.c_double(1.0), "-1.0": ctypes.c_double(-1.0)})  # type: ignore[dict-item]
    return {
        "potrf": bind(cython_lapack, "dpotrf", 5),
        "potrs": bind(cython_lapack, "dpotrs", 8),
        "trtri": bind(cython_lapack, "dtrtri", 6),
        "lauum": bind(cython_lapack, "dlauum", 5),
        "trmm": bind(cython_blas, "dtrmm", 11),
        "syr": bind(cython_blas, "dsyr", 7),
        "consts": consts,  # kept alive here
        "addr": {k: ctypes.addressof(v) for k, v in consts.items()},
    }


class _Factoriser:
    """Per-utterance posterior of one R x R precision, in place, without the GIL.

    One instance per thread (it owns the ``info`` output and the integer arguments).
    """

    def __init__(self, R: int) -> None:
        import ctypes

        self._ct = ctypes
        self.R = R
        self.lp = _lapack()
        self.a = self.lp["addr"]
        self._ints: dict[int, Any] = {}
        self.info = ctypes.c_int(0)
        self.p_info = ctypes.addressof(self.info)
        self.p_R = self._int(R)
        self.p_1 = self._int(1)

    def _int(self, v: int) -> int:
        if v not in self._ints:
            self._ints[v] = self._ct.c_int(v)
        return self._ct.addressof(self._ints[v])

    def factor(self, M: np.ndarray, x: np.ndarray, second_moments: bool) -> tuple[int, float]:
        """Factor ``M`` and overwrite ``x`` with ``M^{-1} x`` (and ``M`` with ``M^{-1} + x x^T``).

        Parameters
        ----------
        M : ndarray, shape (R*R,), float64, C-contiguous
            A symmetric positive-definite matrix. On return its Fortran lower (= C-order
            upper) triangle holds the Cholesky factor, or with ``second_moments``
            ``M^{-1} + x x^T`` (the solved ``x``).
        x : ndarray, shape (R,), float64, contiguous
            Right-hand side, overwritten with the solution.
        second_moments : bool

        Returns
        -------
        info : int
            0, or the LAPACK ``info`` of a failed factorisation.
        logdet : float
            ``log det M``.
        """
        lp, a, pR, pi = self.lp, self.a, self.p_R, self.p_info
        base, xp = M.ctypes.data, x.ctypes.data
        lp["potrf"](a["L"], pR, base, pR, pi)
        if self.info.value:
            return int(self.info.value), np.nan
        logdet = 2.0 * float(np.log(M[:: self.R + 1]).sum())
        lp["potrs"](a["L"], pR, self.p_1, base, pR, xp, pR, pi)
        if not second_moments:
            return 0, logdet
        info = self._invert(base, 0, self.R)
        if info:
            return info, logdet
        lp["lauum"](a["L"], pR, base, pR, pi)
        lp["syr"](a["L"], pR, a["1.0"], xp, self.p_1, base, pR)
        return int(self.info.value), logdet

    def _invert(self, base: int, r0: int, n: int) -> int:
        """Invert the lower-triangular diagonal block ``[r0:r0+n, r0:r0+n]`` in place.

        ``[[A, 0], [S, D]]^{-1} = [[A^-1, 0], [-D^-1 S A^-1, D^-1]]``, recursively, with
        ``trtri`` on blocks of order <= :data:`_TRTRI_LEAF` (OpenBLAS's single-threaded
        ``trtri`` at R = 300 is about twice as slow as this).
        """
        lp, a, pR, R = self.lp, self.a, self.p_R, self.R
        p = base + 8 * (r0 + r0 * R)
        if n <= _TRTRI_LEAF:
            lp["trtri"](a["L"], a["N"], self._int(n), p, pR, self.p_info)
            return int(self.info.value)
        h = n // 2
        info = self._invert(base, r0, h) or self._invert(base, r0 + h, n - h)
        if info:
            return info
        S = base + 8 * (r0 + h + r0 * R)
        D = base + 8 * (r0 + h + (r0 + h) * R)
        m_, n_ = self._int(n - h), self._int(h)
        lp["trmm"](a["R"], a["L"], a["N"], a["N"], m_, n_, a["1.0"], p, pR, S, pR)  # S A^-1
        lp["trmm"](a["L"], a["L"], a["N"], a["N"], m_, n_, a["-1.0"], D, pR, S, pR)  # -D^-1 S A^-1
        return 0


def _posteriors(
    Lp: np.ndarray, b: np.ndarray, *, second_moments: bool, n_threads: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Posterior means (and packed second moments) of a batch of utterances.

    Each precision is unpacked by one gather (:func:`_full_index`) into a float64
    R x R buffer and, per utterance without the GIL (:class:`_Factoriser`), factored in
    place by LAPACK ``potrf``; the mean comes from ``potrs`` (two triangular solves),
    ``L^{-1}`` in place from a blocked triangular inverse and ``lauum`` (the two halves
    of ``potri``), and ``E[w w^T]`` from a rank-one ``syr``; one gather packs it again.
    The factorisations are float64 whatever the dtype of ``Lp``.

    Parameters
    ----------
    Lp : ndarray, shape (B, R(R+1)/2), float32 or float64
        Packed ``sum_k n_uk T_k T_k^T`` (without the identity). Overwritten with the
        packed ``E[w w^T]`` when ``second_moments``.
    b : ndarray, shape (B, R), float32 or float64
        ``T f_u``.
    second_moments : bool
        Also compute the packed ``E[w w^T]`` (training); else only the means (extraction).
    n_threads : int
        Threads over sub-blocks of utterances (the result does not depend on it).

    Returns
    -------
    m : ndarray, shape (B, R), float64
        ``E[w_u]``.
    logdet : ndarray, shape (B,), float64
        ``log det L_u``.
    Ep : ndarray, shape (B, R(R+1)/2), Lp's dtype, or None
        ``Lp`` holding the packed ``E[w_u w_u^T]`` (None unless ``second_moments``).
    """
    B, R = b.shape
    _, _, upper, _, diag = _packing(R)
    full = _full_index(R)
    m = np.array(b, dtype=np.float64, order="C")  # overwritten by the solutions
    logdet = np.empty(B)
    failed: list[str] = []

    def sub_block(a: int, e: int) -> None:
        fac = _Factoriser(R)
        M = np.empty(R * R)  # one cache-resident buffer per thread
        same = Lp.dtype == M.dtype
        for u in range(a, e):
            if same:
                np.take(Lp[u], full, out=M)
            else:
                M[:] = np.take(Lp[u], full)
            M[diag] += 1.0
            info, logdet[u] = fac.factor(M, m[u], second_moments)
            if info != 0:
                failed.append(f"not positive definite (LAPACK info {info})")
                return
            if second_moments:
                if same:
                    np.take(M, upper, out=Lp[u])
                else:
                    Lp[u] = np.take(M, upper)

    _in_threads(sub_block, B, _SUB_BLOCK, n_threads)
    if failed:
        raise ModelError(
            f"i-vector posterior precision: {failed[0]}; the statistics hold non-finite or negative counts"
        )
    return m, logdet, (Lp if second_moments else None)


# ---------------------------------------------------------------------------------------
# E-step accumulators
# ---------------------------------------------------------------------------------------


@dataclass
class TVAccumulators:
    """Additive statistics of the total-variability E-step over a set of utterances.

    Attributes
    ----------
    A : ndarray, shape (K, R(R+1)/2), float64
        Packed ``sum_u n_uk E[w_u w_u^T]``.
    C : ndarray, shape (R, K*D), float64
        ``sum_u E[w_u] f_u^T``.
    S : ndarray, shape (R(R+1)/2,), float64
        Packed ``sum_u E[w_u w_u^T]`` (for the minimum-divergence step).
    N : ndarray, shape (K,), float64
        ``sum_u n_uk``.
    loglik : float
        ``sum_u -1/2 log det L_u + 1/2 b_u^T E[w_u]``.
    n_utterances : int
    """

    A: FloatArray
    C: FloatArray
    S: FloatArray
    N: FloatArray
    loglik: float
    n_utterances: int

    def __iadd__(self, other: TVAccumulators) -> TVAccumulators:
        self.A += other.A
        self.C += other.C
        self.S += other.S
        self.N += other.N
        self.loglik += other.loglik
        self.n_utterances += other.n_utterances
        return self


def tv_estep(
    T: FloatArray,
    n: FloatArray,
    f: FloatArray,
    *,
    gram: FloatArray | None = None,
    n_threads: int = 1,
    dtype: Any = "float64",
    return_means: bool = False,
) -> Any:
    """E-step accumulators of one batch of utterances.

    Parameters
    ----------
    T : ndarray, shape (R, K*D), float64
    n : ndarray, shape (B, K), float64
        Zeroth-order statistics.
    f : ndarray, shape (B, K*D), float64
        Centred, whitened first-order statistics.
    gram : ndarray, shape (K, R(R+1)/2), float64, optional
        :func:`packed_gram` of ``T`` (computed when not given).
    n_threads : int
        Threads for the per-utterance factorisations (the result does not depend on it).
    dtype : {"float64", "float32"}
        Precision of the four GEMMs within the batch; the per-utterance factorisations
        and the accumulators are float64 (batches are summed in float64).
    return_means : bool
        Also return the posterior means ``E[w_u]`` (the session factors of ISV training,
        :mod:`gmmspeaker.isv`, which keeps them between iterations).

    Returns
    -------
    TVAccumulators, or (TVAccumulators, ndarray of shape (B, R), float64) with ``return_means``
    """
    dt = _check_dtype(dtype)
    n = np.asarray(n, dtype=np.float64)
    nd = n.astype(dt, copy=False)
    fd = np.asarray(f, dtype=dt)
    Td = np.asarray(T, dtype=dt)
    if gram is None:
        gram = packed_gram(T, n.shape[1], n_threads=n_threads)
    Lp = _matmul(nd, np.asarray(gram, dtype=dt), n_threads)  # (B, P): every precision in one GEMM
    b = _matmul(fd, Td.T, n_threads)
    m, logdet, Ep = _posteriors(Lp, b, second_moments=True, n_threads=n_threads)
    assert Ep is not None
    # one GEMM gives A (rows n_k) and S (a row of ones)
    nS = np.concatenate([nd.T, np.ones((1, nd.shape[0]), dtype=dt)])
    AS = _matmul(nS, Ep, n_threads).astype(np.float64, copy=False)
    acc = TVAccumulators(
        A=AS[:-1],
        C=_matmul(m.astype(dt, copy=False).T, fd, n_threads).astype(np.float64, copy=False),
        S=AS[-1],
        N=n.sum(0),
        loglik=float(np.sum(-0.5 * logdet + 0.5 * np.einsum("ur,ur->u", b.astype(np.float64), m))),
        n_utterances=int(n.shape[0]),
    )
    return (acc, m) if return_means else acc


# ---------------------------------------------------------------------------------------
# Where the statistics come from (in memory, or an HDF5 file read by the workers)
# ---------------------------------------------------------------------------------------


def _read_file_rows(
    path: str, rows: np.ndarray | None, a: int, b: int, names: tuple[str, ...] = ("n", "f")
) -> tuple[np.ndarray, ...]:
    """Rows ``a:b`` of a statistics file's datasets ``names`` (default the zeroth- and
    first-order statistics), or of its selection ``rows`` (file row indices)."""
    import h5py

    with h5py.File(path, "r") as h5:
        if rows is None:
            return tuple(np.asarray(h5[name][a:b], dtype=np.float64) for name in names)
        sel = rows[a:b]
        if sel.size and np.array_equal(sel, np.arange(sel[0], sel[0] + sel.size)):  # a run of rows
            return tuple(np.asarray(h5[name][sel[0] : sel[0] + sel.size], dtype=np.float64) for name in names)
        if np.all(np.diff(sel) > 0):  # increasing (sorted ids): read as they are, no reordering
            return tuple(np.asarray(h5[name][sel], dtype=np.float64) for name in names)
        order = np.argsort(sel, kind="stable")  # HDF5 reads increasing rows
        back = np.empty_like(order)
        back[order] = np.arange(order.size)
        srt = sel[order]
        return tuple(np.asarray(h5[name][srt], dtype=np.float64)[back] for name in names)


#: Rows of zeroth-order statistics hashed at a time by the training-data signature.
SIGNATURE_ROWS = 4096


@dataclass(frozen=True)
class _Source:
    stats: UtteranceStats | None
    path: str | None
    n_utts: int
    K: int
    D: int
    fingerprint: str
    file_rows: np.ndarray | None = None  # with a path: the selected rows, in training order

    def rows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        if self.stats is not None:
            return self.stats.n[a:b], self.stats.f[a:b]
        n, f = _read_file_rows(self.path, self.file_rows, a, b)  # type: ignore[arg-type]
        return n, f

    def worker_view(self, a: int, b: int) -> Any:
        """What a worker gets for rows a:b: the arrays, or (path, file rows) to read them."""
        if self.stats is not None:
            return self.rows(a, b)
        sel = np.arange(a, b) if self.file_rows is None else self.file_rows[a:b]
        return (self.path, sel)

    def signature(self) -> str:
        """A hash of the ids and zeroth-order statistics (identifies the training data).

        The zeroth-order statistics are read :data:`SIGNATURE_ROWS` rows at a time (never
        the first-order ones): memory does not grow with the number of utterances.
        """
        h = hashlib.sha256()
        if self.stats is not None:
            ids = list(self.stats.ids)
        else:
            import h5py

            with h5py.File(self.path, "r") as h5:  # type: ignore[arg-type]
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
            if self.file_rows is not None:
                ids = [ids[i] for i in self.file_rows]
        h.update("\n".join(ids).encode())
        for a in range(0, self.n_utts, SIGNATURE_ROWS):
            b = min(a + SIGNATURE_ROWS, self.n_utts)
            if self.stats is not None:
                n = self.stats.n[a:b]
            else:
                (n,) = _read_file_rows(self.path, self.file_rows, a, b, ("n",))  # type: ignore[arg-type]
            h.update(np.ascontiguousarray(n, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def _open_source(stats: UtteranceStats | PathLike, utterances: Sequence[str] | None = None) -> _Source:
    """Where the statistics come from; ``utterances`` selects (and orders) a subset by id."""
    if isinstance(stats, UtteranceStats):
        if utterances is not None:
            stats = stats.subset(list(utterances))
        U, K, D, fp = len(stats), stats.n_components, stats.n_dims, stats.ubm_fingerprint
        src = _Source(stats, None, U, K, D, fp)
    else:
        import h5py

        path = Path(stats)
        if not path.is_file():
            raise DataError(f"{path}: statistics file not found")
        try:
            with h5py.File(path, "r") as h5:
                U, K = h5["n"].shape
                KD = h5["f"].shape[1]
                fp = h5.attrs.get("ubm_fingerprint", "")
                ids = (
                    [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
                    if utterances is not None
                    else None
                )
        except (OSError, KeyError) as exc:
            raise DataError(f"{path}: not a statistics file ({exc})") from None
        fp = fp.decode() if isinstance(fp, bytes) else str(fp)
        rows = None
        if ids is not None:
            pos = {u: i for i, u in enumerate(ids)}
            missing = [u for u in utterances if u not in pos]  # type: ignore[union-attr]
            if missing:
                raise DataError(f"{path}: no statistics for {len(missing)} utterance(s), e.g. {missing[:3]}")
            rows = np.fromiter((pos[u] for u in utterances), dtype=np.int64)  # type: ignore[union-attr]
            U = rows.size
        src = _Source(None, str(path), int(U), int(K), int(KD // K), fp, rows)
    if src.n_utts == 0:
        raise DataError("total variability: no utterance statistics to train on")
    return src


def _check_dtype(dtype: Any) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"total variability: dtype must be float32 or float64, got {dtype!r}")
    return dt


def _batches(U: int, batch_size: int) -> list[tuple[int, int]]:
    bs = max(1, int(batch_size))
    return [(a, min(U, a + bs)) for a in range(0, U, bs)]


def _load_rows(view: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(view, tuple) and len(view) == 2 and isinstance(view[0], str):
        path, rows = view
        n, f = _read_file_rows(path, np.asarray(rows), 0, len(rows))
        return n, f
    return view


def _estep_task(T_ref: Any, gram_ref: Any, view: Any, dtype: str) -> TVAccumulators:
    """Worker: accumulators of one batch; ``T_ref``/``gram_ref`` are arrays or .npy paths."""
    T, gram = shared(T_ref), shared(gram_ref)
    n, f = _load_rows(view)
    return tv_estep(np.asarray(T), n, f, gram=np.asarray(gram), dtype=dtype)


def _map_reduce(
    src: _Source,
    T: np.ndarray,
    gram: np.ndarray,
    batch_size: int,
    n_jobs: int,
    tmpdir: str | None,
    dtype: str,
) -> TVAccumulators:
    """Sum of the batch accumulators, in batch order."""
    from joblib import Parallel, delayed

    batches = _batches(src.n_utts, batch_size)
    if n_jobs == 1 or len(batches) == 1:
        nt = n_cores()
        parts: Iterator[TVAccumulators] = (
            tv_estep(T, *src.rows(a, b), gram=gram, n_threads=nt, dtype=dtype) for a, b in batches
        )
    else:
        refs = share_with_workers(tmpdir, {"T": T, "gram": gram})
        T_ref, g_ref = refs["T"], refs["gram"]
        parts = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_estep_task)(T_ref, g_ref, src.worker_view(a, b), dtype) for a, b in batches
        )
    total: TVAccumulators | None = None
    for p in parts:
        if total is None:
            total = p
        else:
            total += p
    assert total is not None
    return total


# ---------------------------------------------------------------------------------------
# M-step and minimum divergence
# ---------------------------------------------------------------------------------------


def tv_m_step(acc: TVAccumulators, T_old: np.ndarray, K: int, n_threads: int = 1) -> np.ndarray:
    """Solve ``A_k T_k = C_k`` for every component (batched over blocks of components).

    Components that no utterance visited (``N_k = 0``) keep their old ``T_k``. The
    blocks run in threads with one BLAS thread each (a threaded BLAS on these small
    batched solves is up to 30 times slower when another process holds a core); the
    result does not depend on ``n_threads``.
    """
    R = T_old.shape[0]
    D = T_old.shape[1] // K
    full = _full_index(R)
    T_new = T_old.copy()
    Tv = T_new.reshape(R, K, D)
    Cv = acc.C.reshape(R, K, D)
    used = acc.N > 1e-10

    def block(a: int, b: int) -> None:
        k = np.arange(a, b)[used[a:b]]
        if k.size == 0:
            return
        Af = np.take(acc.A[k], full, axis=1)
        X = np.linalg.solve(Af.reshape(k.size, R, R), Cv[:, k, :].transpose(1, 0, 2))  # (kb, R, D)
        Tv[:, k, :] = X.transpose(1, 0, 2)

    _in_threads(block, K, _COMP_BLOCK, n_threads)
    return T_new


def _min_divergence(T: np.ndarray, acc: TVAccumulators, n_threads: int = 1) -> np.ndarray:
    """``T <- G^T T`` with ``G G^T = (1/U) sum_u E[w w^T]`` (the prior made standard normal again)."""
    R = T.shape[0]
    S = np.take(acc.S, _full_index(R)).reshape(R, R)
    G = np.linalg.cholesky(S / acc.n_utterances)
    return _matmul(np.ascontiguousarray(G.T), T, n_threads)


def initial_subspace(
    batches: Iterable[tuple[np.ndarray, np.ndarray]], K: int, D: int, rank: int, rng: np.random.Generator
) -> np.ndarray:
    """Gaussian (rank, K*D) start of a subspace (T or U) scaled to the variance the statistics show.

    With ``f_uk ~ n_uk T_k^T w + noise`` (unit-variance noise per frame),
    ``E||f_uk||^2 ~ n_uk^2 D R s^2 + n_uk D`` for entries of variance ``s^2``. ``batches``
    yields ``(n, f)`` row blocks of the statistics, summed in the order given.
    """
    sf = sn = sn2 = 0.0
    for n, f in batches:
        sf += float(np.einsum("ij,ij->", f, f))
        sn += float(n.sum())
        sn2 += float(np.einsum("ij,ij->", n, n))
    s2 = max(sf - D * sn, 1e-3 * sf) / (D * max(rank, 1) * max(sn2, 1e-300))
    return rng.standard_normal((rank, K * D)) * np.sqrt(s2)


# ---------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------


def _checkpoint_key(src: _Source, rank: int, min_divergence: bool, dtype: str) -> str:
    return (
        f"rank={rank};min_div={int(min_divergence)};dtype={dtype};K={src.K};D={src.D};U={src.n_utts};"
        f"ubm={src.fingerprint};data={src.signature()}"
    )


# ---------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------


def train_tv(
    stats: UtteranceStats | PathLike,
    *,
    rank: int = 400,
    iterations: int = 10,
    min_divergence: bool = True,
    rng: np.random.Generator,
    n_jobs: int = 1,
    batch_size: int = 256,
    checkpoint: PathLike | None = None,
    progress: bool = False,
    dtype: Any = "float64",
    tmp_dir: PathLike | None = None,
    utterances: Sequence[str] | None = None,
) -> TotalVariability:
    """Train a total-variability matrix by EM (Dehak/Kenny) with minimum divergence.

    Parameters
    ----------
    stats : UtteranceStats or path-like
        Training statistics, in memory or an HDF5 file written by
        :meth:`UtteranceStats.save` (then each worker reads only its batch, so memory does
        not grow with the number of utterances).
    rank : int
        R, the i-vector dimension.
    iterations : int
        EM iterations (each: E-step over all utterances, M-step, minimum divergence).
    min_divergence : bool
        Re-whiten the prior after every M-step (faster convergence, same likelihood).
    rng : numpy.random.Generator
        Draws the initial T (scaled by the statistics' variance).
    n_jobs : int
        joblib workers over batches (-1: all cores). The result does not depend on it.
    batch_size : int
        Utterances per batch; memory is O(batch_size x R^2), never O(U).
    checkpoint : path-like, optional
        HDF5 file written after every iteration; a later call with the same options and
        statistics resumes from it (and returns the same T as an uninterrupted run).
    progress : bool
        Progress bar over iterations.
    dtype : {"float64", "float32"}
        Precision of the per-batch GEMMs (float32 halves their time, 10-20 % of an
        iteration at R = 300; factorisations, accumulators, M-step and T stay float64).
    tmp_dir : path-like, optional
        With ``n_jobs != 1`` on process workers (loky), where ``T`` and its Gram matrices
        are written for the workers to memory-map (a temporary folder inside it, removed
        on return; default: the system's temporary folder). On a cluster pass a folder
        the workers share (the recipe's workdir). With the Dask backend they travel
        through Dask instead and nothing is written. The loky workers are shut down when
        training returns.
    utterances : sequence of str, optional
        Train on these utterances of ``stats``, in this order (default: all). With a file,
        only their rows are read, batch by batch (as ``stats.subset(utterances)`` in
        memory, without loading the file).

    Returns
    -------
    TotalVariability
        ``T`` (R, K*D) float64 and the objective trace.

    Raises
    ------
    ConfigError
        ``rank`` or ``iterations`` out of range.
    DataError
        No statistics.
    """
    if int(rank) < 1:
        raise ConfigError(f"total variability: rank must be >= 1, got {rank!r}")
    if int(iterations) < 0:
        raise ConfigError(f"total variability: iterations must be >= 0, got {iterations!r}")
    rank, iterations = int(rank), int(iterations)
    dt = _check_dtype(dtype)
    src = _open_source(stats, utterances)
    if rank > src.K * src.D:
        raise ConfigError(f"total variability: rank {rank} exceeds the supervector size {src.K * src.D}")
    ck = None
    if checkpoint is not None:
        key = _checkpoint_key(src, rank, min_divergence, dt.name)
        ck = Checkpoint(Path(checkpoint), _CKPT_FORMAT, key, {"T": (rank, src.K * src.D)})

    def step(params: dict[str, np.ndarray], tmpdir: str | None) -> tuple[dict[str, np.ndarray], float]:
        T = params["T"]
        gram = packed_gram(T, src.K, n_threads=n_cores()).astype(dt, copy=False)
        acc = _map_reduce(src, T.astype(dt, copy=False), gram, batch_size, n_jobs, tmpdir, dt.name)
        del gram
        T = tv_m_step(acc, T, src.K, n_cores())
        if min_divergence:
            T = _min_divergence(T, acc, n_cores())
        return {"T": T}, acc.loglik

    params, trace = run_em(
        step,
        lambda: {
            "T": initial_subspace(
                (src.rows(a, b) for a, b in _batches(src.n_utts, batch_size)), src.K, src.D, rank, rng
            )
        },
        iterations=iterations,
        checkpoint=ck,
        n_jobs=n_jobs,
        tmp_dir=tmp_dir,
        log=logger,
        tag="tv",
        name="T-matrix",
        what="total-variability",
        objective="objective",
        n_units=src.n_utts,
        unit="utterance",
        progress=progress,
    )
    T = params["T"]
    return TotalVariability(T, src.K, src.D, src.fingerprint, tuple(trace))


def _check_model(tv: TotalVariability, src: _Source) -> None:
    if (src.K, src.D) != (tv.n_components, tv.n_dims):
        raise ModelError(
            f"total variability is for K={tv.n_components}, D={tv.n_dims}; statistics have K={src.K}, D={src.D}"
        )
    if tv.ubm_fingerprint and src.fingerprint and tv.ubm_fingerprint != src.fingerprint:
        raise ModelError(
            f"total variability was trained on UBM {tv.ubm_fingerprint}, statistics come from UBM "
            f"{src.fingerprint}; recompute one of them"
        )


def extract_ivectors(
    tv: TotalVariability,
    stats: UtteranceStats | PathLike,
    *,
    batch_size: int = 256,
    n_threads: int | None = None,
    dtype: Any = "float64",
) -> FloatArray:
    """i-vectors: posterior means of ``w`` given each utterance's statistics.

    Parameters
    ----------
    tv : TotalVariability
    stats : UtteranceStats or path-like
        Statistics of the utterances (same UBM as ``tv``).
    batch_size : int
        Utterances per batch (one precision GEMM and one batched Cholesky each).
    n_threads : int, optional
        Threads for the per-utterance factorisations (default: the usable cores).
    dtype : {"float64", "float32"}
        Precision of the GEMMs (the factorisations are float64); the result is float64.

    Returns
    -------
    ndarray, shape (U, R), float64
        Row u is ``E[w_u] = L_u^{-1} T f_u``, in the order of ``stats.ids``.

    Raises
    ------
    ModelError
        ``tv`` and the statistics disagree on K, D or the UBM.
    """
    src = _open_source(stats)
    _check_model(tv, src)
    T = np.asarray(tv.T, dtype=np.float64)
    dt = _check_dtype(dtype)
    nt = n_cores() if n_threads is None else int(n_threads)
    gram = packed_gram(T, src.K, n_threads=nt).astype(dt, copy=False)
    Td = T.astype(dt, copy=False)
    out = np.empty((src.n_utts, tv.rank))
    for a, b in _batches(src.n_utts, batch_size):
        n, f = src.rows(a, b)
        Lp, bb = _matmul(n.astype(dt), gram, nt), _matmul(f.astype(dt), Td.T, nt)
        out[a:b], _, _ = _posteriors(Lp, bb, second_moments=False, n_threads=nt)
    return out


def tv_log_likelihood(
    tv: TotalVariability, stats: UtteranceStats | PathLike, *, batch_size: int = 256
) -> float:
    """The EM objective of ``tv`` on ``stats``: ``sum_u -1/2 log det L_u + 1/2 b_u^T E[w_u]``.

    This is the log-likelihood of the first-order statistics under the model, up to
    terms that do not depend on T (float64).
    """
    src = _open_source(stats)
    _check_model(tv, src)
    T = np.asarray(tv.T, dtype=np.float64)
    nt = n_cores()
    gram = packed_gram(T, src.K, n_threads=nt)
    total = 0.0
    for a, b in _batches(src.n_utts, batch_size):
        n, f = src.rows(a, b)
        bb = _matmul(f, T.T, nt)
        m, logdet, _ = _posteriors(_matmul(n, gram, nt), bb, second_moments=False, n_threads=nt)
        total += float(np.sum(-0.5 * logdet + 0.5 * np.einsum("ur,ur->u", bb, m)))
    return total
