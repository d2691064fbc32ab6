#!/usr/bin/env python
"""Seconds per U-matrix (ISV) EM iteration and peak memory, beside the T matrix in the same run.

How it measures
---------------
* Data: the generated statistics of ``scripts/bench_ivector.py`` (``make_stats``: K = 256,
  D = 60, about 300 frames per recording, first order from a rank-100 model), written once
  to an HDF5 file under ``--workdir``; the recordings are labelled as ``--per-speaker``
  consecutive recordings per speaker (2,500 recordings = 250 speakers x 10). Training
  reads batches from the file, so its memory does not include the statistics.
* Each case runs in a spawned child process, one after the other (the machine is shared):
  ``train_isv`` (rank R_u) or ``train_tv`` (rank R) with ``--iterations`` iterations,
  ``n_jobs=1`` (threads inside the batches); seconds per iteration is the mean time
  between the ends of the first and the last iteration.
* Peak memory: the child's VmHWM at the end minus its VmHWM after the imports.
* The load average at the start and end of each case is printed beside it.

Usage: ``python scripts/bench_isv.py [--recordings 2500] [--isv-ranks 50 100] [--tv-ranks 100 300]``
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _make_stats():
    spec = importlib.util.spec_from_file_location("bench_ivector", HERE / "bench_ivector.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.make_stats


def _vmhwm() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _child(
    kind: str, path: str, rank: int, iterations: int, per_speaker: int, batch: int, q: mp.Queue
) -> None:
    import logging

    import h5py

    from gmmspeaker.isv.train import train_isv
    from gmmspeaker.ivector.tv import train_tv

    with h5py.File(path, "r") as h5:
        ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
    speakers = {u: f"s{i // per_speaker:05d}" for i, u in enumerate(ids)}
    ticks: list[float] = []
    prefix = "U-matrix EM iteration" if kind == "isv" else "T-matrix EM iteration"

    class _Clock(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith(prefix):
                ticks.append(time.perf_counter())

    for name in ("gmmspeaker.isv.train", "gmmspeaker.ivector.tv"):
        lg = logging.getLogger(name)
        lg.setLevel(logging.INFO)
        lg.addHandler(_Clock())
    base = _vmhwm()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    if kind == "isv":
        model = train_isv(
            path, speakers, rank=rank, relevance=16.0, iterations=iterations, rng=rng, batch_size=batch
        )
        trace = model.log_likelihood
    else:
        trace = train_tv(path, rank=rank, iterations=iterations, rng=rng, batch_size=batch).log_likelihood
    it_s = (ticks[-1] - ticks[0]) / (len(ticks) - 1) if len(ticks) > 1 else ticks[0] - t0
    q.put(
        {
            "it_s": it_s,
            "first_s": ticks[0] - t0,
            "peak_mib": _vmhwm() - base,
            "load": (load0, os.getloadavg()[0]),
            "trace": tuple(trace),
        }
    )


def run_case(kind: str, path: Path, rank: int, iterations: int, per_speaker: int, batch: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, str(path), rank, iterations, per_speaker, batch, q))
    p.start()
    out = q.get()
    p.join(timeout=60)
    if p.is_alive():
        p.kill()
        p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recordings", type=int, default=2500)
    ap.add_argument("--per-speaker", type=int, default=10)
    ap.add_argument("--components", type=int, default=256)
    ap.add_argument("--dims", type=int, default=60)
    ap.add_argument("--isv-ranks", type=int, nargs="*", default=[50, 100])
    ap.add_argument("--tv-ranks", type=int, nargs="*", default=[100, 300])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--iterations", type=int, default=3, help="timed: all but the first")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gmmspeaker-bench-isv"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    K, D, U = args.components, args.dims, args.recordings
    path = args.workdir / f"stats-K{K}-D{D}-R100-U{U}.h5"
    _make_stats()(path, U, K, D, 100, args.frames)
    rows = []
    cases = [("isv", r) for r in args.isv_ranks] + [("tv", r) for r in args.tv_ranks]
    for kind, rank in cases:
        r = run_case(kind, path, rank, args.iterations, args.per_speaker, args.batch_size)
        r.update(kind=kind, rank=rank)
        rows.append(r)
        print(
            f"  {kind} rank {rank}: {r['it_s']:.2f} s/iteration (first {r['first_s']:.1f} s), "
            f"peak +{r['peak_mib']:.0f} MiB, load {r['load'][0]:.1f}->{r['load'][1]:.1f}",
            flush=True,
        )
    print()
    print(
        f"K={K} D={D}, {U} recordings ({U // args.per_speaker} speakers x {args.per_speaker}), "
        f"~{args.frames} frames each, batch {args.batch_size}, float64, n_jobs=1"
    )
    print("| matrix | rank | s / EM iteration | peak MiB | objective per recording (it 1 -> last) | load |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        tr = r["trace"]
        name = "U (ISV)" if r["kind"] == "isv" else "T (i-vector)"
        print(
            f"| {name} | {r['rank']} | {r['it_s']:.2f} | {r['peak_mib']:.0f} | "
            f"{tr[0] / U:.1f} -> {tr[-1] / U:.1f} | {r['load'][0]:.1f}-{r['load'][1]:.1f} |"
        )


if __name__ == "__main__":
    main()
