"""Two-covariance PLDA: EM, multi-enrolment scoring against a direct Gaussian reference, cosine."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.ivector.backend import PLDA, cosine_scores


def _draw(rng, d=4, n_spk=12, per_spk=(2, 3, 5)):
    """Vectors from a known two-covariance model, speakers with varying counts."""
    A = rng.standard_normal((d, d))
    between = A @ A.T + 0.5 * np.eye(d)
    Cw = rng.standard_normal((d, d)) * 0.4
    within = Cw @ Cw.T + 0.3 * np.eye(d)
    mu = rng.standard_normal(d)
    X, labels = [], []
    for s in range(n_spk):
        y = rng.multivariate_normal(mu, between)
        k = per_spk[s % len(per_spk)]
        X.append(rng.multivariate_normal(y, within, size=k))
        labels += [f"s{s:02d}"] * k
    return np.vstack(X), labels, (mu, between, within)


def _stacked_logpdf(vectors, mu, between, within):
    """log p(x_1..x_n | same speaker) from the joint Gaussian of the stacked vectors."""
    n, d = vectors.shape
    cov = np.kron(np.eye(n), within) + np.kron(np.ones((n, n)), between)
    return multivariate_normal(mean=np.tile(mu, n), cov=cov).logpdf(vectors.ravel())


def _reference_llr(plda, enroll, test):
    mu, B, W = plda.mean, plda.between, plda.within
    same = _stacked_logpdf(np.vstack([enroll, test[None, :]]), mu, B, W)
    return same - _stacked_logpdf(enroll, mu, B, W) - _stacked_logpdf(test[None, :], mu, B, W)


def _reference_loglik(plda, X, labels):
    labels = np.asarray(labels)
    return sum(
        _stacked_logpdf(X[labels == s], plda.mean, plda.between, plda.within) for s in np.unique(labels)
    )


def test_scores_equal_direct_two_covariance_llr(rng):
    X, labels, _ = _draw(rng)
    plda = PLDA.fit(X, labels, iterations=3)
    # models with 1, 2 and 4 enrolment vectors (two share a count), 5 test vectors
    enroll = [rng.standard_normal((k, 4)) * 2 for k in (1, 4, 2, 4)]
    test = rng.standard_normal((5, 4)) * 2
    fast = plda.score(enroll, test)
    assert fast.shape == (4, 5) and fast.dtype == np.float64
    ref = np.array([[_reference_llr(plda, e, t) for t in test] for e in enroll])
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-9)


def test_multi_enrolment_is_not_mean_of_single_scores(rng):
    X, labels, _ = _draw(rng)
    plda = PLDA.fit(X, labels, iterations=2)
    e = rng.standard_normal((3, 4))
    t = rng.standard_normal((2, 4))
    joint = plda.score([e], t)[0]
    singles = plda.score([row[None, :] for row in e], t).mean(axis=0)
    assert not np.allclose(joint, singles)


def test_em_never_lowers_the_training_loglikelihood(rng):
    X, labels, _ = _draw(rng, n_spk=15)
    refs = []
    for it in range(6):
        plda = PLDA.fit(X, labels, iterations=it)
        ref = _reference_loglik(plda, X, labels)
        # the model's own bookkeeping equals the direct Gaussian computation
        assert plda.history[-1] == pytest.approx(ref, rel=1e-10, abs=1e-8)
        refs.append(ref)
    assert np.all(np.diff(refs) >= -1e-9), refs
    assert refs[-1] > refs[0] + 1e-3  # EM moved away from the moment initialisation
    np.testing.assert_allclose(PLDA.fit(X, labels, iterations=5).history, refs, rtol=1e-10)


def test_em_recovers_the_generating_covariances(rng):
    X, labels, (mu, between, within) = _draw(rng, d=3, n_spk=400, per_spk=(4, 6))
    plda = PLDA.fit(X, labels, iterations=30)
    # relative Frobenius error; 400 speakers give about 1/sqrt(400) = 5 % sampling error in B
    assert np.linalg.norm(plda.within - within) / np.linalg.norm(within) < 0.05
    assert np.linalg.norm(plda.between - between) / np.linalg.norm(between) < 0.2


def test_save_load_and_errors(tmp_path, rng):
    X, labels, _ = _draw(rng)
    plda = PLDA.fit(X, labels, iterations=2)
    plda.save(tmp_path / "plda.h5")
    back = PLDA.load(tmp_path / "plda.h5")
    t = rng.standard_normal((3, 4))
    np.testing.assert_array_equal(back.score([X[:2]], t), plda.score([X[:2]], t))
    assert back.history == plda.history
    with pytest.raises(ModelError, match="plda.h5.*not found"):
        PLDA.load(tmp_path / "missing" / "plda.h5")
    with pytest.raises(DataError, match="2 speakers"):
        PLDA.fit(X[:3], ["a"] * 3)
    with pytest.raises(DataError, match="dimensions"):
        plda.score([X[:2]], np.zeros((1, 5)))


def test_cosine_scores_against_a_loop(rng):
    enroll = [rng.standard_normal((k, 6)) for k in (1, 3)]
    test = rng.standard_normal((4, 6))
    got = cosine_scores(enroll, test)
    for i, e in enumerate(enroll):
        m = np.mean([v / np.linalg.norm(v) for v in e], axis=0)
        for j, t in enumerate(test):
            assert got[i, j] == pytest.approx(m @ t / (np.linalg.norm(m) * np.linalg.norm(t)), rel=1e-12)
