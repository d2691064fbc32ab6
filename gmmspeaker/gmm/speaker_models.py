"""The speaker-model container: MAP-adapted parameters of many models of one UBM, and its
HDF5 file format.

A speaker model is the UBM plus its adapted parameters: :class:`SpeakerModels` stores the
adapted means (and optionally weights and variances) and the zero-order counts of a set of
models adapted from one UBM, never a full copy of the UBM; :func:`ubm_fingerprint` ties a
models file to the UBM it was adapted from.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._io import atomic_h5
from gmmspeaker._typing import FloatArray, IntArray, PathLike
from gmmspeaker.errors import DataError, ModelError

__all__ = ["AdaptedModel", "SpeakerModels", "ubm_fingerprint"]

logger = logging.getLogger(__name__)

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
        path = Path(path)
        with atomic_h5(path) as h5:
            self.write_to(h5)
        logger.info("wrote %d speaker models to %s", len(self), path)

    def write_to(self, h5: Any) -> None:
        """Write the datasets and attributes of :meth:`save` into an open, empty ``h5py.File``."""
        import h5py

        from gmmspeaker import __version__

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
