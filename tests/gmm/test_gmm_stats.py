"""E-step maths (gmmspeaker.gmm.stats) against scipy and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmmspeaker.errors import DataError
from gmmspeaker.gmm import GaussianMixture, Stats, accumulate, frame_loglik, log_densities

TYPES = ["diag", "spherical", "full", "tied"]


def random_model(
    rng: np.random.Generator, cov_type: str, K: int = 4, D: int = 3, offset: float = 0.0
) -> GaussianMixture:
    w = rng.dirichlet(np.ones(K))
    mu = rng.normal(offset, 2.0, size=(K, D))
    if cov_type == "diag":
        cov = rng.uniform(0.3, 2.0, size=(K, D))
    elif cov_type == "spherical":
        cov = rng.uniform(0.3, 2.0, size=K)
    elif cov_type == "full":
        A = rng.normal(size=(K, D, D))
        cov = A @ A.transpose(0, 2, 1) + 0.5 * np.eye(D)
    else:
        A = rng.normal(size=(D, D))
        cov = A @ A.T + 0.5 * np.eye(D)
    return GaussianMixture.from_params(w, mu, cov, covariance_type=cov_type)


def dense_cov(gmm: GaussianMixture, k: int) -> np.ndarray:
    c = gmm.covariances_
    D = gmm.means_.shape[1]
    return {
        "diag": lambda: np.diag(c[k]),
        "spherical": lambda: c[k] * np.eye(D),
        "full": lambda: c[k],
        "tied": lambda: c,
    }[gmm.covariance_type]()


def naive_log_densities(X: np.ndarray, gmm: GaussianMixture) -> np.ndarray:
    """Reference: one scipy logpdf per component (a loop kept in the test)."""
    return np.stack(
        [
            np.log(gmm.weights_[k]) + multivariate_normal(gmm.means_[k], dense_cov(gmm, k)).logpdf(X)
            for k in range(gmm.n_components)
        ],
        axis=1,
    )


@pytest.mark.parametrize("cov_type", TYPES)
def test_log_densities_match_scipy(rng, cov_type):
    gmm = random_model(rng, cov_type)
    X = rng.normal(0, 3, size=(500, 3))
    ref = naive_log_densities(X, gmm)
    got = log_densities(X, gmm, chunk_size=77)
    assert got.dtype == np.float64 and got.shape == (500, 4)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(frame_loglik(X, gmm, chunk_size=64), logsumexp(ref, axis=1), rtol=1e-10)
    np.testing.assert_allclose(gmm.score_samples(X), logsumexp(ref, axis=1), rtol=1e-10)


@pytest.mark.parametrize("cov_type", TYPES)
def test_accumulate_matches_naive_statistics(rng, cov_type):
    gmm = random_model(rng, cov_type, offset=50.0)  # far from the origin: exercises the shift
    X = gmm.means_[rng.integers(0, 4, 400)] + rng.normal(0, 1.5, size=(400, 3))
    L = naive_log_densities(X, gmm)
    G = np.exp(L - logsumexp(L, axis=1, keepdims=True))
    st = accumulate(X, gmm, chunk_size=97, dtype="float64")
    np.testing.assert_allclose(st.n, G.sum(0), rtol=1e-9)
    np.testing.assert_allclose(st.f, G.T @ X, rtol=1e-9)
    if cov_type in ("diag", "spherical"):
        np.testing.assert_allclose(st.s, G.T @ X**2, rtol=1e-9)
    elif cov_type == "full":
        np.testing.assert_allclose(st.s, np.einsum("nk,nd,ne->kde", G, X, X), rtol=1e-9)
    else:
        np.testing.assert_allclose(st.s, (X.T @ X)[None], rtol=1e-9)
    assert st.loglik == pytest.approx(logsumexp(L, axis=1).sum(), rel=1e-11)
    assert st.n_frames == 400
    assert all(a.dtype == np.float64 for a in (st.n, st.f, st.s))


def test_accumulate_float32_within_tolerance_and_chunking_invariant(rng):
    gmm = random_model(rng, "diag", K=16, D=20)
    X = rng.normal(0, 2, size=(3000, 20)).astype(np.float32)
    ref = accumulate(X, gmm, dtype="float64", chunk_size=3000)
    for chunk, threads in [(128, 1), (1000, 2), (3000, 1)]:
        st = accumulate(X, gmm, dtype="float32", chunk_size=chunk, n_threads=threads)
        assert st.f.dtype == np.float64
        # stated float32 tolerance: 1e-4 relative on statistics and mean log-likelihood
        np.testing.assert_allclose(st.n, ref.n, rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(st.f, ref.f, rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose(st.s, ref.s, rtol=1e-4, atol=1e-2)
        assert st.loglik / 3000 == pytest.approx(ref.loglik / 3000, rel=1e-5)
    a = accumulate(X, gmm, dtype="float64", chunk_size=128, n_threads=1)
    b = accumulate(X, gmm, dtype="float64", chunk_size=128, n_threads=2)
    np.testing.assert_allclose(a.s, b.s, rtol=1e-12)


def test_first_order_only_and_empty(rng):
    gmm = random_model(rng, "diag")
    X = rng.normal(size=(50, 3))
    st = accumulate(X, gmm, second_order=False)
    assert st.s is None and st.f.shape == (4, 3)
    empty = accumulate(np.empty((0, 3)), gmm)
    assert empty.n_frames == 0 and not empty.n.any() and empty.s.shape == (4, 3)
    total = accumulate(X[:20], gmm, dtype="float64") + accumulate(X[20:], gmm, dtype="float64")
    whole = accumulate(X, gmm, dtype="float64")
    np.testing.assert_allclose(total.f, whole.f, rtol=1e-12)
    assert isinstance(total, Stats)


def test_far_away_frames_give_finite_posteriors(rng):
    """Frames far from every component: log-densities ~ -1e6, no NaN, one-hot posteriors."""
    gmm = random_model(rng, "diag")
    X = np.full((5, 3), 1e3)
    for dt in ("float32", "float64"):
        st = accumulate(X, gmm, dtype=dt)
        assert np.isfinite(st.loglik) and np.isfinite(st.s).all()
        assert st.n.sum() == pytest.approx(5.0, rel=1e-6)
    P = gmm.predict_proba(X)
    assert np.isfinite(P).all() and np.allclose(P.sum(1), 1)


def test_wrong_dimension_is_a_data_error(rng):
    gmm = random_model(rng, "diag")
    with pytest.raises(DataError, match=r"shape \(n, 3\)"):
        accumulate(rng.normal(size=(10, 4)), gmm)
