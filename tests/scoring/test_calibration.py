"""Tests of gmmspeaker.scoring.calibration (prior-weighted linear logistic regression)."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from gmmspeaker.errors import ConfigError, ConvergenceWarning, DataError
from gmmspeaker.scoring import metrics as m
from gmmspeaker.scoring.calibration import LinearCalibration, fit_linear_calibration


def calibrated_llrs(rng, n_tar, n_non, mu=2.5):
    """Gaussian LLRs that are calibrated by construction: N(+mu, 2mu) and N(-mu, 2mu)."""
    sd = math.sqrt(2 * mu)
    return rng.normal(mu, sd, n_tar), rng.normal(-mu, sd, n_non)


def sklearn_fit(tar, non, p):
    """The same weighted problem with scikit-learn, no regularisation."""
    x = np.r_[tar, non][:, None]
    y = np.r_[np.ones(tar.size), np.zeros(non.size)]
    w = np.r_[np.full(tar.size, p / tar.size), np.full(non.size, (1 - p) / non.size)] * y.size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        try:
            lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000)
            lr.fit(x, y, sample_weight=w)
        except (ValueError, TypeError):  # older scikit-learn spells it penalty=None
            lr = LogisticRegression(penalty=None, tol=1e-12, max_iter=10_000)
            lr.fit(x, y, sample_weight=w)
    a = float(lr.coef_[0, 0])
    # sklearn fits posterior log-odds; the LLR offset removes logit(P).
    b = float(lr.intercept_[0]) - math.log(p / (1 - p))
    return a, b


@pytest.mark.parametrize("p", [0.5, 0.1, 0.01])
def test_matches_sklearn_weighted_logistic_regression(rng, p):
    tar, non = calibrated_llrs(rng, 300, 3000)
    tar, non = 0.4 * tar + 7.0, 0.4 * non + 7.0
    cal = LinearCalibration.fit(tar, non, p_target=p)
    a, b = sklearn_fit(tar, non, p)
    assert cal.scale == pytest.approx(a, rel=1e-5)
    assert cal.offset == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert cal.p_target == p


def test_recovers_known_affine_miscalibration(rng):
    tar, non = calibrated_llrs(rng, 20_000, 20_000)
    scale, offset = 0.25, -3.0  # raw = (llr - offset) / scale
    cal = LinearCalibration.fit((tar - offset) / scale, (non - offset) / scale)
    assert cal.scale == pytest.approx(scale, rel=0.03)
    assert cal.offset == pytest.approx(offset, abs=0.1)


def test_calibration_improves_held_out_costs(rng):
    dev_t, dev_n = calibrated_llrs(rng, 500, 5000)
    ev_t, ev_n = calibrated_llrs(rng, 500, 5000)

    def spoil(x):
        return 3.0 * x + 6.0

    cal = LinearCalibration.fit(spoil(dev_t), spoil(dev_n), p_target=0.5)
    before = m.evaluate(spoil(ev_t), spoil(ev_n), p_targets=(0.01, 0.1))
    after = m.evaluate(cal(spoil(ev_t)), cal(spoil(ev_n)), p_targets=(0.01, 0.1))
    # Calibration is affine and increasing: discrimination is untouched.
    assert after["eer"] == before["eer"]
    assert after["min_dcf"] == before["min_dcf"]
    assert after["cllr"] < before["cllr"] - 0.5
    assert after["cllr"] - after["min_cllr"] < 0.05
    for p in ("0.01", "0.1"):
        assert after["act_dcf"][p] < before["act_dcf"][p]
        assert after["act_dcf"][p] - after["min_dcf"][p] < 0.1


def test_call_dtype_shape_and_dict_roundtrip():
    cal = LinearCalibration(scale=2.0, offset=-1.0, p_target=0.01)
    out = cal(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert out.dtype == np.float64 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, 2.0 * np.arange(6).reshape(2, 3) - 1.0)
    d = json.loads(json.dumps(cal.to_dict()))
    assert LinearCalibration.from_dict(d) == cal
    with pytest.raises(ConfigError, match="unknown keys \\['bias'\\]"):
        LinearCalibration.from_dict({"scale": 1.0, "offset": 0.0, "bias": 1})
    with pytest.raises(ConfigError, match="missing keys \\['offset'\\]"):
        LinearCalibration.from_dict({"scale": 1.0})
    with pytest.raises(ConfigError, match="non-numeric"):
        LinearCalibration.from_dict({"scale": "x", "offset": 0.0})
    with pytest.raises(ConfigError, match="finite"):
        LinearCalibration(scale=math.nan, offset=0.0)
    with pytest.raises(AttributeError):
        cal.scale = 3.0  # type: ignore[misc]


def test_functional_alias(rng):
    tar, non = calibrated_llrs(rng, 50, 200)
    assert fit_linear_calibration(tar, non) == LinearCalibration.fit(tar, non)


def test_fit_errors_and_separable_warning():
    with pytest.raises(DataError, match="no target scores"):
        LinearCalibration.fit([], [0.0])
    with pytest.raises(DataError, match="NaN/inf"):
        LinearCalibration.fit([1.0, np.inf], [0.0])
    with pytest.raises(ConfigError, match="p_target"):
        LinearCalibration.fit([1.0], [0.0], p_target=0.0)
    with pytest.warns(ConvergenceWarning, match="separable"):
        cal = LinearCalibration.fit([3.0, 4.0], [0.0, 1.0])
    assert cal.scale > 0 and math.isfinite(cal.offset)
