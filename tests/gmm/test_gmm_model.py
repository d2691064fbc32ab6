"""GaussianMixture scoring, criteria and HDF5 persistence (gmmspeaker.gmm.model)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from gmmspeaker import errors
from gmmspeaker.errors import ModelError
from gmmspeaker.gmm import GaussianMixture

from .test_gmm_stats import random_model

sklearn_mixture = pytest.importorskip("sklearn.mixture")


def to_sklearn(g: GaussianMixture):
    sk = sklearn_mixture.GaussianMixture(g.n_components, covariance_type=g.covariance_type)
    sk.weights_, sk.means_, sk.covariances_ = g.weights_, g.means_, g.covariances_
    if g.covariance_type in ("diag", "spherical"):
        sk.precisions_cholesky_ = 1.0 / np.sqrt(g.covariances_)
    else:
        from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

        sk.precisions_cholesky_ = _compute_precision_cholesky(g.covariances_, g.covariance_type)
    return sk


@pytest.mark.parametrize("cov_type", ["diag", "full", "spherical", "tied"])
def test_scores_and_criteria_match_sklearn(rng, cov_type):
    g = random_model(rng, cov_type, K=3, D=4)
    sk = to_sklearn(g)
    X = rng.normal(0, 2, size=(300, 4))
    np.testing.assert_allclose(g.score_samples(X), sk.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(g.predict_proba(X), sk.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(g.predict(X), sk.predict(X))
    assert g.score(X) == pytest.approx(sk.score(X), rel=1e-12)
    assert g.n_parameters() == sk._n_parameters()
    assert g.bic(X) == pytest.approx(sk.bic(X), rel=1e-12)
    assert g.aic(X) == pytest.approx(sk.aic(X), rel=1e-12)


def test_gmmspeaker_exports_gaussian_mixture():
    import gmmspeaker

    assert gmmspeaker.GaussianMixture is GaussianMixture


@pytest.mark.parametrize("cov_type", ["diag", "full", "spherical", "tied"])
def test_save_load_roundtrip(tmp_path, rng, cov_type):
    X = rng.normal(size=(400, 3))
    g = GaussianMixture(3, covariance_type=cov_type, max_iter=5, tol=0, random_state=0)
    with pytest.warns(errors.ConvergenceWarning):
        g.fit(X)
    path = tmp_path / "sub" / "ubm.h5"
    g.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["ubm.h5"]  # no temporary left behind
    h = GaussianMixture.load(path)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(h, name), getattr(g, name))
    assert h.history_ == g.history_ and h.n_iter_ == 5 and h.converged_ is False
    assert h.get_config() == g.get_config()
    np.testing.assert_array_equal(h.score_samples(X), g.score_samples(X))
    with h5py.File(path) as f:  # never pickle: plain datasets and attributes
        assert set(f.keys()) >= {"weights", "means", "covariances", "history"}
        assert f.attrs["covariance_type"] == cov_type


def _corrupt(path, **changes):
    with h5py.File(path, "r+") as f:
        for key, value in changes.items():
            del f[key]
            f[key] = value


def test_load_validates_and_names_the_file(tmp_path, rng):
    g = random_model(rng, "diag", K=3, D=2)
    good = tmp_path / "m.h5"
    g.save(good)
    cases = {
        "negvar": ({"covariances": -np.ones((3, 2))}, "variances must be positive"),
        "weights": ({"weights": np.array([0.5, 0.5, 0.5])}, "sum to 1"),
        "shape": ({"means": np.zeros((4, 2))}, "shape"),
        "nan": ({"means": np.full((3, 2), np.nan)}, "NaN"),
    }
    for name, (change, match) in cases.items():
        p = tmp_path / f"{name}.h5"
        p.write_bytes(good.read_bytes())
        _corrupt(p, **change)
        with pytest.raises(ModelError, match=rf"{name}\.h5.*{match}"):
            GaussianMixture.load(p)
    with pytest.raises(ModelError, match="missing.h5: model file not found"):
        GaussianMixture.load(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(ModelError, match="junk.h5"):
        GaussianMixture.load(junk)


def test_from_params_validates_and_unfitted_model_errors():
    with pytest.raises(ModelError, match="not positive definite"):
        GaussianMixture.from_params([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], covariance_type="full")
    with pytest.raises(ModelError, match="not fitted"):
        GaussianMixture(2).score_samples(np.zeros((3, 2)))


@pytest.mark.parametrize("cov_type", ["diag", "full", "spherical", "tied"])
def test_to_params_and_as_params_read_any_mixture(rng, cov_type):
    """The public parameter interface: GaussianMixture.to_params and as_params of a sklearn model."""
    from gmmspeaker.gmm.params import as_params

    X = rng.normal(size=(300, 3))
    sk = sklearn_mixture.GaussianMixture(2, covariance_type=cov_type, random_state=0).fit(X)
    p = as_params(sk)
    assert p.covariance_type == cov_type
    for mine, theirs in ((p.weights, sk.weights_), (p.means, sk.means_), (p.covariances, sk.covariances_)):
        np.testing.assert_array_equal(mine, theirs)
        assert mine.dtype == np.float64
    g = GaussianMixture.from_params(sk.weights_, sk.means_, sk.covariances_, covariance_type=cov_type)
    q = g.to_params()
    np.testing.assert_array_equal(q.means, sk.means_)
    assert q.covariance_type == cov_type == as_params(g).covariance_type
    np.testing.assert_array_equal(as_params(g).covariances, q.covariances)
    # the same log-likelihood through either parameter set
    np.testing.assert_allclose(g.score_samples(X), sk.score_samples(X), rtol=1e-10)
    # the public E-step takes the scikit-learn model itself (stats.as_params is params.as_params)
    from gmmspeaker.gmm import stats

    assert stats.as_params is as_params
    a, b = stats.accumulate(X, sk, dtype="float64"), stats.accumulate(X, g, dtype="float64")
    np.testing.assert_array_equal(a.n, b.n)
    np.testing.assert_array_equal(a.f, b.f)
    assert a.loglik == pytest.approx(sk.score(X) * len(X), rel=1e-10)
    with pytest.raises(ModelError, match="not fitted"):
        GaussianMixture(2).to_params()
    with pytest.raises(ModelError, match="lacks weights_"):
        as_params(sklearn_mixture.GaussianMixture(2))
