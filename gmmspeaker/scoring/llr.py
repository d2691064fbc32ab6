"""Log-likelihood-ratio scoring of test utterances against MAP-adapted models and the UBM.

The score of a model on a test utterance ``X`` (T frames) is the frame-averaged
log-likelihood ratio ``(1/T) sum_t [log p(x_t | model) - log p(x_t | UBM)]``, computed:

``"full"``
    over all K components;
``"top_c"``
    the UBM picks its C best components per frame and both the model and the UBM are
    evaluated only on those (Reynolds et al., 2000);
``"linear"``
    the first-order Taylor approximation of the LLR in the means (Glembek et al., 2009)
    ``(1/T) sum_k (mu_sk - mu_k)^T Sigma_k^-1 (F_k - N_k mu_k)`` with the test
    utterance's statistics ``N``, ``F`` under the UBM (all components, no channel
    compensation). Only for mean-adapted models.

Only diagonal-covariance UBMs (``covariances_`` of shape (K, D), or (K,) spherical) are
supported; full and tied covariances raise :class:`~gmmspeaker.errors.ModelError`.

A model is the UBM plus a change of its natural parameters: with precisions ``P = 1/var``
the log-density of component k is ``x^2 . (-P_k/2) + x . (P_k mu_k) + c_k``. The models'
changes ``(dA, dB, dc)`` are computed once in a :class:`ScoringContext`, so a model's
log-densities are the UBM's plus ``x . dB_k + dc_k`` (plus ``x^2 . dA_k`` when variances
are adapted). The UBM pass of a test utterance (one GEMM) is shared by all of its models,
and the models are scored together in batched products: no Python loop over models,
frames or components. Products run in ``dtype`` (float32 by default); log-densities,
sums and scores are float64. A model whose parameters equal the UBM's scores exactly 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray, IntArray
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.gmm.kernel import (
    PreparedDiag,
    component_logdens,
    diag_ubm,
    logsumexp,
    posteriors,
    prepare,
)
from gmmspeaker.gmm.kernel import top_c as select_top_c
from gmmspeaker.gmm.map import SpeakerModels, ubm_fingerprint

__all__ = [
    "METHODS",
    "ScoringContext",
    "score_prepared",
    "score_all_models",
    "score_tests",
    "same_prepared_ubm",
    "score_utterance",
    "score_trials",
]

logger = logging.getLogger(__name__)

#: Scoring methods.
METHODS: tuple[str, ...] = ("full", "top_c", "linear")

# Elements of the largest temporary (models x frames x components [x dims]) per block.
_BLOCK_ELEMENTS = 4_000_000
# Elements (models x pooled frame-components) of the products of score_all_models per pool.
_POOL_ELEMENTS = 5_000_000


@dataclass(frozen=True)
class ScoringContext:
    """A UBM and a set of models in the natural-parameter form used for scoring.

    Build it once with :meth:`build` and score many test utterances with
    :func:`score_prepared`. Memory: ``M * K * D`` elements of ``dtype`` (twice that when
    variances are adapted).

    Attributes
    ----------
    ubm : PreparedDiag
        The UBM prepared by :func:`gmmspeaker.gmm.kernel.prepare` in ``dtype``: its
        log-densities of frames X are one GEMM of ``[(X-c)**2, X-c, 1]`` (centred on the
        weighted mean of the means ``c``, for float32 conditioning), the same kernel as
        the E-step.
    d_lin : ndarray, shape (M, K, D), ``dtype``
        Change of ``P mu`` (``P (mu_s - mu)`` for mean-only models).
    d_quad : ndarray, shape (M, K, D), ``dtype``, or None
        Change of ``-P/2`` (None when variances are not adapted).
    d_const : ndarray, shape (M, K), float64
        Change of the constant ``c``.
    ubm_means : ndarray, shape (K, D), float64
        UBM means (for linear scoring).
    means_only : bool
        True when neither weights nor variances are adapted.
    model_ids : list of str
        Ids of the M models, in row order.
    dtype : numpy dtype
        Dtype of the products.
    """

    ubm: PreparedDiag
    d_lin: FloatArray
    d_quad: FloatArray | None
    d_const: FloatArray
    ubm_means: FloatArray
    means_only: bool
    model_ids: list[str]
    dtype: np.dtype

    @property
    def n_models(self) -> int:
        return int(self.d_lin.shape[0])

    @property
    def n_components(self) -> int:
        return int(self.ubm_means.shape[0])

    @property
    def n_dims(self) -> int:
        return int(self.ubm_means.shape[1])

    def pooled_weights(self) -> FloatArray:
        """The models' changes as one GEMM operand per component, (K, D [+ D] + 1, M) in ``dtype``.

        ``[x, (x*x), 1] @ W[k]`` is every model's change of component k's log-density at
        frame x (``x*x`` rows when variances are adapted; the last row is the constant).
        Computed on first use and kept with the context (not pickled with it, not copied
        by :meth:`select`).
        """
        w = self.__dict__.get("_pooled_weights")
        if w is None:
            parts = [self.d_lin.transpose(1, 2, 0)]
            if self.d_quad is not None:
                parts.append(self.d_quad.transpose(1, 2, 0))
            parts.append(self.d_const.T[:, None, :].astype(self.dtype))
            w = np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=self.dtype)
            object.__setattr__(self, "_pooled_weights", w)
        return w

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_pooled_weights", None)  # derived: workers build their own
        shared = state.get("_shared")
        if shared is not None:  # the large arrays travel as the paths of their files
            for name in shared:
                state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        shared = state.get("_shared")
        if shared is not None:
            for name, path in shared.items():
                state[name] = np.load(path, mmap_mode="r")
        self.__dict__.update(state)

    def shared(self, folder: str | Path) -> ScoringContext:
        """This context with its large arrays in ``.npy`` files under ``folder``.

        The copy's model changes (``d_lin``, ``d_quad``) and :meth:`pooled_weights` are
        memory-mapped from files written once in ``folder``, and a pickle of it carries
        their paths instead of their bytes: process workers given it for every task map
        the files (joblib would hash and copy ``M x K x D`` elements per task, and each
        worker rebuild the pooled weights). ``folder`` must be readable by the workers (the
        workdir on a cluster) and outlive them; the caller removes it. Same numbers.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, str] = {}
        arrays = {"d_lin": self.d_lin, "d_quad": self.d_quad, "_pooled_weights": self.pooled_weights()}
        for name, arr in arrays.items():
            if arr is not None:
                path = folder / f"{name.strip('_')}.npy"
                np.save(path, arr)
                paths[name] = str(path)
        state = {k: v for k, v in self.__dict__.items() if k != "_pooled_weights"}
        state["_shared"] = paths
        out = object.__new__(ScoringContext)
        out.__setstate__(state)
        return out

    def select(self, rows: IntArray | Sequence[int]) -> ScoringContext:
        """The context of some of its models (``rows``, in this order), the UBM's
        preparation shared and no model prepared again."""
        r = np.asarray(rows, dtype=np.intp).reshape(-1)
        return replace(
            self,
            d_lin=np.ascontiguousarray(self.d_lin[r]),
            d_quad=None if self.d_quad is None else np.ascontiguousarray(self.d_quad[r]),
            d_const=np.ascontiguousarray(self.d_const[r]),
            model_ids=[self.model_ids[i] for i in r],
        )

    @classmethod
    def build(
        cls,
        ubm: Any,
        models: SpeakerModels,
        *,
        model_index: IntArray | Sequence[int] | None = None,
        dtype: npt.DTypeLike = np.float32,
        prepared: PreparedDiag | None = None,
    ) -> ScoringContext:
        """Prepare a UBM and (a subset of) its adapted models for scoring.

        Parameters
        ----------
        ubm : object
            Diagonal UBM: ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` (K, D).
        models : SpeakerModels
            Models adapted from ``ubm``.
        model_index : int array (m,), optional
            Rows of ``models`` to keep, in this order (default: all).
        dtype : numpy dtype, default float32
            Dtype of the matrix products.
        prepared : PreparedDiag, optional
            ``ubm`` already prepared in ``dtype`` (the ``ubm`` attribute of another
            context of it): shared instead of prepared again, so that several contexts
            of one UBM (trial and cohort models) compute one UBM pass.

        Raises
        ------
        ModelError
            Non-diagonal UBM, or models whose shape or UBM fingerprint do not match.
        """
        params = diag_ubm(ubm, what="scoring")
        w, mu, var = params.weights, params.means, params.covariances
        k, d = mu.shape
        if (models.n_components, models.n_dims) != (k, d):
            raise ModelError(
                f"models have K={models.n_components}, D={models.n_dims} but the UBM has K={k}, D={d}"
            )
        if models.ubm_fingerprint and models.ubm_fingerprint != ubm_fingerprint(ubm):
            raise ModelError(
                f"models were adapted from another UBM (fingerprint {models.ubm_fingerprint}, "
                f"this UBM {ubm_fingerprint(ubm)})"
            )
        rows = (
            np.arange(len(models))
            if model_index is None
            else np.asarray(model_index, dtype=np.intp).reshape(-1)
        )
        if rows.size and (rows.min() < -len(models) or rows.max() >= len(models)):
            raise DataError(f"model_index out of range for {len(models)} models")
        dt = np.dtype(dtype)
        prec = 1.0 / var
        if prepared is not None and (prepared.dtype != dt or prepared.W.shape != (2 * d + 1, k)):
            raise ModelError(f"prepared UBM of another shape or dtype than this {k} x {d} {dt} UBM")
        ubm_prep = prepare(params, dt) if prepared is None else prepared
        assert isinstance(ubm_prep, PreparedDiag)

        # Differences are taken in the models' storage precision, so that a model stored
        # equal to the UBM has exactly zero changes.
        store = np.asarray(models.means).dtype
        mu_r = mu.astype(store).astype(np.float64)
        mu_s = np.asarray(models.means)[rows].astype(np.float64)
        delta = mu_s - mu_r
        with np.errstate(divide="ignore"):
            if models.weights is not None:
                w_r = np.log(w.astype(store).astype(np.float64))
                d_const = np.log(np.asarray(models.weights)[rows].astype(np.float64)) - w_r
            else:
                d_const = np.zeros(delta.shape[:2])
        if models.variances is None:
            d_lin = prec * delta
            d_quad = None
            d_const = d_const - 0.5 * (d_lin * (mu_s + mu_r)).sum(axis=2)
        else:
            var_r = var.astype(store).astype(np.float64)
            prec_r = 1.0 / var_r
            var_s = np.asarray(models.variances)[rows].astype(np.float64)
            prec_s = 1.0 / var_s
            d_lin = prec_s * mu_s - prec_r * mu_r
            d_quad = (-0.5 * (prec_s - prec_r)).astype(dt)
            d_const = d_const - 0.5 * (
                (np.log(var_s) - np.log(var_r)).sum(axis=2)
                + (prec_s * mu_s * mu_s - prec_r * mu_r * mu_r).sum(axis=2)
            )
        ids = [models.model_ids[i] for i in rows]
        return cls(
            ubm=ubm_prep,
            d_lin=np.ascontiguousarray(d_lin.astype(dt)),
            d_quad=None if d_quad is None else np.ascontiguousarray(d_quad),
            d_const=np.ascontiguousarray(d_const),
            ubm_means=mu,
            means_only=models.weights is None and models.variances is None,
            model_ids=ids,
            dtype=dt,
        )


def _check_frames(X: FloatArray, ctx: ScoringContext, what: str) -> FloatArray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != ctx.n_dims:
        raise DataError(f"{what}: features have shape {X.shape}, expected (T, {ctx.n_dims})")
    if X.shape[0] == 0:
        raise DataError(f"{what}: no frames to score")
    if not np.all(np.isfinite(X)):
        raise DataError(f"{what}: features contain NaN or infinite values")
    return X


def _ubm_logdens(Xd: FloatArray, ctx: ScoringContext) -> FloatArray:
    """UBM component log-densities (T, K) in ``ctx.dtype``: the kernel's one centred GEMM.

    Rounding errors of the UBM log-densities are common to the model and the UBM terms of
    the LLR, which are both built on them, so they largely cancel.
    """
    return component_logdens(Xd, ctx.ubm)


def _llr_full(Xd: FloatArray, Lu: FloatArray, ctx: ScoringContext, rows: IntArray) -> FloatArray:
    """Sum over frames of the per-frame LLR, (m,), over all components."""
    t, d = Xd.shape
    k = ctx.n_components
    Lu = Lu.astype(np.float64)
    lse_u = logsumexp(Lu)  # (T,)
    X2 = Xd * Xd if ctx.d_quad is not None else None
    out = np.empty(rows.size)
    step = max(1, _BLOCK_ELEMENTS // (t * k))
    for s in range(0, rows.size, step):  # blocks of models, to bound memory
        r = rows[s : s + step]
        mb = r.size
        delta = Xd @ ctx.d_lin[r].reshape(mb * k, d).T  # (T, mb*K), one GEMM
        if X2 is not None and ctx.d_quad is not None:
            delta += X2 @ ctx.d_quad[r].reshape(mb * k, d).T
        Lm = Lu[:, None, :] + delta.reshape(t, mb, k)
        Lm += ctx.d_const[r][None, :, :]
        out[s : s + mb] = (logsumexp(Lm) - lse_u[:, None]).sum(axis=0)
    return out


def _select(Lu: FloatArray, c: int, selection: str) -> tuple[IntArray, FloatArray]:
    """The UBM's top-c components of each frame (T, C) and their log-densities (T, C) float64."""
    idx = select_top_c(Lu, c, method=selection)  # selected in the products' dtype (cheaper)
    return idx, np.take_along_axis(Lu, idx, axis=1).astype(np.float64)


def _llr_top_c(
    Xd: FloatArray,
    Lu: FloatArray,
    ctx: ScoringContext,
    rows: IntArray,
    c: int,
    selection: str,
    selected: tuple[IntArray, FloatArray] | None = None,
) -> FloatArray:
    """Sum over frames of the per-frame LLR, (m,), over the UBM's top-c components
    (``selected``: :func:`_select` of ``Lu``, when already done)."""
    t, d = Xd.shape
    k = ctx.n_components
    idx, Lu_sel = _select(Lu, c, selection) if selected is None else selected
    lse_u = logsumexp(Lu_sel)
    Xcol = Xd[:, :, None]  # (T, D, 1)
    X2col = (Xd * Xd)[:, :, None] if ctx.d_quad is not None else None
    out = np.empty(rows.size)
    step = max(1, _BLOCK_ELEMENTS // (t * c * d))
    for s in range(0, rows.size, step):  # blocks of models, to bound memory
        r = rows[s : s + step]
        # Gather the selected components of every model: (mb, T, C, D), then one batched
        # product with the frames: (mb, T, C, D) @ (T, D, 1) -> (mb, T, C).
        flat = (r[:, None, None] * k + idx[None]).reshape(-1)  # (mb*T*C,) rows of (M*K, D)
        shape = (r.size, t, c)
        delta = np.matmul(np.take(ctx.d_lin.reshape(-1, d), flat, axis=0).reshape(*shape, d), Xcol)[..., 0]
        if X2col is not None and ctx.d_quad is not None:
            delta += np.matmul(np.take(ctx.d_quad.reshape(-1, d), flat, axis=0).reshape(*shape, d), X2col)[
                ..., 0
            ]
        Lm = Lu_sel[None] + delta
        Lm += np.take(ctx.d_const.reshape(-1), flat).reshape(shape)
        out[s : s + r.size] = (logsumexp(Lm) - lse_u[None, :]).sum(axis=1)
    return out


def _llr_linear(Xd: FloatArray, Lu: FloatArray, ctx: ScoringContext, rows: IntArray) -> FloatArray:
    """Sum over frames of the linear-scoring LLR approximation, (m,)."""
    if not ctx.means_only:
        raise ConfigError(
            "linear scoring is defined for mean-adapted models only; these models also "
            "adapted weights or variances (use method 'full' or 'top_c')"
        )
    # (T, K) UBM posteriors, in dtype, with the kernel's underflow clip (no subnormal
    # posterior, nor a subnormal product with a frame, enters the statistics GEMM below)
    post = posteriors(Lu.copy())
    n = post.sum(axis=0, dtype=np.float64)
    f = (post.T @ Xd).astype(np.float64)  # (K, D)
    fc = f - n[:, None] * ctx.ubm_means  # centred first-order statistics
    k, d = fc.shape
    # One GEMV in ctx.dtype over all the models' K*D mean offsets.
    return (ctx.d_lin[rows].reshape(rows.size, k * d) @ fc.reshape(k * d).astype(ctx.dtype)).astype(
        np.float64
    )


def _check_options(method: str, top_c: int, chunk_size: int, selection: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown scoring method {method!r}; choose from {list(METHODS)}")
    if method == "top_c" and (isinstance(top_c, bool) or int(top_c) != top_c or top_c < 1):
        raise ConfigError(f"top_c must be a positive integer, got {top_c!r}")
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size!r}")
    if selection not in ("argmax", "argpartition"):
        raise ConfigError(f"selection must be 'argmax' or 'argpartition', got {selection!r}")


def _check_rows(rows: IntArray | Sequence[int] | None, context: ScoringContext) -> IntArray:
    r = np.arange(context.n_models) if rows is None else np.asarray(rows, dtype=np.intp).reshape(-1)
    if r.size and (r.min() < -context.n_models or r.max() >= context.n_models):
        raise DataError(f"rows out of range for {context.n_models} prepared models")
    return r


def _chunk_llr(
    Xd: FloatArray,
    Lu: FloatArray,
    ctx: ScoringContext,
    rows: IntArray,
    method: str,
    c: int,
    selection: str,
    selected: tuple[IntArray, FloatArray] | None = None,
) -> FloatArray:
    """Frame-summed LLRs (m,) of ``rows`` on one chunk, from its UBM log-densities ``Lu``."""
    if method == "linear":
        return _llr_linear(Xd, Lu, ctx, rows)
    if method == "full" or c >= ctx.n_components:
        return _llr_full(Xd, Lu, ctx, rows)
    return _llr_top_c(Xd, Lu, ctx, rows, c, selection, selected)


def score_prepared(
    X: FloatArray,
    context: ScoringContext,
    rows: IntArray | Sequence[int] | None = None,
    *,
    method: str = "top_c",
    top_c: int = 5,
    chunk_size: int = 20_000,
    selection: str = "argmax",
) -> FloatArray:
    """Score one test utterance against several prepared models.

    Parameters
    ----------
    X : ndarray, shape (T, D)
        Test frames.
    context : ScoringContext
        UBM and models, from :meth:`ScoringContext.build`.
    rows : int array (m,), optional
        Rows of ``context`` to score (default: all models of the context).
    method : {"full", "top_c", "linear"}, default "top_c"
        Scoring method (see the module docstring).
    top_c : int, default 5
        Components per frame for ``"top_c"``; ``top_c >= K`` is full scoring.
    chunk_size : int, default 20000
        Frames per block (memory bound for long utterances); does not change results
        beyond summation order.
    selection : {"argmax", "argpartition"}, default "argmax"
        How ``"top_c"`` finds each frame's C best UBM components
        (:func:`gmmspeaker.gmm.kernel.top_c`): C rounds of argmax (fastest for small C)
        or ``numpy.argpartition``. Same components (up to ties), same scores.

    Returns
    -------
    ndarray, shape (m,), float64
        Frame-averaged log-likelihood ratios.
    """
    _check_options(method, top_c, chunk_size, selection)
    X = _check_frames(X, context, "score")
    r = _check_rows(rows, context)
    c = int(top_c)
    total = np.zeros(r.size)
    t_all = X.shape[0]
    for s in range(0, t_all, chunk_size):
        Xd = np.ascontiguousarray(X[s : s + chunk_size], dtype=context.dtype)
        total += _chunk_llr(Xd, _ubm_logdens(Xd, context), context, r, method, c, selection)
    return total / t_all


def score_all_models(
    utterances: Sequence[FloatArray],
    context: ScoringContext,
    *,
    method: str = "top_c",
    top_c: int = 5,
    chunk_size: int = 20_000,
    selection: str = "argmax",
) -> FloatArray:
    """Scores of every model of ``context`` on every utterance (a cohort score matrix).

    The same scores as :func:`score_prepared` per utterance (up to the summation order of
    the ``dtype`` products), organised for many models (S-/T-norm cohorts of hundreds
    of models against thousands of utterances). Top-C: each utterance's UBM pass and
    component selection is done once; the selected (frame, component) pairs of several
    utterances are pooled and sorted by component, and for each component that some
    frame selected, one ``dtype`` GEMM gives the changes of *all* models on those frames
    (``(n_k, D) @ (D, M)``, reading each model's parameters of that component once per
    pool instead of once per frame); their exponentials, weighted by the UBM's top-C
    posteriors, are summed per frame by one sparse product and the frame sums are
    float64 (see :func:`_pooled_top_c`; the same LLR as :func:`score_prepared` within
    the float32 rounding of the terms). Other methods, or
    ``top_c >= K``, score utterance by utterance with :func:`score_prepared`.

    Parameters
    ----------
    utterances : sequence of ndarray, each shape (T_u, D)
        Test frames.
    context : ScoringContext
    method, top_c, chunk_size, selection
        As in :func:`score_prepared`.

    Returns
    -------
    ndarray, shape (M, U), float64
        ``out[m, u]`` is the frame-averaged LLR of model m on utterance u.
    """
    _check_options(method, top_c, chunk_size, selection)
    M, U = context.n_models, len(utterances)
    out = np.zeros((M, U))
    c = int(top_c)
    if method != "top_c" or c >= context.n_components:
        for u, X in enumerate(utterances):
            out[:, u] = score_prepared(X, context, method=method, top_c=c, chunk_size=chunk_size)
        return out
    frames_per_pool = max(1, _POOL_ELEMENTS // max(1, M * c))
    chunk_size = min(chunk_size, frames_per_pool)  # a pool holds < 2 x frames_per_pool frames
    pool: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    pooled = 0
    lengths = np.empty(U)
    for u, X in enumerate(utterances):
        X = _check_frames(X, context, f"utterance {u}")
        lengths[u] = X.shape[0]
        for s in range(0, X.shape[0], chunk_size):
            Xd = np.ascontiguousarray(X[s : s + chunk_size], dtype=context.dtype)
            pool.append((u, Xd, *_select(_ubm_logdens(Xd, context), c, selection)))
            pooled += Xd.shape[0]
            if pooled >= frames_per_pool:
                _pooled_top_c(pool, context, out)
                pool, pooled = [], 0
    if pool:
        _pooled_top_c(pool, context, out)
    return out / lengths[None, :]


def score_tests(
    utterances: Sequence[FloatArray],
    context: ScoringContext,
    rows: Sequence[IntArray | Sequence[int]],
    cohort: ScoringContext | None = None,
    *,
    method: str = "top_c",
    top_c: int = 5,
    chunk_size: int = 20_000,
    selection: str = "argmax",
) -> tuple[list[FloatArray], FloatArray | None]:
    """Trial scores and cohort scores of test utterances from one UBM pass of each.

    Each utterance's UBM log-densities (and top-C selection) are computed once and used
    both for its trial models ``rows[u]`` of ``context`` -- the scores of
    :func:`score_prepared` -- and for every model of ``cohort`` -- the scores of
    :func:`score_all_models` (S-/T-norm's T side). Both contexts must hold the same
    prepared UBM. With top-C and utterances shorter than the cohort pools' chunk, the
    numbers are those of the two functions called separately on the same utterances, bit
    for bit (longer utterances are cut into the same chunks for both, which changes
    the trial scores by the float64 summation order only).

    Parameters
    ----------
    utterances : sequence of ndarray, each shape (T_u, D)
    context : ScoringContext
        The trial models.
    rows : sequence of int arrays
        ``rows[u]``: the rows of ``context`` to score on utterance u.
    cohort : ScoringContext, optional
        Models scored on every utterance.
    method, top_c, chunk_size, selection
        As in :func:`score_prepared`.

    Returns
    -------
    trial_scores : list of ndarray (len(rows[u]),) float64
    cohort_scores : ndarray (n_cohort, U) float64, or None without ``cohort``

    Raises
    ------
    ModelError
        ``cohort`` was prepared with another UBM or dtype than ``context``.
    """
    _check_options(method, top_c, chunk_size, selection)
    if len(rows) != len(utterances):
        raise DataError(f"score_tests: {len(rows)} row lists for {len(utterances)} utterances")
    if cohort is not None and not same_prepared_ubm(context, cohort):
        raise ModelError("score_tests: the cohort models were prepared with another UBM or dtype")
    c = int(top_c)
    pooled = cohort is not None and method == "top_c" and c < context.n_components
    if pooled:
        assert cohort is not None
        frames_per_pool = max(1, _POOL_ELEMENTS // max(1, cohort.n_models * c))
        chunk_size = min(chunk_size, frames_per_pool)  # the chunks of score_all_models
    U = len(utterances)
    trial_out: list[FloatArray] = []
    cohort_out = None if cohort is None else np.zeros((cohort.n_models, U))
    every = None if cohort is None else np.arange(cohort.n_models)
    pool: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
    n_pooled = 0
    lengths = np.empty(U)
    for u, X in enumerate(utterances):
        X = _check_frames(X, context, f"utterance {u}")
        r = _check_rows(rows[u], context)
        lengths[u] = X.shape[0]
        total = np.zeros(r.size)
        for s in range(0, X.shape[0], chunk_size):
            Xd = np.ascontiguousarray(X[s : s + chunk_size], dtype=context.dtype)
            Lu = _ubm_logdens(Xd, context)
            if pooled:
                sel = _select(Lu, c, selection)
                total += _llr_top_c(Xd, Lu, context, r, c, selection, sel)
                pool.append((u, Xd, *sel))
                n_pooled += Xd.shape[0]
                if n_pooled >= frames_per_pool:
                    assert cohort is not None and cohort_out is not None
                    _pooled_top_c(pool, cohort, cohort_out)
                    pool, n_pooled = [], 0
            else:
                total += _chunk_llr(Xd, Lu, context, r, method, c, selection)
                if cohort is not None and cohort_out is not None and every is not None:
                    cohort_out[:, u] += _chunk_llr(Xd, Lu, cohort, every, method, c, selection)
        trial_out.append(total / X.shape[0])
    if pool:
        assert cohort is not None and cohort_out is not None
        _pooled_top_c(pool, cohort, cohort_out)
    if cohort_out is not None:
        cohort_out /= lengths[None, :]
    return trial_out, cohort_out


def same_prepared_ubm(a: ScoringContext, b: ScoringContext) -> bool:
    """Whether two contexts compute the same UBM log-densities (same prepared UBM and dtype)."""
    if a.ubm is b.ubm:
        return True
    return (
        a.dtype == b.dtype
        and a.ubm.W.shape == b.ubm.W.shape
        and np.array_equal(a.ubm.W, b.ubm.W)
        and np.array_equal(a.ubm.shift, b.ubm.shift)
        and np.array_equal(a.ubm.far, b.ubm.far)
    )


def _pooled_top_c(
    pool: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], ctx: ScoringContext, out: FloatArray
) -> None:
    """Add the frame-summed top-C LLRs of every model on the pooled chunks to ``out[:, u]``.

    Per frame the LLR is ``log sum_c w_c exp(delta_c)``, with ``w`` the UBM's posteriors
    over its top C (``exp(Lu_sel - logsumexp(Lu_sel))``, float64, then rounded) and
    ``delta_c`` the model's change of the log-density of component c. The pairs (frame,
    selected component) are sorted by component; one ``ctx.dtype`` GEMM per selected
    component gives ``delta`` of all models on its pairs (``[x, (x*x), 1]`` against
    :meth:`ScoringContext.pooled_weights`, the constant inside the product), and its
    ``exp`` is taken in place while the block is in cache. The weighted sum over each
    frame's C pairs is one sparse-times-dense product (a CSR matrix of the weights, one
    row per frame), then one ``log`` per (frame, model): one exponential per pair and
    model, and no max, shift or gather pass over the (pairs x models) products.

    Column M of the products is the UBM itself (``delta = 0``, ``exp = 1``): the same
    operations as the models, so a model equal to the UBM scores exactly 0. A frame whose
    sum leaves the normal range of ``ctx.dtype`` (``delta`` above ~88 or all its terms
    below ~1e-38 in float32: an overflow or underflow of the unshifted exponential) is
    recomputed for that frame as a float64 log-sum-exp of ``log w + delta``. Each float32
    term is within a few ulps of its float64 value; the frame sums are float64.
    """
    from scipy.sparse import csr_matrix

    M, K = ctx.n_models, ctx.n_components
    dt = ctx.dtype
    X = np.concatenate([p[1] for p in pool])  # (F, D), ctx.dtype
    idx = np.concatenate([p[2] for p in pool])  # (F, C)
    Lu_sel = np.concatenate([p[3] for p in pool])  # (F, C) float64
    F, C = idx.shape
    D = X.shape[1]
    comp = idx.reshape(-1)  # pair p = f * C + j
    order = np.argsort(comp, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(comp, minlength=K))])
    W = ctx.pooled_weights()  # (K, n_cols, M)
    Xa = np.empty((order.size, W.shape[1]), dtype=dt)  # [x, (x*x), 1] of the pairs, by component
    np.take(X, order // C, axis=0, out=Xa[:, :D])
    if ctx.d_quad is not None:
        np.multiply(Xa[:, :D], Xa[:, :D], out=Xa[:, D : 2 * D])
    Xa[:, -1] = 1.0
    E = np.empty((order.size, M + 1), dtype=dt)  # exp(delta) of the pairs, by component
    E[:, M] = 1.0  # the UBM: exp(0)
    with np.errstate(over="ignore", under="ignore"):  # out-of-range frames are redone below
        for k in np.flatnonzero(np.diff(starts)):  # one GEMM of all models per selected component
            a, b = starts[k], starts[k + 1]
            blk = E[a:b, :M]
            np.matmul(Xa[a:b], W[k], out=blk)
            np.exp(blk, out=blk)
    log_w = Lu_sel - logsumexp(Lu_sel)[:, None]  # (F, C) float64
    w = np.exp(log_w).astype(dt)
    w[w < np.finfo(dt).tiny] = 0.0  # no subnormal weight (a term below 1e-38 of its frame)
    where = np.empty_like(order)  # the row of E of pair p
    where[order] = np.arange(order.size)
    S = csr_matrix((w.reshape(-1), where, np.arange(0, F * C + 1, C)), shape=(F, order.size))
    sums = np.asarray(S @ E, dtype=dt)  # (F, M + 1): sum_c w_c exp(delta_c) per frame
    fin = np.finfo(dt)
    bad = np.flatnonzero(~((sums >= fin.tiny) & (sums <= fin.max)).all(axis=1))
    with np.errstate(divide="ignore"):
        np.log(sums, out=sums)
    for f in bad:  # unshifted exp out of range: this frame's float64 log-sum-exp
        rows = where[f * C : (f + 1) * C]
        delta = np.matmul(Xa[rows][:, None, :], W[idx[f]])[:, 0, :].astype(np.float64)  # (C, M)
        sums[f, :M] = logsumexp((delta + log_w[f][:, None]).T)
    bounds = np.concatenate([[0], np.cumsum([p[1].shape[0] for p in pool])[:-1]])
    chunk_sums = np.add.reduceat(sums, bounds, axis=0, dtype=np.float64)  # (chunks, M + 1)
    np.add.at(out.T, np.array([p[0] for p in pool]), chunk_sums[:, :M] - chunk_sums[:, M:])


def score_utterance(
    X: FloatArray,
    ubm: Any,
    models: SpeakerModels,
    model_index: IntArray | Sequence[int],
    *,
    method: str = "top_c",
    top_c: int = 5,
    dtype: npt.DTypeLike = np.float32,
) -> FloatArray:
    """Score one test utterance against several models, vectorised across the models.

    The UBM pass over ``X`` is done once and shared by all the models. This convenience
    prepares the ``m`` models on every call (about as costly as scoring them with top-C);
    to score many utterances, build a :class:`ScoringContext` once and call
    :func:`score_prepared`, or use :func:`score_trials`.

    Parameters
    ----------
    X : ndarray, shape (T, D)
        Test frames.
    ubm : object
        Diagonal UBM: ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` (K, D).
    models : SpeakerModels
        Models adapted from ``ubm``.
    model_index : int array, shape (m,)
        Rows of ``models`` to score.
    method : {"full", "top_c", "linear"}, default "top_c"
    top_c : int, default 5
    dtype : numpy dtype, default float32
        Dtype of the matrix products (results are float64).

    Returns
    -------
    ndarray, shape (m,), float64
        Frame-averaged log-likelihood ratios, in the order of ``model_index``.
    """
    ctx = ScoringContext.build(ubm, models, model_index=model_index, dtype=dtype)
    return score_prepared(X, ctx, method=method, top_c=top_c)


def score_trials(
    tests: Mapping[str, FloatArray] | Callable[[str], FloatArray],
    trials: Sequence[tuple[str, str]],
    ubm: Any,
    models: SpeakerModels,
    *,
    method: str = "top_c",
    top_c: int = 5,
    dtype: npt.DTypeLike = np.float32,
) -> FloatArray:
    """Score a trial list, reading and UBM-scoring each test utterance once.

    Parameters
    ----------
    tests : mapping or callable
        Test id -> frames (T, D); a callable is called once per distinct test id (e.g. a
        feature-store reader).
    trials : sequence of (model_id, test_id)
        Trials, in output order.
    ubm, models, method, top_c, dtype
        As in :func:`score_utterance`.

    Returns
    -------
    ndarray, shape (n_trials,), float64
        Scores in the order of ``trials``.

    Raises
    ------
    DataError
        An unknown model id or test id, or unusable test features (named).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown scoring method {method!r}; choose from {list(METHODS)}")
    model_rows = np.array([models.index(m) for m, _ in trials], dtype=np.intp)
    used, inverse = np.unique(model_rows, return_inverse=True)
    ctx = ScoringContext.build(ubm, models, model_index=used, dtype=dtype)
    groups: dict[str, list[int]] = {}
    for i, (_, test_id) in enumerate(trials):
        groups.setdefault(test_id, []).append(i)
    scores = np.empty(len(trials))
    for test_id, trial_ix in groups.items():
        if callable(tests):
            X = tests(test_id)
        else:
            try:
                X = tests[test_id]
            except KeyError:
                raise DataError(f"trials: test {test_id!r} has no features") from None
        ix = np.asarray(trial_ix)
        try:
            scores[ix] = score_prepared(X, ctx, inverse.reshape(-1)[ix], method=method, top_c=top_c)
        except DataError as exc:
            raise DataError(f"test {test_id!r}: {exc}") from None
    logger.debug("scored %d trials over %d test utterances", len(trials), len(groups))
    return scores
