"""MAP adaptation of a UBM to an utterance's or a speaker's statistics (Reynolds et al., 2000).

This module holds the MAP maths and enrolment; the container of adapted models and its
file format live in :mod:`gmmspeaker.gmm.speaker_models` (re-exported here).

The UBM is gmmspeaker's ``GaussianMixture``, a scikit-learn ``GaussianMixture`` or any
object with ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` and ``covariance_type``
(read by :func:`gmmspeaker.gmm.params.as_params`). Means and weights can be adapted with
any covariance type (diag, spherical, full, tied); variances only with a diagonal or
spherical UBM (adapted variances are diagonal, (K, D)); anything else raises
:class:`~gmmspeaker.errors.ModelError`.

Equations, for component k with statistics ``n_k``, ``f_k``, ``s_k`` and relevance ``r``::

    alpha_k = n_k / (n_k + r)                           (0 where n_k = 0)
    E_k[x]   = f_k / n_k,   E_k[x^2] = s_k / n_k
    w_k'     = [alpha_k n_k / T + (1 - alpha_k) w_k] / normaliser,   T = sum_k n_k
    mu_k'    = alpha_k E_k[x] + (1 - alpha_k) mu_k
    var_k'   = alpha_k E_k[x^2] + (1 - alpha_k)(var_k + mu_k^2) - mu_k'^2   (floored)

The variance update is evaluated in the algebraically equal, cancellation-free form
``alpha E[(x - mu)^2] + (1 - alpha) var - alpha^2 (E[x] - mu)^2`` so that ``alpha = 0``
returns the UBM variances exactly.

Variances without means (``adapt: [variances]``, or ``[weights, variances]``): the model
keeps the UBM means, so its variances are taken about the UBM means::

    var_k'   = alpha_k E_k[(x - mu_k)^2] + (1 - alpha_k) var_k                    (floored)

This is the MAP estimate of the variance when the mean is fixed at ``mu_k`` (the ML
variance about a known mean is ``E[(x - mu)^2]``), so the stored model -- UBM means,
these variances -- is the one the statistics were adapted for. (The formula above would
measure the variance about an adapted mean that is not stored, which makes the model
too narrow wherever the data's mean moved.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.gmm.kernel import check_block, prepare, prepared_stats, resolve_dtype
from gmmspeaker.gmm.params import as_params
from gmmspeaker.gmm.speaker_models import AdaptedModel, SpeakerModels, ubm_fingerprint
from gmmspeaker.gmm.stats import Stats

__all__ = [
    "AdaptedModel",
    "SpeakerModels",
    "map_adapt",
    "enroll",
    "enroll_features",
    "ubm_fingerprint",
    "ADAPTABLE",
]

logger = logging.getLogger(__name__)

#: Frames per E-step block when accumulating enrolment statistics.
ENROLL_CHUNK = 20_000
#: Parameters that MAP adaptation can update.
ADAPTABLE: tuple[str, ...] = ("means", "weights", "variances")


def _check_adapt(adapt: Collection[str]) -> frozenset[str]:
    if isinstance(adapt, str):
        adapt = (adapt,)
    chosen = frozenset(adapt)
    unknown = chosen - set(ADAPTABLE)
    if unknown:
        raise ConfigError(f"map adapt: unknown parameter(s) {sorted(unknown)}; choose from {list(ADAPTABLE)}")
    if not chosen:
        raise ConfigError(f"map adapt: empty; choose at least one of {list(ADAPTABLE)}")
    return chosen


def _check_relevance(relevance: float) -> float:
    r = float(relevance)
    if math.isnan(r) or r < 0:
        raise ConfigError(f"map relevance must be >= 0 (inf allowed), got {relevance!r}")
    return r


def _adapt_arrays(
    n: FloatArray,
    f: FloatArray,
    s: FloatArray | None,
    w: FloatArray,
    mu: FloatArray,
    var: FloatArray | None,
    *,
    relevance: float,
    adapt: frozenset[str],
    variance_floor: FloatArray | float,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Vectorised MAP over any leading batch axes: n (..., K), f and s (..., K, D)."""
    has = n > 0
    n_safe = np.where(has, n, 1.0)
    if math.isinf(relevance):
        alpha = np.zeros_like(n)
    else:
        # relevance 0: alpha = 1 where n > 0, 0 (keep the UBM) where n = 0.
        alpha = np.where(has, n / (n_safe + relevance), 0.0)
    a = alpha[..., None]
    ex = f / n_safe[..., None]  # 0 where n = 0, finite everywhere

    means = a * ex + (1.0 - a) * mu if "means" in adapt else np.broadcast_to(mu, f.shape).copy()

    weights = None
    if "weights" in adapt:
        total = n.sum(axis=-1, keepdims=True)
        share = n / np.where(total > 0, total, 1.0)
        raw = alpha * share + (1.0 - alpha) * w
        weights = raw / raw.sum(axis=-1, keepdims=True)

    variances = None
    if "variances" in adapt and s is not None and var is not None:
        centred = s / n_safe[..., None] - 2.0 * mu * ex + mu * mu  # E[(x - mu)^2]
        variances = a * centred + (1.0 - a) * var
        if "means" in adapt:  # about the adapted mean: minus (mu' - mu)^2 = alpha^2 (E[x] - mu)^2
            d = ex - mu
            variances -= (a * a) * d * d
        variances = np.maximum(variances, variance_floor)
    return means, weights, variances


def map_adapt(
    stats: Stats,
    ubm: Any,
    *,
    relevance: float = 16.0,
    adapt: Collection[str] = ("means",),
    variance_floor: float | FloatArray | None = None,
) -> AdaptedModel:
    """MAP-adapt a UBM to the statistics of an utterance or of a speaker's pooled utterances.

    Parameters
    ----------
    stats : Stats
        Statistics under the UBM: ``n`` (K,), ``f`` (K, D) and, to adapt variances,
        diagonal ``s`` (K, D).
    ubm : object
        ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` and ``covariance_type``
        (gmmspeaker's or scikit-learn's ``GaussianMixture``); variance adaptation needs a
        diagonal or spherical one.
    relevance : float, default 16
        Relevance factor ``r >= 0``. ``math.inf`` returns the UBM exactly; ``0`` returns the
        maximum-likelihood estimates for components with ``n > 0``.
    adapt : collection of {"means", "weights", "variances"}, default ("means",)
        Parameters to adapt. Variances without means are taken about the UBM means (see
        the module docstring).
    variance_floor : float or ndarray (D,), optional
        Lower bound of adapted variances. Default: ``1e-3`` times the smallest UBM
        variance of each dimension.

    Returns
    -------
    AdaptedModel
        float64 parameters. Components with ``n = 0`` keep the UBM parameters.

    Raises
    ------
    ConfigError
        Bad ``relevance`` or ``adapt``.
    DataError
        Statistics that do not match the UBM, are not finite, or lack the diagonal
        second-order statistics needed for variance adaptation.
    ModelError
        A UBM without the needed parameters, or a full- or tied-covariance UBM with
        variance adaptation.
    """
    r = _check_relevance(relevance)
    chosen = _check_adapt(adapt)
    params = as_params(ubm)
    w, mu, ctype = params.weights, params.means, params.covariance_type
    cov = params.diag_variances() if ctype in ("diag", "spherical") else params.covariances
    n = np.asarray(stats.n, dtype=np.float64)
    f = np.asarray(stats.f, dtype=np.float64)
    if n.shape != w.shape or f.shape != mu.shape:
        raise DataError(
            f"statistics have shapes n {n.shape}, f {f.shape} but the UBM has "
            f"K={mu.shape[0]}, D={mu.shape[1]}"
        )
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(f))) or np.any(n < 0):
        raise DataError("statistics contain non-finite values or negative counts")
    s = None
    var = None
    floor: FloatArray | float = 0.0
    if "variances" in chosen:
        if ctype not in ("diag", "spherical"):
            raise ModelError(
                f"MAP: variance adaptation needs a diagonal (or spherical) UBM; this "
                f"{type(ubm).__name__} has {ctype!r} covariances of shape {cov.shape}; adapt only "
                "means and weights with it, or train a diagonal UBM"
            )
        if stats.s is None or np.shape(stats.s) != mu.shape:
            raise DataError(
                "variance adaptation needs diagonal second-order statistics s of shape "
                f"{mu.shape}; got {None if stats.s is None else np.shape(stats.s)} "
                "(accumulate with second_order=True)"
            )
        s = np.asarray(stats.s, dtype=np.float64)
        if not np.all(np.isfinite(s)):
            raise DataError("second-order statistics contain non-finite values")
        var = cov
        floor = (
            1e-3 * cov.min(axis=0) if variance_floor is None else np.asarray(variance_floor, dtype=np.float64)
        )
    means, weights, variances = _adapt_arrays(
        n, f, s, w, mu, var, relevance=r, adapt=chosen, variance_floor=floor
    )
    return AdaptedModel(means=means, weights=weights, variances=variances, counts=n.copy())


def enroll(
    model_ids: Sequence[str],
    stats: Sequence[Stats],
    ubm: Any,
    *,
    relevance: float = 16.0,
    adapt: Collection[str] = ("means",),
    variance_floor: float | FloatArray | None = None,
    dtype: npt.DTypeLike = np.float32,
) -> SpeakerModels:
    """MAP-adapt many models (one :class:`Stats` each, e.g. a speaker's pooled statistics).

    The statistics are usually accumulated in parallel (one joblib task per model or per
    shard, summed with ``+``); the adaptation itself is cheap.

    Parameters
    ----------
    model_ids : sequence of str, length M
        Unique model identifiers.
    stats : sequence of Stats, length M
        Statistics of each model's enrollment data under ``ubm``.
    ubm, relevance, adapt, variance_floor
        As in :func:`map_adapt`.
    dtype : numpy dtype, default float32
        Storage dtype of the adapted parameters.

    Returns
    -------
    SpeakerModels
        With the UBM fingerprint set.
    """
    ids = list(model_ids)
    if len(ids) != len(stats):
        raise DataError(f"enroll: {len(ids)} model ids but {len(stats)} statistics")
    if not ids:
        raise DataError("enroll: no models to enroll")
    adapted = [
        map_adapt(st, ubm, relevance=relevance, adapt=adapt, variance_floor=variance_floor) for st in stats
    ]
    return SpeakerModels.from_adapted(
        ids,
        adapted,
        relevance=float(relevance),
        ubm_fingerprint=ubm_fingerprint(ubm),
        dtype=dtype,
    )


def _model_stats(ubm: Any, utterances: Sequence[FloatArray], second_order: bool) -> Stats:
    """Pooled statistics of one model's enrollment utterances (runs in a worker)."""
    params = as_params(ubm)
    # gmmspeaker's precision option when the UBM has one; None: by covariance type
    prep = prepare(params, resolve_dtype(getattr(ubm, "dtype", None), params.covariance_type))
    total: Stats | None = None
    for X in utterances:
        X = check_block(X, params.n_dims)
        if X.shape[0] == 0:
            continue
        st = prepared_stats(X, prep, second_order=second_order, chunk_size=ENROLL_CHUNK)
        total = st if total is None else total + st
    if total is None:
        raise DataError("enroll: a model without enrollment frames")
    return total


def enroll_features(
    features: Mapping[str, Sequence[FloatArray]],
    ubm: Any,
    *,
    relevance: float = 16.0,
    adapt: Collection[str] = ("means",),
    variance_floor: float | FloatArray | None = None,
    dtype: npt.DTypeLike = np.float32,
    n_jobs: int = 1,
) -> SpeakerModels:
    """Enroll models from in-memory features: pooled statistics in parallel, then MAP.

    Parameters
    ----------
    features : mapping of str to sequence of ndarray (T_i, D)
        Model id -> the frames of each of its enrollment utterances.
    ubm : GaussianMixture or object with ``weights_``, ``means_``, ``covariances_``
        The UBM (diagonal unless only means/weights are adapted).
    relevance, adapt, variance_floor, dtype
        As in :func:`enroll`.
    n_jobs : int, default 1
        joblib workers over models (-1: all cores). Results do not depend on it.

    Returns
    -------
    SpeakerModels
        In the order of ``features``.

    Raises
    ------
    DataError
        A model without frames (named).
    """
    from joblib import Parallel, delayed

    chosen = _check_adapt(adapt)
    _check_relevance(relevance)
    ids = list(features)
    if not ids:
        raise DataError("enroll: no models to enroll")
    for mid in ids:
        if sum(int(np.shape(x)[0]) for x in features[mid]) == 0:
            raise DataError(f"enroll: model {mid!r} has no enrollment frames")
    second = "variances" in chosen
    if n_jobs == 1:
        stats = [_model_stats(ubm, features[m], second) for m in ids]
    else:
        stats = Parallel(n_jobs=n_jobs)(delayed(_model_stats)(ubm, features[m], second) for m in ids)
    logger.info("accumulated enrollment statistics of %d models", len(ids))
    return enroll(
        ids,
        stats,
        ubm,
        relevance=relevance,
        adapt=chosen,
        variance_floor=variance_floor,
        dtype=dtype,
    )
