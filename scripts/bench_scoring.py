"""Benchmark LLR scoring: trials per second of full, top-C and linear scoring.

Random diagonal UBM (K = 512, 1024; D = 60), random mean-adapted models, synthetic test
utterances of 300 frames (3 s), 1 or 10 models per test utterance. Ratios are against
full scoring done trial by trial (the UBM pass redone for every trial). A
``ScoringContext`` is built once per setting, outside the timings (its cost is printed).

Usage::

    python scripts/bench_scoring.py [--threads 1] [--tests 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
import types
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from gmmspeaker.gmm.kernel import logsumexp, top_c
from gmmspeaker.gmm.map import SpeakerModels
from gmmspeaker.scoring import llr
from gmmspeaker.scoring.llr import ScoringContext, score_prepared

D = 60
T = 300
C = 5


def make_world(rng: np.random.Generator, k: int, n_models: int, n_tests: int):
    ubm = types.SimpleNamespace(
        weights_=rng.dirichlet(np.ones(k)),
        means_=rng.normal(size=(k, D)),
        covariances_=rng.uniform(0.5, 2.0, size=(k, D)),
    )
    means = (ubm.means_[None] + 0.2 * rng.normal(size=(n_models, k, D))).astype(np.float32)
    models = SpeakerModels(
        model_ids=[f"m{i}" for i in range(n_models)],
        means=means,
        counts=np.ones((n_models, k)),
    )
    tests = [rng.normal(size=(T, D)).astype(np.float32) for _ in range(n_tests)]
    return ubm, models, tests


def best_time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def naive_full_trial(X: np.ndarray, ubm, mu_s: np.ndarray) -> float:
    """Textbook per-trial full scoring: two complete GMM evaluations, float32 GEMMs."""
    out = []
    for mu in (ubm.means_, mu_s):
        prec = 1.0 / ubm.covariances_
        w = np.concatenate([-0.5 * prec, prec * mu], axis=1).T.astype(np.float32)
        c = np.log(ubm.weights_) - 0.5 * (
            D * np.log(2 * np.pi) + np.log(ubm.covariances_).sum(1) + (prec * mu * mu).sum(1)
        )
        L = (np.concatenate([X * X, X], axis=1) @ w).astype(np.float64) + c
        out.append(logsumexp(L))
    return float(np.mean(out[1] - out[0]))


def run_setting(
    k: int, m: int, n_tests: int, repeat: int, rng: np.random.Generator
) -> list[tuple[str, float]]:
    ubm, models, tests = make_world(rng, k, m, n_tests)
    t0 = time.perf_counter()
    ctx = ScoringContext.build(ubm, models)
    build = time.perf_counter() - t0
    rows = np.arange(m)
    n_trials = n_tests * m
    means64 = models.means.astype(np.float64)

    def per_trial(method: str, select: str = "argmax") -> Callable[[], None]:
        def f() -> None:
            for X in tests:
                for i in rows:
                    score_prepared(X, ctx, [i], method=method, top_c=C, selection=select)

        return f

    def grouped(method: str, select: str = "argmax") -> Callable[[], None]:
        def f() -> None:
            for X in tests:
                score_prepared(X, ctx, rows, method=method, top_c=C, selection=select)

        return f

    def top_c_shared_ubm_model_loop() -> None:
        # UBM pass and top-C selection shared per test, models looped in Python.
        for X in tests:
            Xd = np.ascontiguousarray(X, dtype=ctx.dtype)
            Lu = llr._ubm_logdens(Xd, ctx)
            idx = top_c(Lu, C, method="argmax")
            lu = np.take_along_axis(Lu, idx, 1)
            lse_u = logsumexp(lu)
            for i in rows:
                dl = np.einsum("tcd,td->tc", ctx.d_lin[i][idx], Xd)
                lm = lu + dl + ctx.d_const[i][idx]
                float(np.mean(logsumexp(lm) - lse_u))

    def naive() -> None:
        for X in tests:
            for i in rows:
                naive_full_trial(X, ubm, means64[i])

    cases: list[tuple[str, Callable[[], None]]] = [
        ("full, trial by trial (baseline)", per_trial("full")),
        ("full, textbook prototype, trial by trial", naive),
        ("top-C, trial by trial (argmax)", per_trial("top_c")),
        ("top-C, trial by trial (argpartition)", per_trial("top_c", "argpartition")),
    ]
    if m > 1:
        cases += [("top-C, shared UBM pass, models in a Python loop", top_c_shared_ubm_model_loop)]
    cases += [
        ("full, grouped by test, vectorised", grouped("full")),
        ("top-C, grouped by test, vectorised (argmax)", grouped("top_c")),
        ("top-C, grouped by test, vectorised (argpartition)", grouped("top_c", "argpartition")),
        ("linear, grouped by test, vectorised", grouped("linear")),
    ]
    out = [("context build (s, once)", build)]
    for name, fn in cases:
        out.append((name, n_trials / best_time(fn, repeat)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    ap.add_argument("--tests", type=int, default=20, help="test utterances per setting")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with threadpool_limits(args.threads):
        # Top-C selection alone.
        L = rng.normal(size=(T, 1024))
        ta = best_time(lambda: top_c(L, C, method="argmax"), 20)
        tp = best_time(lambda: top_c(L, C, method="argpartition"), 20)
        print(
            f"top-{C} selection on ({T}, 1024): {C} rounds of argmax {ta * 1e3:.3f} ms, "
            f"argpartition {tp * 1e3:.3f} ms (argpartition / argmax = {tp / ta:.2f})"
        )
        print(
            f"D={D}, T={T} frames, C={C}, {args.tests} test utterances, "
            f"BLAS threads={args.threads}, best of {args.repeat}\n"
        )
        print(f"{'K':>5} {'models/test':>11}  {'method':<50} {'trials/s':>10} {'x full':>7}")
        for k in (512, 1024):
            for m in (1, 10):
                res = run_setting(k, m, args.tests, args.repeat, rng)
                base = res[1][1]
                for name, val in res:
                    if name.startswith("context"):
                        print(f"{k:>5} {m:>11}  {name:<50} {val:>10.4f} {'':>7}")
                    else:
                        print(f"{k:>5} {m:>11}  {name:<50} {val:>10.0f} {val / base:>7.1f}")
                print()


if __name__ == "__main__":
    main()
