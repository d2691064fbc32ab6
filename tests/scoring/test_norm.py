"""Tests of gmmspeaker.scoring.norm against a slow per-trial reference loop."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.scoring import norm as sn

FLOOR = 1e-6


# --------------------------------------------------------------------------- reference


def _ms(values, top_n=None):
    vals = sorted((float(v) for v in values if v is not None), reverse=True)  # None: excluded
    if top_n is not None:
        vals = vals[:top_n]
    return statistics.fmean(vals), max(statistics.pstdev(vals), FLOOR)


def reference(method, scores, model_idx, test_idx, mc, ct, cc=None, top_n=None):
    """One Python iteration per trial, statistics recomputed from scratch each time."""
    out = []
    for s, mi, ti in zip(scores, model_idx, test_idx):
        zm, zs = _ms(mc[mi], top_n if method == "asnorm" else None)
        tm, ts = _ms([ct[c][ti] for c in range(len(ct))], top_n if method == "asnorm" else None)
        z, t = (s - zm) / zs, (s - tm) / ts
        if method == "znorm":
            out.append(z)
        elif method == "tnorm":
            out.append(t)
        elif method in ("snorm", "asnorm"):
            out.append(0.5 * (z + t))
        elif method == "ztnorm":
            zc = []
            for c in range(len(ct)):
                if ct[c][ti] is None:
                    continue
                cm, cs = _ms(cc[c])
                zc.append((ct[c][ti] - cm) / cs)
            m2, s2 = _ms(zc)
            out.append((z - m2) / s2)
    return np.array(out)


@pytest.fixture
def problem(rng):
    n_models, n_tests, n_zc, n_tc, n_trials = 7, 11, 13, 9, 40
    mc = rng.normal(0.5, 1.3, (n_models, n_zc)) + rng.normal(0, 2, (n_models, 1))
    ct = rng.normal(-0.2, 0.8, (n_tc, n_tests)) + rng.normal(0, 2, (1, n_tests))
    cc = rng.normal(0.1, 1.1, (n_tc, n_zc))
    model_idx = rng.integers(0, n_models, n_trials)
    test_idx = rng.integers(0, n_tests, n_trials)
    scores = rng.normal(0, 3, n_trials)
    return scores, model_idx, test_idx, mc, ct, cc


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("method", ["znorm", "tnorm", "ztnorm", "snorm", "asnorm"])
def test_trial_list_matches_reference(problem, method):
    scores, mi, ti, mc, ct, cc = problem
    top_n = 5 if method == "asnorm" else None
    want = reference(method, scores, mi, ti, mc, ct, cc, top_n=top_n)
    got = sn.normalize_scores(
        scores,
        method=method,
        model_cohort=mc,
        cohort_test=ct,
        cohort_cohort=cc,
        model_idx=mi,
        test_idx=ti,
        top_n=5,
    )
    assert got.dtype == np.float64 and got.shape == scores.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", ["znorm", "tnorm", "ztnorm", "snorm", "asnorm"])
def test_matrix_layout_equals_trial_layout(problem, rng, method):
    _, _, _, mc, ct, cc = problem
    full = rng.normal(size=(mc.shape[0], ct.shape[1]))
    mi, ti = np.meshgrid(np.arange(full.shape[0]), np.arange(full.shape[1]), indexing="ij")
    kw = dict(method=method, model_cohort=mc, cohort_test=ct, cohort_cohort=cc, top_n=4)
    as_matrix = sn.normalize_scores(full, **kw)
    as_trials = sn.normalize_scores(full.ravel(), model_idx=mi.ravel(), test_idx=ti.ravel(), **kw)
    assert as_matrix.shape == full.shape
    np.testing.assert_allclose(as_matrix.ravel(), as_trials, rtol=1e-13)


def test_asnorm_with_whole_cohort_is_snorm(problem):
    scores, mi, ti, mc, ct, _ = problem
    big = max(mc.shape[1], ct.shape[0])
    a = sn.asnorm(scores, mc, ct, top_n=big + 5, model_idx=mi, test_idx=ti)
    s = sn.snorm(scores, mc, ct, model_idx=mi, test_idx=ti)
    np.testing.assert_allclose(a, s, rtol=1e-13)


def test_cohort_stats_top_n(rng):
    c = rng.normal(size=(5, 30))
    mean, std = sn.cohort_stats(c, axis=1, top_n=3)
    top = np.sort(c, axis=1)[:, -3:]
    np.testing.assert_allclose(mean, top.mean(axis=1))
    np.testing.assert_allclose(std, top.std(axis=1))
    mean0, _ = sn.cohort_stats(c.T, axis=0, top_n=3)
    np.testing.assert_allclose(mean0, mean)


def test_constant_cohort_is_finite():
    mc = np.full((2, 6), 3.0)
    ct = np.full((4, 3), -1.0)
    cc = np.full((4, 6), 0.5)
    scores = np.array([[3.0, 4.0, 2.0], [3.0, 3.5, 0.0]])
    for method in sn.NORM_METHODS:
        out = sn.normalize_scores(
            scores, method=method, model_cohort=mc, cohort_test=ct, cohort_cohort=cc, top_n=1
        )
        assert np.all(np.isfinite(out)), method
    z = sn.znorm(scores, mc)
    assert z[0, 0] == 0.0
    assert z[0, 1] == pytest.approx(1.0 / FLOOR)


def test_znorm_removes_model_offset(rng):
    # Models whose score scales differ become comparable after Z-norm.
    off, sc = rng.normal(0, 5, 6), rng.uniform(0.5, 4, 6)
    mc = off[:, None] + sc[:, None] * rng.standard_normal((6, 2000))
    z = sn.znorm(mc, mc)
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=1), 1, atol=1e-12)


def test_errors(problem):
    scores, mi, ti, mc, ct, cc = problem
    with pytest.raises(DataError, match="model_idx out of range"):
        sn.znorm(scores, mc, model_idx=np.full_like(mi, mc.shape[0]))
    with pytest.raises(DataError, match="pass model_idx"):
        sn.znorm(scores, mc)
    with pytest.raises(DataError, match="test_idx must be an integer array"):
        sn.tnorm(scores, ct, test_idx=ti[:-1])
    with pytest.raises(DataError, match="scores matrix has"):
        sn.tnorm(np.zeros((mc.shape[0], ct.shape[1] + 1)), ct)
    with pytest.raises(DataError, match="empty"):
        sn.znorm(scores, np.zeros((mc.shape[0], 0)), model_idx=mi)
    with pytest.raises(DataError, match="non-finite"):
        sn.znorm(np.r_[scores[:-1], np.nan], mc, model_idx=mi)
    with pytest.raises(DataError, match="cohort_cohort must have shape"):
        sn.ztnorm(scores, mc, ct, cc[:, :-1], model_idx=mi, test_idx=ti)
    with pytest.raises(ConfigError, match="unknown score normalisation"):
        sn.normalize_scores(scores, method="qnorm")
    with pytest.raises(ConfigError, match="needs cohort_test"):
        sn.normalize_scores(scores, method="snorm", model_cohort=mc, model_idx=mi, test_idx=ti)
    with pytest.raises(ConfigError, match="top_n"):
        sn.asnorm(scores, mc, ct, top_n=0, model_idx=mi, test_idx=ti)
    with pytest.raises(ConfigError, match="std_floor"):
        sn.znorm(scores, mc, model_idx=mi, std_floor=0.0)


@pytest.mark.parametrize("method", ["znorm", "tnorm", "ztnorm", "snorm", "asnorm"])
def test_masked_cohort_entries_are_left_out(problem, rng, method):
    """Issue 11.4: masked entries (self-trials) do not enter the statistics, as if absent."""
    scores, mi, ti, mc, ct, cc = problem
    masks = {}
    for name, m in (("mc", mc), ("ct", ct), ("cc", cc)):
        mask = rng.random(m.shape) < 0.3
        mask[:, 0] = mask[0, :] = False  # every row and column keeps an entry
        masks[name] = mask
    # excluded entries hold garbage (even NaN): they must not matter
    mc_m, ct_m, cc_m = (
        np.ma.MaskedArray(np.where(masks[n], np.nan, m), mask=masks[n])
        for n, m in (("mc", mc), ("ct", ct), ("cc", cc))
    )

    def drop(m, mask):
        return [[None if mask[i, j] else m[i, j] for j in range(m.shape[1])] for i in range(m.shape[0])]

    top_n = 4 if method == "asnorm" else None
    want = reference(
        method, scores, mi, ti, drop(mc, masks["mc"]), drop(ct, masks["ct"]), drop(cc, masks["cc"]), top_n
    )
    kw = {"top_n": top_n} if method == "asnorm" else {}
    got = sn.normalize_scores(
        scores,
        method=method,
        model_cohort=mc_m,
        cohort_test=ct_m,
        cohort_cohort=cc_m,
        model_idx=mi,
        test_idx=ti,
        **kw,
    )
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # and a mask changes the result (else the test would prove nothing)
    plain = sn.normalize_scores(
        scores,
        method=method,
        model_cohort=mc,
        cohort_test=ct,
        cohort_cohort=cc,
        model_idx=mi,
        test_idx=ti,
        **kw,
    )
    assert not np.allclose(got, plain)


def test_fully_masked_cohort_row_is_a_clear_error():
    mc = np.ma.MaskedArray(np.ones((2, 3)), mask=[[True, True, True], [False, True, False]])
    with pytest.raises(DataError, match="row 0 has no cohort entry left"):
        sn.cohort_stats(mc, axis=1)


def test_self_trial_masks_mark_exactly_the_self_trials() -> None:
    from gmmspeaker.scoring.norm import self_trial_masks

    models = [{"a", "b"}, {"x"}, set()]
    cohort = ["a", "c", "x", "t2"]
    tests = ["t1", "t2", "c"]
    own, self_test, self_cohort = self_trial_masks(models, cohort, tests)
    ref_own = np.array([[c in m for c in cohort] for m in models])
    ref_test = np.array([[c == t for t in tests] for c in cohort])
    assert own.dtype == bool and np.array_equal(own, ref_own)
    assert np.array_equal(self_test, ref_test) and self_test.sum() == 2
    assert np.array_equal(self_cohort, np.eye(4, dtype=bool))
    # no tests: well-shaped empty masks
    assert self_trial_masks(models, cohort, [])[1].shape == (4, 0)
