"""Inter-session variability (ISV): the model and EM training of the session subspace U.

The model (Vogt and Sridharan, 2008; bob.learn.em's ISV), in the whitened space of
:class:`~gmmspeaker.ivector.stats.UtteranceStats` where every UBM component has zero
mean and unit covariance: recording ``h`` of speaker ``s`` has the supervector offset ::

    o_sh = U^T x_sh + d z_s,      x_sh ~ N(0, I_R),   z_s ~ N(0, I_{KD})

``U`` (R, K*D) spans the session subspace (rank ``R = R_u``; stored like the T matrix of
:mod:`gmmspeaker.ivector.tv`), and ``d = 1 / sqrt(r)`` for the relevance factor ``r``: in
the original feature space ``D = Sigma^{1/2} / sqrt(r)``, the choice of Vogt and
Sridharan and of bob's ISV (``D^2 = Sigma / r``). ``D`` is not trained.

**Relevance-MAP equivalence.** With ``R = 0`` the posterior mean of ``z_s`` given the
speaker's pooled statistics ``N_k``, ``F_k`` is ``d F_k / (1 + d^2 N_k)``, so the mean
offset is ``d E[z_k] = F_k / (N_k + r)`` (whitened), i.e. ``mu_k + (F_raw_k - N_k mu_k) /
(N_k + r)``: relevance-MAP adaptation of the means (:func:`gmmspeaker.gmm.map.map_adapt`)
with the same ``r``, exactly.

**Training: variational EM.** The exact posterior of a training speaker couples all of
its recordings' session factors through ``z_s`` (a system of size H R per speaker). As
bob.learn.em and Vogt and Sridharan do, training alternates the two factors; here this is
mean-field variational EM with ``q(z_s) prod_h q(x_sh)``, which has an objective that no
step lowers (the evidence lower bound, ELBO). Per iteration and per speaker:

1. ``q(z_s)`` given the session means ``E[x_sh]`` kept from the previous iteration
   (diagonal: precision ``1 + d^2 N_s``, mean ``d (F_s - sum_h N_h U^T E[x_sh]) /
   (1 + d^2 N_s)``);
2. ``q(x_sh)`` given ``q(z_s)``: the total-variability posterior of
   :func:`gmmspeaker.ivector.tv.tv_estep` on the statistics with the speaker offset
   removed, ``f_h - N_h d E[z_s]`` (precision ``I + sum_k n_hk U_k U_k^T``), which also
   returns the M-step accumulators ``A_k = sum n_hk E[x x^T]`` and
   ``C = sum E[x] (f_h - N_h d E[z_s])^T``;
3. M-step ``A_k U_k = C_k`` (:func:`gmmspeaker.ivector.tv.tv_m_step`) and, optionally,
   minimum divergence (``U <- G^T U``, the kept means ``<- G^{-1} E[x]``), which leaves
   the ELBO unchanged or higher.

Step 1 starts from the previous iteration's ``q(x)``, so every step is a coordinate
ascent of one ELBO and the objective trace never decreases. The ELBO after step 2 is ::

    sum_h [-1/2 log det L_h + 1/2 b_h^T E[x_h]]                       (x part, as for T)
  + sum_s sum_kd [d mu F - 1/2 (1 + d^2 N)(mu^2 + v) + 1/2 log v + 1/2]  (z part)

with ``b_h = U (f_h - N_h d mu_s)`` and ``q(z) = N(mu, v)``; with ``R = 0`` it is the exact
log-likelihood of the statistics (up to the constant terms the T matrix also drops).
The kept session means are U x R numbers (like the i-vectors of the training list); all
else is bounded by the batch (a batch is a set of whole speakers).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.ivector.em_driver import Checkpoint, n_cores, run_em, share_with_workers, shared
from gmmspeaker.ivector.stats import UtteranceStats
from gmmspeaker.ivector.tv import TVAccumulators, initial_subspace, packed_gram, tv_estep, tv_m_step

__all__ = ["ISVModel", "ISVBatch", "isv_estep", "train_isv", "speaker_offsets_mean_field"]

logger = logging.getLogger(__name__)

_FORMAT = "gmmspeaker.isv"
_CKPT_FORMAT = "gmmspeaker.isv_checkpoint"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class ISVModel:
    """A trained ISV model.

    Attributes
    ----------
    U : ndarray, shape (R, K*D), float64
        Session subspace in the whitened space (R may be 0: relevance MAP).
    relevance : float
        ``r``; ``d = 1/sqrt(r)``.
    n_components, n_dims : int
        K and D.
    ubm_fingerprint : str
    log_likelihood : tuple of float
        The ELBO after each iteration's E-step; non-decreasing.
    """

    U: FloatArray
    relevance: float
    n_components: int
    n_dims: int
    ubm_fingerprint: str = ""
    log_likelihood: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        U = np.asarray(self.U)
        if U.ndim != 2 or U.shape[1] != self.n_components * self.n_dims:
            raise ModelError(f"ISV: U has shape {U.shape}, expected (R, {self.n_components}*{self.n_dims})")
        if not (np.isfinite(self.relevance) and self.relevance > 0):
            raise ModelError(f"ISV: relevance factor must be finite and > 0, got {self.relevance!r}")

    @property
    def rank(self) -> int:
        """R_u."""
        return int(self.U.shape[0])

    @property
    def d(self) -> float:
        """The whitened diagonal of D, ``1/sqrt(r)``."""
        return float(1.0 / np.sqrt(self.relevance))

    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically (dataset ``U``, attributes as the dataclass fields)."""
        write_h5(
            path,
            _FORMAT,
            {"U": np.asarray(self.U, dtype=np.float64)},
            {
                "format_version": _FORMAT_VERSION,
                "relevance": float(self.relevance),
                "n_components": int(self.n_components),
                "n_dims": int(self.n_dims),
                "ubm_fingerprint": self.ubm_fingerprint,
                "log_likelihood": np.asarray(self.log_likelihood, dtype=np.float64),
            },
        )

    @classmethod
    def load(cls, path: PathLike) -> ISVModel:
        """Read a model written by :meth:`save`; ModelError names a bad file."""
        arrays, attrs = read_h5(path, _FORMAT, ("U",))
        try:
            return cls(
                U=np.asarray(arrays["U"], dtype=np.float64).reshape(
                    -1, int(attrs["n_components"]) * int(attrs["n_dims"])
                ),
                relevance=float(attrs["relevance"]),
                n_components=int(attrs["n_components"]),
                n_dims=int(attrs["n_dims"]),
                ubm_fingerprint=str(attrs.get("ubm_fingerprint", "")),
                log_likelihood=tuple(float(x) for x in np.atleast_1d(attrs.get("log_likelihood", []))),
            )
        except (KeyError, ModelError) as exc:
            raise ModelError(f"{path}: inconsistent ISV file ({exc})") from None


# ---------------------------------------------------------------------------------------
# One batch of whole speakers
# ---------------------------------------------------------------------------------------


@dataclass
class ISVBatch:
    """E-step result of a batch of speakers.

    Attributes
    ----------
    acc : TVAccumulators
        M-step accumulators of U (``loglik`` holds the x part of the ELBO).
    x : ndarray, shape (B, R)
        New session means ``E[x_sh]``, rows as the input.
    z_part : float
        The z part of the ELBO.
    """

    acc: TVAccumulators
    x: FloatArray
    z_part: float

    @property
    def elbo(self) -> float:
        return float(self.acc.loglik + self.z_part)


def _membership(starts: np.ndarray, n_rows: int) -> np.ndarray:
    """(S, B) 0/1 matrix: row s marks the rows of speaker s (rows sorted by speaker)."""
    counts = np.diff(np.append(starts, n_rows))
    M = np.zeros((starts.size, n_rows))
    M[np.repeat(np.arange(starts.size), counts), np.arange(n_rows)] = 1.0
    return M


def speaker_offsets_mean_field(
    U: FloatArray, d: float, n: FloatArray, f: FloatArray, x: FloatArray, starts: np.ndarray
) -> tuple[FloatArray, FloatArray, float]:
    """``q(z_s)`` given the session means: mean and variance (S, K*D), and the z part of the ELBO.

    ``n`` (B, K), ``f`` (B, K*D), ``x`` (B, R) are rows sorted by speaker, speaker ``s``
    starting at row ``starts[s]``. Per-speaker sums are GEMMs with the membership matrix.
    """
    B, K = n.shape
    Dd = f.shape[1] // K
    M = _membership(np.asarray(starts, dtype=np.intp), B)
    S = M.shape[0]
    Ns = (M @ n)[:, :, None]  # (S, K, 1): broadcast over the D dimensions of a component
    Fs = (M @ f).reshape(S, K, Dd)
    if U.shape[0]:
        UX = (x @ U).reshape(B, K, Dd)  # U^T x_h per recording
        UX *= n[:, :, None]
        resid = Fs - (M @ UX.reshape(B, K * Dd)).reshape(S, K, Dd)
        del UX
    else:
        resid = Fs
    prec = 1.0 + (d * d) * Ns  # (S, K, 1)
    mu = (d * resid) / prec
    v = np.broadcast_to(1.0 / prec, (S, K, Dd)).reshape(S, K * Dd)
    # z part: d mu F - 1/2 prec (mu^2 + v) + 1/2 log v + 1/2, with prec v = 1
    z_part = float(np.sum(d * mu * Fs - 0.5 * prec * mu * mu) - 0.5 * Dd * np.sum(np.log(prec)))
    mu = mu.reshape(S, K * Dd)
    return mu, v, z_part


def isv_estep(
    U: FloatArray,
    d: float,
    n: FloatArray,
    f: FloatArray,
    x_prev: FloatArray,
    starts: Sequence[int] | np.ndarray,
    *,
    gram: FloatArray | None = None,
    n_threads: int = 1,
    dtype: Any = "float64",
) -> ISVBatch:
    """Variational E-step of a batch of whole speakers (steps 1 and 2 of the module docstring).

    Parameters
    ----------
    U : ndarray (R, K*D)
    d : float
        ``1/sqrt(r)``.
    n, f : ndarray (B, K), (B, K*D)
        Statistics, rows sorted by speaker.
    x_prev : ndarray (B, R)
        Session means of the previous iteration (zeros at the start).
    starts : sequence of int
        First row of each speaker.
    gram : ndarray (K, R(R+1)/2), optional
        :func:`gmmspeaker.ivector.tv.packed_gram` of U.
    """
    n = np.asarray(n, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    st = np.asarray(starts, dtype=np.intp)
    K = n.shape[1]
    Dd = f.shape[1] // K
    R = U.shape[0]
    mu, _, z_part = speaker_offsets_mean_field(U, d, n, f, np.asarray(x_prev, dtype=np.float64), st)
    counts = np.diff(np.append(st, n.shape[0]))
    shift = np.repeat(mu, counts, axis=0).reshape(n.shape[0], K, Dd)  # speaker offset of each row
    shift *= d * n[:, :, None]
    f_adj = f - shift.reshape(n.shape[0], K * Dd)
    del shift
    if R == 0:
        acc = TVAccumulators(
            A=np.zeros((K, 0)),
            C=np.zeros((0, K * Dd)),
            S=np.zeros(0),
            N=n.sum(0),
            loglik=0.0,
            n_utterances=int(n.shape[0]),
        )
        return ISVBatch(acc, np.zeros((n.shape[0], 0)), z_part)
    acc, x = tv_estep(U, n, f_adj, gram=gram, n_threads=n_threads, dtype=dtype, return_means=True)
    return ISVBatch(acc, x, z_part)


# ---------------------------------------------------------------------------------------
# Where the statistics come from, grouped by speaker
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grouped:
    """Statistics rows in speaker order: ``order[i]`` is the source row of sorted row i."""

    stats: UtteranceStats | None
    path: str | None
    order: np.ndarray
    starts: np.ndarray  # first sorted row of each speaker
    K: int
    D: int
    fingerprint: str
    ids: list[str]

    @property
    def n_utts(self) -> int:
        return int(self.order.size)

    def rows(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        n, f = self._read(a, b, ("n", "f"))
        return n, f

    def _read(self, a: int, b: int, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        """Sorted rows ``a:b`` of the statistics ``names`` (``"n"``, ``"f"``)."""
        idx = self.order[a:b]
        if self.stats is not None:
            return tuple(getattr(self.stats, name)[idx] for name in names)
        import h5py

        srt = np.argsort(idx, kind="stable")
        inv = np.empty_like(srt)
        inv[srt] = np.arange(srt.size)
        with h5py.File(self.path, "r") as h5:  # type: ignore[arg-type]
            return tuple(np.asarray(h5[name][idx[srt]], dtype=np.float64)[inv] for name in names)

    def batches(self, batch_size: int) -> list[tuple[int, int, np.ndarray]]:
        """Batches of whole speakers of about ``batch_size`` rows: (a, b, local starts)."""
        bounds = list(self.starts) + [self.n_utts]
        out: list[tuple[int, int, np.ndarray]] = []
        first = 0
        for s in range(1, len(bounds)):
            size = bounds[s] - bounds[first]
            if s == len(bounds) - 1 or size + (bounds[s + 1] - bounds[s]) > max(1, int(batch_size)):
                a, b = bounds[first], bounds[s]
                out.append((a, b, np.asarray(bounds[first:s]) - a))
                first = s
        return out

    def signature(self) -> str:
        h = hashlib.sha256()
        h.update("\n".join(self.ids[i] for i in self.order).encode())
        h.update(np.asarray(self.starts, dtype=np.int64).tobytes())
        for a, b, _ in self.batches(4096):
            (n,) = self._read(a, b, ("n",))  # the zeroth-order statistics only
            h.update(np.ascontiguousarray(n, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]


def _group(stats: UtteranceStats | PathLike, speakers: Mapping[str, str]) -> _Grouped:
    if isinstance(stats, UtteranceStats):
        ids, K, D, fp, st, path = (
            list(stats.ids),
            stats.n_components,
            stats.n_dims,
            stats.ubm_fingerprint,
            stats,
            None,
        )
    else:
        import h5py

        p = Path(stats)
        if not p.is_file():
            raise DataError(f"{p}: statistics file not found")
        try:
            with h5py.File(p, "r") as h5:
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
                K = int(h5["n"].shape[1])
                D = int(h5["f"].shape[1]) // K
                fp = h5.attrs.get("ubm_fingerprint", "")
        except (OSError, KeyError) as exc:
            raise DataError(f"{p}: not a statistics file ({exc})") from None
        fp = fp.decode() if isinstance(fp, bytes) else str(fp)
        st, path = None, str(p)
    if not ids:
        raise DataError("ISV: no utterance statistics to train on")
    rows = [i for i, u in enumerate(ids) if u in speakers]  # the file may hold other recordings too
    if not rows:
        raise DataError(f"ISV: none of the {len(ids)} utterances of the statistics has a speaker label")
    labels = {i: str(speakers[ids[i]]) for i in rows}
    order = np.asarray(sorted(rows, key=lambda i: (labels[i], ids[i])), dtype=np.intp)
    sl = [labels[i] for i in order]
    starts = np.asarray([i for i in range(len(sl)) if i == 0 or sl[i] != sl[i - 1]], dtype=np.intp)
    return _Grouped(st, path, order, starts, int(K), int(D), fp, ids)


# ---------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------


def _batch_task(
    U_ref: Any, gram_ref: Any, d: float, rows: Any, x_prev: np.ndarray, starts: np.ndarray, dtype: str
) -> ISVBatch:
    U, gram = shared(U_ref), shared(gram_ref)
    if isinstance(rows, tuple) and len(rows) == 3 and isinstance(rows[0], _Grouped):
        src, a, b = rows
        n, f = src.rows(a, b)
    else:
        n, f = rows
    return isv_estep(
        np.asarray(U), d, n, f, x_prev, starts, gram=None if gram is None else np.asarray(gram), dtype=dtype
    )


def _estep_all(
    src: _Grouped,
    U: np.ndarray,
    d: float,
    x_prev: np.ndarray,
    batch_size: int,
    n_jobs: int,
    tmpdir: str | None,
    dtype: str,
) -> tuple[TVAccumulators, float, np.ndarray]:
    """Accumulators (summed in batch order), ELBO and the new session means (sorted rows)."""
    from joblib import Parallel, delayed

    R = U.shape[0]
    gram = packed_gram(U, src.K) if R else None
    batches = src.batches(batch_size)
    file_rows = src.stats is None
    if n_jobs == 1 or len(batches) == 1:
        nt = n_cores()
        parts: Any = (
            isv_estep(U, d, *src.rows(a, b), x_prev[a:b], s, gram=gram, n_threads=nt, dtype=dtype)
            for a, b, s in batches
        )
    else:
        refs = share_with_workers(tmpdir if R else None, {"U": U, "gram": gram})
        u_ref, g_ref = refs["U"], refs["gram"]
        parts = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(_batch_task)(
                u_ref, g_ref, d, (src, a, b) if file_rows else src.rows(a, b), x_prev[a:b], s, dtype
            )
            for a, b, s in batches
        )
    x_new = np.empty_like(x_prev)
    total: TVAccumulators | None = None
    elbo = 0.0
    for (a, b, _), p in zip(batches, parts):
        x_new[a:b] = p.x
        elbo += p.elbo
        if total is None:
            total = p.acc
        else:
            total += p.acc
    assert total is not None
    return total, elbo, x_new


def _checkpoint_key(src: _Grouped, rank: int, relevance: float, min_divergence: bool, dtype: str) -> str:
    return (
        f"rank={rank};r={relevance!r};min_div={int(min_divergence)};dtype={dtype};K={src.K};D={src.D};"
        f"U={src.n_utts};S={src.starts.size};ubm={src.fingerprint};data={src.signature()}"
    )


def train_isv(
    stats: UtteranceStats | PathLike,
    speakers: Mapping[str, str],
    *,
    rank: int = 50,
    relevance: float = 16.0,
    iterations: int = 10,
    min_divergence: bool = True,
    rng: np.random.Generator,
    n_jobs: int = 1,
    batch_size: int = 256,
    checkpoint: PathLike | None = None,
    progress: bool = False,
    dtype: Any = "float64",
    tmp_dir: PathLike | None = None,
) -> ISVModel:
    """Train the session subspace U by variational EM (module docstring).

    Parameters
    ----------
    stats : UtteranceStats or path-like
        Training statistics in memory or an HDF5 file of :meth:`UtteranceStats.save`
        (then every batch is read from it, so memory is bounded by the batch plus the
        U x R session means).
    speakers : mapping of str to str
        Speaker label of each training utterance id (``data.train``'s labels); utterances
        of ``stats`` without one are left out (a recipe's statistics file also holds the
        enrolment, test and cohort recordings).
    rank : int
        R_u (0 allowed: nothing to train, relevance MAP).
    relevance : float
        r of ``D^2 = Sigma / r``.
    iterations, min_divergence, rng, n_jobs, batch_size, checkpoint, progress, dtype
        As :func:`gmmspeaker.ivector.tv.train_tv`; a batch is a set of whole speakers of
        about ``batch_size`` recordings. The result does not depend on ``n_jobs``; a run
        resumed from ``checkpoint`` (U, the session means and the trace, per iteration)
        equals an uninterrupted one.
    tmp_dir : path-like, optional
        With ``n_jobs != 1`` on loky workers: where U and its Gram matrices are written
        for the workers (default: the system's temporary folder; the recipe passes its
        workdir). As in ``train_tv``, the loky workers are shut down on return, so a
        process that trains and exits does not wait for their idle timeout (issue #22).
    """
    if int(rank) < 0:
        raise ConfigError(f"ISV: rank must be >= 0, got {rank!r}")
    if int(iterations) < 0:
        raise ConfigError(f"ISV: iterations must be >= 0, got {iterations!r}")
    if not (np.isfinite(relevance) and relevance > 0):
        raise ConfigError(f"ISV: relevance must be finite and > 0, got {relevance!r}")
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"ISV: dtype must be float32 or float64, got {dtype!r}")
    rank, iterations, relevance = int(rank), int(iterations), float(relevance)
    src = _group(stats, speakers)
    if rank > src.K * src.D:
        raise ConfigError(f"ISV: rank {rank} exceeds the supervector size {src.K * src.D}")
    d = 1.0 / np.sqrt(relevance)
    ck = None
    if checkpoint is not None:
        key = _checkpoint_key(src, rank, relevance, min_divergence, dt.name)
        ck = Checkpoint(
            Path(checkpoint), _CKPT_FORMAT, key, {"U": (rank, src.K * src.D), "x": (src.n_utts, rank)}
        )

    def step(params: dict[str, np.ndarray], tmpdir: str | None) -> tuple[dict[str, np.ndarray], float]:
        U = params["U"]
        acc, elbo, x = _estep_all(src, U, d, params["x"], batch_size, n_jobs, tmpdir, dt.name)
        if rank:
            U = tv_m_step(acc, U, src.K, n_cores())
            if min_divergence:
                iu = np.triu_indices(rank)
                S = np.zeros((rank, rank))
                S[iu] = acc.S
                S = S + np.triu(S, 1).T
                G = np.linalg.cholesky(S / acc.n_utterances)
                U = G.T @ U
                x = np.linalg.solve(G, x.T).T
        return {"U": U, "x": x}, elbo

    params, trace = run_em(
        step,
        lambda: {
            "U": initial_subspace(
                (src.rows(a, b) for a, b, _ in src.batches(batch_size)), src.K, src.D, rank, rng
            ),
            "x": np.zeros((src.n_utts, rank)),
        },
        iterations=iterations,
        checkpoint=ck,
        n_jobs=n_jobs,
        tmp_dir=tmp_dir,
        log=logger,
        tag="isv",
        name="U-matrix",
        what="ISV",
        objective="ELBO",
        n_units=src.n_utts,
        unit="recording",
        progress=progress,
    )
    U = params["U"]
    return ISVModel(U, relevance, src.K, src.D, src.fingerprint, tuple(trace))
