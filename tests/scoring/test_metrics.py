"""Tests of gmmspeaker.scoring.metrics against brute-force references and properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_curve

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.scoring import metrics as m

# --------------------------------------------------------------------------- references


def naive_roc(tar: np.ndarray, non: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pfa, pmiss) at every threshold, one Python iteration per threshold.

    Accept when score >= threshold; thresholds are every distinct score plus +inf.
    """
    pfa, pmiss = [], []
    for thr in list(np.unique(np.concatenate([tar, non]))) + [np.inf]:
        pmiss.append(sum(1 for s in tar if s < thr) / len(tar))
        pfa.append(sum(1 for s in non if s >= thr) / len(non))
    return np.array(pfa), np.array(pmiss)


def brute_eer(tar: np.ndarray, non: np.ndarray) -> float:
    """EER of the ROC convex hull by a minimax over all empirical operating points.

    The hull meets the diagonal at ``max_w min_i (w pfa_i + (1 - w) pmiss_i)``; the
    maximum of this concave piecewise-linear function of ``w`` lies at 0, 1 or a ``w``
    where two operating points cost the same, so every such ``w`` is tried.
    """
    pfa, pmiss = naive_roc(tar, non)
    a = pfa - pmiss
    num = pmiss[None, :] - pmiss[:, None]
    den = a[:, None] - a[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = num / den
    w = np.concatenate([w[np.isfinite(w)], [0.0, 1.0]])
    w = np.unique(w[(w >= 0) & (w <= 1)])
    g = (w[:, None] * pfa[None, :] + (1 - w[:, None]) * pmiss[None, :]).min(axis=1)
    return float(g.max())


def brute_min_dcf(tar, non, p, c_miss=1.0, c_fa=1.0) -> float:
    best = math.inf
    for thr in list(np.unique(np.concatenate([tar, non]))) + [np.inf]:
        pm = sum(1 for s in tar if s < thr) / len(tar)
        pf = sum(1 for s in non if s >= thr) / len(non)
        best = min(best, p * c_miss * pm + (1 - p) * c_fa * pf)
    return best / min(p * c_miss, (1 - p) * c_fa)


def brute_cllr(tar, non) -> float:
    ct = sum(math.log2(1 + math.exp(-s)) for s in tar) / len(tar)
    cn = sum(math.log2(1 + math.exp(s)) for s in non) / len(non)
    return 0.5 * (ct + cn)


def random_scores(rng, n_tar, n_non, shift=1.5, integer=False):
    tar = rng.normal(shift, 1.0, n_tar)
    non = rng.normal(0.0, 1.0, n_non)
    if integer:  # many ties, across and within classes
        tar, non = np.round(tar * 2), np.round(non * 2)
    return tar, non


# --------------------------------------------------------------------------- EER


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("integer", [False, True])
def test_eer_matches_brute_force(seed, integer):
    rng = np.random.default_rng(seed)
    tar, non = random_scores(rng, int(rng.integers(3, 40)), int(rng.integers(3, 60)), integer=integer)
    assert m.eer(tar, non) == pytest.approx(brute_eer(tar, non), abs=1e-12)


def test_eer_large_gaussian_matches_theory(rng):
    tar, non = random_scores(rng, 20_000, 20_000, shift=2.0)
    from scipy.stats import norm

    assert m.eer(tar, non) == pytest.approx(norm.cdf(-1.0), abs=0.006)


def test_eer_separable_and_identical():
    assert m.eer([1.0, 2.0, 3.0], [-1.0, 0.0, 0.5]) == 0.0
    assert m.eer([0.7] * 5, [0.7] * 9) == pytest.approx(0.5)
    # Reversed scores: every target below every non-target; the hull is the diagonal.
    assert m.eer([-1.0, -2.0], [1.0, 2.0, 3.0]) == pytest.approx(0.5)


def test_eer_symmetry(rng):
    tar, non = random_scores(rng, 50, 70)
    assert m.eer(tar, non) == pytest.approx(m.eer(-non, -tar), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    tar=st.lists(st.integers(-5, 5), min_size=1, max_size=15),
    non=st.lists(st.integers(-5, 5), min_size=1, max_size=15),
)
def test_eer_and_min_dcf_properties(tar, non):
    tar, non = np.array(tar, float), np.array(non, float)
    e = m.eer(tar, non)
    assert 0.0 <= e <= 0.5 + 1e-12
    assert e == pytest.approx(brute_eer(tar, non), abs=1e-12)
    # A strictly increasing transform changes nothing.
    assert m.eer(np.exp(tar), np.exp(non)) == pytest.approx(e, abs=1e-12)
    d = m.min_dcf(tar, non, p_target=0.1)
    assert d == pytest.approx(brute_min_dcf(tar, non, 0.1), abs=1e-12)
    assert m.min_cllr(tar, non) <= m.cllr(tar, non) + 1e-12


# --------------------------------------------------------------------------- DCF


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("p,c_miss,c_fa", [(0.01, 1, 1), (0.001, 1, 1), (0.5, 1, 1), (0.05, 10, 1)])
def test_min_dcf_matches_threshold_sweep(seed, p, c_miss, c_fa):
    rng = np.random.default_rng(100 + seed)
    tar, non = random_scores(rng, 60, 400, integer=bool(seed % 2))
    got = m.min_dcf(tar, non, p_target=p, c_miss=c_miss, c_fa=c_fa)
    assert got == pytest.approx(brute_min_dcf(tar, non, p, c_miss, c_fa), abs=1e-12)


def test_act_dcf_matches_naive_and_bounds_min(rng):
    tar, non = random_scores(rng, 300, 3000, shift=3.0)
    tar, non = tar * 2 - 3, non * 2 - 3  # LLR-like but miscalibrated
    for p in (0.5, 0.01, 0.001):
        thr = math.log((1 - p) / p)
        naive = (p * np.mean(tar < thr) + (1 - p) * np.mean(non >= thr)) / min(p, 1 - p)
        got = m.act_dcf(tar, non, p_target=p)
        assert got == pytest.approx(naive, abs=1e-12)
        assert got >= m.min_dcf(tar, non, p_target=p) - 1e-12
    assert m.bayes_threshold(0.01) == pytest.approx(math.log(99.0))
    assert m.bayes_threshold(0.5, c_miss=10.0) == pytest.approx(-math.log(10.0))


def test_dcf_separable_and_identical():
    tar, non = np.array([2.0, 3.0, 4.0]), np.array([-1.0, 0.0, 1.0])
    for p in (0.01, 0.001, 0.5):
        assert m.min_dcf(tar, non, p_target=p) == 0.0
        assert m.min_dcf([0.0] * 4, [0.0] * 8, p_target=p) == pytest.approx(1.0)


# --------------------------------------------------------------------------- Cllr


def test_cllr_textbook_values():
    assert m.cllr(np.zeros(7), np.zeros(3)) == 1.0
    # One target at LLR log 3, one non-target at -log 3: each costs log2(4/3).
    assert m.cllr([math.log(3)], [-math.log(3)]) == pytest.approx(math.log2(4 / 3), rel=1e-14)
    # Infinitely confident and right costs nothing; confident and wrong costs infinity.
    assert m.cllr([np.inf], [-np.inf]) == 0.0
    assert m.cllr([-np.inf], [0.0]) == np.inf


def test_cllr_matches_naive(rng):
    tar, non = random_scores(rng, 40, 90)
    assert m.cllr(tar, non) == pytest.approx(brute_cllr(tar, non), rel=1e-12)
    # Large LLRs must not overflow.
    assert np.isfinite(m.cllr([1000.0, -800.0], [-1000.0, 700.0]))


def test_cllr_of_calibrated_gaussian_llrs(rng):
    # tar ~ N(mu, 2mu), non ~ N(-mu, 2mu) are exactly calibrated LLRs.
    mu, n = 2.0, 20_000
    tar = rng.normal(mu, math.sqrt(2 * mu), n)
    non = rng.normal(-mu, math.sqrt(2 * mu), n)
    c, cmin = m.cllr(tar, non), m.min_cllr(tar, non)
    assert cmin <= c
    assert c - cmin < 0.01
    assert m.cllr(3 * tar + 2, 3 * non + 2) - cmin > 0.3  # miscalibrated costs more
    for p in (0.01, 0.1):
        assert m.act_dcf(tar, non, p_target=p) == pytest.approx(m.min_dcf(tar, non, p_target=p), abs=0.05)


def test_min_cllr_edge_cases(rng):
    assert m.min_cllr([1.0, 2.0], [-1.0, 0.0, 0.5]) == 0.0
    assert m.min_cllr([0.3] * 4, [0.3] * 6) == pytest.approx(1.0)
    tar, non = random_scores(rng, 100, 200)
    assert m.min_cllr(tar, non) == pytest.approx(m.min_cllr(np.exp(tar), np.exp(non)), abs=1e-12)
    assert m.min_cllr(tar, non) <= m.cllr(tar, non)


def test_pav_llrs_monotone_and_python_fallback(rng):
    tar, non = random_scores(rng, 80, 150, integer=True)
    lt, ln = m.pav_llrs(tar, non)
    s = np.concatenate([tar, non])
    llr = np.concatenate([lt, ln])
    o = np.argsort(s, kind="stable")
    assert np.all(llr[o][1:] >= llr[o][:-1])  # (diff would give inf - inf)
    assert np.isneginf(llr[o][0]) and np.isposinf(llr[o][-1])  # pure end blocks
    # Equal scores get equal LLRs.
    for v in np.unique(s):
        assert np.all(llr[s == v] == llr[s == v][0])
    y = rng.integers(0, 2, 300).astype(float)
    w = rng.uniform(0.5, 3, 300)
    a, b = m._pav(y, w), m._pav_python(y, w)
    # Block partition may differ by merging of equal neighbours; fitted values may not.
    np.testing.assert_allclose(np.repeat(a[0], np.diff(a[2])), np.repeat(b[0], np.diff(b[2])), atol=1e-12)


# --------------------------------------------------------------------------- DET


@pytest.mark.parametrize("hull", [True, False])
def test_det_points_monotone(rng, hull):
    tar, non = random_scores(rng, 200, 500, integer=True)
    pfa, pmiss = m.det_curve(tar, non, hull=hull)
    assert pfa.dtype == np.float64 and pmiss.dtype == np.float64
    assert np.all(np.diff(pfa) <= 0) and np.all(np.diff(pmiss) >= 0)
    assert (pfa[0], pmiss[0]) == (1.0, 0.0)
    assert (pfa[-1], pmiss[-1]) == (0.0, 1.0)


def test_det_empirical_points_match_sklearn(rng):
    tar, non = random_scores(rng, 70, 130, integer=True)
    pfa, pmiss = m.det_curve(tar, non, hull=False)
    y = np.r_[np.ones(tar.size), np.zeros(non.size)]
    fpr, tpr, _ = roc_curve(y, np.r_[tar, non], drop_intermediate=False)
    ours = sorted(zip(np.round(pfa, 12), np.round(pmiss, 12)))
    theirs = sorted(zip(np.round(fpr, 12), np.round(1 - tpr, 12)))
    assert ours == theirs
    np.testing.assert_allclose(pfa, naive_roc(tar, non)[0])


def test_hull_points_lie_on_or_below_empirical_curve(rng):
    tar, non = random_scores(rng, 60, 90)
    hf, hm = m.roc_convex_hull(tar, non)
    ef, em = m.det_curve(tar, non, hull=False)
    # Every empirical point is on or above the hull (interpolated at its pfa).
    interp = np.interp(ef, hf[::-1], hm[::-1])
    assert np.all(em >= interp - 1e-12)
    # Every hull vertex is an empirical point.
    emp = set(zip(np.round(ef, 12), np.round(em, 12)))
    assert all(p in emp for p in zip(np.round(hf, 12), np.round(hm, 12)))


# --------------------------------------------------------------------------- evaluate / errors


def test_evaluate_dict(rng):
    tar, non = random_scores(rng, 100, 1000)
    r = m.evaluate(tar, non)
    assert set(r) == {"eer", "min_dcf", "act_dcf", "cllr", "min_cllr", "n_target", "n_nontarget"}
    assert set(r["min_dcf"]) == {"0.01", "0.001"} == set(r["act_dcf"])
    assert r["eer"] == m.eer(tar, non)
    assert r["min_dcf"]["0.01"] == m.min_dcf(tar, non, p_target=0.01)
    assert r["act_dcf"]["0.001"] == m.act_dcf(tar, non, p_target=0.001)
    assert r["cllr"] == m.cllr(tar, non) and r["min_cllr"] == m.min_cllr(tar, non)
    assert (r["n_target"], r["n_nontarget"]) == (100, 1000)
    assert json.loads(json.dumps(r)) == r
    assert all(type(v) is float for v in r["min_dcf"].values())


def test_errors():
    with pytest.raises(DataError, match="no target scores"):
        m.eer([], [1.0])
    with pytest.raises(DataError, match="no non-target scores"):
        m.evaluate([1.0], np.array([]))
    with pytest.raises(DataError, match="NaN"):
        m.evaluate([1.0, np.nan], [0.0])
    with pytest.raises(DataError, match="NaN"):
        m.cllr([1.0], [np.nan])
    with pytest.raises(DataError, match="1-D"):
        m.eer(np.zeros((2, 2)), [0.0])
    with pytest.raises(ConfigError, match="p_target"):
        m.min_dcf([1.0], [0.0], p_target=1.0)
    with pytest.raises(ConfigError, match="c_fa"):
        m.evaluate([1.0], [0.0], c_fa=0.0)
