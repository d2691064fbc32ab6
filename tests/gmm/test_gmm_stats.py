"""E-step maths (gmmspeaker.gmm.stats) against scipy and a naive reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmmspeaker.errors import DataError
from gmmspeaker.gmm import GaussianMixture, Stats, accumulate, frame_loglik, log_densities

#: every test here is fast and numerical: all run under several BLAS kernels (tests/test_blas_kernels.py)
pytestmark = pytest.mark.numerics

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


# ---------------------------------------------------------------------------------------
# float32 numerics: the stated error bound and the underflow guard
# ---------------------------------------------------------------------------------------


def _gamma(m: int, u: float) -> float:
    return m * u / (1.0 - m * u)


def far_mixture(rng: np.random.Generator, n: int = 6000, D: int = 5):
    """Six components, 50 units from the origin, at +-3, +-7 and +-40 sd from the shift.

    The symmetric pairs keep the shift (weighted mean of the means) at the centre, so two
    components go through the float32 path with a large distance (up to 49 variances) and
    two are far enough (1600 variances) for the float64 path.
    """
    sd3 = rng.uniform(0.5, 1.4, size=(3, D))
    off = np.array([3.0, 7.0, 40.0])[:, None] * rng.choice([-1.0, 1.0], size=(3, D)) * sd3
    centre = np.full(D, 50.0)
    means = np.stack(
        [centre + off[0], centre - off[0], centre + off[1], centre - off[1], centre + off[2], centre - off[2]]
    )
    sd = np.repeat(sd3, 2, axis=0)
    gmm = GaussianMixture.from_params(np.full(6, 1 / 6), means, sd**2)
    labels = rng.integers(0, 6, n)
    X = (means[labels] + rng.standard_normal((n, D)) * sd[labels]).astype(np.float32)
    return X, gmm


def test_float32_second_order_statistics_within_stated_bound_far_from_shift(rng):
    """Variances from float32 statistics against float64 sums over the same posteriors.

    Bound (``accumulate`` docstring): ``|dv| <= 6 gamma_r Q + 2 gamma_(K+1) v`` on the
    float32 path, ``r = b + g + 3`` (``STAT_ROUNDINGS``: sub-blocks of b frames, g of them
    summed in float32), ``Q = v + (m - c)**2``; float64 path: ``2 gamma_(K+1) v`` plus
    float64 rounding and the float32 remainder of weights below ``_FAR_TAU``. Overall
    ``|dv|/v <= 6 gamma_r (1 + _FAR) + 2 gamma_(K+1)``, whatever the distance of the
    component from the shift.
    """
    from gmmspeaker.gmm import kernel
    from gmmspeaker.gmm import stats as stats_mod

    X, gmm = far_mixture(rng)
    K = gmm.n_components
    u = stats_mod.FLOAT32_UNIT_ROUNDOFF
    r = kernel.STAT_ROUNDINGS
    assert r == kernel._STAT_BLOCK + kernel._STAT_GROUP + 3
    shift = gmm.weights_ @ gmm.means_
    rho2 = ((gmm.means_ - shift) ** 2 / gmm.covariances_).max(1)
    far = rho2 > kernel._FAR
    assert far.sum() == 2 and (~far).sum() == 4 and rho2[~far].max() > 40  # both paths, far ones too

    # Reference: the E-step's own float32 posteriors, normalised and summed in float64
    # (two-pass: centred about the reference mean, no cancellation).
    P, _ = stats_mod.statistics_operands(X, gmm, dtype="float32")
    G = P.astype(np.float64)
    G /= G.sum(1, keepdims=True)
    X64 = X.astype(np.float64)
    N = G.sum(0)
    m = (G.T @ X64) / N[:, None]
    v = np.einsum("tk,tkd->kd", G, (X64[:, None, :] - m[None]) ** 2) / N[:, None]
    Q = v + (m - shift) ** 2
    n = X.shape[0]
    g32 = 6 * _gamma(r, u)
    gK = 2 * _gamma(K + 1, u)
    g64 = 6 * _gamma(n + 4, np.finfo(np.float64).eps / 2)
    # far components: float64 on the frames where their weight exceeds tau, float32 below it
    tail = g32 * kernel._FAR_TAU * ((X64 - shift) ** 2).sum(0)[None, :] / N[:, None]
    bound = np.where(far[:, None], g64 * Q + tail, g32 * Q) + gK * v + 1e-12 * (X64**2).max()
    overall = 6 * _gamma(r, u) * (1 + kernel._FAR) + gK

    for chunk, threads in [(20000, 1), (1000, 2), (333, 1)]:
        st = accumulate(X, gmm, dtype="float32", chunk_size=chunk, n_threads=threads)
        m_hat = st.f / st.n[:, None]
        v_hat = st.s / st.n[:, None] - m_hat**2
        err = np.abs(v_hat - v)
        assert (err <= bound).all(), (err / bound).max()
        assert (err / v).max() <= overall
        # means: |dm| <= 2 gamma_r sqrt(Q) + gamma_(K+1) E|x - m| (<= sqrt(v))
        mtail = 2 * _gamma(r, u) * kernel._FAR_TAU * np.abs(X64 - shift).sum(0)[None, :] / N[:, None]
        mbound = np.where(
            far[:, None], 2 * _gamma(n, 1.2e-16) * np.sqrt(Q) + mtail, 2 * _gamma(r, u) * np.sqrt(Q)
        )
        assert (np.abs(m_hat - m) <= mbound + gK * np.sqrt(v) + 1e-12 * 50).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_subnormal_reaches_the_statistics_products(rng, dtype):
    """Sharp posteriors (components 200 sd apart): every exp result and every product of the
    statistics GEMM is a normal number, although the unclipped posteriors would underflow."""
    from gmmspeaker.gmm import stats as stats_mod

    X, gmm = far_mixture(rng, n=2000)
    P, A = stats_mod.statistics_operands(X, gmm, dtype=dtype)
    assert P.dtype == dtype and A.dtype == dtype
    tiny = np.finfo(dtype).tiny
    level = stats_mod.exp_clip_level(dtype)
    # the guard is needed here: the true shifted log-posteriors go far below the level
    L = log_densities(X, gmm, dtype="float64")
    assert (L - L.max(1, keepdims=True)).min() < level - 100
    pos = P[P > 0]
    assert pos.min() >= np.exp(level) >= tiny * 2.0**40
    # every product p * a of the GEMM, for the nonzero factors guarded by the derivation
    # (|a| >= 2**-40, always so here: |x - c| >= 2**-10 and 1/s >= 1/K)
    assert (np.abs(A) >= 2.0**-40).all()
    prod = P.min(axis=1, keepdims=True) * np.abs(A).min(axis=1, keepdims=True)
    assert prod.min() >= tiny


def test_clipped_exp(rng):
    from gmmspeaker.gmm.stats import clipped_exp, exp_clip_level

    for dt in (np.float32, np.float64):
        L = np.concatenate([-rng.exponential(30.0, 1000), [-np.inf, 0.0, -1e4]]).astype(dt)
        got = clipped_exp(L)
        lv = exp_clip_level(dt)
        assert got.dtype == dt and (got >= np.exp(dt(lv))).all()
        keep = L >= lv
        np.testing.assert_allclose(got[keep], np.exp(L[keep].astype(np.float64)), rtol=4 * np.finfo(dt).eps)
        np.testing.assert_array_equal(got[~keep], np.exp(dt(lv)))


# ---------------------------------------------------------------------------------------
# The tiled diag E-step: sub-block sums, far components, threads
# ---------------------------------------------------------------------------------------


def test_statsum_groups_within_derived_bound():
    """``StatSum``: GEMMs of ``_STAT_BLOCK`` frames, ``_STAT_GROUP`` of them summed in
    float32, then float64. Each term meets one product and at most ``b - 1 + g - 1``
    float32 additions, so ``|R - exact| <= gamma_(b+g-1) |P|.T @ |A|`` (plus float64
    rounding), here on sums whose float32 rounding errors do not cancel (a plain
    sequential float32 sum of the same frames exceeds that bound)."""
    from gmmspeaker.gmm import kernel

    rng = np.random.default_rng(7)
    b, g = kernel._STAT_BLOCK, kernel._STAT_GROUP
    n, K, D = b * g * 3 + 77, 5, 3  # three full groups, then a partial one and a partial tile
    P = np.ones((n, K), dtype=np.float32)
    P[:, 1:] = rng.uniform(0.9, 1.0, size=(n, K - 1)).astype(np.float32)
    A = np.empty((n, 2 * D + 1), dtype=np.float32)
    A[:, :4] = np.float32(1 / 3)  # constant terms: float32 rounding errors of a chain add up
    A[:, 4:] = rng.uniform(0.3, 0.4, size=(n, 3)).astype(np.float32)
    ws = kernel.DiagWorkspace(256, K, D, np.dtype(np.float32))
    R = np.full((K, 2 * D + 1), np.nan)  # overwritten by the first addition
    acc = kernel.StatSum(R, ws, b, g)
    for a in range(0, n, 256):
        acc.add(P[a : a + 256], A[a : a + 256])
    acc.flush()
    P64, A64 = P.astype(np.float64), A.astype(np.float64)
    exact = P64.T @ A64
    bound = _gamma(b + g - 1, 2.0**-24) * (np.abs(P64).T @ np.abs(A64)) * (1 + 1e-9)
    assert (np.abs(R - exact) <= bound).all(), (np.abs(R - exact) / bound).max()
    seq = np.zeros((K, 2 * D + 1), dtype=np.float32)
    for t in range(n):  # the bound is not vacuous: one float32 chain over all frames breaks it
        seq += P[t][:, None] * A[t][None, :]
    assert (np.abs(seq - exact) > bound).any()


def test_float32_statistics_bitwise_equal_across_threads(rng):
    """Work units do not depend on the number of threads and are summed in order."""
    gmm = random_model(rng, "diag", K=24, D=6)
    X = rng.normal(0, 2, size=(9000, 6)).astype(np.float32)
    for chunk in (20000, 700):
        a = accumulate(X, gmm, dtype="float32", chunk_size=chunk, n_threads=1)
        b = accumulate(X, gmm, dtype="float32", chunk_size=chunk, n_threads=2)
        for x, y in ((a.n, b.n), (a.f, b.f), (a.s, b.s)):
            np.testing.assert_array_equal(x, y)
        assert a.loglik == b.loglik


def test_far_components_posteriors_in_component_order_and_moved_out(rng):
    """With far components (their columns last in the E-step): ``statistics_operands``
    gives the posteriors in the components' order, and ``FarSum.take`` leaves no far
    posterior above ``_FAR_TAU`` in the float32 tile, while its float64 product equals
    the product of the weights it moved out."""
    from gmmspeaker.gmm import kernel
    from gmmspeaker.gmm import stats as stats_mod

    X, gmm = far_mixture(rng, n=700)
    prep = kernel.prepare(stats_mod.as_params(gmm), np.dtype(np.float32))
    assert prep.far.size == 2 and prep.stats_order is not None
    assert list(prep.stats_order[-2:]) == list(prep.far)
    P, A = stats_mod.statistics_operands(X, gmm, dtype="float32")
    np.testing.assert_allclose(P / P.sum(1, keepdims=True), gmm.predict_proba(X), atol=2e-5)

    ws = kernel.DiagWorkspace(X.shape[0], 6, X.shape[1], prep.dtype)
    Pt, At, m, s = kernel.diag_tile(X, prep, ws)
    before = Pt[:, -2:].astype(np.float64) / s[:, None].astype(np.float64)
    far = kernel.FarSum(2, prep.dtype)
    far.take(Pt, s, 0)
    assert (Pt[:, -2:] <= kernel._FAR_TAU).all()
    moved = before - Pt[:, -2:].astype(np.float64) / s[:, None].astype(np.float64)
    assert (moved > 0).sum() > 0.2 * X.shape[0]  # the far components carry weight here
    Xc = X.astype(np.float64) - prep.shift
    aug = np.concatenate([Xc**2, Xc, np.ones((X.shape[0], 1))], axis=1)
    np.testing.assert_allclose(far.stats(X, prep.shift, True), moved.T @ aug, rtol=1e-12)
