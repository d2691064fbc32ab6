"""LLR scoring (gmmspeaker.scoring.llr) against naive scipy.stats references."""

from __future__ import annotations

import types

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import gmmspeaker.scoring.llr as llr
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.gmm.kernel import top_c
from gmmspeaker.gmm.map import SpeakerModels, enroll
from gmmspeaker.gmm.stats import Stats
from gmmspeaker.scoring.llr import ScoringContext, score_prepared, score_trials, score_utterance

ALL = ("means", "weights", "variances")


def make_ubm(rng, k=8, d=3):
    return types.SimpleNamespace(
        weights_=rng.dirichlet(np.ones(k) * 2),
        means_=rng.normal(scale=2.0, size=(k, d)),
        covariances_=rng.uniform(0.5, 2.0, size=(k, d)),
    )


def comp_logdens(X, w, mu, var):
    """(T, K) log w_k N(x_t; mu_k, diag var_k), one component at a time with scipy."""
    return np.column_stack(
        [np.log(w[k]) + multivariate_normal(mu[k], np.diag(var[k])).logpdf(X) for k in range(len(w))]
    )


def naive_stats(X, ubm):
    L = comp_logdens(X, ubm.weights_, ubm.means_, ubm.covariances_)
    g = np.exp(L - logsumexp(L, axis=1, keepdims=True))
    return Stats(n=g.sum(0), f=g.T @ X, s=g.T @ X**2, loglik=0.0, n_frames=len(X))


def model_params(models, i, ubm):
    w = ubm.weights_ if models.weights is None else models.weights[i].astype(float)
    var = ubm.covariances_ if models.variances is None else models.variances[i].astype(float)
    return w, models.means[i].astype(float), var


def naive_llr(X, ubm, models, i, top_c=None):
    Lu = comp_logdens(X, ubm.weights_, ubm.means_, ubm.covariances_)
    Lm = comp_logdens(X, *model_params(models, i, ubm))
    if top_c is None:
        return float(np.mean(logsumexp(Lm, axis=1) - logsumexp(Lu, axis=1)))
    total = 0.0
    for t in range(len(X)):  # frame by frame, as in the textbook
        sel = np.argsort(Lu[t])[::-1][:top_c]
        total += logsumexp(Lm[t, sel]) - logsumexp(Lu[t, sel])
    return total / len(X)


def naive_linear(X, ubm, models, i):
    s = naive_stats(X, ubm)
    total = 0.0
    for k in range(len(ubm.weights_)):
        dmu = models.means[i, k].astype(float) - ubm.means_[k]
        total += dmu @ np.diag(1.0 / ubm.covariances_[k]) @ (s.f[k] - s.n[k] * ubm.means_[k])
    return total / len(X)


@pytest.fixture
def world(rng):
    ubm = make_ubm(rng)
    enroll_data = [rng.normal(loc=rng.normal(size=3), scale=1.5, size=(60, 3)) for _ in range(5)]
    stats = [naive_stats(x, ubm) for x in enroll_data]
    ids = [f"m{i}" for i in range(5)]
    means64 = enroll(ids, stats, ubm, relevance=4.0, dtype=np.float64)
    all64 = enroll(ids, stats, ubm, relevance=4.0, adapt=ALL, dtype=np.float64)
    X = rng.normal(scale=2.0, size=(40, 3))
    return ubm, means64, all64, X, enroll_data


@pytest.mark.parametrize("which", ["means", "all"])
def test_full_matches_scipy(world, which):
    ubm, means64, all64, X, _ = world
    models = means64 if which == "means" else all64
    ref = np.array([naive_llr(X, ubm, models, i) for i in range(len(models))])
    got64 = score_utterance(X, ubm, models, np.arange(5), method="full", dtype=np.float64)
    np.testing.assert_allclose(got64, ref, rtol=1e-9, atol=1e-11)
    got32 = score_utterance(X, ubm, models, np.arange(5), method="full")
    assert got32.dtype == np.float64 and got32.shape == (5,)
    np.testing.assert_allclose(got32, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("which", ["means", "all"])
@pytest.mark.parametrize("c", [1, 2, 5])
def test_top_c_matches_naive(world, which, c):
    ubm, means64, all64, X, _ = world
    models = means64 if which == "means" else all64
    ref = np.array([naive_llr(X, ubm, models, i, top_c=c) for i in range(len(models))])
    got = score_utterance(X, ubm, models, np.arange(5), method="top_c", top_c=c, dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-11)
    ctx = ScoringContext.build(ubm, models, dtype=np.float64)
    part = score_prepared(X, ctx, method="top_c", top_c=c, selection="argpartition")
    np.testing.assert_allclose(part, ref, rtol=1e-9, atol=1e-11)


def test_top_c_with_c_equal_k_is_full(world):
    ubm, means64, all64, X, _ = world
    for models in (means64, all64):
        full = score_utterance(X, ubm, models, np.arange(5), method="full")
        for c in (8, 50):
            np.testing.assert_array_equal(
                score_utterance(X, ubm, models, np.arange(5), method="top_c", top_c=c), full
            )
        # the top-C code path itself with C = K (no shortcut) agrees with full scoring
        ctx = ScoringContext.build(ubm, models, dtype=np.float64)
        t_k = llr._llr_top_c(X, llr._ubm_logdens(X, ctx), ctx, np.arange(5), 8, "argmax")
        np.testing.assert_allclose(
            t_k / len(X),
            score_utterance(X, ubm, models, np.arange(5), method="full", dtype=np.float64),
            rtol=1e-12,
            atol=1e-13,
        )


def test_linear_matches_formula(world):
    ubm, means64, all64, X, _ = world
    ref = np.array([naive_linear(X, ubm, means64, i) for i in range(5)])
    got = score_utterance(X, ubm, means64, np.arange(5), method="linear", dtype=np.float64)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-11)
    got32 = score_utterance(X, ubm, means64, np.arange(5), method="linear")
    np.testing.assert_allclose(got32, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="linear scoring.*mean-adapted"):
        score_utterance(X, ubm, all64, [0], method="linear")


def test_linear_approximates_full_for_small_shifts(rng):
    ubm = make_ubm(rng)
    X = rng.normal(scale=2.0, size=(200, 3))
    shift = 1e-3 * rng.normal(size=(1, 8, 3))
    models = SpeakerModels(["a"], ubm.means_[None] + shift, np.ones((1, 8)))
    lin = score_utterance(X, ubm, models, [0], method="linear", dtype=np.float64)
    full = score_utterance(X, ubm, models, [0], method="full", dtype=np.float64)
    np.testing.assert_allclose(lin, full, rtol=1e-2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_equal_to_ubm_scores_exactly_zero(rng, dtype):
    ubm = make_ubm(rng)
    X = rng.normal(scale=3.0, size=(123, 3))
    data_stats = [naive_stats(rng.normal(size=(30, 3)), ubm) for _ in range(3)]
    for adapt in (("means",), ALL):
        models = enroll(["a", "b", "c"], data_stats, ubm, relevance=np.inf, adapt=adapt, dtype=dtype)
        for method in ("full", "top_c", "linear"):
            if method == "linear" and adapt == ALL:
                continue
            s = score_utterance(X, ubm, models, [2, 0, 1], method=method, top_c=3)
            assert np.all(s == 0.0), (adapt, method, s)


def test_vectorised_equals_per_model(world, monkeypatch):
    ubm, means64, all64, X, _ = world
    for models in (means64, all64):
        for method in ("full", "top_c", "linear"):
            if method == "linear" and models is all64:
                continue
            idx = np.array([3, 1, 4, 1, 0])
            together = score_utterance(X, ubm, models, idx, method=method, top_c=3)
            alone = np.array([score_utterance(X, ubm, models, [i], method=method, top_c=3)[0] for i in idx])
            np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)
            # tiny memory blocks (one model at a time) and frame chunks change nothing
            monkeypatch.setattr(llr, "_BLOCK_ELEMENTS", 1)
            ctx = ScoringContext.build(ubm, models, model_index=idx)
            chunked = score_prepared(X, ctx, method=method, top_c=3, chunk_size=7)
            monkeypatch.undo()
            np.testing.assert_allclose(chunked, together, rtol=1e-6, atol=1e-7)


def test_target_beats_nontarget(world, rng):
    ubm, means64, _, _, enroll_data = world
    for i in range(5):
        test = enroll_data[i][:30] + 0.1 * rng.normal(size=(30, 3))
        for method in ("full", "top_c", "linear"):
            s = score_utterance(test, ubm, means64, np.arange(5), method=method)
            assert int(np.argmax(s)) == i, (method, s)


def test_score_trials_groups_by_test(world, rng):
    ubm, means64, _, _, _ = world
    tests = {f"t{j}": rng.normal(scale=2.0, size=(20 + j, 3)) for j in range(3)}
    trials = [("m1", "t0"), ("m0", "t2"), ("m4", "t0"), ("m1", "t2"), ("m3", "t1"), ("m1", "t0")]
    calls: list[str] = []

    def load(test_id):
        calls.append(test_id)
        return tests[test_id]

    got = score_trials(load, trials, ubm, means64, method="top_c", top_c=3)
    assert sorted(calls) == ["t0", "t1", "t2"]  # each test read once
    ref = np.array(
        [score_utterance(tests[t], ubm, means64, [means64.index(m)], top_c=3)[0] for m, t in trials]
    )
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert got[0] == got[5]
    np.testing.assert_allclose(
        score_trials(tests, trials, ubm, means64, method="full"),
        [score_utterance(tests[t], ubm, means64, [means64.index(m)], method="full")[0] for m, t in trials],
        rtol=1e-6,
        atol=1e-7,
    )
    with pytest.raises(DataError, match="'nobody'"):
        score_trials(tests, [("nobody", "t0")], ubm, means64)
    with pytest.raises(DataError, match="'t9'"):
        score_trials(tests, [("m0", "t9")], ubm, means64)
    with pytest.raises(DataError, match="'t0'.*no frames"):
        score_trials({"t0": np.zeros((0, 3))}, [("m0", "t0")], ubm, means64)


def test_errors(world):
    ubm, means64, _, X, _ = world
    with pytest.raises(ConfigError, match="unknown scoring method 'fast'"):
        score_utterance(X, ubm, means64, [0], method="fast")
    with pytest.raises(ConfigError, match="top_c"):
        score_utterance(X, ubm, means64, [0], top_c=0)
    with pytest.raises(DataError, match="NaN"):
        score_utterance(np.full((3, 3), np.nan), ubm, means64, [0])
    with pytest.raises(DataError, match=r"expected \(T, 3\)"):
        score_utterance(X[:, :2], ubm, means64, [0])
    with pytest.raises(DataError, match="out of range"):
        score_utterance(X, ubm, means64, [5])
    other = make_ubm(np.random.default_rng(99))
    with pytest.raises(ModelError, match="another UBM"):
        score_utterance(X, other, means64, [0])
    full = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=np.stack([np.eye(3)] * 8)
    )
    with pytest.raises(ModelError, match="diagonal"):
        score_utterance(X, full, means64, [0])
    small = make_ubm(np.random.default_rng(1), k=4)
    with pytest.raises(ModelError, match="K=8"):
        score_utterance(X, small, means64, [0])


def test_top_c_selectors_agree(rng):
    L = rng.normal(size=(50, 40))
    for c in (1, 3, 7, 40):
        a = np.sort(top_c(L, c, method="argmax"), axis=1)
        b = np.sort(top_c(L, c, method="argpartition"), axis=1)
        ref = np.sort(np.argsort(-L, axis=1)[:, :c], axis=1)
        np.testing.assert_array_equal(a, ref)
        np.testing.assert_array_equal(b, ref)


def test_spherical_ubm_scores_like_diag(world):
    ubm, means64, _, X, _ = world
    sph = types.SimpleNamespace(
        weights_=ubm.weights_, means_=ubm.means_, covariances_=ubm.covariances_[:, 0].copy()
    )
    diag = types.SimpleNamespace(
        weights_=ubm.weights_,
        means_=ubm.means_,
        covariances_=np.repeat(sph.covariances_[:, None], 3, axis=1),
    )
    models = SpeakerModels(means64.model_ids, means64.means, means64.counts)  # no fingerprint
    for method in ("full", "top_c", "linear"):
        np.testing.assert_array_equal(
            score_utterance(X, sph, models, np.arange(5), method=method),
            score_utterance(X, diag, models, np.arange(5), method=method),
        )
    tied = types.SimpleNamespace(
        weights_=ubm.weights_[:3] / ubm.weights_[:3].sum(),
        means_=ubm.means_[:3],
        covariances_=np.eye(3),
        covariance_type="tied",
    )
    three = SpeakerModels(["a"], ubm.means_[None, :3], np.ones((1, 3)))
    with pytest.raises(ModelError, match="tied"):
        score_utterance(X, tied, three, [0])


def test_end_to_end_with_gmm_core(rng):
    """Train a UBM with the package's EM on background speakers, enroll new speakers,
    score: each test utterance scores highest against its own speaker's model."""
    from gmmspeaker.gmm.map import enroll_features
    from gmmspeaker.gmm.model import GaussianMixture

    def speaker(centre, n):
        return centre + rng.normal(size=(n, 5))

    background = np.concatenate([speaker(rng.normal(scale=2.0, size=5), 60) for _ in range(20)])
    ubm = GaussianMixture(8, random_state=0, max_iter=30).fit(background)
    centres = rng.normal(scale=2.0, size=(4, 5))
    models = enroll_features(
        {f"s{i}": [speaker(centres[i], 80), speaker(centres[i], 40)] for i in range(4)},
        ubm,
        relevance=8.0,
    )
    tests = {f"t{j}": speaker(centres[j], 100) for j in range(4)}
    trials = [(f"s{i}", f"t{j}") for i in range(4) for j in range(4)]
    for method in ("full", "top_c", "linear"):
        s = score_trials(tests, trials, ubm, models, method=method).reshape(4, 4)
        assert np.all(np.diag(s) > 0), (method, s)
        target, non = np.diag(s), s[~np.eye(4, dtype=bool)]
        if method == "linear":  # a first-order approximation: only ranks on average
            assert np.mean(target[:, None] > non[None, :]) > 0.9, s
        else:
            assert np.all(np.argmax(s, axis=0) == np.arange(4)), (method, s)


# -- score_all_models: the cohort score matrix --------------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("which", ["means", "all"])
def test_score_all_models_matches_naive_top_c(world, rng, which, monkeypatch):
    """float64 products: the naive per-frame top-C LLR to rounding, whatever the pooling."""
    ubm, means64, all64, _, _ = world
    models = means64 if which == "means" else all64
    utts = [rng.normal(scale=2.0, size=(n, 3)) for n in (40, 7, 1, 25)]
    ctx = ScoringContext.build(ubm, models, dtype=np.float64)
    for c in (1, 3, 8):  # 8 = K: the per-utterance full path
        ref = np.array([[naive_llr(x, ubm, models, i, top_c=c) for x in utts] for i in range(len(models))])
        got = llr.score_all_models(utts, ctx, top_c=c)
        assert got.shape == (len(models), len(utts)) and got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-11)
    # pools of a few frames and chunks that split utterances across pools
    monkeypatch.setattr(llr, "_POOL_ELEMENTS", 40)
    small = llr.score_all_models(utts, ctx, top_c=3, chunk_size=5)
    ref3 = np.array([[naive_llr(x, ubm, models, i, top_c=3) for x in utts] for i in range(len(models))])
    np.testing.assert_allclose(small, ref3, rtol=1e-9, atol=1e-11)


@pytest.mark.numerics
def test_score_all_models_float32_within_its_error_bound(world, rng):
    """float32: each per-frame term ``delta + log w`` is rounded a few times; the error per
    frame is then at most a small multiple of eps32 times its size, which the UBM's
    log-densities bound (|delta| <= |Lm| + |Lu|)."""
    ubm, means64, all64, _, _ = world
    utts = [rng.normal(scale=2.0, size=(n, 3)) for n in (40, 17)]
    for models in (means64, all64):
        ref = np.array([[naive_llr(x, ubm, models, i, top_c=3) for x in utts] for i in range(len(models))])
        scale = max(
            np.abs(comp_logdens(x, *model_params(models, i, ubm))).max()
            + np.abs(comp_logdens(x, ubm.weights_, ubm.means_, ubm.covariances_)).max()
            for x in utts
            for i in range(len(models))
        )
        got = llr.score_all_models(utts, ScoringContext.build(ubm, models), top_c=3)
        np.testing.assert_allclose(got, ref, rtol=0, atol=64 * np.finfo(np.float32).eps * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_all_models_model_equal_to_ubm_scores_exactly_zero(rng, dtype):
    ubm = make_ubm(rng)
    data_stats = [naive_stats(rng.normal(size=(30, 3)), ubm) for _ in range(3)]
    utts = [rng.normal(scale=3.0, size=(n, 3)) for n in (50, 9)]
    for adapt in (("means",), ALL):
        models = enroll(["a", "b", "c"], data_stats, ubm, relevance=np.inf, adapt=adapt, dtype=dtype)
        s = llr.score_all_models(utts, ScoringContext.build(ubm, models), top_c=3)
        assert np.all(s == 0.0), (adapt, s)


@pytest.mark.numerics
def test_score_all_models_frames_whose_exponential_leaves_float32_range(rng):
    """The cohort products take exp(delta) unshifted; a frame where a model's delta is above
    float32's exp range (~88) or every term is below its normal range (~-87) is recomputed in
    float64: finite scores, equal to the naive float64 top-C LLR (the float32 bound of the
    frames' magnitudes), beside models whose frames stayed in range."""
    K, D = 4, 2
    ubm = types.SimpleNamespace(
        weights_=np.full(K, 1.0 / K),
        means_=np.array([[0.0, 0.0], [30.0, 0.0], [0.0, 30.0], [30.0, 30.0]]),
        covariances_=np.full((K, D), 0.25),
    )
    shift = np.zeros((3, K, D))
    shift[0, 0] = [8.0, 0.0]  # frames near 8: delta ~ +128 under model 0 (overflows exp32)
    shift[1, 0] = [-8.0, 0.0]  # the same frames: delta ~ -380 (every term underflows)
    shift[2] = 0.01  # a model whose every delta stays small
    models = SpeakerModels(
        model_ids=["hi", "lo", "near"],
        means=ubm.means_[None] + shift,
        counts=np.ones((3, K)),
    )
    near8 = rng.normal(size=(5, D)) * 0.3 + [8.0, 0.0]
    utts = [
        near8,
        np.vstack([near8, rng.normal(size=(7, D)) * 0.5]),
        rng.normal(size=(9, D)) * 0.5 + [30.0, 0.0],
    ]
    got = llr.score_all_models(utts, ScoringContext.build(ubm, models), top_c=2)
    assert np.all(np.isfinite(got))
    ref = np.array([[naive_llr(x, ubm, models, i, top_c=2) for x in utts] for i in range(3)])
    scale = max(
        np.abs(comp_logdens(x, *model_params(models, i, ubm))).max()
        + np.abs(comp_logdens(x, ubm.weights_, ubm.means_, ubm.covariances_)).max()
        for x in utts
        for i in range(3)
    )
    np.testing.assert_allclose(got, ref, rtol=0, atol=64 * np.finfo(np.float32).eps * scale)
    assert got[0, 0] > 88 and got[1, 0] < -88  # the frames out of range did count


# -- score_tests: trials and cohort from one UBM pass ----------------------------------------


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("method", "c"), [("top_c", 3), ("top_c", 8), ("full", 3), ("linear", 3)])
def test_score_tests_equals_the_two_separate_passes(world, rng, dtype, method, c):
    """Trial rows as score_prepared scores them and the cohort as score_all_models does,
    bit for bit (utterances shorter than a pool's chunk), and independent of each other."""
    ubm, means64, _, _, enroll_data = world
    cohort_models = enroll(
        [f"c{i}" for i in range(4)],
        [naive_stats(rng.normal(scale=1.5, size=(50, 3)), ubm) for _ in range(4)],
        ubm,
        relevance=4.0,
        dtype=np.float64,
    )
    utts = [rng.normal(scale=2.0, size=(n, 3)) for n in (40, 7, 1, 25)]
    rows = [[0, 2], [4], [], [1, 0, 3]]
    ctx = ScoringContext.build(ubm, means64, dtype=dtype)
    cctx = ScoringContext.build(ubm, cohort_models, dtype=dtype, prepared=ctx.ubm)
    trial, coh = llr.score_tests(utts, ctx, rows, cctx, method=method, top_c=c)
    for x, r, got in zip(utts, rows, trial):
        np.testing.assert_array_equal(got, score_prepared(x, ctx, r, method=method, top_c=c))
    np.testing.assert_array_equal(coh, llr.score_all_models(utts, cctx, method=method, top_c=c))
    alone, none = llr.score_tests(utts, ctx, rows, method=method, top_c=c)
    assert none is None and all(np.array_equal(a, b) for a, b in zip(alone, trial))


@pytest.mark.numerics
def test_score_tests_long_utterances_within_the_float32_bound(world, rng, monkeypatch):
    """Utterances cut into several chunks (and pools): trial and cohort scores within the
    float32 bound of the naive float64 per-frame top-C LLR (as score_all_models)."""
    ubm, means64, all64, _, _ = world
    monkeypatch.setattr(llr, "_POOL_ELEMENTS", 40)  # chunks of 40 // (5 x 3) = 2 frames
    utts = [rng.normal(scale=2.0, size=(n, 3)) for n in (40, 17)]
    rows = [[0, 3], [1, 2, 4]]
    ctx = ScoringContext.build(ubm, means64)
    cctx = ScoringContext.build(ubm, all64, prepared=ctx.ubm)
    trial, coh = llr.score_tests(utts, ctx, rows, cctx, top_c=3)
    scale = max(
        np.abs(comp_logdens(x, *model_params(m, i, ubm))).max()
        + np.abs(comp_logdens(x, ubm.weights_, ubm.means_, ubm.covariances_)).max()
        for x in utts
        for m in (means64, all64)
        for i in range(len(m))
    )
    bound = 64 * np.finfo(np.float32).eps * scale
    for x, r, got in zip(utts, rows, trial):
        ref = [naive_llr(x, ubm, means64, i, top_c=3) for i in r]
        np.testing.assert_allclose(got, ref, rtol=0, atol=bound)
    ref_c = np.array([[naive_llr(x, ubm, all64, i, top_c=3) for x in utts] for i in range(len(all64))])
    np.testing.assert_allclose(coh, ref_c, rtol=0, atol=bound)


def test_score_tests_refuses_a_cohort_of_another_ubm(world, rng):
    ubm, means64, _, X, _ = world
    other = make_ubm(rng)
    ctx = ScoringContext.build(ubm, means64)
    foreign = enroll(["o"], [naive_stats(X, other)], other, relevance=4.0)
    with pytest.raises(ModelError, match="another UBM"):
        llr.score_tests([X], ctx, [[0]], ScoringContext.build(other, foreign), top_c=3)
    with pytest.raises(ModelError, match="dtype"):
        ScoringContext.build(ubm, means64, dtype=np.float64, prepared=ctx.ubm)
    with pytest.raises(DataError, match="row lists"):
        llr.score_tests([X, X], ctx, [[0]])


def test_context_select_is_a_context_of_those_rows(world):
    ubm, _, all64, X, _ = world
    ctx = ScoringContext.build(ubm, all64)
    sub = ctx.select([3, 1])
    assert sub.ubm is ctx.ubm and sub.model_ids == ["m3", "m1"]
    np.testing.assert_array_equal(
        score_prepared(X, sub, top_c=3),
        score_prepared(X, ScoringContext.build(ubm, all64, model_index=[3, 1]), top_c=3),
    )


def test_pooled_weights_are_the_models_changes_and_stay_out_of_pickles(world, rng):
    """W[k] rows: the linear changes, the quadratic ones (variances adapted), the constant;
    a pickled context leaves them out (workers rebuild them) and scores the same."""
    import pickle

    ubm, means64, all64, X, _ = world
    for models in (means64, all64):
        ctx = ScoringContext.build(ubm, models)
        W = ctx.pooled_weights()
        d = ctx.n_dims
        assert W.shape == (ctx.n_components, (2 * d if ctx.d_quad is not None else d) + 1, ctx.n_models)
        k = 5
        np.testing.assert_array_equal(W[k, :d], ctx.d_lin[:, k, :].T)
        if ctx.d_quad is not None:
            np.testing.assert_array_equal(W[k, d : 2 * d], ctx.d_quad[:, k, :].T)
        np.testing.assert_array_equal(W[k, -1], ctx.d_const[:, k].astype(np.float32))
        assert ctx.pooled_weights() is W  # kept
        back = pickle.loads(pickle.dumps(ctx))
        assert "_pooled_weights" not in back.__dict__
        utts = [X, rng.normal(scale=2.0, size=(9, 3))]
        np.testing.assert_array_equal(
            llr.score_all_models(utts, back, top_c=3), llr.score_all_models(utts, ctx, top_c=3)
        )


def test_shared_context_pickles_as_paths_and_scores_the_same(world, rng, tmp_path):
    """ScoringContext.shared: the models' changes and pooled weights in .npy files; its
    pickle holds their paths (a few KB, not M x K x D elements), the unpickled copy maps
    them and scores, selects and pools exactly as the context it came from."""
    import pickle

    ubm, means64, all64, X, _ = world
    utts = [X, rng.normal(scale=2.0, size=(9, 3))]
    for i, models in enumerate((means64, all64)):
        ctx = ScoringContext.build(ubm, models)
        sh = ctx.shared(tmp_path / f"ctx{i}")
        names = {p.name for p in (tmp_path / f"ctx{i}").iterdir()}
        assert names == (
            {"d_lin.npy", "pooled_weights.npy"} | ({"d_quad.npy"} if ctx.d_quad is not None else set())
        )
        blob = pickle.dumps(sh)
        assert len(blob) < len(pickle.dumps(ctx)) and b"d_lin.npy" in blob
        back = pickle.loads(blob)
        assert isinstance(back.d_lin, np.memmap) and isinstance(back.pooled_weights(), np.memmap)
        np.testing.assert_array_equal(back.pooled_weights(), ctx.pooled_weights())
        np.testing.assert_array_equal(
            llr.score_all_models(utts, back, top_c=3), llr.score_all_models(utts, ctx, top_c=3)
        )
        np.testing.assert_array_equal(
            score_prepared(X, back.select([3, 1]), top_c=3), score_prepared(X, ctx.select([3, 1]), top_c=3)
        )
        assert not isinstance(back.select([0]).d_lin, np.memmap)  # a selection is an ordinary copy
