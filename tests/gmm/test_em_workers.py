"""EM workers and run settings: identical models for any number of workers, n_jobs=-1
following the CPUs this process may use, machine settings kept out of model files, and
the EM progress bar."""

from __future__ import annotations

import functools
import json
import os
import warnings

import h5py
import numpy as np
import pytest

from gmmspeaker.errors import ConvergenceWarning
from gmmspeaker.gmm import GaussianMixture
from gmmspeaker.gmm.data import n_workers
from gmmspeaker.gmm.em import iter_array_chunks


def _chunks(X: np.ndarray, a: int, b: int, size: int):
    return iter_array_chunks(X[a:b], size)


def _units(X: np.ndarray, n_units: int, size: int):
    edges = np.linspace(0, len(X), n_units + 1).astype(int)
    return [functools.partial(_chunks, X, a, b, size) for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_stream_model_identical_for_any_number_of_workers(mixture_data):
    """More workers than 'parts' and fewer: bit-identical parameters and trace (fixed units,
    reduced in unit order, whoever computed them)."""
    X, _ = mixture_data
    X = X.astype(np.float32)
    units = _units(X, 7, 211)
    opts = dict(init="split", random_state=3, max_iter=4, tol=0.0)
    ref = GaussianMixture(4, n_jobs=1, **opts).fit_stream(units)
    for jobs in (2, 3, 8):
        g = GaussianMixture(4, n_jobs=jobs, **opts).fit_stream(units)
        np.testing.assert_array_equal(g.means_, ref.means_)
        np.testing.assert_array_equal(g.covariances_, ref.covariances_)
        np.testing.assert_array_equal(g.weights_, ref.weights_)
        assert g.history_ == ref.history_


def test_feature_store_gives_more_units_than_parts_on_large_data(tmp_path):
    """The recipe's UBM sources: at least one unit per unit_frames, independent of jobs."""
    from gmmspeaker.features import FeatureConfig
    from gmmspeaker.store import FeatureStore, extract_to_store
    from tests.helpers import speechlike, write_wav

    rng = np.random.default_rng(0)
    utts = [
        (f"spk/u{i}", write_wav(tmp_path / "wav" / f"u{i}.wav", speechlike(rng, 0.5, f0=100 + 10 * i)))
        for i in range(10)
    ]
    extract_to_store(
        utts, tmp_path / "store", FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1)
    )
    st = FeatureStore(tmp_path / "store")
    ids = st.ids
    total = sum(st.n_frames(u) for u in ids)
    unit = total // 6  # about 6-7 units' worth of frames
    srcs = st.sources(ids, n_parts=2, chunk_frames=50, unit_frames=unit)
    assert len(srcs) == -(-total // unit) > 2
    assert len(st.sources(ids, n_parts=2, chunk_frames=50)) == 2
    # the units cover every frame once, in order
    streamed = np.concatenate([c for s in srcs for c in s()])
    np.testing.assert_array_equal(streamed, np.concatenate([st.get(u) for u in ids]))


def test_n_jobs_minus_one_follows_cpu_affinity(monkeypatch):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("os.sched_getaffinity is not available on this platform")
    assert n_workers(-1) <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert n_workers(-1) == 1
    assert n_workers(3) == 3


@pytest.mark.filterwarnings("ignore::gmmspeaker.errors.ConvergenceWarning")
def test_n_jobs_is_not_saved_nor_restored(tmp_path, mixture_data):
    X, _ = mixture_data
    g = GaussianMixture(3, n_jobs=2, max_iter=2, random_state=0, progress=False).fit(X)
    path = tmp_path / "ubm.h5"
    g.save(path)
    with h5py.File(path, "r") as h5:
        config = json.loads(h5.attrs["config"])
    assert not {"n_jobs", "checkpoint", "progress"} & set(config)
    assert GaussianMixture.load(path).n_jobs == 1
    # a file written by an older version with n_jobs in its config: not restored either
    with h5py.File(path, "r+") as h5:
        h5.attrs["config"] = json.dumps({**config, "n_jobs": 16})
    back = GaussianMixture.load(path)
    assert back.n_jobs == 1
    np.testing.assert_array_equal(back.means_, g.means_)


def test_progress_bar_shows_the_log_likelihood(capsys, mixture_data):
    X, _ = mixture_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        g = GaussianMixture(3, max_iter=3, tol=0.0, random_state=0, progress=True).fit(X)
    err = capsys.readouterr().err
    assert "EM run 0" in err
    assert f"loglik={g.lower_bound_:.4f}" in err  # the last iteration's mean log-likelihood
    assert "3/3" in err  # one step per EM iteration
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(3, max_iter=3, tol=0.0, random_state=0).fit(X)
    assert capsys.readouterr().err == ""  # off by default
