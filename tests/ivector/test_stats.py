"""Baum-Welch statistics: against a direct float64 computation, file round trip, store."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.gmm.map import ubm_fingerprint
from gmmspeaker.gmm.model import GaussianMixture
from gmmspeaker.ivector.stats import (
    UtteranceStats,
    baum_welch,
    compute_stats,
    stats_from_store,
    stats_ids,
    write_stats,
)


def _ubm(rng: np.random.Generator, K: int = 5, D: int = 3, offset: float = 0.0) -> GaussianMixture:
    w = rng.dirichlet(np.full(K, 3.0))
    mu = rng.normal(offset, 2.0, (K, D))
    var = rng.uniform(0.3, 2.0, (K, D))
    return GaussianMixture.from_params(w, mu, var, covariance_type="diag")


def _reference(X: np.ndarray, ubm: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors from scipy.stats.norm log-densities, statistics by a loop over frames."""
    X = X.astype(np.float64)
    sd = np.sqrt(ubm.covariances_)
    K, D = ubm.means_.shape
    n = np.zeros(K)
    f = np.zeros((K, D))
    for x in X:
        logp = np.log(ubm.weights_) + norm.logpdf(x[None, :], ubm.means_, sd).sum(1)
        g = np.exp(logp - logsumexp(logp))
        n += g
        f += g[:, None] * (x[None, :] - ubm.means_) / sd
    return n, f.reshape(-1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_baum_welch_matches_direct_float64_computation(rng, dtype):
    ubm = _ubm(rng, offset=30.0)  # features far from 0: float32 needs the centring shift
    X = (ubm.means_[rng.integers(0, 5, 400)] + rng.standard_normal((400, 3))).astype(np.float32)
    n, f = baum_welch(X, ubm, dtype=dtype)
    n_ref, f_ref = _reference(X, ubm)
    assert n.dtype == np.float64 and f.dtype == np.float64
    assert n.shape == (5,) and f.shape == (15,)
    tol = 1e-10 if dtype == "float64" else 2e-4
    np.testing.assert_allclose(n, n_ref, rtol=tol, atol=tol * X.shape[0])
    np.testing.assert_allclose(f, f_ref, rtol=tol, atol=tol * X.shape[0] * 3)
    assert n.sum() == pytest.approx(X.shape[0], rel=1e-6)


@pytest.mark.parametrize("dtype", [None, "float64"])
def test_compute_stats_prepares_once_the_statistics_of_accumulate(rng, dtype):
    """Rows of a batch (the UBM prepared once for all of them) are, bit for bit, the
    per-utterance E-step of gmm.stats.accumulate centred and whitened, and each row the
    reference's."""
    from gmmspeaker.gmm.stats import accumulate

    ubm = _ubm(rng, offset=5.0)
    utts = [
        (f"u{i}", (5.0 + rng.standard_normal((n, 3)) * 2).astype(np.float32))
        for i, n in enumerate((50, 1, 7))
    ]
    st = compute_stats(utts, ubm, dtype=dtype)
    for (_, X), n, f in zip(utts, st.n, st.f):
        a = accumulate(X, ubm, second_order=False, dtype=dtype)
        np.testing.assert_array_equal(n, a.n)
        sd = np.sqrt(ubm.covariances_)
        np.testing.assert_array_equal(f, ((a.f - a.n[:, None] * ubm.means_) / sd).reshape(-1))
        n_ref, f_ref = _reference(X, ubm)
        np.testing.assert_allclose(n, n_ref, rtol=2e-4, atol=2e-4 * len(X))
        np.testing.assert_allclose(f, f_ref, rtol=2e-4, atol=6e-4 * len(X))


def test_compute_stats_rows_and_errors(rng):
    ubm = _ubm(rng)
    utts = [(f"u{i}", rng.normal(0, 2, (50 + 10 * i, 3))) for i in range(4)]
    st = compute_stats(utts, ubm, dtype="float64")
    assert st.ids == ["u0", "u1", "u2", "u3"]
    assert st.n.shape == (4, 5) and st.f.shape == (4, 15)
    assert (st.n_components, st.n_dims) == (5, 3)
    assert st.ubm_fingerprint == ubm_fingerprint(ubm)
    for i, (_, X) in enumerate(utts):
        n, f = _reference(X, ubm)
        np.testing.assert_allclose(st.n[i], n, rtol=1e-10)
        np.testing.assert_allclose(st.f[i], f, rtol=1e-9, atol=1e-9)
    sub = st.subset(["u2", "u0"])
    np.testing.assert_array_equal(sub.f, st.f[[2, 0]])
    with pytest.raises(DataError, match="no statistics"):
        st.subset(["nope"])
    with pytest.raises(DataError, match="'e' has no frames"):
        compute_stats([("e", np.zeros((0, 3)))], ubm)
    with pytest.raises(DataError, match="twice"):
        compute_stats([utts[0], utts[0]], ubm)
    full = GaussianMixture.from_params(
        ubm.weights_, ubm.means_, np.stack([np.eye(3)] * 5), covariance_type="full"
    )
    with pytest.raises(ModelError, match="diagonal UBM"):
        baum_welch(utts[0][1], full)


def test_save_load_round_trip_and_bad_file(tmp_path, rng):
    ubm = _ubm(rng)
    st = compute_stats([(f"spk/u{i}", rng.normal(0, 2, (30, 3))) for i in range(3)], ubm)
    st.save(tmp_path / "stats.h5")
    back = UtteranceStats.load(tmp_path / "stats.h5")
    assert back.ids == st.ids and back.ubm_fingerprint == st.ubm_fingerprint
    np.testing.assert_array_equal(back.n, st.n)
    np.testing.assert_array_equal(back.f, st.f)
    assert not list(tmp_path.glob(".*tmp*"))
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ModelError, match="bad.h5"):
        UtteranceStats.load(tmp_path / "bad.h5")
    with pytest.raises(ModelError, match="missing.h5: statistics file not found"):
        UtteranceStats.load(tmp_path / "missing.h5")


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_stats_from_store_equals_in_memory_and_does_not_depend_on_jobs(tmp_path):
    from gmmspeaker.features import FeatureConfig
    from gmmspeaker.store import FeatureStore, extract_to_store
    from tests.helpers import speechlike, write_wav

    rng = np.random.default_rng(0)
    cfg = FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1)
    utts = [
        (f"spk/u{i}", write_wav(tmp_path / "wav" / f"u{i}.wav", speechlike(rng, 0.5, f0=100 + 10 * i)))
        for i in range(5)
    ]
    extract_to_store(utts, tmp_path / "store", cfg, shard_size=2)
    store = FeatureStore(tmp_path / "store")
    X = np.vstack([store.get(u) for u, _ in utts])
    ubm = GaussianMixture(4, max_iter=3, random_state=0).fit(X)
    ids = [u for u, _ in utts][::-1]
    direct = compute_stats(((u, store.get(u)) for u in ids), ubm)
    one = stats_from_store(tmp_path / "store", ids, ubm, n_jobs=1, batch_size=2)
    two = stats_from_store(tmp_path / "store", ids, ubm, n_jobs=2, batch_size=2)
    assert one.ids == ids
    np.testing.assert_array_equal(one.n, direct.n)
    np.testing.assert_array_equal(one.f, direct.f)
    np.testing.assert_array_equal(two.f, one.f)
    with pytest.raises(DataError, match="no features for 1 utterance"):
        stats_from_store(tmp_path / "store", ["spk/u0", "ghost"], ubm)
    # written batch by batch: the same file as saving the statistics held in memory
    path = write_stats(tmp_path / "store", ids, ubm, tmp_path / "stats.h5", n_jobs=2, batch_size=2)
    back = UtteranceStats.load(path)
    assert back.ids == ids and back.ubm_fingerprint == one.ubm_fingerprint
    assert stats_ids(path) == ids
    with pytest.raises(ModelError, match="missing.h5"):
        stats_ids(tmp_path / "missing.h5")
    np.testing.assert_array_equal(back.n, one.n)
    np.testing.assert_array_equal(back.f, one.f)
    with pytest.raises(DataError, match="no features for 1 utterance"):
        write_stats(tmp_path / "store", ["spk/u0", "ghost"], ubm, tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists() and not list(tmp_path.glob(".bad.h5.*"))
