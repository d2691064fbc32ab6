"""EM initialisations: k-means++ seeds with one hard-assignment M-step, random frames,
and binary splitting of components."""

from __future__ import annotations

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.gmm.kernel import Stats, blocks
from gmmspeaker.gmm.mstep import SPLIT_EPS, component_sd, m_step
from gmmspeaker.gmm.params import MixtureParams

__all__ = ["kmeans_plusplus", "split_components", "initial_params", "hard_stats", "global_params"]


def split_components(
    params: MixtureParams, n_new: int, rng: np.random.Generator | None = None
) -> MixtureParams:
    """Split the ``n_new`` heaviest components in two, weights halved.

    The two means move by ``+/- 0.2 sd * z``, with ``z`` a standard normal direction drawn
    from ``rng`` (as Kaldi does), or all ones without ``rng`` (deterministic). The new
    components are appended after the existing ones, in order of decreasing weight.
    """
    K = params.n_components
    n_new = int(min(max(n_new, 0), K))
    order = np.argsort(-params.weights, kind="stable")[:n_new]
    delta = SPLIT_EPS * component_sd(params)[order]
    if rng is not None:
        delta = delta * rng.standard_normal(delta.shape)
    w = params.weights.copy()
    mu = params.means.copy()
    w[order] *= 0.5
    new_mu = mu[order] + delta
    mu[order] -= delta
    weights = np.concatenate([w, w[order]])
    means = np.concatenate([mu, new_mu])
    if params.covariance_type == "tied":
        cov = params.covariances
    else:
        cov = np.concatenate([params.covariances, params.covariances[order]])
    return MixtureParams(weights / weights.sum(), means, cov, params.covariance_type)


def kmeans_plusplus(X: FloatArray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n_clusters`` greedy k-means++ seeds among the rows of X.

    D^2 sampling with ``2 + log(K)`` candidates per step, keeping the candidate that most
    reduces the potential (as scikit-learn's ``kmeans_plusplus``). Inherently sequential
    over seeds; each step is one GEMM of the frames against the candidates.
    """
    n = X.shape[0]
    n_trials = 2 + int(np.log(n_clusters))
    x2 = (X**2).sum(1)
    idx = np.empty(n_clusters, dtype=np.int64)
    idx[0] = rng.integers(n)
    d2 = np.maximum(x2 - 2.0 * X @ X[idx[0]] + x2[idx[0]], 0.0)
    for j in range(1, n_clusters):
        cum = np.cumsum(d2)
        tot = cum[-1]
        if tot <= 0.0:  # every frame coincides with a seed
            idx[j] = rng.integers(n)
            continue
        cand = np.minimum(np.searchsorted(cum, rng.random(n_trials) * tot, side="right"), n - 1)
        dc = np.maximum(x2[:, None] - 2.0 * X @ X[cand].T + x2[cand][None, :], 0.0)  # (n, trials)
        np.minimum(dc, d2[:, None], out=dc)
        best = int(np.argmin(dc.sum(0)))
        idx[j] = cand[best]
        d2 = dc[:, best].copy()
    return idx


def hard_stats(X: FloatArray, labels: np.ndarray, K: int, covariance_type: str) -> Stats:
    """Statistics of a hard assignment (one-hot posteriors), as a sparse product."""
    from scipy.sparse import csr_matrix

    m, D = X.shape
    G = csr_matrix((np.ones(m), (labels, np.arange(m))), shape=(K, m))
    n = np.asarray(G.sum(axis=1)).ravel()
    f = np.asarray(G @ X)
    if covariance_type in ("diag", "spherical"):
        s = np.asarray(G @ (X**2))
    elif covariance_type == "tied":
        s = (X.T @ X)[None]
    else:
        iu0, iu1 = np.triu_indices(D)
        su = np.zeros((K, iu0.size))
        step = max(1, 4_000_000 // iu0.size)
        for a in range(0, m, step):
            su += np.asarray(G[:, a : a + step] @ (X[a : a + step, iu0] * X[a : a + step, iu1]))
        s = np.empty((K, D, D))
        s[:, iu0, iu1] = su
        s[:, iu1, iu0] = su
    return Stats(n=n, f=f, s=s, loglik=0.0, n_frames=m)


def global_params(K: int, D: int, covariance_type: str, means: FloatArray, var: FloatArray) -> MixtureParams:
    w = np.full(K, 1.0 / K)
    if covariance_type == "diag":
        cov = np.tile(var, (K, 1))
    elif covariance_type == "spherical":
        cov = np.full(K, float(var.mean()))
    elif covariance_type == "full":
        cov = np.tile(np.diag(var), (K, 1, 1))
    else:
        cov = np.diag(var)
    return MixtureParams(w, np.asarray(means, dtype=np.float64).reshape(K, D), cov, covariance_type)


def initial_params(
    init: str,
    K: int,
    covariance_type: str,
    sample: FloatArray,
    gvar: FloatArray,
    gmean: FloatArray,
    floor: FloatArray,
    rng: np.random.Generator,
) -> MixtureParams:
    var = np.maximum(gvar, floor)
    D = sample.shape[1]
    if init == "split":
        return global_params(1, D, covariance_type, gmean[None, :], var)
    if init == "random":
        rows = sample[rng.choice(sample.shape[0], size=K, replace=False)]
        return global_params(K, D, covariance_type, rows, var)
    # k-means++ seeds on the subsample, then one hard-assignment M-step
    seeds = sample[kmeans_plusplus(sample, K, rng)]
    labels = np.empty(sample.shape[0], dtype=np.int64)
    c2 = (seeds**2).sum(1)
    for a, b in blocks(sample.shape[0], 8192):
        labels[a:b] = (c2[None, :] - 2.0 * sample[a:b] @ seeds.T).argmin(1)
    stats = hard_stats(sample, labels, K, covariance_type)
    params, _ = m_step(stats, covariance_type=covariance_type, floor=floor, min_weight=0.0)
    return params
