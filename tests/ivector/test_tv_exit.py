"""T-matrix training with process workers lets the calling process exit.

A process started by :mod:`multiprocessing` joins its live children when its target
returns; joblib's loky workers used to stay alive for their 300 s idle timeout, so such a
process (bench_ivector's child, issue #22) hung after training with ``n_jobs=2``.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pytest

#: Seconds the child may take to exit once it has reported (a hang lasted 300 s).
EXIT_BOUND_S = 30.0


def _train_in_child(path: str, tmp_dir: str, q) -> None:
    from gmmspeaker.ivector.tv import train_tv

    tv = train_tv(
        path, rank=4, iterations=2, rng=np.random.default_rng(0), n_jobs=2, batch_size=20, tmp_dir=tmp_dir
    )
    q.put((tv.T.shape, len(mp.active_children())))


@pytest.mark.slow
def test_training_with_two_jobs_in_a_child_process_exits(tmp_path: Path) -> None:
    from gmmspeaker.ivector.stats import UtteranceStats

    rng = np.random.default_rng(0)
    U, K, D = 60, 4, 3
    n = rng.dirichlet(np.full(K, 1.0), size=U) * 100
    f = rng.standard_normal((U, K * D)) * np.sqrt(np.repeat(n, D, axis=1))
    UtteranceStats([f"u{i}" for i in range(U)], n, f, "fp").save(tmp_path / "stats.h5")
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_train_in_child, args=(str(tmp_path / "stats.h5"), str(tmp_path / "work"), q))
    p.start()
    try:
        shape, live_children = q.get(timeout=300)
        t0 = time.monotonic()
        p.join(EXIT_BOUND_S)
        waited = time.monotonic() - t0
        assert not p.is_alive(), f"the child did not exit within {EXIT_BOUND_S} s of training"
    finally:
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0
    assert shape == (4, K * D)
    assert live_children == 0, "worker processes outlived train_tv"
    assert waited < EXIT_BOUND_S
    # the temporaries for the workers went under tmp_dir and were removed
    assert not any((tmp_path / "work").iterdir())


@pytest.mark.slow
def test_on_dask_T_travels_through_dask_and_nothing_is_written(tmp_path: Path) -> None:
    """Issue #22, cluster path: workers on other machines cannot see the client's files, so
    on the Dask backend T and its Gram matrices go through Dask (no file under tmp_dir);
    the statistics file is read batch by batch by the workers, and T equals the
    one-process result."""
    import joblib
    from distributed import Client, LocalCluster

    from gmmspeaker.ivector.stats import UtteranceStats
    from gmmspeaker.ivector.tv import train_tv

    rng = np.random.default_rng(1)
    U, K, D = 50, 4, 3
    n = rng.dirichlet(np.full(K, 1.0), size=U) * 100
    f = rng.standard_normal((U, K * D)) * np.sqrt(np.repeat(n, D, axis=1))
    UtteranceStats([f"u{i}" for i in range(U)], n, f, "fp").save(tmp_path / "stats.h5")
    kw = dict(rank=3, iterations=2, batch_size=10)
    ref = train_tv(tmp_path / "stats.h5", rng=np.random.default_rng(0), n_jobs=1, **kw)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster),
        joblib.parallel_config(backend="dask"),
    ):
        got = train_tv(
            tmp_path / "stats.h5", rng=np.random.default_rng(0), n_jobs=2, tmp_dir=tmp_path / "work", **kw
        )
    np.testing.assert_array_equal(got.T, ref.T)  # same batches, summed in the same order
    assert not (tmp_path / "work").exists()
