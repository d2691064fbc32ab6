"""Total-variability EM and i-vector extraction: against slow references and known models."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import subspace_angles
from scipy.stats import multivariate_normal

from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.ivector.stats import UtteranceStats
from gmmspeaker.ivector.tv import (
    TotalVariability,
    extract_ivectors,
    packed_gram,
    train_tv,
    tv_estep,
    tv_log_likelihood,
)


def synthetic_stats(
    rng: np.random.Generator, *, U: int, K: int, D: int, R: int, frames: int = 300, scale: float = 1.0
) -> tuple[UtteranceStats, np.ndarray]:
    """Statistics drawn from a known model: f_uk = n_uk T_k^T w_u + N(0, n_uk I)."""
    T = rng.standard_normal((R, K * D)) * scale
    alloc = rng.dirichlet(np.full(K, 2.0), size=U)
    n = alloc * frames
    w = rng.standard_normal((U, R))
    mean = (w @ T).reshape(U, K, D) * n[:, :, None]
    f = mean + rng.standard_normal((U, K, D)) * np.sqrt(n)[:, :, None]
    return UtteranceStats([f"u{i}" for i in range(U)], n, f.reshape(U, K * D), "fp"), T


def _T_k(T: np.ndarray, k: int, D: int) -> np.ndarray:
    return T[:, k * D : (k + 1) * D]


def slow_posterior(T, n_u, f_u, K, D):
    """Per-utterance posterior by plain loops and an explicit inverse (reference only)."""
    R = T.shape[0]
    L = np.eye(R)
    for k in range(K):
        L += n_u[k] * _T_k(T, k, D) @ _T_k(T, k, D).T
    Linv = np.linalg.inv(L)
    b = T @ f_u
    m = Linv @ b
    return L, Linv, m, b


def test_batched_estep_equals_slow_per_utterance_reference(rng):
    K, D, R, B = 5, 3, 4, 45  # B > the internal sub-block of 32 utterances
    stats, _ = synthetic_stats(rng, U=B, K=K, D=D, R=R, frames=60)
    T = rng.standard_normal((R, K * D)) * 0.3
    acc = tv_estep(T, stats.n, stats.f)
    A = np.zeros((K, R, R))
    C = np.zeros((R, K * D))
    S = np.zeros((R, R))
    ll = 0.0
    for u in range(B):
        L, Linv, m, b = slow_posterior(T, stats.n[u], stats.f[u], K, D)
        E = Linv + np.outer(m, m)
        for k in range(K):
            A[k] += stats.n[u, k] * E
        C += np.outer(m, stats.f[u])
        S += E
        ll += -0.5 * np.linalg.slogdet(L)[1] + 0.5 * b @ m
    iu = np.triu_indices(R)
    np.testing.assert_allclose(acc.A, A[:, iu[0], iu[1]], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(acc.C, C, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(acc.S, S[iu], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(acc.N, stats.n.sum(0), rtol=1e-12)
    assert acc.loglik == pytest.approx(ll, rel=1e-10)
    assert acc.n_utterances == B
    # packed Gram matrices against a loop over components
    G = packed_gram(T, K)
    for k in range(K):
        np.testing.assert_allclose(G[k], (_T_k(T, k, D) @ _T_k(T, k, D).T)[iu], rtol=1e-12)
    # extraction: the same posterior means, any batch size
    tv = TotalVariability(T, K, D, "fp")
    ref = np.array([slow_posterior(T, stats.n[u], stats.f[u], K, D)[2] for u in range(B)])
    for bs in (7, 256):
        iv = extract_ivectors(tv, stats, batch_size=bs)
        assert iv.dtype == np.float64 and iv.shape == (B, R)
        np.testing.assert_allclose(iv, ref, rtol=1e-10, atol=1e-12)


def test_estep_at_a_rank_where_the_inverse_is_blocked_equals_the_reference(rng):
    """R = 150 and 67: the triangular inverse splits into blocks (leaf order 64), odd sizes too."""
    for K, D, R in ((3, 60, 150), (2, 40, 67)):
        B = 4
        stats, _ = synthetic_stats(rng, U=B, K=K, D=D, R=R, frames=200)
        T = rng.standard_normal((R, K * D)) * 0.2
        acc = tv_estep(T, stats.n, stats.f)
        A = np.zeros((K, R, R))
        C = np.zeros((R, K * D))
        ll = 0.0
        for u in range(B):
            L, Linv, m, b = slow_posterior(T, stats.n[u], stats.f[u], K, D)
            E = Linv + np.outer(m, m)
            A += stats.n[u][:, None, None] * E
            C += np.outer(m, stats.f[u])
            ll += -0.5 * np.linalg.slogdet(L)[1] + 0.5 * b @ m
        iu = np.triu_indices(R)
        scale = np.abs(A).max()
        np.testing.assert_allclose(acc.A, A[:, iu[0], iu[1]], rtol=1e-9, atol=1e-12 * scale)
        np.testing.assert_allclose(acc.C, C, rtol=1e-9, atol=1e-12 * np.abs(C).max())
        assert acc.loglik == pytest.approx(ll, rel=1e-10)


def test_estep_is_identical_for_any_number_of_threads(rng):
    """The factorisations run in threads without the GIL: each sub-block owns its outputs."""
    K, D, R, B = 3, 40, 70, 100  # four sub-blocks of utterances
    stats, _ = synthetic_stats(rng, U=B, K=K, D=D, R=R, frames=200)
    T = rng.standard_normal((R, K * D)) * 0.2
    one = tv_estep(T, stats.n, stats.f, n_threads=1)
    for nt in (2, 3):
        many = tv_estep(T, stats.n, stats.f, n_threads=nt)
        for x, y in ((many.A, one.A), (many.C, one.C), (many.S, one.S)):
            np.testing.assert_array_equal(x, y)
        assert many.loglik == one.loglik
    tv = TotalVariability(T, K, D, "fp")
    np.testing.assert_array_equal(
        extract_ivectors(tv, stats, n_threads=3), extract_ivectors(tv, stats, n_threads=1)
    )


def test_objective_is_the_marginal_likelihood_up_to_a_constant(rng):
    """Differences of the objective between two T equal differences of log N(f; 0, Sigma_u)."""
    K, D, R = 3, 2, 2
    stats, T1 = synthetic_stats(rng, U=6, K=K, D=D, R=R, frames=20)
    T2 = rng.standard_normal(T1.shape)

    def direct(T):
        total = 0.0
        for u in range(len(stats)):
            nd = np.repeat(stats.n[u], D)
            cov = np.diag(nd) + (nd[:, None] * (T.T @ T)) * nd[None, :]
            total += multivariate_normal(np.zeros(K * D), cov).logpdf(stats.f[u])
        return total

    o1 = tv_log_likelihood(TotalVariability(T1, K, D, "fp"), stats)
    o2 = tv_log_likelihood(TotalVariability(T2, K, D, "fp"), stats)
    assert o1 - o2 == pytest.approx(direct(T1) - direct(T2), rel=1e-9)


@pytest.mark.parametrize("min_divergence", [True, False])
def test_em_never_lowers_the_objective(rng, min_divergence):
    stats, _ = synthetic_stats(rng, U=150, K=6, D=3, R=3, frames=100)
    tv = train_tv(
        stats,
        rank=4,
        iterations=8,
        min_divergence=min_divergence,
        rng=np.random.default_rng(1),
        batch_size=64,
    )
    trace = np.array(tv.log_likelihood + (tv_log_likelihood(tv, stats),))
    assert trace.size == 9
    steps = np.diff(trace)
    assert np.all(steps >= -1e-9 * np.abs(trace[1:])), steps
    assert trace[-1] > trace[0] + 1.0  # and it does move


def test_recovers_a_known_subspace(rng):
    K, D, R = 8, 4, 3
    stats, T_true = synthetic_stats(rng, U=600, K=K, D=D, R=R, frames=300, scale=0.5)
    tv = train_tv(stats, rank=R, iterations=10, rng=np.random.default_rng(0), batch_size=128)
    angles = subspace_angles(T_true.T, tv.T.T)
    assert np.max(angles) < 0.05, np.degrees(angles)  # under 3 degrees
    # a random subspace of the same size is far away (the test can fail)
    assert np.max(subspace_angles(T_true.T, rng.standard_normal(T_true.shape).T)) > 0.5
    # with min divergence the i-vectors have about unit second moment
    iv = extract_ivectors(tv, stats)
    assert np.allclose(np.diag(iv.T @ iv / len(stats)), 1.0, atol=0.15)


def test_results_do_not_depend_on_jobs_and_file_statistics_match(tmp_path, rng):
    stats, _ = synthetic_stats(rng, U=90, K=5, D=3, R=3, frames=80)
    kw = dict(rank=3, iterations=3, batch_size=16)
    one = train_tv(stats, rng=np.random.default_rng(5), n_jobs=1, **kw)
    two = train_tv(stats, rng=np.random.default_rng(5), n_jobs=2, **kw)
    np.testing.assert_array_equal(two.T, one.T)  # same batches, summed in the same order
    assert two.log_likelihood == one.log_likelihood
    stats.save(tmp_path / "stats.h5")
    from_file = train_tv(tmp_path / "stats.h5", rng=np.random.default_rng(5), n_jobs=2, **kw)
    np.testing.assert_allclose(from_file.T, one.T, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        extract_ivectors(one, tmp_path / "stats.h5", batch_size=7), extract_ivectors(one, stats), rtol=1e-12
    )


def test_training_on_a_subset_of_a_file_reads_only_its_rows_and_equals_the_subset(tmp_path, rng):
    stats, _ = synthetic_stats(rng, U=70, K=4, D=3, R=3, frames=80)
    stats.save(tmp_path / "stats.h5")
    kw = dict(rank=3, iterations=2, batch_size=16, rng=np.random.default_rng(2))
    # rows in increasing order with gaps, one run of rows, any order (each batch read its way)
    for rows in (np.sort(rng.permutation(70)[:45]), np.arange(10, 55), rng.permutation(70)[:45]):
        pick = [stats.ids[i] for i in rows]
        kw["rng"] = np.random.default_rng(2)
        ref = train_tv(stats.subset(pick), n_jobs=1, **kw)
        for jobs in (1, 2):
            kw["rng"] = np.random.default_rng(2)
            got = train_tv(
                tmp_path / "stats.h5", utterances=pick, n_jobs=jobs, tmp_dir=tmp_path / "tmp", **kw
            )
            np.testing.assert_allclose(got.T, ref.T, rtol=1e-12, atol=1e-14)
    kw["rng"] = np.random.default_rng(2)
    in_memory = train_tv(stats, utterances=pick, n_jobs=1, **kw)
    np.testing.assert_array_equal(in_memory.T, ref.T)
    with pytest.raises(DataError, match="no statistics for 1 utterance"):
        train_tv(tmp_path / "stats.h5", utterances=[*pick, "ghost"], **kw)


def test_checkpoint_resume_gives_the_same_T(tmp_path, rng):
    stats, _ = synthetic_stats(rng, U=60, K=4, D=3, R=2, frames=80)
    kw = dict(rank=3, batch_size=25)
    full = train_tv(stats, iterations=5, rng=np.random.default_rng(3), **kw)
    ck = tmp_path / "tv.ckpt.h5"
    train_tv(stats, iterations=2, rng=np.random.default_rng(3), checkpoint=ck, **kw)  # "killed" after 2
    resumed = train_tv(stats, iterations=5, rng=np.random.default_rng(99), checkpoint=ck, **kw)
    np.testing.assert_array_equal(resumed.T, full.T)  # a different rng: T came from the checkpoint
    assert resumed.log_likelihood == full.log_likelihood
    # a checkpoint for other options is ignored, not trusted
    other = train_tv(stats, iterations=2, rng=np.random.default_rng(3), checkpoint=ck, rank=2, batch_size=25)
    assert other.rank == 2


def test_save_load_and_errors(tmp_path, rng):
    stats, _ = synthetic_stats(rng, U=20, K=4, D=3, R=2, frames=50)
    tv = train_tv(stats, rank=2, iterations=2, rng=rng)
    tv.save(tmp_path / "tv.h5")
    back = TotalVariability.load(tmp_path / "tv.h5")
    np.testing.assert_array_equal(back.T, tv.T)
    assert (back.rank, back.n_components, back.n_dims, back.ubm_fingerprint) == (2, 4, 3, "fp")
    assert back.log_likelihood == tv.log_likelihood
    (tmp_path / "bad.h5").write_bytes(b"nope")
    with pytest.raises(ModelError, match="bad.h5"):
        TotalVariability.load(tmp_path / "bad.h5")
    other = UtteranceStats(stats.ids, stats.n, stats.f, "another-ubm")
    with pytest.raises(ModelError, match="UBM"):
        extract_ivectors(tv, other)
    with pytest.raises(ConfigError, match="rank"):
        train_tv(stats, rank=0, rng=rng)


def test_float32_products_stay_close_to_float64(rng):
    K, D, R = 6, 4, 5
    stats, _ = synthetic_stats(rng, U=70, K=K, D=D, R=R, frames=300, scale=0.5)
    T = rng.standard_normal((R, K * D)) * 0.3
    a64 = tv_estep(T, stats.n, stats.f)
    a32 = tv_estep(T, stats.n, stats.f, dtype="float32")
    assert a32.A.dtype == np.float64 and a32.C.dtype == np.float64
    for x32, x64 in ((a32.A, a64.A), (a32.C, a64.C), (a32.S, a64.S)):
        np.testing.assert_allclose(x32, x64, rtol=2e-3, atol=2e-3 * np.abs(x64).max())
    assert a32.loglik == pytest.approx(a64.loglik, rel=1e-4)
    t64 = train_tv(stats, rank=R, iterations=4, rng=np.random.default_rng(2))
    t32 = train_tv(stats, rank=R, iterations=4, rng=np.random.default_rng(2), dtype="float32")
    ll64, ll32 = tv_log_likelihood(t64, stats), tv_log_likelihood(t32, stats)
    assert abs(ll32 - ll64) < 1e-4 * abs(ll64)
    iv64 = extract_ivectors(t64, stats)
    iv32 = extract_ivectors(t64, stats, dtype="float32")
    assert iv32.dtype == np.float64
    np.testing.assert_allclose(iv32, iv64, rtol=1e-3, atol=1e-3 * np.abs(iv64).max())
    with pytest.raises(ConfigError, match="dtype"):
        train_tv(stats, rank=2, rng=rng, dtype="float16")


def test_checkpoint_key_reads_only_zeroth_order_statistics_in_batches(tmp_path, rng, monkeypatch):
    """The training-data signature of a statistics file (what a checkpoint is keyed on)
    hashes the ids and the zeroth-order statistics only, a batch of rows at a time: its
    peak memory stays a small fraction of the first-order statistics and does not grow
    with the number of utterances; the hash is that of all of them at once."""
    import hashlib
    import tracemalloc

    from gmmspeaker.ivector import tv as tv_mod

    monkeypatch.setattr(tv_mod, "SIGNATURE_ROWS", 64)
    peaks = []
    for U in (300, 1200):
        stats, _ = synthetic_stats(rng, U=U, K=16, D=20, R=2, frames=50)
        path = tmp_path / f"stats{U}.h5"
        stats.save(path)
        pick = [f"u{i}" for i in range(U - 1, -1, -2)]  # a selection, in another order
        for src, ids, n in (
            (tv_mod._open_source(path), stats.ids, stats.n),
            (tv_mod._open_source(path, pick), pick, stats.subset(pick).n),
        ):
            tracemalloc.start()
            got = src.signature()
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            ref = hashlib.sha256("\n".join(ids).encode())
            ref.update(np.ascontiguousarray(n, dtype=np.float64).tobytes())
            assert got == ref.hexdigest()[:16]
            assert src.signature() == tv_mod._open_source(stats, list(ids)).signature()  # in memory
            peaks.append(peak)
        assert max(peaks[-2:]) < stats.f.nbytes / 8
    assert max(peaks[-2:]) < 2 * max(peaks[:2]) + 200_000  # 4x the utterances: not 4x the memory
