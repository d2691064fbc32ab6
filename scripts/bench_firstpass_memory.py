#!/usr/bin/env python
"""Peak memory of EM's first pass against the number of chunk sources (work units).

The first pass of ``GaussianMixture.fit_stream`` keeps a uniform frame subsample for the
initialisation (``max(10,000, 200 K)`` frames for the split start). Sources that declare
their frame count (``n_frames``, as ``FeatureStore.sources`` do) let each keep only its
share of it; sources that do not keep the whole subsample size each, so memory grows
with their number. Each case runs in its own child process (peak RSS is that child's
``ru_maxrss``): synthetic sources of 200,000 frames x 60 dims (float32), K = 64, split
initialisation, one EM iteration, one job. The lower bound printed beside must be the
same with and without the declaration (the same sample, the same model).

Usage: ``python scripts/bench_firstpass_memory.py [--sources 4 16]``
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import warnings

import numpy as np


class SyntheticSource:
    """200,000 seeded Gaussian frames in chunks; ``n_frames`` only when ``declare``."""

    def __init__(self, seed: int, n: int, declare: bool) -> None:
        self.seed, self.n = seed, n
        if declare:
            self.n_frames = n

    def __call__(self):
        rng = np.random.default_rng(self.seed)
        for a in range(0, self.n, 20_000):
            yield rng.standard_normal((min(20_000, self.n - a), 60)).astype(np.float32)


def _child(n_sources: int, declare: bool, q: mp.Queue) -> None:
    from gmmspeaker.gmm import GaussianMixture

    srcs = [SyntheticSource(i, 200_000, declare) for i in range(n_sources)]
    g = GaussianMixture(64, covariance_type="diag", init="split", max_iter=1, tol=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g.fit_stream(srcs)
    q.put((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, float(g.lower_bound_)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sources", type=int, nargs="+", default=[4, 16])
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    print(f"{'sources':>8} {'frame counts':>14} {'peak RSS':>10} {'lower bound':>14}")
    for n in args.sources:
        for declare in (False, True):
            q = ctx.Queue()
            p = ctx.Process(target=_child, args=(n, declare, q))
            p.start()
            rss, lb = q.get()
            p.join()
            label = "declared" if declare else "undeclared"
            print(f"{n:>8} {label:>14} {rss:>7.0f} MiB {lb:>14.6f}")


if __name__ == "__main__":
    main()
