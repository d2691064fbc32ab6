"""MAP adaptation (gmmspeaker.gmm.map) against Reynolds' equations computed naively."""

from __future__ import annotations

import math
import types

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.gmm.map import (
    AdaptedModel,
    SpeakerModels,
    enroll,
    map_adapt,
    ubm_fingerprint,
)
from gmmspeaker.gmm.stats import Stats

ALL = ("means", "weights", "variances")


def make_ubm(rng: np.random.Generator, k: int = 6, d: int = 3) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        weights_=rng.dirichlet(np.ones(k) * 3),
        means_=rng.normal(scale=2.0, size=(k, d)),
        covariances_=rng.uniform(0.5, 2.0, size=(k, d)),
    )


def naive_stats(X: np.ndarray, ubm: types.SimpleNamespace) -> Stats:
    """Posteriors with scipy.stats, one component at a time (slow reference)."""
    k = len(ubm.weights_)
    logp = np.column_stack(
        [
            np.log(ubm.weights_[j])
            + multivariate_normal(ubm.means_[j], np.diag(ubm.covariances_[j])).logpdf(X)
            for j in range(k)
        ]
    )
    ll = logsumexp(logp, axis=1)
    g = np.exp(logp - ll[:, None])
    return Stats(n=g.sum(0), f=g.T @ X, s=g.T @ X**2, loglik=float(ll.sum()), n_frames=len(X))


def reynolds(stats: Stats, ubm, r: float):
    """Reynolds 2000 eqs. (11)-(14), component by component, in their textbook form."""
    k, d = ubm.means_.shape
    T = stats.n.sum()
    w, mu, var = [], [], []
    for j in range(k):
        n = stats.n[j]
        a = n / (n + r)
        ex = stats.f[j] / n
        ex2 = stats.s[j] / n
        w.append(a * n / T + (1 - a) * ubm.weights_[j])
        m = a * ex + (1 - a) * ubm.means_[j]
        mu.append(m)
        var.append(a * ex2 + (1 - a) * (ubm.covariances_[j] + ubm.means_[j] ** 2) - m**2)
    w = np.array(w)
    return w / w.sum(), np.array(mu), np.array(var)


@pytest.fixture
def setup(rng):
    ubm = make_ubm(rng)
    X = rng.normal(scale=2.0, size=(400, 3))
    return ubm, X, naive_stats(X, ubm)


def test_means_weights_variances_match_reynolds(setup):
    ubm, _, stats = setup
    for r in (0.5, 4.0, 16.0, 100.0):
        out = map_adapt(stats, ubm, relevance=r, adapt=ALL)
        w, mu, var = reynolds(stats, ubm, r)
        np.testing.assert_allclose(out.means, mu, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.weights, w, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(out.variances, var, rtol=1e-9, atol=1e-12)
        assert out.means.dtype == np.float64 and out.weights.dtype == np.float64
        assert out.variances.dtype == np.float64 and out.counts.dtype == np.float64
        np.testing.assert_array_equal(out.counts, stats.n)
        assert math.isclose(out.weights.sum(), 1.0, rel_tol=1e-12)


def test_default_adapts_means_only(setup):
    ubm, _, stats = setup
    out = map_adapt(stats, ubm)
    assert out.weights is None and out.variances is None
    _, mu, _ = reynolds(stats, ubm, 16.0)
    np.testing.assert_allclose(out.means, mu, rtol=1e-10)
    # only weights: means stay the UBM's
    out_w = map_adapt(stats, ubm, adapt=["weights"])
    np.testing.assert_array_equal(out_w.means, ubm.means_)
    assert out_w.variances is None and out_w.weights is not None


@pytest.mark.parametrize("r", [math.inf, 1e12])
def test_infinite_relevance_returns_ubm(setup, r):
    ubm, _, stats = setup
    out = map_adapt(stats, ubm, relevance=r, adapt=ALL)
    if math.isinf(r):
        np.testing.assert_array_equal(out.means, ubm.means_)
        np.testing.assert_array_equal(out.weights, ubm.weights_)
        np.testing.assert_array_equal(out.variances, ubm.covariances_)
    else:
        np.testing.assert_allclose(out.means, ubm.means_, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out.weights, ubm.weights_, rtol=1e-9)
        np.testing.assert_allclose(out.variances, ubm.covariances_, rtol=1e-9)


def test_zero_relevance_gives_maximum_likelihood(setup):
    ubm, X, stats = setup
    out = map_adapt(stats, ubm, relevance=0.0, adapt=ALL)
    g_n = stats.n
    np.testing.assert_allclose(out.means, stats.f / g_n[:, None], rtol=1e-12)
    np.testing.assert_allclose(out.weights, g_n / len(X), rtol=1e-10)
    # ML variances: posterior-weighted variance around the ML mean, computed directly
    k = len(g_n)
    ml = naive_stats(X, ubm)
    for j in range(k):
        logp = np.column_stack(
            [
                np.log(ubm.weights_[i])
                + multivariate_normal(ubm.means_[i], np.diag(ubm.covariances_[i])).logpdf(X)
                for i in range(k)
            ]
        )
        g = np.exp(logp[:, j] - logsumexp(logp, axis=1))
        m = (g[:, None] * X).sum(0) / g.sum()
        v = (g[:, None] * (X - m) ** 2).sum(0) / g.sum()
        np.testing.assert_allclose(out.variances[j], v, rtol=1e-8)
    assert ml.n_frames == len(X)


def test_components_without_frames_keep_ubm(rng):
    ubm = make_ubm(rng, k=5, d=4)
    n = np.array([3.0, 0.0, 2.0, 0.0, 5.0])
    f = rng.normal(size=(5, 4)) * n[:, None]
    s = (rng.uniform(1, 3, size=(5, 4)) + (f / np.maximum(n, 1)[:, None]) ** 2) * n[:, None]
    stats = Stats(n=n, f=f, s=s, loglik=0.0, n_frames=10)
    for r in (0.0, 16.0):
        out = map_adapt(stats, ubm, relevance=r, adapt=ALL)
        for a in (out.means, out.weights, out.variances):
            assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(out.means[[1, 3]], ubm.means_[[1, 3]])
        np.testing.assert_array_equal(out.variances[[1, 3]], ubm.covariances_[[1, 3]])
        # alpha = 0 where n = 0 (the r -> 0+ limit): the UBM weight is kept, then normalised
        assert np.all(out.weights[[1, 3]] > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            w, _, _ = reynolds(stats, ubm, r) if r > 0 else (None, None, None)
        if w is None:
            raw = np.where(n > 0, n / n.sum(), ubm.weights_)
            w = raw / raw.sum()
        np.testing.assert_allclose(out.weights, w, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 6),
    d=st.integers(1, 4),
    r=st.floats(0.0, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_frames_returns_ubm(k, d, r, seed):
    ubm = make_ubm(np.random.default_rng(seed), k=k, d=d)
    out = map_adapt(Stats.zeros(k, d), ubm, relevance=r, adapt=ALL)
    np.testing.assert_array_equal(out.means, ubm.means_)
    np.testing.assert_array_equal(out.variances, ubm.covariances_)
    np.testing.assert_allclose(out.weights, ubm.weights_, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(r=st.floats(0.0, 1e4), seed=st.integers(0, 2**32 - 1))
def test_properties_weights_sum_to_one_variances_positive(r, seed):
    rng = np.random.default_rng(seed)
    ubm = make_ubm(rng, k=4, d=2)
    # degenerate data: all frames identical -> ML variance 0, must be floored
    X = np.repeat(rng.normal(size=(1, 2)), 7, axis=0)
    stats = naive_stats(X, ubm)
    out = map_adapt(stats, ubm, relevance=r, adapt=ALL)
    assert math.isclose(out.weights.sum(), 1.0, rel_tol=1e-12)
    assert np.all(out.variances > 0)
    assert np.all(out.variances >= 1e-3 * ubm.covariances_.min(axis=0) * (1 - 1e-12))


def test_variance_floor_applies(setup):
    ubm, _, stats = setup
    out = map_adapt(stats, ubm, relevance=0.0, adapt=ALL, variance_floor=5.0)
    assert np.all(out.variances >= 5.0)


def test_works_with_sklearn_ubm(rng):
    from sklearn.mixture import GaussianMixture

    data = rng.normal(size=(300, 2))
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(data)
    X = rng.normal(loc=0.5, size=(50, 2))
    stats = naive_stats(X, gm)
    out = map_adapt(stats, gm, relevance=16.0)
    _, mu, _ = reynolds(stats, gm, 16.0)
    np.testing.assert_allclose(out.means, mu, rtol=1e-10)


def test_bad_arguments(setup):
    ubm, _, stats = setup
    with pytest.raises(ConfigError, match="relevance"):
        map_adapt(stats, ubm, relevance=-1.0)
    with pytest.raises(ConfigError, match="relevance"):
        map_adapt(stats, ubm, relevance=float("nan"))
    with pytest.raises(ConfigError, match="unknown.*covariance"):
        map_adapt(stats, ubm, adapt=("means", "covariance"))
    with pytest.raises(ConfigError, match="empty"):
        map_adapt(stats, ubm, adapt=())
    no_s = Stats(n=stats.n, f=stats.f, s=None, loglik=0.0, n_frames=1)
    with pytest.raises(DataError, match="second-order"):
        map_adapt(no_s, ubm, adapt=ALL)
    with pytest.raises(DataError, match="K=6"):
        map_adapt(Stats.zeros(5, 3), ubm)
    full = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=np.stack([np.eye(3)] * 6)
    )
    map_adapt(stats, full)  # means only: fine with full covariances
    with pytest.raises(ModelError, match="diagonal"):
        map_adapt(stats, full, adapt=ALL)
    with pytest.raises(ModelError, match="lacks"):
        map_adapt(stats, object())


# ---------------------------------------------------------------- SpeakerModels


def _models(rng, adapt=ALL, m=4, dtype=np.float32) -> tuple[SpeakerModels, types.SimpleNamespace]:
    ubm = make_ubm(rng)
    stats = [naive_stats(rng.normal(scale=2.0, size=(30 + i, 3)), ubm) for i in range(m)]
    return enroll([f"spk{i}" for i in range(m)], stats, ubm, adapt=adapt, dtype=dtype), ubm


@pytest.mark.parametrize("adapt", [("means",), ALL])
def test_models_roundtrip(rng, tmp_path, adapt):
    models, ubm = _models(rng, adapt=adapt)
    path = tmp_path / "models.h5"
    models.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["models.h5"]  # no temp file left
    back = SpeakerModels.load(path)
    assert back.model_ids == models.model_ids
    assert back.adapt == tuple(a for a in ALL if a in adapt)
    assert back.relevance == 16.0
    assert back.ubm_fingerprint == ubm_fingerprint(ubm) != ""
    for name in ("means", "counts", "weights", "variances"):
        a, b = getattr(models, name), getattr(back, name)
        if a is None:
            assert b is None
        else:
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
    assert back.index("spk2") == 2 and len(back) == 4
    with pytest.raises(DataError, match="nobody"):
        back.index("nobody")
    assert isinstance(back.model(1), AdaptedModel)
    with h5py.File(path, "r") as h5:
        assert h5.attrs["adapt"] == ",".join(back.adapt)
        assert "version" in h5.attrs
        assert "ubm_means" not in h5 and set(h5) <= {"model_ids", "means", "counts", "weights", "variances"}


def test_models_overwrite_is_atomic(rng, tmp_path):
    models, _ = _models(rng, adapt=("means",))
    path = tmp_path / "models.h5"
    models.save(path)
    bad = SpeakerModels(model_ids=["a"], means=np.zeros((1, 6, 3)), counts=np.zeros((1, 6)), relevance=16.0)
    object.__setattr__(bad, "means", np.zeros((1, 6, 3), dtype=object))  # cannot be written
    with pytest.raises(TypeError, match="Object dtype"):  # h5py: no HDF5 equivalent
        bad.save(path)
    assert SpeakerModels.load(path).model_ids == models.model_ids  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["models.h5"]


def test_load_errors_name_the_file(rng, tmp_path):
    missing = tmp_path / "absent.h5"
    with pytest.raises(ModelError, match="absent.h5"):
        SpeakerModels.load(missing)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(ModelError, match="junk.h5"):
        SpeakerModels.load(junk)
    models, _ = _models(rng, adapt=("means",))
    good = tmp_path / "good.h5"
    models.save(good)
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match="trunc.h5"):
        SpeakerModels.load(trunc)
    with h5py.File(good, "a") as h5:
        h5["means"][0, 0, 0] = np.nan
    with pytest.raises(ModelError, match="good.h5.*non-finite"):
        SpeakerModels.load(good)
    models.save(good)
    with h5py.File(good, "a") as h5:
        del h5["counts"]
        h5["counts"] = np.zeros((4, 5))
    with pytest.raises(ModelError, match="good.h5.*counts"):
        SpeakerModels.load(good)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = 1
    with pytest.raises(ModelError, match="other.h5.*not a gmmspeaker"):
        SpeakerModels.load(other)


def test_speaker_models_validation():
    with pytest.raises(ModelError, match="duplicate"):
        SpeakerModels(model_ids=["a", "a"], means=np.zeros((2, 3, 2)), counts=np.zeros((2, 3)))
    with pytest.raises(ModelError, match="counts"):
        SpeakerModels(model_ids=["a"], means=np.zeros((1, 3, 2)), counts=np.zeros((1, 4)))
    with pytest.raises(ModelError, match="variances must be positive"):
        SpeakerModels(
            model_ids=["a"],
            means=np.zeros((1, 3, 2)),
            counts=np.zeros((1, 3)),
            variances=np.zeros((1, 3, 2)),
        )


def test_enroll_matches_map_adapt(rng):
    ubm = make_ubm(rng)
    stats = [naive_stats(rng.normal(size=(20, 3)), ubm) for _ in range(3)]
    models = enroll(["a", "b", "c"], stats, ubm, relevance=8.0, adapt=ALL, dtype=np.float64)
    for i, s in enumerate(stats):
        ref = map_adapt(s, ubm, relevance=8.0, adapt=ALL)
        np.testing.assert_array_equal(models.means[i], ref.means)
        np.testing.assert_array_equal(models.weights[i], ref.weights)
        np.testing.assert_array_equal(models.variances[i], ref.variances)
    with pytest.raises(DataError, match="2 model ids but 3"):
        enroll(["a", "b"], stats, ubm)


def test_enroll_features_parallel_matches_serial_and_reference(rng):
    from gmmspeaker.gmm.map import enroll_features

    ubm = make_ubm(rng)
    feats = {f"spk{i}": [rng.normal(loc=i, scale=2.0, size=(25, 3)) for _ in range(2)] for i in range(3)}
    serial = enroll_features(feats, ubm, adapt=ALL, dtype=np.float64)
    par = enroll_features(feats, ubm, adapt=ALL, dtype=np.float64, n_jobs=2)
    assert serial.model_ids == par.model_ids == list(feats)
    np.testing.assert_allclose(par.means, serial.means, rtol=1e-12)
    np.testing.assert_allclose(par.variances, serial.variances, rtol=1e-12)
    for i, utts in enumerate(feats.values()):
        ref = map_adapt(naive_stats(np.concatenate(utts), ubm), ubm, adapt=ALL)
        np.testing.assert_allclose(serial.means[i], ref.means, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(serial.weights[i], ref.weights, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(serial.variances[i], ref.variances, rtol=1e-3, atol=1e-4)
    with pytest.raises(DataError, match="'empty'"):
        enroll_features({"empty": [np.zeros((0, 3))]}, ubm)


def test_spherical_ubm_is_expanded(rng):
    ubm = make_ubm(rng)
    sph = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=ubm.covariances_[:, 0].copy()
    )
    diag = types.SimpleNamespace(
        weights_=ubm.weights_,
        means_=ubm.means_,
        covariances_=np.repeat(sph.covariances_[:, None], 3, axis=1),
    )
    X = rng.normal(size=(40, 3))
    stats = naive_stats(X, diag)
    a, b = map_adapt(stats, sph, adapt=ALL), map_adapt(stats, diag, adapt=ALL)
    np.testing.assert_array_equal(a.variances, b.variances)


# ---------------------------------------------------------------- UBMs of other toolkits


def naive_stats_full(X: np.ndarray, ubm) -> Stats:
    """Posteriors of a full- or tied-covariance UBM with scipy, one component at a time."""
    k = len(ubm.weights_)
    covs = ubm.covariances_ if ubm.covariance_type == "full" else [ubm.covariances_] * k
    logp = np.column_stack(
        [np.log(ubm.weights_[j]) + multivariate_normal(ubm.means_[j], covs[j]).logpdf(X) for j in range(k)]
    )
    ll = logsumexp(logp, axis=1)
    g = np.exp(logp - ll[:, None])
    return Stats(n=g.sum(0), f=g.T @ X, s=None, loglik=float(ll.sum()), n_frames=len(X))


@pytest.mark.parametrize("cov_type", ["full", "tied"])
def test_map_with_sklearn_full_and_tied_ubm(rng, cov_type):
    """Issue 11 item 5: a scikit-learn UBM's covariance_type is read (it was taken as diagonal)."""
    from sklearn.mixture import GaussianMixture as SkGMM

    from gmmspeaker.gmm.map import enroll_features
    from gmmspeaker.gmm.params import as_params
    from gmmspeaker.gmm.stats import accumulate

    A = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.4, 0.9]])
    data = rng.normal(size=(600, 3)) @ A.T + rng.choice([-2.0, 2.0], size=(600, 1))
    sk = SkGMM(4, covariance_type=cov_type, random_state=0).fit(data)
    X = rng.normal(size=(80, 3)) @ A.T + 0.7
    ref_stats = naive_stats_full(X, sk)
    params = as_params(sk)
    assert params.covariance_type == cov_type
    stats = accumulate(X, params, second_order=False)
    np.testing.assert_allclose(stats.n, ref_stats.n, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.f, ref_stats.f, rtol=1e-9, atol=1e-9)

    out = map_adapt(ref_stats, sk, relevance=4.0, adapt=("means", "weights"))
    ref = types.SimpleNamespace(
        weights_=sk.weights_, means_=sk.means_, covariances_=np.ones_like(sk.means_)
    )  # reynolds() reads only weights and means for these two
    full_s = Stats(ref_stats.n, ref_stats.f, np.ones_like(ref_stats.f), 0.0, len(X))
    w, mu, _ = reynolds(full_s, ref, 4.0)
    np.testing.assert_allclose(out.means, mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.weights, w, rtol=1e-10, atol=1e-14)

    models = enroll_features({"spk": [X[:30], X[30:]]}, sk, relevance=4.0, dtype=np.float64)
    np.testing.assert_allclose(models.means[0], mu, rtol=1e-8, atol=1e-8)
    assert models.ubm_fingerprint == ubm_fingerprint(sk)

    with pytest.raises(ModelError, match=f"variance adaptation needs a diagonal.*{cov_type}"):
        map_adapt(Stats(ref_stats.n, ref_stats.f, np.ones_like(ref_stats.f), 0.0, 1), sk, adapt=ALL)
    with pytest.raises(ModelError, match="variance adaptation"):
        enroll_features({"spk": [X]}, sk, adapt=ALL)


def test_map_ubm_with_inconsistent_covariance_type(rng):
    ubm = make_ubm(rng)
    bad = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=ubm.covariances_, covariance_type="full"
    )
    with pytest.raises(ModelError, match=r"full covariances_ must have shape \(6, 3, 3\)"):
        map_adapt(Stats.zeros(6, 3), bad)
    odd = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=ubm.covariances_, covariance_type="banded"
    )
    with pytest.raises(ModelError, match="unsupported covariance_type 'banded'"):
        map_adapt(Stats.zeros(6, 3), odd)


# ---------------------------------------------------------------- variances without means


@pytest.mark.parametrize("adapt", [("variances",), ("weights", "variances")])
def test_variance_only_map_is_about_the_ubm_mean(setup, adapt):
    """Issue 11 item 6: without mean adaptation the variances are about the (kept) UBM mean."""
    ubm, X, stats = setup
    r = 8.0
    out = map_adapt(stats, ubm, relevance=r, adapt=adapt)
    np.testing.assert_array_equal(out.means, ubm.means_)
    # reference: posteriors per component with scipy, then a loop over components
    k = len(ubm.weights_)
    logp = np.column_stack(
        [
            np.log(ubm.weights_[j])
            + multivariate_normal(ubm.means_[j], np.diag(ubm.covariances_[j])).logpdf(X)
            for j in range(k)
        ]
    )
    g = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    for j in range(k):
        n = g[:, j].sum()
        a = n / (n + r)
        about_ubm_mean = (g[:, j, None] * (X - ubm.means_[j]) ** 2).sum(0) / n
        np.testing.assert_allclose(
            out.variances[j], a * about_ubm_mean + (1 - a) * ubm.covariances_[j], rtol=1e-9
        )
    # with means adapted too, the variance is about the adapted mean: strictly smaller here
    both = map_adapt(stats, ubm, relevance=r, adapt=("means", *adapt))
    assert np.all(both.variances <= out.variances + 1e-12)
    assert np.any(both.variances < out.variances - 1e-3)


def test_variance_only_relevance_zero_is_ml_variance_about_the_mean(rng, tmp_path):
    """One component, r = 0: the stored model is (UBM mean, mean squared deviation from it)."""
    ubm = types.SimpleNamespace(
        weights_=np.ones(1), means_=np.array([[0.0, 1.0]]), covariances_=np.array([[1.0, 1.0]])
    )
    X = rng.normal(loc=[2.0, 1.0], scale=[0.5, 1.5], size=(500, 2))
    stats = naive_stats(X, ubm)
    models = enroll(["a"], [stats], ubm, relevance=0.0, adapt=["variances"], dtype=np.float64)
    models.save(tmp_path / "m.h5")
    back = SpeakerModels.load(tmp_path / "m.h5")
    assert back.adapt == ("means", "variances")
    np.testing.assert_array_equal(back.means[0], ubm.means_)
    np.testing.assert_allclose(back.variances[0, 0], ((X - ubm.means_[0]) ** 2).mean(0), rtol=1e-10)
