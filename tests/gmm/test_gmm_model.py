"""GaussianMixture scoring, criteria and HDF5 persistence (gmmspeaker.gmm.model)."""

from __future__ import annotations

import re
import warnings

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


# -- a scikit-learn estimator (issue 20, item 9) ----------------------------------------------

sk_base = pytest.importorskip("sklearn.base")


def test_get_params_are_the_init_signature_and_set_params_sets_them():
    import inspect

    g = GaussianMixture(3, covariance_type="full", tol=1e-4)
    names = [n for n in inspect.signature(GaussianMixture.__init__).parameters if n != "self"]
    params = g.get_params()
    assert sorted(params) == sorted(names)
    assert params["n_components"] == 3 and params["covariance_type"] == "full" and params["tol"] == 1e-4
    assert g.set_params(n_components=5, random_state=2) is g
    assert g.get_params()["n_components"] == 5 and g.random_state == 2
    with pytest.raises(ValueError, match="invalid parameter 'n_component'"):
        g.set_params(n_component=4)
    # set_params does not validate (as in scikit-learn); fit does, with the table's rule
    g.set_params(n_components=0)
    with pytest.raises(errors.ConfigError, match="n_components must be positive, got 0"):
        g.fit(np.zeros((10, 2)))


def test_clone_gives_an_unfitted_copy_with_equal_params(rng):
    X = rng.normal(size=(200, 2))
    g = GaussianMixture(2, covariance_type="tied", max_iter=20, random_state=3).fit(X)
    c = sk_base.clone(g)
    assert c is not g and c.get_params() == g.get_params()
    assert not hasattr(c, "means_") and hasattr(g, "means_")
    np.testing.assert_array_equal(c.fit(X).means_, g.means_)  # same seed, same fit
    # a warm start survives cloning (scikit-learn's clone would reset the init model)
    w = sk_base.clone(GaussianMixture(2, covariance_type="tied", init=g, max_iter=3))
    assert w.init is g
    assert w.fit(X).n_iter_ >= 1


def test_fit_takes_y_and_fit_predict_is_fit_then_predict(mixture_data):
    X, truth = mixture_data
    g = GaussianMixture(3, random_state=0)
    assert g.fit(X, truth["labels"]) is g
    labels = GaussianMixture(3, random_state=0).fit_predict(X)
    np.testing.assert_array_equal(labels, g.predict(X))
    # well separated: the components recover the true partition (up to a relabelling)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth["labels"], labels) > 0.99


def test_unfitted_error_and_feature_checks_are_value_errors(rng):
    g = GaussianMixture(2)
    with pytest.raises(errors.NotFittedError, match="not fitted") as exc:
        g.predict(np.zeros((3, 2)))
    assert all(isinstance(exc.value, t) for t in (ModelError, ValueError, AttributeError))
    from sklearn.utils.validation import check_is_fitted

    with pytest.raises(Exception, match="not fitted"):
        check_is_fitted(g)
    g.fit(rng.normal(size=(50, 3)))
    check_is_fitted(g)
    assert g.n_features_in_ == 3
    with pytest.raises(errors.DataError, match="X has 2 features, but GaussianMixture is expecting 3"):
        g.score_samples(np.zeros((4, 2)))
    with pytest.raises(errors.DataError, match="Reshape your data"):
        g.predict(np.zeros(3))
    with pytest.raises(errors.DataError, match="row 1: NaN or inf"):
        g.predict_proba(np.array([[0.0, 0, 0], [0, np.nan, 0]]))
    import scipy.sparse

    with pytest.raises(errors.DataError, match="sparse input is not supported"):
        g.fit(scipy.sparse.csr_matrix(np.eye(5)))


def _two_blobs(rng, n=300):
    return np.concatenate([rng.normal(-6, 1, size=(n // 2, 2)), rng.normal(6, 1, size=(n - n // 2, 2))])


def test_pipeline_scales_then_fits(rng):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = _two_blobs(rng) * [1.0, 100.0] + [0, 50]
    pipe = make_pipeline(StandardScaler(), GaussianMixture(2, random_state=0)).fit(X)
    Z = StandardScaler().fit(X).transform(X)
    alone = GaussianMixture(2, random_state=0).fit(Z)
    np.testing.assert_allclose(pipe.score_samples(X), alone.score_samples(Z), rtol=1e-10)
    np.testing.assert_array_equal(pipe.predict(X), alone.predict(Z))
    assert pipe.score(X) == pytest.approx(alone.score(Z), rel=1e-12)


def test_grid_search_and_cross_val_score_agree_with_a_hand_written_loop(rng):
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    X = _two_blobs(rng)
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(GaussianMixture(random_state=0), {"n_components": [1, 2, 3]}, cv=cv).fit(X)
    by_k = {}
    for k in (1, 2, 3):  # the same held-out mean log-likelihood, computed by hand
        by_k[k] = np.mean(
            [GaussianMixture(k, random_state=0).fit(X[tr]).score(X[te]) for tr, te in cv.split(X)]
        )
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [by_k[1], by_k[2], by_k[3]], rtol=1e-10)
    # two blobs 12 sd apart: one Gaussian over both is far less likely than two on held-out data
    assert by_k[2] > by_k[1] + 1.0
    assert search.best_params_["n_components"] == max(by_k, key=by_k.get)
    assert isinstance(search.best_estimator_, GaussianMixture) and search.best_estimator_.means_.shape[0] > 1
    scores = cross_val_score(GaussianMixture(2, random_state=0), X, cv=cv)
    np.testing.assert_allclose(scores.mean(), by_k[2], rtol=1e-10)


#: Checks of scikit-learn's check_estimator that cannot apply, with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_estimators_unfitted": (
        "an unfitted model raises gmmspeaker.errors.NotFittedError, a ValueError and AttributeError "
        "like scikit-learn's NotFittedError but not a subclass of it: scikit-learn is not a runtime "
        "dependency, so its exception class cannot be inherited"
    ),
}


def test_check_estimator_passes_except_the_listed_checks():
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on the checks' tiny random data
        results = check_estimator(
            GaussianMixture(), expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None
        )
    failed = {r["check_name"]: r["exception"] for r in results if r["status"] == "failed"}
    assert failed == {}
    xfailed = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfailed == set(EXPECTED_FAILED_CHECKS)  # and each listed check really does not apply
    assert sum(r["status"] == "passed" for r in results) > 30


def test_one_constraint_table_for_the_model_and_the_recipe(tmp_path):
    """Each ubm: key is refused by the recipe validator exactly when the model refuses it."""
    from gmmspeaker.gmm.model import PARAM_CONSTRAINTS
    from gmmspeaker.recipe.config import load_recipe

    cases = [  # (recipe key, model parameter, bad value, good value)
        ("components", "n_components", 0, 2),
        ("iterations", "max_iter", -1, 0),
        ("init", "init", "kmeans", "random"),
        ("variance_floor", "variance_floor", -0.1, 0.0),
        ("tol", "tol", -1e-3, 0.0),
        ("n_init", "n_init", 0, 2),
        ("dtype", "dtype", "float16", "float64"),
        ("chunk_frames", "chunk_size", 0, 7),
    ]
    X = np.random.default_rng(0).normal(size=(40, 2))
    for key, name, bad, good in cases:
        rule = re.escape(PARAM_CONSTRAINTS[name].describe())
        p = tmp_path / f"{key}.yaml"
        p.write_text(f"experiment: t\ndata:\n  synthetic: {{n_speakers: 3}}\nubm:\n  {key}: {bad}\n")
        with pytest.raises(errors.ConfigError, match=rf"{key}\.yaml:5: 'ubm\.{key}' {rule}"):
            load_recipe(p)
        with pytest.raises(errors.ConfigError, match=rf"GaussianMixture: {name} {rule}"):
            GaussianMixture(**{"n_components": 2, "max_iter": 2, name: bad}).fit(X)
        p.write_text(f"experiment: t\ndata:\n  synthetic: {{n_speakers: 3}}\nubm:\n  {key}: {good}\n")
        assert getattr(load_recipe(p).ubm, key) == good
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", errors.ConvergenceWarning)
            GaussianMixture(**{"n_components": 2, "max_iter": 2, name: good}).fit(X)
