"""ISV: variational EM for U, exact enrolment, linear scoring; against dense references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from scipy.special import logsumexp as sp_logsumexp
from scipy.stats import multivariate_normal

from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.gmm.map import map_adapt
from gmmspeaker.gmm.params import MixtureParams
from gmmspeaker.gmm.stats import accumulate
from gmmspeaker.isv.score import enroll_offset, enroll_offsets, full_llr, linear_scores, session_factors
from gmmspeaker.isv.train import ISVModel, isv_estep, train_isv
from gmmspeaker.ivector.stats import UtteranceStats, baum_welch


def isv_stats(rng, *, S, H, K, D, R, r=4.0, frames=200, scale=1.0):
    """Statistics from a known ISV model: f_h = N_h (U^T x_h + d z_s) + N(0, N_h)."""
    U = rng.standard_normal((R, K * D)) * scale
    d = 1.0 / np.sqrt(r)
    n = rng.dirichlet(np.full(K, 2.0), size=S * H) * frames
    z = rng.standard_normal((S, K * D))
    x = rng.standard_normal((S * H, R))
    spk = np.repeat(np.arange(S), H)
    o = x @ U + d * z[spk]
    nr = np.repeat(n, D, axis=1)
    f = nr * o + rng.standard_normal(o.shape) * np.sqrt(nr)
    ids = [f"s{s:03d}-{h}" for s, h in zip(spk, np.tile(np.arange(H), S))]
    speakers = {u: u.split("-")[0] for u in ids}
    return UtteranceStats(ids, n, f, "fp"), speakers, U


def dense_log_marginal(U, d, n, f):
    """log p(f of one speaker) up to the constants the ELBO drops, by brute force.

    With o = A w, w = (x_1..x_H, z) ~ N(0, I): log int exp(sum_h o_h^T f_h - 1/2 o_h^T N_h o_h) N(w) dw.
    """
    H, K = n.shape
    R, KD = U.shape
    D = KD // K
    A = []
    for h in range(H):
        row = [np.zeros((KD, R)) for _ in range(H)]
        row[h] = U.T
        A.append(np.hstack(row + [d * np.eye(KD)]))
    A = np.vstack(A)  # (H KD, H R + KD)
    Nbig = np.diag(np.repeat(n, D, axis=1).reshape(-1))
    P = np.eye(A.shape[1]) + A.T @ Nbig @ A
    b = A.T @ f.reshape(-1)
    return -0.5 * np.linalg.slogdet(P)[1] + 0.5 * b @ np.linalg.solve(P, b), np.linalg.solve(P, b)


def test_estep_equals_slow_per_recording_reference(rng):
    stats, speakers, U = isv_stats(rng, S=3, H=4, K=5, D=3, R=3)
    d = 0.5
    x_prev = rng.standard_normal((12, 3)) * 0.3
    starts = np.array([0, 4, 8])
    out = isv_estep(U, d, stats.n, stats.f, x_prev, starts, n_threads=2)
    K, D, R = 5, 3, 3
    A = np.zeros((K, R, R))
    C = np.zeros((R, K * D))
    elbo = 0.0
    for s in range(3):
        rows = range(4 * s, 4 * s + 4)
        N = stats.n[rows].sum(0).repeat(D)
        F = stats.f[rows].sum(0)
        resid = F - sum(stats.n[h].repeat(D) * (U.T @ x_prev[h]) for h in rows)
        lam = 1 + d * d * N
        mu, v = d * resid / lam, 1 / lam
        elbo += np.sum(d * mu * F - 0.5 * lam * (mu**2 + v) + 0.5 * np.log(v) + 0.5)
        for h in rows:
            nh = stats.n[h].repeat(D)
            fa = stats.f[h] - nh * d * mu
            L = np.eye(R) + U @ np.diag(nh) @ U.T
            m = np.linalg.solve(L, U @ fa)
            np.testing.assert_allclose(out.x[h], m, rtol=1e-10, atol=1e-12)
            Exx = np.linalg.inv(L) + np.outer(m, m)
            for k in range(K):
                A[k] += stats.n[h, k] * Exx
            C += np.outer(m, fa)
            elbo += -0.5 * np.linalg.slogdet(L)[1] + 0.5 * (U @ fa) @ m
    iu = np.triu_indices(R)
    np.testing.assert_allclose(out.acc.A, A[:, iu[0], iu[1]], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.acc.C, C, rtol=1e-10, atol=1e-10)
    assert out.elbo == pytest.approx(elbo, rel=1e-10)


def test_elbo_is_a_lower_bound_that_is_exact_without_sessions(rng):
    stats, speakers, U = isv_stats(rng, S=2, H=3, K=3, D=2, R=2, frames=50)
    d = 0.5
    exact = sum(
        dense_log_marginal(U, d, stats.n[3 * s : 3 * s + 3], stats.f[3 * s : 3 * s + 3])[0] for s in range(2)
    )
    x = np.zeros((6, 2))
    elbos = []
    for _ in range(30):  # coordinate ascent with U fixed: rises towards (and stays below) the exact value
        b = isv_estep(U, d, stats.n, stats.f, x, [0, 3])
        x = b.x
        elbos.append(b.elbo)
    assert np.all(np.diff(elbos) >= -1e-9 * abs(exact))
    assert elbos[-1] <= exact + 1e-9 * abs(exact)
    assert elbos[0] < elbos[-1]
    e0 = isv_estep(np.zeros((0, 6)), d, stats.n, stats.f, np.zeros((6, 0)), [0, 3]).elbo
    exact0 = sum(
        dense_log_marginal(np.zeros((0, 6)), d, stats.n[3 * s : 3 * s + 3], stats.f[3 * s : 3 * s + 3])[0]
        for s in range(2)
    )
    assert e0 == pytest.approx(exact0, rel=1e-12)


@pytest.mark.parametrize("min_divergence", [False, True])
def test_em_never_lowers_the_elbo(rng, min_divergence):
    stats, speakers, _ = isv_stats(rng, S=12, H=4, K=6, D=3, R=2)
    model = train_isv(
        stats,
        speakers,
        rank=3,
        relevance=4.0,
        iterations=8,
        min_divergence=min_divergence,
        rng=rng,
        batch_size=10,
    )
    tr = np.asarray(model.log_likelihood)
    assert tr.size == 8
    assert np.all(np.diff(tr) >= -1e-10 * np.abs(tr).max()), np.diff(tr)
    assert tr[-1] > tr[0]


def test_planted_session_subspace_is_recovered(rng):
    stats, speakers, U = isv_stats(rng, S=60, H=6, K=8, D=3, R=2, r=4.0, frames=300, scale=0.5)
    model = train_isv(stats, speakers, rank=2, relevance=4.0, iterations=25, rng=np.random.default_rng(1))
    angles = subspace_angles(model.U.T, U.T)
    assert np.rad2deg(angles.max()) < 5.0, np.rad2deg(angles)
    # a random 2-dim subspace of R^24 is nearly orthogonal: the test can fail
    rand = subspace_angles(np.random.default_rng(2).standard_normal((24, 2)), U.T)
    assert np.rad2deg(rand.max()) > 45.0


def test_enrolment_equals_the_dense_joint_posterior(rng):
    stats, _, U = isv_stats(rng, S=1, H=3, K=4, D=2, R=2, frames=20)
    model = ISVModel(U, 4.0, 4, 2)
    _, w = dense_log_marginal(U, model.d, stats.n, stats.f)
    z = w[3 * 2 :]
    np.testing.assert_allclose(enroll_offset(model, stats.n, stats.f), model.d * z, rtol=1e-9, atol=1e-12)
    # the alternating (Gauss-Seidel) updates of training converge to the same point
    x = np.zeros((3, 2))
    for _ in range(150):
        x = isv_estep(U, model.d, stats.n, stats.f, x, [0]).x
    np.testing.assert_allclose(x.reshape(-1), w[:6], rtol=1e-6, atol=1e-8)


def _ubm(rng, K, D):
    return MixtureParams(
        rng.dirichlet(np.full(K, 5.0)), rng.standard_normal((K, D)) * 2, rng.uniform(0.5, 2.0, (K, D)), "diag"
    )


def test_rank_zero_is_relevance_map(rng):
    K, D, r = 4, 3, 16.0
    ubm = _ubm(rng, K, D)
    X = [rng.standard_normal((150, D)) + 0.3 for _ in range(3)]
    n, f = zip(*(baum_welch(x, ubm, dtype="float64") for x in X))
    model = ISVModel(np.zeros((0, K * D)), r, K, D)
    off = enroll_offset(model, np.array(n), np.array(f)).reshape(K, D)
    adapted = map_adapt(accumulate(np.vstack(X), ubm, second_order=False, dtype="float64"), ubm, relevance=r)
    np.testing.assert_allclose(
        ubm.means + np.sqrt(ubm.covariances) * off, adapted.means, rtol=1e-10, atol=1e-12
    )
    # and training with R_u = 0 leaves nothing to learn: one ELBO, the exact likelihood
    st = UtteranceStats(["a", "b", "c"], np.array(n), np.array(f))
    m0 = train_isv(st, {"a": "s", "b": "s", "c": "s"}, rank=0, relevance=r, iterations=2, rng=rng)
    exact = dense_log_marginal(np.zeros((0, K * D)), model.d, np.array(n), np.array(f))[0]
    assert m0.log_likelihood == pytest.approx((exact, exact), rel=1e-12)


def test_linear_score_equals_direct_computation_from_frames_and_full_llr_is_its_exact_form(rng):
    K, D, R = 4, 3, 2
    ubm = _ubm(rng, K, D)
    U = rng.standard_normal((R, K * D)) * 0.2
    model = ISVModel(U, 8.0, K, D)
    X = rng.standard_normal((300, D))
    n, f = baum_welch(X, ubm, dtype="float64")
    st = UtteranceStats(["t"], n[None], f[None])
    o = rng.standard_normal(K * D) * 0.3
    score = linear_scores(model, o[None], st)[0, 0]
    # direct: (m_s - mu)^T Sigma^-1 (F - N mu - N Sigma^1/2 U^T x) / T, posteriors by scipy
    logp = np.stack(
        [
            multivariate_normal(ubm.means[k], np.diag(ubm.covariances[k])).logpdf(X) + np.log(ubm.weights[k])
            for k in range(K)
        ],
        1,
    )
    g = np.exp(logp - sp_logsumexp(logp, axis=1, keepdims=True))
    N, F = g.sum(0), g.T @ X
    sd = np.sqrt(ubm.covariances)
    L = np.eye(R) + U @ np.diag(np.repeat(N, D)) @ U.T
    x = np.linalg.solve(L, U @ ((F - N[:, None] * ubm.means) / sd).reshape(-1))
    np.testing.assert_allclose(session_factors(model, st)[0], x, rtol=1e-9)
    m_s = ubm.means + sd * o.reshape(K, D)
    comp = F - N[:, None] * ubm.means - N[:, None] * sd * (x @ U).reshape(K, D)
    direct = np.sum((m_s - ubm.means) / ubm.covariances * comp) / N.sum()
    assert score == pytest.approx(direct, rel=1e-9)
    # full LLR against scipy's mixture densities, and linear scoring as its first-order term
    c = x @ U

    def mix(shift):
        mu = ubm.means + sd * shift.reshape(K, D)
        lp = [
            multivariate_normal(mu[k], np.diag(ubm.covariances[k])).logpdf(X) + np.log(ubm.weights[k])
            for k in range(K)
        ]
        return sp_logsumexp(np.stack(lp, 1), axis=1)

    assert full_llr(ubm, o, c, X) == pytest.approx(np.mean(mix(o + c) - mix(c)), rel=1e-9)
    # linear scoring keeps the UBM's alignments, so it is the first-order term of the full LLR
    # exactly when the session offset is zero (with one, the alignments move with it)
    score0 = linear_scores(ISVModel(np.zeros((0, K * D)), 8.0, K, D), o[None], st)[0, 0]
    rel = [abs(full_llr(ubm, e * o, 0 * c, X) / (e * score0) - 1.0) for e in (1e-1, 1e-2, 1e-3)]
    assert rel[2] < rel[1] < rel[0] and rel[2] < 1e-2, rel  # O(eps) error: first order


def test_results_do_not_depend_on_jobs_and_file_statistics_match(tmp_path, rng):
    stats, speakers, _ = isv_stats(rng, S=10, H=3, K=5, D=2, R=2)
    kw = dict(rank=2, relevance=4.0, iterations=3, batch_size=7)
    one = train_isv(stats, speakers, rng=np.random.default_rng(5), n_jobs=1, **kw)
    two = train_isv(stats, speakers, rng=np.random.default_rng(5), n_jobs=2, **kw)
    np.testing.assert_array_equal(two.U, one.U)
    assert two.log_likelihood == one.log_likelihood
    stats.save(tmp_path / "stats.h5")
    from_file = train_isv(tmp_path / "stats.h5", speakers, rng=np.random.default_rng(5), n_jobs=2, **kw)
    np.testing.assert_allclose(from_file.U, one.U, rtol=1e-12, atol=1e-14)


def test_checkpoint_resume_gives_the_same_U(tmp_path, rng):
    stats, speakers, _ = isv_stats(rng, S=8, H=3, K=5, D=2, R=2)
    kw = dict(rank=2, relevance=4.0, batch_size=10)
    full = train_isv(stats, speakers, iterations=5, rng=np.random.default_rng(3), **kw)
    ck = tmp_path / "ck.h5"
    train_isv(stats, speakers, iterations=2, rng=np.random.default_rng(3), checkpoint=ck, **kw)
    resumed = train_isv(stats, speakers, iterations=5, rng=np.random.default_rng(99), checkpoint=ck, **kw)
    np.testing.assert_array_equal(
        resumed.U, full.U
    )  # another rng: U and the session means came from the checkpoint
    assert resumed.log_likelihood == full.log_likelihood


def test_the_checkpoint_keys_on_the_data_and_settings_not_the_package_version(
    tmp_path, rng, monkeypatch, caplog
):
    import logging

    import gmmspeaker

    stats, speakers, _ = isv_stats(rng, S=8, H=3, K=5, D=2, R=2)
    kw = dict(rank=2, relevance=4.0, batch_size=10)
    full = train_isv(stats, speakers, iterations=4, rng=np.random.default_rng(3), **kw)
    ck = tmp_path / "ck.h5"
    train_isv(stats, speakers, iterations=2, rng=np.random.default_rng(3), checkpoint=ck, **kw)
    # a package upgrade alone: the checkpoint of the same data and settings is resumed from
    monkeypatch.setattr(gmmspeaker, "__version__", gmmspeaker.__version__ + ".post1")
    with caplog.at_level(logging.INFO, logger="gmmspeaker.isv.train"):
        resumed = train_isv(stats, speakers, iterations=4, rng=np.random.default_rng(99), checkpoint=ck, **kw)
    assert "resuming ISV training after iteration 2" in caplog.text
    np.testing.assert_array_equal(resumed.U, full.U)
    # other data (one recording's statistics changed): the checkpoint (now after iteration 4)
    # is ignored and training starts afresh; trusted, it would return U of the old data
    n = stats.n.copy()
    n[0, 0] += 1.0
    changed = UtteranceStats(list(stats.ids), n, stats.f.copy(), stats.ubm_fingerprint)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gmmspeaker.isv.train"):
        again = train_isv(changed, speakers, iterations=4, rng=np.random.default_rng(3), checkpoint=ck, **kw)
    assert "checkpoint is for other options or data; starting afresh" in caplog.text
    fresh = train_isv(changed, speakers, iterations=4, rng=np.random.default_rng(3), **kw)
    np.testing.assert_array_equal(again.U, fresh.U)
    assert not np.array_equal(again.U, full.U)
    # other settings (the relevance factor) likewise
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gmmspeaker.isv.train"):
        train_isv(
            changed,
            speakers,
            iterations=4,
            rng=np.random.default_rng(3),
            checkpoint=ck,
            **{**kw, "relevance": 8.0},
        )
    assert "starting afresh" in caplog.text


def test_save_load_and_errors(tmp_path, rng):
    stats, speakers, _ = isv_stats(rng, S=4, H=2, K=3, D=2, R=1)
    m = train_isv(stats, speakers, rank=1, relevance=4.0, iterations=1, rng=rng)
    m.save(tmp_path / "isv.h5")
    back = ISVModel.load(tmp_path / "isv.h5")
    np.testing.assert_array_equal(back.U, m.U)
    assert (back.relevance, back.log_likelihood) == (m.relevance, m.log_likelihood)
    with pytest.raises(ModelError, match="nope.h5"):
        ISVModel.load(tmp_path / "nope.h5")
    with pytest.raises(ConfigError, match="rank"):
        train_isv(stats, speakers, rank=-1, rng=rng)
    with pytest.raises(DataError, match="speaker label"):
        train_isv(stats, {}, rank=1, rng=rng)
    # unlabelled recordings (enrolment, tests) are left out: the same U as on the labelled subset
    part = {u: speakers[u] for u in stats.ids[:6]}
    a = train_isv(stats, part, rank=1, relevance=4.0, iterations=2, rng=np.random.default_rng(1))
    b = train_isv(
        stats.subset(stats.ids[:6]), part, rank=1, relevance=4.0, iterations=2, rng=np.random.default_rng(1)
    )
    np.testing.assert_array_equal(a.U, b.U)
    stats.save(tmp_path / "st.h5")
    from gmmspeaker.ivector.stats import read_stats_rows

    sub = read_stats_rows(tmp_path / "st.h5", ["s001-1", "s000-0", "s001-1"])
    np.testing.assert_array_equal(sub.f, stats.f[[3, 0, 3]])
    assert sub.ids == ["s001-1", "s000-0", "s001-1"]
    with pytest.raises(DataError, match="nope"):
        read_stats_rows(tmp_path / "st.h5", ["nope"])
    ids, offs = enroll_offsets(m, stats, {"b": ["s001-0"], "a": ["s000-0", "s000-1"]})
    assert ids == ["a", "b"] and offs.shape == (2, 6)
    with pytest.raises(DataError, match="zzz"):
        enroll_offsets(m, stats, {"a": ["zzz"]})
