"""EM training (gmmspeaker.gmm.em) against scikit-learn and by its properties."""

from __future__ import annotations

import functools
import logging
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmmspeaker.errors import ConfigError, ConvergenceWarning, DataError
from gmmspeaker.gmm import GaussianMixture
from gmmspeaker.gmm.em import iter_array_chunks

from .conftest import draw_mixture

sklearn_mixture = pytest.importorskip("sklearn.mixture")

NOFLOOR = {"variance_floor": 0.0, "variance_floor_abs": 0.0, "min_weight": 0.0}


def _start(X: np.ndarray, K: int, cov_type: str, rng: np.random.Generator):
    w = rng.dirichlet(np.ones(K) * 3)
    mu = X[rng.choice(len(X), K, replace=False)]
    D = X.shape[1]
    cov = {
        "diag": lambda: np.tile(X.var(0), (K, 1)) * rng.uniform(0.5, 1.5, (K, D)),
        "spherical": lambda: np.full(K, X.var()) * rng.uniform(0.5, 1.5, K),
        "full": lambda: np.tile(np.cov(X.T, bias=True), (K, 1, 1)),
        "tied": lambda: np.cov(X.T, bias=True),
    }[cov_type]()
    return w, mu, cov


def _sklearn_one_iteration(X, w, mu, cov, cov_type):
    prec = 1.0 / cov if cov_type in ("diag", "spherical") else np.linalg.inv(cov)
    sk = sklearn_mixture.GaussianMixture(
        len(w),
        covariance_type=cov_type,
        weights_init=w,
        means_init=mu,
        precisions_init=prec,
        max_iter=1,
        reg_covar=0.0,
        init_params="random_from_data",
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk.fit(X)
    return sk


@pytest.mark.numerics
@pytest.mark.parametrize("cov_type", ["diag", "full", "spherical", "tied"])
def test_one_iteration_equals_sklearn_float64(mixture_data, cov_type):
    X, _ = mixture_data
    w, mu, cov = _start(X, 5, cov_type, np.random.default_rng(1))
    sk = _sklearn_one_iteration(X, w, mu, cov, cov_type)
    init = GaussianMixture.from_params(w, mu, cov, covariance_type=cov_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(
            5, covariance_type=cov_type, init=init, max_iter=1, dtype="float64", **NOFLOOR
        ).fit(X)
    np.testing.assert_allclose(g.weights_, sk.weights_, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g.means_, sk.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(g.covariances_, sk.covariances_, rtol=1e-9, atol=1e-10)
    assert g.lower_bound_ == pytest.approx(sk.lower_bound_, rel=1e-12)


@pytest.mark.numerics
def test_one_iteration_float32_within_stated_tolerance(mixture_data):
    """float32 mode: weights/means within 1e-5 absolute-relative, variances within 1e-4 relative."""
    X, _ = mixture_data
    w, mu, cov = _start(X, 5, "diag", np.random.default_rng(2))
    sk = _sklearn_one_iteration(X, w, mu, cov, "diag")
    init = GaussianMixture.from_params(w, mu, cov)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(5, init=init, max_iter=1, dtype="float32", **NOFLOOR).fit(X.astype(np.float32))
    np.testing.assert_allclose(g.weights_, sk.weights_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g.means_, sk.means_, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(g.covariances_, sk.covariances_, rtol=1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 10_000),
    K=st.integers(1, 6),
    cov_type=st.sampled_from(["diag", "full", "spherical", "tied"]),
    init=st.sampled_from(["kmeans++", "random", "split"]),
)
def test_em_properties(seed, K, cov_type, init):
    """Log-likelihood never decreases, weights sum to 1, variances stay above the floor."""
    from unittest import mock

    import gmmspeaker.gmm.em as em

    rng = np.random.default_rng(seed)
    X, _ = draw_mixture(rng, 400, K=3, D=3, sep=3.0)
    reseeds: list[bool] = []  # per M-step: did it re-seed a component?

    def recording_m_step(*args, **kwargs):
        params, reseeded = em.m_step.__wrapped__(*args, **kwargs)
        reseeds.append(bool(reseeded))
        return params, reseeded

    recording_m_step.__wrapped__ = em.m_step  # type: ignore[attr-defined]
    with warnings.catch_warnings(), mock.patch.object(em, "m_step", recording_m_step):
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(
            K,
            covariance_type=cov_type,
            init=init,
            max_iter=15,
            tol=0.0,
            dtype="float64",
            variance_floor=0.05,
            random_state=seed,
        ).fit(X)
    h = np.array(g.history_)
    # the main phase's M-steps are the last len(h): a step that re-seeded nothing must not
    # lower the likelihood (a re-seeded component may, once); split-phase steps come before
    main = reseeds[-len(h) :]
    assert len(main) == len(h)
    steps = np.diff(h)[~np.array(main[:-1], dtype=bool)]
    assert steps.size >= len(h) // 2, main  # most steps are checked, not skipped
    assert (steps >= -1e-9).all(), steps.min()
    assert g.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    assert (g.weights_ >= 0).all()
    var = {
        "diag": lambda c: c,
        "spherical": lambda c: c,
        "full": lambda c: np.diagonal(c, axis1=1, axis2=2),
        "tied": lambda c: np.diag(c),
    }[cov_type](g.covariances_)
    floor = g.variance_floor_.mean() if cov_type == "spherical" else g.variance_floor_
    assert (var >= floor * (1 - 1e-9)).all()
    assert np.isfinite(g.means_).all() and np.isfinite(g.lower_bound_)


@pytest.mark.numerics
def test_float32_history_monotone_within_tolerance(mixture_data):
    X, _ = mixture_data
    g = GaussianMixture(4, init="random", max_iter=30, tol=0.0, random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g.fit(X.astype(np.float32))
    assert (np.diff(g.history_) >= -1e-5).all()


@pytest.mark.parametrize("init, K", [("kmeans++", 4), ("split", 2), ("split", 3)])
def test_recovers_known_mixture(init, K):
    X, truth = draw_mixture(np.random.default_rng(11), 6000, K=K, D=5, sep=6.0)
    g = GaussianMixture(K, init=init, random_state=0, tol=1e-6, max_iter=300).fit(X)
    assert g.converged_
    order = [int(np.argmin(((g.means_ - m) ** 2).sum(1))) for m in truth["means"]]
    assert sorted(order) == list(range(K))
    np.testing.assert_allclose(g.weights_[order], truth["weights"], atol=0.02)
    np.testing.assert_allclose(g.means_[order], truth["means"], atol=0.15)
    np.testing.assert_allclose(g.covariances_[order], truth["variances"], rtol=0.15)


def test_sample_matches_moments():
    rng = np.random.default_rng(5)
    for cov_type in ["diag", "full", "tied", "spherical"]:
        from .test_gmm_stats import dense_cov, random_model

        gmm = random_model(rng, cov_type, K=3, D=3)
        X, labels = gmm.sample(60_000, random_state=1)
        assert X.shape == (60_000, 3) and labels.shape == (60_000,)
        mean = gmm.weights_ @ gmm.means_
        cov = sum(
            gmm.weights_[k] * (dense_cov(gmm, k) + np.outer(gmm.means_[k] - mean, gmm.means_[k] - mean))
            for k in range(3)
        )
        np.testing.assert_allclose(X.mean(0), mean, atol=0.05)
        np.testing.assert_allclose(np.cov(X.T), cov, atol=0.1, rtol=0.05)
        np.testing.assert_allclose(np.bincount(labels, minlength=3) / 60_000, gmm.weights_, atol=0.01)
        k0 = labels == 0
        np.testing.assert_allclose(X[k0].mean(0), gmm.means_[0], atol=0.06)
    X1, _ = gmm.sample(10, random_state=3)
    X2, _ = gmm.sample(10, random_state=3)
    np.testing.assert_array_equal(X1, X2)


# --- degenerate cases ---------------------------------------------------------------------


def test_component_without_frames_is_reseeded(caplog):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 1, (500, 2)), rng.normal(3, 1, (500, 2))])
    init = GaussianMixture.from_params([0.4, 0.4, 0.2], [[-3, 0], [3, 0], [1e4, 1e4]], np.ones((3, 2)))
    with caplog.at_level(logging.WARNING, logger="gmmspeaker.gmm.em"):
        g = GaussianMixture(3, init=init, max_iter=20, random_state=0).fit(X)
    assert "re-seeded" in caplog.text
    assert g.n_reseeded_ >= 1
    assert np.isfinite(g.means_).all() and np.isfinite(g.covariances_).all()
    assert (np.abs(g.means_) < 10).all()  # the far component came back into the data
    assert g.weights_.min() > 0.01


def test_constant_and_duplicate_data_are_floored():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=300), np.full(300, 5.0), rng.normal(size=300)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(4, covariance_type="full", max_iter=10, random_state=0).fit(X)
        assert np.isfinite(g.covariances_).all() and np.isfinite(g.lower_bound_)
        assert (np.diagonal(g.covariances_, axis1=1, axis2=2) >= 1e-6 * (1 - 1e-9)).all()
        same = np.tile([[1.0, 2.0]], (50, 1))
        g2 = GaussianMixture(3, max_iter=5, random_state=0).fit(same)
    assert np.isfinite(g2.means_).all() and np.isfinite(g2.covariances_).all()
    np.testing.assert_allclose(g2.means_, np.tile([1.0, 2.0], (3, 1)))


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((3, 2)), "3 frames for 4 components"),
        (np.empty((0, 2)), "no frames"),
        (np.array([[0.0, 1.0]] * 9 + [[np.nan, 0.0]]), "row 9: NaN or inf"),
        (np.array([[0.0, np.inf]] * 10), "row 0: NaN or inf"),
        (np.zeros(10), "2-D"),
    ],
)
def test_bad_data_raise_data_error(X, match):
    with pytest.raises(DataError, match=match):
        GaussianMixture(4).fit(X)


def test_bad_options_raise_config_error():
    X = np.random.default_rng(0).normal(size=(50, 2))
    for kw in [
        {"covariance_type": "banana"},
        {"init": "kmeans"},
        {"n_init": 0},
        {"tol": -1},
        {"dtype": "int8"},
        {"min_weight": 0.5},
        {"n_jobs": 0},
    ]:
        with pytest.raises(ConfigError):
            GaussianMixture(4, **kw).fit(X)


def test_non_convergence_warns(mixture_data):
    X, _ = mixture_data
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        g = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert not g.converged_ and g.n_iter_ == 2 and len(g.history_) == 2


# --- streaming, parallel, resume ---------------------------------------------------------


def _chunks(X: np.ndarray, a: int, b: int, size: int):
    return iter_array_chunks(X[a:b], size)


def _sources(X: np.ndarray, n_parts: int, size: int):
    edges = np.linspace(0, len(X), n_parts + 1).astype(int)
    return [functools.partial(_chunks, X, a, b, size) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_stream_single_source_equals_in_memory(mixture_data):
    X, _ = mixture_data
    opts = dict(init="random", random_state=4, dtype="float64", tol=1e-8, max_iter=40)
    a = GaussianMixture(4, **opts).fit(X)
    b = GaussianMixture(4, **opts).fit_stream(_sources(X, 1, 173))
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9)
    np.testing.assert_allclose(b.history_, a.history_, rtol=1e-11)


@pytest.mark.parametrize("cov_type", ["diag", "full"])
@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_stream_many_sources_equals_in_memory_and_jobs(mixture_data, cov_type):
    X, _ = mixture_data
    opts = dict(
        covariance_type=cov_type, init="split", random_state=0, dtype="float64", tol=1e-8, max_iter=30
    )
    a = GaussianMixture(4, **opts).fit(X)
    srcs = _sources(X, 5, 250)
    b = GaussianMixture(4, **opts).fit_stream(srcs)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-8, atol=1e-10)
    if cov_type == "diag":
        c = GaussianMixture(4, n_jobs=2, **opts).fit_stream(srcs)
        np.testing.assert_allclose(c.means_, b.means_, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(c.history_, b.history_, rtol=1e-12)


def test_array_fit_n_jobs_invariant(mixture_data):
    X, _ = mixture_data
    opts = dict(init="kmeans++", random_state=0, chunk_size=300, max_iter=20)
    a = GaussianMixture(4, n_jobs=1, **opts).fit(X)
    b = GaussianMixture(4, n_jobs=2, **opts).fit(X)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.history_, b.history_, rtol=1e-6)


class _Interrupt(RuntimeError):
    pass


def _flaky_chunks(X: np.ndarray, counter: list[int], fail_at: int):
    counter[0] += 1
    if counter[0] == fail_at:
        raise _Interrupt("simulated crash")
    return iter_array_chunks(X, 500)


@pytest.mark.parametrize("init", ["split", "kmeans++"])
def test_resume_after_interruption_reaches_same_model(tmp_path, mixture_data, init):
    X, _ = mixture_data
    opts = dict(init=init, random_state=3, dtype="float64", tol=1e-9, max_iter=12, n_init=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        counter_ref = [0]
        ref = GaussianMixture(4, **opts).fit_stream([functools.partial(_flaky_chunks, X, counter_ref, -1)])
        ck = tmp_path / "em.ckpt.h5"
        counter = [0]
        with pytest.raises(_Interrupt):
            GaussianMixture(4, checkpoint=ck, **opts).fit_stream(
                [functools.partial(_flaky_chunks, X, counter, 20)]
            )
        assert ck.is_file()
        counter2 = [0]
        res = GaussianMixture(4, checkpoint=ck, **opts).fit_stream(
            [functools.partial(_flaky_chunks, X, counter2, -1)]
        )
    # call 1 is the first pass, call j >= 2 the E-step of iteration j-1: the crash at call 20
    # lost iteration 19 only; the resumed run repeats the first pass and goes on from there
    assert counter2[0] == counter_ref[0] - 18
    assert not ck.exists()  # removed once complete
    np.testing.assert_allclose(res.means_, ref.means_, rtol=1e-12)
    np.testing.assert_allclose(res.covariances_, ref.covariances_, rtol=1e-12)
    assert res.history_ == pytest.approx(ref.history_, rel=1e-13)


def test_stream_errors(mixture_data):
    X, _ = mixture_data
    with pytest.raises(DataError, match="no sources"):
        GaussianMixture(2).fit_stream([])
    with pytest.raises(ConfigError, match="not a callable"):
        GaussianMixture(2).fit_stream([X])
    with pytest.raises(DataError, match="source 1: no frames"):
        GaussianMixture(2).fit_stream([functools.partial(iter_array_chunks, X, 100), lambda: iter([])])
    gen = iter_array_chunks(X, 100)
    with pytest.raises(DataError, match="same frames on every call"):
        GaussianMixture(2, init="random").fit_stream([lambda: gen])


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_too_few_frames_per_parameter_warns(rng):
    """Issue 19 item 14: 16 components on 42 frames (of 39 dims) trained silently."""
    from gmmspeaker.errors import DataWarning
    from gmmspeaker.gmm.params import n_free_parameters

    X = rng.standard_normal((42, 39))
    with pytest.warns(
        DataWarning, match=r"42 frames for a 16-component diag mixture of 1263 free parameters"
    ):
        GaussianMixture(16, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert n_free_parameters(16, 39, "diag") == 16 * 2 * 39 + 15
    X = rng.standard_normal((2000, 13))  # 2000 frames, 16 * 27 - 1 = 431 parameters
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(16, max_iter=2, tol=0.0, random_state=0).fit(X)


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_split_levels_run_on_a_frame_subsample_and_the_final_size_on_every_frame(monkeypatch):
    """Binary splitting on a uniform subsample (as Kaldi's UBM initialisation): the
    sources are read only by the first pass and by the iterations at the final size, and
    the model is the one splitting on every frame finds (same likelihood, same means)."""
    from gmmspeaker.gmm import em

    K = 4
    X, _ = draw_mixture(np.random.default_rng(11), 30_000, K=K, D=5, sep=6.0)
    calls = [0]

    def source():
        calls[0] += 1
        return iter_array_chunks(X, 4000)

    opts = dict(init="split", random_state=0, max_iter=12, tol=0.0)
    g = GaussianMixture(K, **opts).fit_stream([source])
    assert max(em.SPLIT_FRAMES_PER_COMPONENT * K, 10_000) < len(X)  # the subsample is smaller
    assert [k for k, _ in g.split_history_] == [1] * em.SPLIT_ITERS + [2] * em.SPLIT_ITERS
    assert calls[0] == 1 + 12  # the first pass and the 12 iterations at K
    # reference: splitting on every frame (a subsample as large as the data)
    calls[0] = 0
    monkeypatch.setattr(em, "SPLIT_FRAMES_PER_COMPONENT", len(X))
    ref = GaussianMixture(K, **opts).fit_stream([source])
    assert calls[0] == 1 + 2 * em.SPLIT_ITERS + 12
    order = [int(np.argmin(((g.means_ - m) ** 2).sum(1))) for m in ref.means_]
    assert sorted(order) == list(range(K))
    np.testing.assert_allclose(g.means_[order], ref.means_, atol=0.05)
    assert abs(g.lower_bound_ - ref.lower_bound_) < 1e-3
