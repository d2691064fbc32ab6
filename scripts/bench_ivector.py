#!/usr/bin/env python
"""Seconds per total-variability EM iteration and per extracted i-vector, with peak memory.

How it measures
---------------
* Data: generated Baum-Welch statistics at K = 256, D = 60 (whitened space) for U
  utterances of about 3 s (``--frames`` 300 frames, +-20 %): zeroth order a Dirichlet
  allocation of the frames over the components (concentration 0.3, a few dominant
  components per utterance as with real speech), first order drawn from a rank-R model,
  ``f_uk = n_uk T_k^T w_u + N(0, n_uk I)``. They are written once per U to an HDF5
  statistics file under ``--workdir`` (seed 0) and training reads them from that file, so
  the memory of training itself does not include the statistics.
* Each case runs in a spawned child process: ``train_tv`` with ``--iterations``
  iterations; seconds per iteration is the mean time between the end of the first and
  the end of the last iteration (the first one also starts the joblib workers). Then
  ``extract_ivectors`` on all U utterances (seconds per i-vector).
* Peak memory: VmHWM of the child (and, with ``--jobs`` > 1, of each loky worker, read
  from /proc at the end of every iteration: train_tv stops its workers on return),
  minus the child's VmHWM after imports.
* GFLOP/s counts the big products of one iteration: the precision GEMM and the
  second-moment GEMM (2 x 2 U K R(R+1)/2), ``T f`` and ``E[w] f^T`` (2 x 2 U KD R), the
  Cholesky and ``potri`` (U R^3), and is set against a plain float64 GEMM of the
  precision shape measured in the same child (the machine is shared: the ratio is the
  stable number). The load average at the start and the end of each case is printed.

Usage: ``python scripts/bench_ivector.py [--sizes 1250 2500] [--jobs 1 2] [--rank 300]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np


def make_stats(path: Path, U: int, K: int, D: int, R: int, frames: int, seed: int = 0) -> None:
    """Write generated statistics for U utterances to ``path`` (batch by batch)."""
    import h5py

    from gmmspeaker.ivector.stats import UtteranceStats

    if path.is_file():
        return
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((R, K * D)) * 0.3 / np.sqrt(R)
    tmp = path.with_suffix(".tmp.h5")
    # the file layout of UtteranceStats.save, written in batches so memory stays small
    UtteranceStats([f"u{i}" for i in range(1)], np.ones((1, K)), np.zeros((1, K * D))).save(tmp)
    with h5py.File(tmp, "a") as h5:
        for name in ("ids", "n", "f"):
            del h5[name]
        h5.create_dataset(
            "ids",
            data=np.array([f"u{i:06d}" for i in range(U)], dtype=object),
            dtype=h5py.string_dtype("utf-8"),
        )
        dn = h5.create_dataset("n", shape=(U, K), dtype=np.float64)
        df = h5.create_dataset("f", shape=(U, K * D), dtype=np.float64, chunks=(min(U, 256), K * D))
        for a in range(0, U, 256):
            b = min(U, a + 256)
            tot = frames * rng.uniform(0.8, 1.2, b - a)
            n = rng.dirichlet(np.full(K, 0.3), size=b - a) * tot[:, None]
            w = rng.standard_normal((b - a, R))
            f = (w @ T).reshape(b - a, K, D) * n[:, :, None]
            f += rng.standard_normal(f.shape) * np.sqrt(n)[:, :, None]
            dn[a:b] = n
            df[a:b] = f.reshape(b - a, K * D)
    os.replace(tmp, path)


def _status(pid: int | str, key: str) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            ppid = _status(d, "PPid") * 1024.0
            kids.setdefault(int(ppid), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def _gemm_rate(K: int, R: int) -> float:
    rng = np.random.default_rng(0)
    P = R * (R + 1) // 2
    A, B = rng.random((256, K)), rng.random((K, P))
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        A @ B
        best = min(best, time.perf_counter() - t)
    return 2.0 * 256 * K * P / best / 1e9


class _IterationClock:
    """A logging handler that notes the time of every "T-matrix EM iteration" record."""

    def __init__(self) -> None:
        import logging

        class _H(logging.Handler):
            def emit(h, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("T-matrix EM iteration"):
                    self.times.append(time.perf_counter())
                    # the loky workers stop when train_tv returns: read their peaks now
                    peaks = [_status(p, "VmHWM") for p in _descendants(os.getpid())]
                    self.worker_mib = max([self.worker_mib, *peaks])

        self.times: list[float] = []
        self.worker_mib = 0.0
        self.handler = _H()
        lg = logging.getLogger("gmmspeaker.ivector.tv")
        lg.setLevel(logging.INFO)
        lg.addHandler(self.handler)


def _child(path: str, rank: int, iterations: int, jobs: int, batch: int, dtype: str, q: mp.Queue) -> None:
    import scipy.linalg.lapack  # noqa: F401  (imports are not part of an iteration)

    from gmmspeaker.ivector.tv import extract_ivectors, train_tv

    rate = _gemm_rate(256, rank)
    base = _status("self", "VmHWM")
    load0 = os.getloadavg()[0]
    clock = _IterationClock()
    t0 = time.perf_counter()
    tv = train_tv(
        path,
        rank=rank,
        iterations=iterations,
        rng=np.random.default_rng(0),
        n_jobs=jobs,
        batch_size=batch,
        dtype=dtype,
    )
    ticks = clock.times
    # the first iteration includes starting the workers: time the later ones
    it_s = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else ticks[0] - t0
    t = time.perf_counter()
    iv = extract_ivectors(tv, path, batch_size=batch, dtype=dtype)
    t_ext = time.perf_counter() - t
    q.put(
        {
            "it_s": it_s,
            "first_s": ticks[0] - t0,
            "ext_ms": 1e3 * t_ext / iv.shape[0],
            "peak_mib": _status("self", "VmHWM") - base,
            "worker_mib": clock.worker_mib,
            "gemm_gflops": rate,
            "load": (load0, os.getloadavg()[0]),
            "trace": tv.log_likelihood,
        }
    )


def run_case(path: Path, rank: int, iterations: int, jobs: int, batch: int, dtype: str) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(path), rank, iterations, jobs, batch, dtype, q))
    p.start()
    out = q.get()
    # train_tv shuts its loky workers down on return; before that (issue #22) the child
    # joined them at exit and hung for loky's 300 s idle timeout
    p.join(timeout=60)
    if p.is_alive():
        p.kill()
        p.join()
        raise SystemExit(f"child {p.pid} did not exit within 60 s of reporting (killed)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1250, 2500], help="numbers of utterances U")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--components", type=int, default=256)
    ap.add_argument("--dims", type=int, default=60)
    ap.add_argument("--rank", type=int, default=300)
    ap.add_argument("--frames", type=int, default=300, help="frames per utterance (100 per second)")
    ap.add_argument("--iterations", type=int, default=3, help="timed: all but the first")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gmmspeaker-bench-ivector"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    K, D, R = args.components, args.dims, args.rank
    flops_per_utt = 2 * 2.0 * K * R * (R + 1) / 2 + 2 * 2.0 * K * D * R + R**3
    rows = []
    for U in args.sizes:
        path = args.workdir / f"stats-K{K}-D{D}-R{R}-U{U}.h5"
        make_stats(path, U, K, D, R, args.frames)
        for jobs in args.jobs:
            r = run_case(path, R, args.iterations, jobs, args.batch_size, args.dtype)
            r.update(U=U, jobs=jobs, gflops=flops_per_utt * U / r["it_s"] / 1e9)
            rows.append(r)
            print(
                f"  U={U} jobs={jobs}: {r['it_s']:.2f} s/iteration, {r['ext_ms']:.2f} ms/i-vector, "
                f"peak +{r['peak_mib']:.0f} MiB (workers {r['worker_mib']:.0f} MiB), "
                f"load {r['load'][0]:.1f}->{r['load'][1]:.1f}",
                flush=True,
            )
    print()
    print(f"K={K} D={D} R={R}, ~{args.frames} frames/utterance, batch {args.batch_size}, {args.dtype}")
    print(
        "| U | jobs | s / EM iteration | ms / i-vector | GFLOP/s (plain GEMM) | "
        "peak MiB child (+ per worker) | objective per utt. (it 1 -> last) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        tr = r["trace"]
        workers = f" (+{r['worker_mib']:.0f})" if r["worker_mib"] else ""
        print(
            f"| {r['U']} | {r['jobs']} | {r['it_s']:.2f} | {r['ext_ms']:.2f} | "
            f"{r['gflops']:.1f} ({r['gemm_gflops']:.1f}) | {r['peak_mib']:.0f}{workers} | "
            f"{tr[0] / r['U']:.1f} -> {tr[-1] / r['U']:.1f} |"
        )


if __name__ == "__main__":
    main()
