"""Linear logistic-regression fusion against scikit-learn; Cllr of fusion vs single systems."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.scoring.calibration import LinearCalibration
from gmmspeaker.scoring.fusion import LinearFusion, equal_weight_fusion
from gmmspeaker.scoring.metrics import cllr


def _two_systems(rng, n_t=300, n_n=1500):
    """Two correlated systems on different scales, one better than the other."""
    key = np.r_[np.ones(n_t, bool), np.zeros(n_n, bool)]
    common = rng.standard_normal(key.size)
    a = 2.0 * key + common + 0.8 * rng.standard_normal(key.size)
    b = 10.0 * (1.2 * key + 0.5 * common + rng.standard_normal(key.size)) - 3.0
    return np.c_[a, b], key


def _grad_hess(theta, S, key, p):
    """Gradient and Hessian of the prior-weighted cross-entropy, written out independently."""
    X = np.c_[S, np.ones(len(S))]
    w = np.where(key, p / key.sum(), (1 - p) / (~key).sum())
    u = X @ theta + math.log(p / (1 - p))
    r = w * (expit(u) - key)
    h = w * expit(u) * (1 - expit(u))
    return X.T @ r, (X * h[:, None]).T @ X


@pytest.mark.parametrize("p_target", [0.5, 0.1])
def test_weights_match_sklearn_logistic_regression(rng, p_target):
    from sklearn.linear_model import LogisticRegression

    S, key = _two_systems(rng)
    fus = LinearFusion.fit(S, key, p_target=p_target)
    cw = {True: p_target / key.sum(), False: (1 - p_target) / (~key).sum()}
    lr = LogisticRegression(C=1e12, class_weight=cw, tol=1e-12, max_iter=10_000).fit(S, key)
    theta_sk = np.r_[lr.coef_.ravel(), lr.intercept_[0] - math.log(p_target / (1 - p_target))]
    theta = np.r_[fus.weights, fus.bias]
    # strong convexity: |theta - theta_sk| <= |grad(theta) - grad(theta_sk)| / lambda_min(H)
    g, H = _grad_hess(theta, S, key, p_target)
    g_sk, _ = _grad_hess(theta_sk, S, key, p_target)
    lam = np.linalg.eigvalsh(H).min()
    bound = 2.0 * (np.linalg.norm(g) + np.linalg.norm(g_sk)) / lam + 1e-9
    assert np.linalg.norm(theta - theta_sk) <= bound
    assert bound < 1e-3 * np.linalg.norm(theta)  # both optimisers converged: a meaningful check
    np.testing.assert_allclose(fus.apply(S), S @ theta[:2] + theta[2])


def test_fused_cllr_not_worse_than_each_calibrated_system(rng):
    S, key = _two_systems(rng)
    fus = LinearFusion.fit(S, key, p_target=0.5)
    fused = fus.apply(S)
    c_fused = cllr(fused[key], fused[~key])
    for j in range(S.shape[1]):
        cal = LinearCalibration.fit(S[key, j], S[~key, j], p_target=0.5)
        c_single = cllr(cal(S[key, j]), cal(S[~key, j]))
        assert c_fused <= c_single + 1e-9
    # with one column the fusion is the linear calibration
    one = LinearFusion.fit(S[:, 1], key)
    cal = LinearCalibration.fit(S[key, 1], S[~key, 1])
    assert one.weights[0] == pytest.approx(cal.scale, rel=1e-5)
    assert one.bias == pytest.approx(cal.offset, rel=1e-5, abs=1e-6)


def test_equal_weights_and_round_trip(rng):
    S, key = _two_systems(rng, n_t=5, n_n=7)
    S[3, 1] = np.nan
    fused = equal_weight_fusion(S)
    np.testing.assert_allclose(fused[[0, 1, 2, 4]], S[[0, 1, 2, 4]].sum(axis=1) / 2)
    assert np.isnan(fused[3])
    fus = LinearFusion.fit(S[[0, 1, 2, 4, 5, 6, 7, 8]], key[[0, 1, 2, 4, 5, 6, 7, 8]])
    back = LinearFusion.from_dict(fus.to_dict())
    np.testing.assert_array_equal(back.weights, fus.weights)


def test_bad_inputs(rng):
    S, key = _two_systems(rng, n_t=5, n_n=7)
    with pytest.raises(DataError, match="target and non-target"):
        LinearFusion.fit(S, np.ones(len(S), bool))
    with pytest.raises(ConfigError, match="p_target"):
        LinearFusion.fit(S, key, p_target=1.0)
    S[0, 0] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        LinearFusion.fit(S, key)
    with pytest.raises(DataError, match="expects 2 systems"):
        LinearFusion(weights=np.ones(2), bias=0.0).apply(np.ones((3, 3)))
