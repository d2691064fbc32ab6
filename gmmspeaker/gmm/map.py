"""MAP adaptation of a UBM to an utterance's or a speaker's statistics (Reynolds et al., 2000).

A speaker model is the UBM plus its adapted parameters: :class:`SpeakerModels` stores the
adapted means (and optionally weights and variances) and the zero-order counts of a set of
models adapted from one UBM, never a full copy of the UBM.

The UBM is any object with attributes ``weights_`` (K,), ``means_`` (K, D) and
``covariances_`` (K, D) holding diagonal variances (a full-covariance UBM of shape
(K, D, D) is accepted for mean and weight adaptation only).

Equations, for component k with statistics ``n_k``, ``f_k``, ``s_k`` and relevance ``r``::

    alpha_k = n_k / (n_k + r)                           (0 where n_k = 0)
    E_k[x]   = f_k / n_k,   E_k[x^2] = s_k / n_k
    w_k'     = [alpha_k n_k / T + (1 - alpha_k) w_k] / normaliser,   T = sum_k n_k
    mu_k'    = alpha_k E_k[x] + (1 - alpha_k) mu_k
    var_k'   = alpha_k E_k[x^2] + (1 - alpha_k)(var_k + mu_k^2) - mu_k'^2   (floored)

The variance update is evaluated in the algebraically equal, cancellation-free form
``alpha E[(x - mu)^2] + (1 - alpha) var - alpha^2 (E[x] - mu)^2`` so that ``alpha = 0``
returns the UBM variances exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray, IntArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError
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

#: Parameters that MAP adaptation can update.
ADAPTABLE: tuple[str, ...] = ("means", "weights", "variances")

_FORMAT = "gmmspeaker.speaker_models"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class AdaptedModel:
    """One MAP-adapted model.

    Attributes
    ----------
    means : ndarray, shape (K, D), float64
        Adapted means (the UBM means when means were not adapted).
    weights : ndarray, shape (K,), float64, or None
        Adapted weights (sum to 1); None when weights were not adapted.
    variances : ndarray, shape (K, D), float64, or None
        Adapted diagonal variances; None when variances were not adapted.
    counts : ndarray, shape (K,), float64
        The zero-order statistics ``N`` the model was adapted from.
    """

    means: FloatArray
    weights: FloatArray | None
    variances: FloatArray | None
    counts: FloatArray


def ubm_fingerprint(ubm: Any) -> str:
    """A short hash of a UBM's parameters, stored with models adapted from it.

    Parameters
    ----------
    ubm : object
        Has ``weights_``, ``means_`` and ``covariances_``.

    Returns
    -------
    str
        16 hexadecimal digits of the SHA-256 of the float64 parameters.
    """
    h = hashlib.sha256()
    for name in ("weights_", "means_", "covariances_"):
        a = np.ascontiguousarray(np.asarray(getattr(ubm, name), dtype=np.float64))
        h.update(name.encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


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


def _ubm_arrays(ubm: Any) -> tuple[FloatArray, FloatArray, FloatArray]:
    try:
        w = np.asarray(ubm.weights_, dtype=np.float64)
        mu = np.asarray(ubm.means_, dtype=np.float64)
        cov = np.asarray(ubm.covariances_, dtype=np.float64)
    except AttributeError as exc:
        raise ModelError(f"UBM {type(ubm).__name__} lacks weights_/means_/covariances_: {exc}") from None
    if mu.ndim != 2 or w.shape != (mu.shape[0],):
        raise ModelError(f"UBM parameters have inconsistent shapes: weights {w.shape}, means {mu.shape}")
    ctype = getattr(ubm, "covariance_type", None)
    if ctype in ("full", "tied"):
        return w, mu, cov  # fine for means/weights; variance adaptation refuses it
    if cov.shape == (mu.shape[0],):  # spherical: one variance per component
        cov = np.repeat(cov[:, None], mu.shape[1], axis=1)
    return w, mu, cov


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
        d = ex - mu
        centred = s / n_safe[..., None] - 2.0 * mu * ex + mu * mu  # E[(x - mu)^2]
        variances = a * centred + (1.0 - a) * var - (a * a) * d * d
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
        Has ``weights_`` (K,), ``means_`` (K, D), ``covariances_`` (K, D) diagonal variances.
    relevance : float, default 16
        Relevance factor ``r >= 0``. ``math.inf`` returns the UBM exactly; ``0`` returns the
        maximum-likelihood estimates for components with ``n > 0``.
    adapt : collection of {"means", "weights", "variances"}, default ("means",)
        Parameters to adapt.
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
        A UBM without the needed parameters, or a full-covariance UBM with variance
        adaptation.
    """
    r = _check_relevance(relevance)
    chosen = _check_adapt(adapt)
    w, mu, cov = _ubm_arrays(ubm)
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
        if cov.shape != mu.shape or getattr(ubm, "covariance_type", None) in ("full", "tied"):
            raise ModelError(
                f"variance adaptation needs a diagonal (or spherical) UBM; covariances have shape {cov.shape}"
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
    from gmmspeaker.gmm.stats import MixtureParams, accumulate

    gmm = ubm
    if getattr(ubm, "_params", None) is None and not isinstance(ubm, MixtureParams):
        w, mu, cov = _ubm_arrays(ubm)
        gmm = MixtureParams(weights=w, means=mu, covariances=cov, covariance_type="diag")
    total: Stats | None = None
    for X in utterances:
        st = accumulate(np.asarray(X), gmm, second_order=second_order)
        total = st if total is None else total + st
    assert total is not None
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


@dataclass
class SpeakerModels:
    """A set of MAP-adapted models for one UBM: only adapted parameters and counts.

    Attributes
    ----------
    model_ids : list of str, length M
        Unique model identifiers.
    means : ndarray, shape (M, K, D), float32 or float64
        Adapted means.
    counts : ndarray, shape (M, K), float64
        Zero-order statistics of each model's enrollment data.
    weights : ndarray, shape (M, K), or None
        Adapted weights, when weights were adapted.
    variances : ndarray, shape (M, K, D), or None
        Adapted diagonal variances, when variances were adapted.
    relevance : float
        Relevance factor used.
    ubm_fingerprint : str
        :func:`ubm_fingerprint` of the UBM adapted from ("" if unknown).
    """

    model_ids: list[str]
    means: FloatArray
    counts: FloatArray
    weights: FloatArray | None = None
    variances: FloatArray | None = None
    relevance: float = 16.0
    ubm_fingerprint: str = ""

    def __post_init__(self) -> None:
        self.model_ids = [str(m) for m in self.model_ids]
        self.means = np.asarray(self.means)
        self.counts = np.asarray(self.counts, dtype=np.float64)
        if self.weights is not None:
            self.weights = np.asarray(self.weights)
        if self.variances is not None:
            self.variances = np.asarray(self.variances)
        self._validate("SpeakerModels")
        self._lookup = {m: i for i, m in enumerate(self.model_ids)}

    def _validate(self, where: str) -> None:
        ids = self.model_ids
        m = len(ids)
        if len(set(ids)) != m:
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ModelError(f"{where}: duplicate model ids {dup}")
        means = np.asarray(self.means)
        if means.ndim != 3 or means.shape[0] != m:
            raise ModelError(f"{where}: means have shape {means.shape}, expected ({m}, K, D)")
        _, k, d = means.shape
        if np.shape(self.counts) != (m, k):
            raise ModelError(f"{where}: counts have shape {np.shape(self.counts)}, expected {(m, k)}")
        if self.weights is not None and np.shape(self.weights) != (m, k):
            raise ModelError(f"{where}: weights have shape {np.shape(self.weights)}, expected {(m, k)}")
        if self.variances is not None and np.shape(self.variances) != (m, k, d):
            raise ModelError(
                f"{where}: variances have shape {np.shape(self.variances)}, expected {(m, k, d)}"
            )
        for name in ("means", "counts", "weights", "variances"):
            a = getattr(self, name)
            if a is not None and not np.all(np.isfinite(a)):
                raise ModelError(f"{where}: {name} contain non-finite values")
        if self.variances is not None and np.any(np.asarray(self.variances) <= 0):
            raise ModelError(f"{where}: variances must be positive")
        if self.weights is not None and np.any(np.asarray(self.weights) < 0):
            raise ModelError(f"{where}: weights must be non-negative")
        r = float(self.relevance)
        if math.isnan(r) or r < 0:
            raise ModelError(f"{where}: relevance must be >= 0, got {self.relevance!r}")

    @property
    def adapt(self) -> tuple[str, ...]:
        """The adapted parameters, e.g. ``("means",)``."""
        out = ["means"]
        if self.weights is not None:
            out.append("weights")
        if self.variances is not None:
            out.append("variances")
        return tuple(out)

    @property
    def n_components(self) -> int:
        return int(np.shape(self.means)[1])

    @property
    def n_dims(self) -> int:
        return int(np.shape(self.means)[2])

    def __len__(self) -> int:
        return len(self.model_ids)

    def index(self, model_id: str) -> int:
        """Row of ``model_id``; raises :class:`~gmmspeaker.errors.DataError` if unknown."""
        try:
            return self._lookup[model_id]
        except KeyError:
            raise DataError(f"unknown model id {model_id!r} ({len(self)} models)") from None

    def subset(self, rows: Sequence[int] | IntArray) -> SpeakerModels:
        """The models at ``rows`` (in that order), e.g. only those a block of trials names."""
        rows = np.asarray(rows, dtype=np.int64)
        return SpeakerModels(
            model_ids=[self.model_ids[i] for i in rows],
            means=self.means[rows],
            counts=self.counts[rows],
            weights=None if self.weights is None else self.weights[rows],
            variances=None if self.variances is None else self.variances[rows],
            relevance=self.relevance,
            ubm_fingerprint=self.ubm_fingerprint,
        )

    def model(self, i: int) -> AdaptedModel:
        """Model ``i`` as an :class:`AdaptedModel` (float64 copies)."""
        return AdaptedModel(
            means=np.array(self.means[i], dtype=np.float64),
            weights=None if self.weights is None else np.array(self.weights[i], np.float64),
            variances=(None if self.variances is None else np.array(self.variances[i], np.float64)),
            counts=np.array(self.counts[i], dtype=np.float64),
        )

    @classmethod
    def from_adapted(
        cls,
        model_ids: Sequence[str],
        adapted: Sequence[AdaptedModel],
        *,
        relevance: float,
        ubm_fingerprint: str = "",
        dtype: npt.DTypeLike = np.float32,
    ) -> SpeakerModels:
        """Stack adapted models; all must have adapted the same parameters."""
        if len(model_ids) != len(adapted) or not adapted:
            raise DataError(f"from_adapted: {len(model_ids)} ids for {len(adapted)} models (need >= 1)")
        has_w = {a.weights is not None for a in adapted}
        has_v = {a.variances is not None for a in adapted}
        if len(has_w) > 1 or len(has_v) > 1:
            raise DataError("from_adapted: models adapted different sets of parameters")
        return cls(
            model_ids=list(model_ids),
            means=np.stack([a.means for a in adapted]).astype(dtype),
            counts=np.stack([a.counts for a in adapted]).astype(np.float64),
            weights=(
                np.stack([a.weights for a in adapted]).astype(dtype)  # type: ignore[misc]
                if has_w == {True}
                else None
            ),
            variances=(
                np.stack([a.variances for a in adapted]).astype(dtype)  # type: ignore[misc]
                if has_v == {True}
                else None
            ),
            relevance=float(relevance),
            ubm_fingerprint=ubm_fingerprint,
        )

    def save(self, path: PathLike) -> None:
        """Write the models to an HDF5 file atomically (temporary name, then rename).

        Layout: datasets ``model_ids`` (UTF-8 strings), ``means``, ``counts`` and optionally
        ``weights``, ``variances``; attributes ``format``, ``version``, ``relevance``,
        ``adapt``, ``ubm_fingerprint``.
        """
        import h5py

        from gmmspeaker import __version__

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with h5py.File(tmp, "w") as h5:
                h5.attrs["format"] = _FORMAT
                h5.attrs["format_version"] = _FORMAT_VERSION
                h5.attrs["version"] = __version__
                h5.attrs["relevance"] = float(self.relevance)
                h5.attrs["adapt"] = ",".join(self.adapt)
                h5.attrs["ubm_fingerprint"] = self.ubm_fingerprint
                h5.create_dataset(
                    "model_ids",
                    data=np.array(self.model_ids, dtype=object),
                    dtype=h5py.string_dtype("utf-8"),
                )
                h5.create_dataset("means", data=np.asarray(self.means))
                h5.create_dataset("counts", data=np.asarray(self.counts, dtype=np.float64))
                if self.weights is not None:
                    h5.create_dataset("weights", data=np.asarray(self.weights))
                if self.variances is not None:
                    h5.create_dataset("variances", data=np.asarray(self.variances))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        logger.info("wrote %d speaker models to %s", len(self), path)

    @classmethod
    def load(cls, path: PathLike) -> SpeakerModels:
        """Read models written by :meth:`save`.

        Raises
        ------
        ModelError
            The file is missing, not HDF5, lacks a dataset, or holds inconsistent or
            non-finite parameters; the message names the file.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"{path}: models file not found")
        try:
            with h5py.File(path, "r") as h5:
                fmt = h5.attrs.get("format", "")
                if isinstance(fmt, bytes):
                    fmt = fmt.decode()
                if fmt != _FORMAT:
                    raise ModelError(f"{path}: not a gmmspeaker models file (format {fmt!r})")
                missing = [k for k in ("model_ids", "means", "counts") if k not in h5]
                if missing:
                    raise ModelError(f"{path}: missing dataset(s) {missing}")
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["model_ids"][()]]
                means = h5["means"][()]
                counts = h5["counts"][()]
                weights = h5["weights"][()] if "weights" in h5 else None
                variances = h5["variances"][()] if "variances" in h5 else None
                relevance = float(h5.attrs.get("relevance", float("nan")))
                fp = h5.attrs.get("ubm_fingerprint", "")
                fp = fp.decode() if isinstance(fp, bytes) else str(fp)
        except ModelError:
            raise
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: cannot read models file ({exc})") from None
        obj = cls.__new__(cls)
        obj.model_ids = ids
        obj.means = means
        obj.counts = counts
        obj.weights = weights
        obj.variances = variances
        obj.relevance = relevance
        obj.ubm_fingerprint = fp
        obj._validate(str(path))
        obj._lookup = {m: i for i, m in enumerate(obj.model_ids)}
        return obj
