"""ISV enrolment and scoring (whitened space of :mod:`gmmspeaker.isv.train`).

**Enrolment** gives a speaker's offset ``d E[z_s]`` (K*D,) from the statistics of its
enrolment recordings with their session factors **integrated out, exactly**: the
posterior of ``(x_1 .. x_H, z)`` is Gaussian, so the mean of ``z`` with the ``x_h``
integrated out equals the joint posterior mode (joint estimation and integration agree
when solved exactly). ``z`` has a diagonal prior and enters linearly, so it is
eliminated in closed form, leaving one (H R) x (H R) system for the session factors::

    P_hh' = delta_hh' (I + sum_k n_hk U_k U_k^T) - sum_k c_hh'k U_k U_k^T,
            c_hh'k = d^2 n_hk n_h'k / (1 + d^2 N_k)
    P x = [U (f_h - N_h d^2 F / (1 + d^2 N))]_h
    E[z] = d (F - sum_h N_h U^T x_h) / (1 + d^2 N)

(``N``, ``F`` the pooled statistics.) The blocks come from one GEMM with the packed
``U_k U_k^T`` of :func:`gmmspeaker.ivector.tv.packed_gram`. This is exact where bob's
ISV enrolment runs a fixed number of alternating (Gauss-Seidel) sweeps that converge to
the same point; the cost is ``(H R)^3 / 3`` per speaker, small for the usual few
enrolment recordings. With ``R = 0`` it is relevance MAP (module docstring of
:mod:`gmmspeaker.isv.train`).

**Scoring** (Glembek et al., 2009). A test recording's session factor is estimated
against the UBM, ``x_t = (I + sum_k n_tk U_k U_k^T)^{-1} U f_t`` (the i-vector
extraction of :func:`gmmspeaker.ivector.tv.extract_ivectors` with T = U), and removed
from its statistics; the linear score is ::

    s(model, t) = o_model^T (f_t - N_t U^T x_t) / sum_k n_tk

the first-order approximation of the log-likelihood ratio of the session-compensated
model (means ``mu + sigma (o_model + U^T x_t)``) against the compensated UBM (means
``mu + sigma U^T x_t``), per frame. :func:`full_llr` computes that ratio from the
frames exactly, as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.gmm.kernel import component_logdens, diag_ubm, logsumexp, prepare
from gmmspeaker.gmm.params import MixtureParams
from gmmspeaker.isv.train import ISVModel
from gmmspeaker.ivector.stats import UtteranceStats
from gmmspeaker.ivector.tv import TotalVariability, extract_ivectors, packed_gram

__all__ = [
    "enroll_offset",
    "enroll_offsets",
    "session_factors",
    "compensated_stats",
    "linear_scores",
    "full_llr",
]


def _check(model: ISVModel, K: int, KD: int, fingerprint: str = "") -> None:
    if (model.n_components, model.n_components * model.n_dims) != (K, KD):
        raise ModelError(
            f"ISV model is for K={model.n_components}, D={model.n_dims}; statistics have K={K}, D={KD // max(K, 1)}"
        )
    if model.ubm_fingerprint and fingerprint and model.ubm_fingerprint != fingerprint:
        raise ModelError(
            f"ISV model was trained on UBM {model.ubm_fingerprint}, statistics come from UBM {fingerprint}"
        )


def enroll_offset(
    model: ISVModel, n: FloatArray, f: FloatArray, *, gram: FloatArray | None = None
) -> FloatArray:
    """A speaker's offset ``d E[z]`` (K*D,) from its H enrolment recordings (module docstring).

    Parameters
    ----------
    model : ISVModel
    n, f : ndarray (H, K), (H, K*D)
        The enrolment recordings' statistics.
    gram : ndarray (K, R(R+1)/2), optional
        ``packed_gram(model.U, K)`` (computed when not given).
    """
    n = np.atleast_2d(np.asarray(n, dtype=np.float64))
    f = np.atleast_2d(np.asarray(f, dtype=np.float64))
    if n.shape[0] == 0:
        raise DataError("ISV enrolment: no recordings")
    H, K = n.shape
    _check(model, K, f.shape[1])
    Dd = f.shape[1] // K
    d = model.d
    U = np.asarray(model.U, dtype=np.float64)
    R = U.shape[0]
    N = n.sum(0)
    F = f.sum(0)
    lam = 1.0 + d * d * np.repeat(N, Dd)  # (KD,)
    if R == 0:
        return d * d * F / lam
    if gram is None:
        gram = packed_gram(U, K)
    iu = np.triu_indices(R)
    # per-pair weights on U_k U_k^T: delta n_hk - c_hh'k, one GEMM with the packed Gram matrices
    c = -(d * d) * n[:, None, :] * n[None, :, :] / (1.0 + d * d * N)  # (H, H, K)
    c[np.arange(H), np.arange(H)] += n
    blocks_packed = c.reshape(H * H, K) @ gram  # (H*H, R(R+1)/2)
    full = np.zeros((H * H, R, R))
    full[:, iu[0], iu[1]] = blocks_packed
    full = full + np.triu(full, 1).transpose(0, 2, 1)
    P = full.reshape(H, H, R, R).transpose(0, 2, 1, 3).reshape(H * R, H * R)
    P[np.diag_indices(H * R)] += 1.0
    rhs = (f - np.repeat(n, Dd, axis=1) * (d * d * F / lam)) @ U.T  # (H, R)
    x = scipy.linalg.solve(P, rhs.reshape(-1), assume_a="pos").reshape(H, R)
    resid = F - (np.repeat(n, Dd, axis=1) * (x @ U)).sum(0)
    return d * d * resid / lam


def enroll_offsets(
    model: ISVModel, stats: UtteranceStats, enrolment: dict[str, Sequence[str]]
) -> tuple[list[str], FloatArray]:
    """Offsets of several models: ``enrolment`` maps model id to utterance ids of ``stats``.

    Returns the model ids (sorted) and their offsets, (M, K*D).
    """
    _check(model, stats.n_components, stats.f.shape[1], stats.ubm_fingerprint)
    index = {u: i for i, u in enumerate(stats.ids)}
    gram = packed_gram(np.asarray(model.U, dtype=np.float64), stats.n_components) if model.rank else None
    ids = sorted(enrolment)
    out = np.empty((len(ids), stats.f.shape[1]))
    for i, m in enumerate(ids):
        missing = [u for u in enrolment[m] if u not in index]
        if missing:
            raise DataError(f"ISV enrolment of {m!r}: no statistics for {missing[0]!r}")
        rows = [index[u] for u in enrolment[m]]
        out[i] = enroll_offset(model, stats.n[rows], stats.f[rows], gram=gram)
    return ids, out


def session_factors(model: ISVModel, stats: UtteranceStats, *, batch_size: int = 256) -> FloatArray:
    """``x_t`` (U, R) of every recording, estimated against the UBM (no speaker offset)."""
    _check(model, stats.n_components, stats.f.shape[1], stats.ubm_fingerprint)
    if model.rank == 0:
        return np.zeros((len(stats), 0))
    tv = TotalVariability(np.asarray(model.U, dtype=np.float64), model.n_components, model.n_dims)
    return extract_ivectors(tv, stats, batch_size=batch_size)


def compensated_stats(model: ISVModel, stats: UtteranceStats, x: FloatArray | None = None) -> FloatArray:
    """First-order statistics with the session offset removed, ``f_t - N_t U^T x_t`` (U, K*D)."""
    if x is None:
        x = session_factors(model, stats)
    f = np.asarray(stats.f, dtype=np.float64)
    if model.rank == 0:
        return f.copy()
    return f - np.repeat(np.asarray(stats.n), model.n_dims, axis=1) * (np.asarray(x) @ model.U)


def linear_scores(
    model: ISVModel, offsets: FloatArray, stats: UtteranceStats, *, frame_normalise: bool = True
) -> FloatArray:
    """Linear scores (M, T) of model offsets against test statistics (module docstring).

    ``frame_normalise`` divides by the test recording's frame count (per-frame scores,
    like the GMM-UBM LLR); Glembek et al.'s raw form without it.
    """
    fc = compensated_stats(model, stats)
    s = np.asarray(offsets, dtype=np.float64) @ fc.T
    if frame_normalise:
        s = s / np.maximum(np.asarray(stats.n).sum(1), 1e-10)[None, :]
    return s


def full_llr(ubm: Any, offset: FloatArray, session_offset: FloatArray, X: FloatArray) -> float:
    """Per-frame LLR of frames ``X`` (n, D): compensated model against compensated UBM.

    Model means ``mu + sigma (offset + session_offset)``, UBM means ``mu + sigma
    session_offset`` (whitened offsets of shape (K*D,)); weights and variances the UBM's.
    """
    p = diag_ubm(ubm, what="ISV scoring")
    mu = np.asarray(p.means, dtype=np.float64)
    sd = np.sqrt(np.asarray(p.covariances, dtype=np.float64))
    K, D = mu.shape
    c = np.asarray(session_offset, dtype=np.float64).reshape(K, D)
    o = np.asarray(offset, dtype=np.float64).reshape(K, D)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != D or X.shape[0] == 0:
        raise DataError(f"ISV scoring: frames have shape {X.shape}, expected (n > 0, {D})")

    def loglik(means: np.ndarray) -> np.ndarray:
        prep = prepare(MixtureParams(p.weights, means, p.covariances, "diag"), np.dtype(np.float64))
        return logsumexp(component_logdens(X, prep))

    return float(np.mean(loglik(mu + sd * (o + c)) - loglik(mu + sd * c)))
