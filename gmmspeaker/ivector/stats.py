"""Baum-Welch statistics per utterance for total-variability modelling (i-vectors).

For an utterance with frames ``x_t`` and UBM posteriors ``gamma_tk`` (diagonal UBM with
means ``mu_k`` and standard deviations ``sigma_k``)::

    n_k = sum_t gamma_tk                                  zeroth order, (K,)
    f_k = sum_t gamma_tk (x_t - mu_k) / sigma_k            first order, centred and whitened, (D,)

``f`` is stored component-major as one (K*D,) row per utterance. In this whitened space
every UBM component has unit covariance, which is what :mod:`gmmspeaker.ivector.tv`
assumes. The frame posteriors come from the E-step of :func:`gmmspeaker.gmm.stats.accumulate`
(the E-step GEMMs, float32 products and float64 accumulation by default for diagonal
UBMs; the UBM prepared once per batch of utterances); centring and whitening happen
once, in :func:`_baum_welch_prepared`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_path, read_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.gmm.kernel import check_block, prepare, prepared_stats, resolve_dtype
from gmmspeaker.gmm.map import ubm_fingerprint
from gmmspeaker.gmm.stats import as_params

__all__ = [
    "UtteranceStats",
    "baum_welch",
    "compute_stats",
    "read_stats_rows",
    "stats_from_store",
    "stats_ids",
    "write_stats",
]

logger = logging.getLogger(__name__)

_FORMAT = "gmmspeaker.utterance_stats"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class UtteranceStats:
    """Zeroth- and first-order Baum-Welch statistics of a set of utterances.

    Attributes
    ----------
    ids : list of str
        Utterance ids, in row order.
    n : ndarray, shape (U, K), float64
        Zeroth-order statistics ``sum_t gamma_tk``.
    f : ndarray, shape (U, K*D), float64
        First-order statistics centred on the UBM means and whitened by the UBM standard
        deviations, ``sum_t gamma_tk (x_t - mu_k) / sigma_k``, component-major.
    ubm_fingerprint : str
        :func:`gmmspeaker.gmm.map.ubm_fingerprint` of the UBM ("" when unknown).
    """

    ids: list[str]
    n: FloatArray
    f: FloatArray
    ubm_fingerprint: str = ""

    def __post_init__(self) -> None:
        n, f = np.asarray(self.n), np.asarray(self.f)
        if n.ndim != 2 or f.ndim != 2 or n.shape[0] != f.shape[0] or n.shape[0] != len(self.ids):
            raise DataError(
                f"utterance statistics: {len(self.ids)} ids, n {n.shape}, f {f.shape} do not agree"
            )
        if n.shape[1] == 0 or f.shape[1] % n.shape[1]:
            raise DataError(f"utterance statistics: f width {f.shape[1]} is not a multiple of K={n.shape[1]}")

    @property
    def n_components(self) -> int:
        """Number of UBM components K."""
        return int(self.n.shape[1])

    @property
    def n_dims(self) -> int:
        """Feature dimension D."""
        return int(self.f.shape[1] // self.n.shape[1])

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, ids: Sequence[str]) -> UtteranceStats:
        """The statistics of ``ids``, in that order.

        Raises
        ------
        DataError
            An id is not in these statistics.
        """
        pos = {u: i for i, u in enumerate(self.ids)}
        missing = [u for u in ids if u not in pos]
        if missing:
            raise DataError(
                f"utterance statistics: no statistics for {len(missing)} id(s), e.g. {missing[:3]}"
            )
        rows = np.fromiter((pos[u] for u in ids), dtype=np.intp, count=len(ids))
        return UtteranceStats(list(ids), self.n[rows], self.f[rows], self.ubm_fingerprint)

    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically (temporary name, then rename).

        Layout: datasets ``ids`` (UTF-8), ``n`` (U, K) and ``f`` (U, K*D), float64;
        attributes ``format``, ``format_version``, ``version``, ``ubm_fingerprint``.
        """
        import h5py

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        need = 8 * len(self.ids) * (self.n.shape[1] + self.f.shape[1]) + (1 << 20)  # checked first
        with atomic_path(path, need=need) as tmp, h5py.File(tmp, "w") as h5:
            n, f = _create_layout(h5, self.ids, self.n.shape[1], self.f.shape[1], self.ubm_fingerprint)
            n[...] = np.asarray(self.n, dtype=np.float64)
            f[...] = np.asarray(self.f, dtype=np.float64)

    @classmethod
    def load(cls, path: PathLike) -> UtteranceStats:
        """Read statistics written by :meth:`save`.

        Raises
        ------
        ModelError
            The file is missing, not a statistics file, or inconsistent; the message names it.
        """
        arrays, attrs = read_h5(path, _FORMAT, ("ids", "n", "f"), what="statistics file")
        ids = list(arrays["ids"])
        n = np.asarray(arrays["n"], dtype=np.float64)
        f = np.asarray(arrays["f"], dtype=np.float64)
        fp = str(attrs.get("ubm_fingerprint", ""))
        try:
            return cls(ids, n, f, fp)
        except DataError as exc:
            raise ModelError(f"{path}: {exc}") from None


#: Rows per HDF5 chunk of ``f`` (K*D float64 each: 3.9 MB at K=256, D=60), small enough
#: that a batch reading a selection of rows does not read much more than it needs.
_CHUNK_ROWS = 32


def _create_layout(h5: Any, ids: Sequence[str], K: int, KD: int, fingerprint: str) -> tuple[Any, Any]:
    """Attributes, ``ids`` and empty ``n`` (U, K) / ``f`` (U, K*D) float64 datasets of a statistics file."""
    import h5py

    from gmmspeaker import __version__

    h5.attrs["format"] = _FORMAT
    h5.attrs["format_version"] = _FORMAT_VERSION
    h5.attrs["version"] = __version__
    h5.attrs["ubm_fingerprint"] = fingerprint
    h5.create_dataset("ids", data=np.array(list(ids), dtype=object), dtype=h5py.string_dtype("utf-8"))
    U = len(ids)
    chunks = (max(1, min(U, _CHUNK_ROWS)), KD) if U and KD else None
    n = h5.create_dataset("n", shape=(U, K), dtype=np.float64)
    f = h5.create_dataset("f", shape=(U, KD), dtype=np.float64, chunks=chunks)
    return n, f


def stats_ids(path: PathLike) -> list[str]:
    """The utterance ids (row order) of a statistics file, without reading its statistics.

    Raises
    ------
    ModelError
        The file is missing or not a statistics file; the message names it.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as h5:
            fmt = h5.attrs.get("format", "")
            fmt = fmt.decode() if isinstance(fmt, bytes) else str(fmt)
            if fmt != _FORMAT:
                raise ModelError(f"{path}: not a statistics file (format {fmt!r})")
            return [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
    except (OSError, KeyError) as exc:
        raise ModelError(f"{path}: statistics file not readable ({exc})") from None


def read_stats_rows(path: PathLike, ids: Sequence[str]) -> UtteranceStats:
    """The rows of ``ids`` (in that order) of a statistics file, reading only those rows.

    Raises
    ------
    DataError
        An id the file does not hold (the message names it and the file).
    """
    import h5py

    index = {u: i for i, u in enumerate(stats_ids(path))}
    missing = [u for u in ids if u not in index]
    if missing:
        raise DataError(f"{path}: no statistics for {missing[0]!r}")
    idx = np.asarray([index[u] for u in ids], dtype=np.intp)
    with h5py.File(path, "r") as h5:
        fp = h5.attrs.get("ubm_fingerprint", "")
        fp = fp.decode() if isinstance(fp, bytes) else str(fp)
        if idx.size == 0:
            K, KD = int(h5["n"].shape[1]), int(h5["f"].shape[1])
            return UtteranceStats([], np.empty((0, K)), np.empty((0, KD)), fp)
        uniq = np.unique(idx)  # h5py reads increasing, distinct rows
        n = np.asarray(h5["n"][uniq], dtype=np.float64)
        f = np.asarray(h5["f"][uniq], dtype=np.float64)
    pos = np.searchsorted(uniq, idx)
    return UtteranceStats(list(ids), n[pos], f[pos], fp)


def _whitening(ubm: Any) -> tuple[FloatArray, FloatArray]:
    """UBM means (K, D) and standard deviations (K, D), float64; diagonal UBMs only."""
    params = as_params(ubm)
    if params.covariance_type not in ("diag", "spherical"):
        raise ModelError(
            f"Baum-Welch statistics need a diagonal UBM, got covariance_type={params.covariance_type!r}"
        )
    mu = np.asarray(params.means, dtype=np.float64)
    sd = np.sqrt(np.asarray(params.diag_variances(), dtype=np.float64))
    return mu, sd


def baum_welch(X: FloatArray, ubm: Any, *, dtype: Any = None) -> tuple[FloatArray, FloatArray]:
    """Zeroth- and centred, whitened first-order statistics of one utterance.

    Parameters
    ----------
    X : ndarray, shape (n_frames, D), float32 or float64
        The utterance's frames as rows.
    ubm : GaussianMixture or MixtureParams
        A diagonal (or spherical) UBM with K components.
    dtype : {None, "float32", "float64"}
        Precision of the posterior GEMMs (None: the UBM's option, float32 for diagonal);
        statistics are accumulated in float64.

    Returns
    -------
    n : ndarray, shape (K,), float64
        ``sum_t gamma_tk``.
    f : ndarray, shape (K*D,), float64
        ``sum_t gamma_tk (x_t - mu_k) / sigma_k``, component-major.

    Raises
    ------
    ModelError
        The UBM has full or tied covariances.
    """
    return _baum_welch_prepared(X, _prepare_ubm(ubm, dtype))


@dataclass(frozen=True)
class _PreparedUbm:
    """A UBM prepared once for the statistics of many utterances."""

    prep: Any  # gmmspeaker.gmm.kernel.PreparedDiag
    mu: FloatArray  # (K, D) float64
    sd: FloatArray  # (K, D) float64


def _prepare_ubm(ubm: Any, dtype: Any) -> _PreparedUbm:
    """The E-step preparation of :func:`gmmspeaker.gmm.stats.accumulate` (same dtype rule)."""
    mu, sd = _whitening(ubm)
    params = as_params(ubm)
    dt = resolve_dtype(dtype if dtype is not None else getattr(ubm, "dtype", None), params.covariance_type)
    return _PreparedUbm(prepare(params, dt), mu, sd)


def _baum_welch_prepared(X: FloatArray, pu: _PreparedUbm) -> tuple[FloatArray, FloatArray]:
    """:func:`baum_welch` with the UBM prepared: the statistics of ``accumulate``, centred
    and whitened (the one place of that formula)."""
    K, D = pu.mu.shape
    X = check_block(X, D)
    if X.shape[0] == 0:
        return np.zeros(K), np.zeros(K * D)
    st = prepared_stats(X, pu.prep, second_order=False, chunk_size=20000)
    f = (st.f - st.n[:, None] * pu.mu) / pu.sd
    return st.n.astype(np.float64, copy=False), np.ascontiguousarray(f, dtype=np.float64).reshape(-1)


def compute_stats(
    utterances: Iterable[tuple[str, FloatArray]], ubm: Any, *, dtype: Any = None
) -> UtteranceStats:
    """Baum-Welch statistics of ``(utt_id, frames)`` pairs (see :func:`baum_welch`).

    Returns
    -------
    UtteranceStats
        One row per utterance, in input order; ``n`` (U, K) and ``f`` (U, K*D) float64.

    Raises
    ------
    DataError
        An utterance has no frames, or an id repeats (the message names it).
    """
    ids: list[str] = []
    ns: list[FloatArray] = []
    fs: list[FloatArray] = []
    seen: set[str] = set()
    pu = _prepare_ubm(ubm, dtype)  # once for all the utterances
    for utt_id, X in utterances:
        if utt_id in seen:
            raise DataError(f"utterance {utt_id!r} appears twice in the statistics input")
        seen.add(utt_id)
        if np.shape(X)[0] == 0:
            raise DataError(f"utterance {utt_id!r} has no frames (VAD dropped every frame?)")
        n, f = _baum_welch_prepared(X, pu)
        ids.append(utt_id)
        ns.append(n)
        fs.append(f)
    params = as_params(ubm)
    K, D = params.n_components, params.n_dims
    return UtteranceStats(
        ids,
        np.vstack(ns) if ns else np.zeros((0, K)),
        np.vstack(fs) if fs else np.zeros((0, K * D)),
        ubm_fingerprint(ubm),
    )


def _store_batch(
    store_dir: str, items: list[tuple[str, str, int, int]], ubm: Any, dtype: Any
) -> tuple[FloatArray, FloatArray]:
    """Worker: the statistics of the store ``items`` (:meth:`FeatureStore.item`) at ``store_dir``
    (read directly: the worker does not load the store's manifest)."""
    from gmmspeaker.store import iter_utterances

    st = compute_stats(iter_utterances(store_dir, items), ubm, dtype=dtype)
    return st.n, st.f


def _store_batches(
    store_dir: PathLike, ids: list[str], ubm: Any, n_jobs: int, batch_size: int, dtype: Any, progress: bool
) -> Iterator[tuple[FloatArray, FloatArray]]:
    """Check the inputs, then yield the statistics of consecutive batches of ``ids``, in order."""
    from joblib import Parallel, delayed

    from gmmspeaker.store import FeatureStore

    store = FeatureStore(store_dir)
    if not ids:
        raise DataError(f"{store.path}: no utterances to compute statistics for")
    if len(set(ids)) != len(ids):
        raise DataError(f"{store.path}: utterance ids repeat in the statistics list")
    missing = [u for u in ids if u not in store]
    if missing:
        raise DataError(
            f"{store.path}: no features for {len(missing)} utterance(s), e.g. {missing[:3]}; "
            "run feature extraction on them first"
        )
    params = as_params(ubm)
    if store.dim != params.n_dims:
        raise DataError(f"{store.path}: features have {store.dim} dims, the UBM {params.n_dims}")
    bs = max(1, int(batch_size))
    batches = [ids[i : i + bs] for i in range(0, len(ids), bs)]
    results = Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_store_batch)(str(store.path), [store.item(u) for u in b], ubm, dtype) for b in batches
    )
    if progress:
        from tqdm.auto import tqdm

        results = tqdm(results, total=len(batches), desc="statistics", unit="batch")
    yield from results
    logger.info("Baum-Welch statistics of %d utterances from %s", len(ids), store.path)


def write_stats(
    store_dir: PathLike,
    ids: Sequence[str],
    ubm: Any,
    path: PathLike,
    *,
    n_jobs: int = 1,
    batch_size: int = 64,
    dtype: Any = None,
    progress: bool = False,
) -> Path:
    """:func:`stats_from_store` written to ``path`` batch by batch (memory: one batch).

    The file is what :meth:`UtteranceStats.save` writes (atomically: temporary name, then
    rename); :func:`gmmspeaker.ivector.tv.train_tv` and
    :func:`~gmmspeaker.ivector.tv.extract_ivectors` read it batch by batch.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        As :func:`stats_from_store`.
    """
    import h5py

    ids = list(ids)
    params = as_params(ubm)
    K, D = params.n_components, params.n_dims
    batches = _store_batches(store_dir, ids, ubm, n_jobs, batch_size, dtype, progress)
    path = Path(path)
    # too large to build in memory (atomic_h5): the free space is checked before writing
    need = 8 * len(ids) * (K + K * D) + (1 << 20)
    with atomic_path(path, need=need) as tmp, h5py.File(tmp, "w") as h5:
        n, f = _create_layout(h5, ids, K, K * D, ubm_fingerprint(ubm))
        row = 0
        for bn, bf in batches:
            n[row : row + bn.shape[0]] = bn
            f[row : row + bn.shape[0]] = bf
            row += bn.shape[0]
    return path


def stats_from_store(
    store_dir: PathLike,
    ids: Sequence[str],
    ubm: Any,
    *,
    n_jobs: int = 1,
    batch_size: int = 64,
    dtype: Any = None,
    progress: bool = False,
) -> UtteranceStats:
    """Baum-Welch statistics of ``ids`` streamed from a feature store, in parallel.

    Workers (joblib, so the active ``parallel_config`` decides where they run) get the
    store's directory and a batch of ids, never an open file, and return the batch's
    statistics; memory per worker is one batch of utterances.

    Parameters
    ----------
    store_dir : path-like
        A feature store directory (:class:`gmmspeaker.store.FeatureStore`).
    ids : sequence of str
        Utterances, in the order of the result's rows.
    ubm : GaussianMixture
        Diagonal UBM on the store's features.
    n_jobs : int
        joblib workers (-1: all cores).
    batch_size : int
        Utterances per worker task.
    dtype : {None, "float32", "float64"}
        Precision of the posterior GEMMs (see :func:`baum_welch`).
    progress : bool
        Show a progress bar over batches.

    Returns
    -------
    UtteranceStats
        ``n`` (U, K), ``f`` (U, K*D), float64, rows in the order of ``ids``.

    Raises
    ------
    DataError
        The store is missing, ``ids`` is empty or repeats an id, or an id has no
        features in the store (the message names the store and the ids).
    """
    ids = list(ids)
    params = as_params(ubm)
    K, D = params.n_components, params.n_dims
    batches = _store_batches(store_dir, ids, ubm, n_jobs, batch_size, dtype, progress)
    n = np.empty((len(ids), K))
    f = np.empty((len(ids), K * D))
    row = 0
    for bn, bf in batches:
        n[row : row + bn.shape[0]] = bn
        f[row : row + bn.shape[0]] = bf
        row += bn.shape[0]
    return UtteranceStats(ids, n, f, ubm_fingerprint(ubm))
