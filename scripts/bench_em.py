#!/usr/bin/env python
"""Seconds per EM iteration: gmmspeaker vs scikit-learn's GaussianMixture (diag).

How it measures
---------------
* Data: (1) real speech features, 20 MFCC + deltas + delta-deltas (D = 60) of every FSDD
  recording in ../shared/corpora/fsdd (about 128k frames, no VAD, per-utterance CMVN);
  (2) synthetic, N = 200,000, D = 60, drawn from a 64-component diagonal mixture (seed 0).
* Same state for everybody, two states per K, each timed from that same state:
  - ``mid``: K random frames (seed 0), equal weights and the global variance, then 5 EM
    iterations (gmmspeaker, float64): a mid-training state with soft posteriors;
  - ``sharp``: the k-means++ start of ``GaussianMixture(K, init="kmeans++")`` (seeds, one
    hard-assignment M-step; ``max_iter=0``, seed 0): what real training sees first, with
    near one-hot posteriors (most of them would underflow in float32 without the clip).
  Timing ``fit`` from its own init would flatter scikit-learn (an iteration from a random
  start is much cheaper for it), hence fixed states.
* One EM iteration = E-step + M-step. scikit-learn: ``_e_step`` + ``_m_step`` on the same
  state (its private API, to time exactly one iteration; reg_covar = 0). gmmspeaker:
  ``accumulate`` (the fused-GEMM E-step, default chunk_size, 2 threads x 1 BLAS thread) + ``m_step``.
  scikit-learn runs with its default BLAS threads (2 on this machine).
* The public fit (``--fit-ks``, default 512, FSDD only): ``GaussianMixture(K,
  covariance_type="diag", init="kmeans++", tol=0).fit(X)`` with ``max_iter=11`` minus the
  same with ``max_iter=1``, divided by 10 (seconds per EM iteration, initialisation
  excluded), against scikit-learn's ``GaussianMixture(K, covariance_type="diag",
  init_params="k-means++", tol=0)`` measured the same way; float32 (the default) and float64.
* Each case runs in its own spawned child process; peak memory is that child's
  ``ru_maxrss`` (absolute) and that minus its high-water mark after loading the data
  (what the iteration itself adds). gmmspeaker's time is the best of ``--repeat``
  iterations, scikit-learn's one iteration (it dominates the run time). Each also reports its
  CPU seconds (all threads of the process), steadier than wall time when other jobs share
  the cores.
* GFLOP/s counts the two fused GEMMs, 2 x 2 N (2D+1) K flops per iteration, and is set
  against a plain numpy matmul (N, 2D+1) @ (2D+1, K) of the same dtype, in the same run.

Usage: ``python scripts/bench_em.py [--quick] [--ks 64 256 512 1024] [--datasets fsdd synthetic]
[--states mid sharp] [--fit-ks 512]``; ``--passes``: the time of every pass of one thread's
float32 E-step instead (where the time goes against the matmul rate).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FSDD = (REPO / ".." / "shared" / "corpora" / "fsdd").resolve()


# ----------------------------------------------------------------------------------- data
def fsdd_features(cache: Path) -> np.ndarray:
    """MFCC(20) + deltas + delta-deltas of every FSDD recording, (n_frames, 60) float32."""
    if cache.is_file():
        return np.load(cache)
    import soundfile as sf

    wavs = sorted((FSDD / "recordings").glob("*.wav"))
    if not wavs:
        raise SystemExit(f"no recordings under {FSDD}/recordings")
    feats = []
    try:
        from gmmspeaker.features import FeatureConfig, extract

        cfg = FeatureConfig(sample_rate=8000, n_mfcc=20, deltas=2, vad="none", normalize="cmvn")
        for w in wavs:
            x, sr = sf.read(w, dtype="float32")
            feats.append(extract(x, cfg, name=str(w)).frames)
        how = "gmmspeaker.features.extract"
    except ImportError:  # TODO: drop once gmmspeaker.features is always available
        import librosa

        for w in wavs:
            x, sr = sf.read(w, dtype="float32")
            m = librosa.feature.mfcc(y=x, sr=sr, n_mfcc=20, n_fft=256, hop_length=80)
            f = np.concatenate(
                [
                    m,
                    librosa.feature.delta(m, mode="nearest"),
                    librosa.feature.delta(m, order=2, mode="nearest"),
                ]
            )
            feats.append(f.T.astype(np.float32))
        how = "librosa"
    X = np.ascontiguousarray(np.concatenate(feats), dtype=np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, X)
    print(
        f"# FSDD features via {how}: {len(wavs)} recordings, {X.shape[0]} frames x {X.shape[1]}", flush=True
    )
    return X


def synthetic(n: int, D: int = 60, K: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 3, (K, D))
    sd = rng.uniform(0.5, 1.5, (K, D))
    labels = rng.choice(K, size=n, p=rng.dirichlet(np.ones(K) * 2))
    return (means[labels] + rng.standard_normal((n, D)) * sd[labels]).astype(np.float32)


def mid_state(X: np.ndarray, K: int, n_iter: int = 5):
    from gmmspeaker.gmm.em import m_step
    from gmmspeaker.gmm.stats import MixtureParams, accumulate

    rng = np.random.default_rng(0)
    mu = X[rng.choice(X.shape[0], K, replace=False)].astype(np.float64)
    var = X.astype(np.float64).var(0)
    p = MixtureParams(np.full(K, 1.0 / K), mu, np.tile(var, (K, 1)), "diag")
    floor = np.maximum(1e-3 * var, 1e-6)
    for _ in range(n_iter):
        st = accumulate(X, p, dtype="float64", n_threads=2, chunk_size=2048)
        p, _ = m_step(st, covariance_type="diag", floor=floor)
    return p, floor


def sharp_state(X: np.ndarray, K: int):
    """The k-means++ start of the public fit (seeds + one hard M-step), and its variance floor."""
    from gmmspeaker.gmm import GaussianMixture
    from gmmspeaker.gmm.stats import MixtureParams

    g = GaussianMixture(K, covariance_type="diag", init="kmeans++", max_iter=0, random_state=0).fit(X)
    p = MixtureParams(g.weights_, g.means_, g.covariances_, "diag")
    return p, np.asarray(g.variance_floor_, dtype=np.float64)


# ------------------------------------------------------------------------------ children
def _rss_mib() -> float:
    """Peak RSS of this process image, MiB.

    VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across exec, so a spawned child
    would report its parent's high-water mark (data, mid-training state) as its own.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(case: str, data_path: str, state_path: str, repeat: int, q: mp.Queue) -> None:
    warnings.simplefilter("ignore")
    X = np.load(data_path)
    s = np.load(state_path)
    if case == "sklearn":
        X = X.astype(np.float64)
    base = _rss_mib()
    times: list[float] = []
    cpus: list[float] = []  # CPU seconds of the process (all its threads): steadier on a shared machine
    if case == "sklearn":
        from sklearn.mixture import GaussianMixture as SK

        K = s["weights"].shape[0]
        sk = SK(K, covariance_type="diag", reg_covar=0.0, init_params="random_from_data")
        for _ in range(repeat):
            sk.weights_, sk.means_, sk.covariances_ = (
                s["weights"].copy(),
                s["means"].copy(),
                s["covariances"].copy(),
            )
            sk.precisions_cholesky_ = 1.0 / np.sqrt(sk.covariances_)
            t, c = time.perf_counter(), time.process_time()
            _, log_resp = sk._e_step(X)
            sk._m_step(X, log_resp)
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            del log_resp
    else:
        from gmmspeaker.gmm.em import m_step
        from gmmspeaker.gmm.stats import MixtureParams, accumulate

        dtype = "float32" if case == "gmm32" else "float64"
        p = MixtureParams(s["weights"], s["means"], s["covariances"], "diag")
        accumulate(X[:4096], p, dtype=dtype)  # warm-up (thread pool, page faults)
        for _ in range(repeat):
            t, c = time.perf_counter(), time.process_time()
            st = accumulate(X, p, dtype=dtype, n_threads=2)
            m_step(st, covariance_type="diag", floor=s["floor"])
            times.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
    q.put(
        {
            "time": min(times),
            "times": times,
            "cpu": min(cpus),
            "peak_mib": _rss_mib() - base,
            "rss_mib": _rss_mib(),
        }
    )


def _fit_child(case: str, data_path: str, K: int, q: mp.Queue) -> None:
    """Seconds per iteration of the public fit: (fit with 11 iterations - fit with 1) / 10."""
    warnings.simplefilter("ignore")
    import logging

    logging.getLogger("gmmspeaker").setLevel(logging.ERROR)
    X = np.load(data_path)
    times, cpus = {}, {}
    for n_iter in (1, 11):
        if case == "sklearn":
            from sklearn.mixture import GaussianMixture as SK

            est = SK(
                K, covariance_type="diag", init_params="k-means++", tol=0.0, max_iter=n_iter, random_state=0
            )
            Xc = X.astype(np.float64)
        else:
            from gmmspeaker.gmm import GaussianMixture

            dtype = "float32" if case == "fit32" else "float64"
            est = GaussianMixture(
                K,
                covariance_type="diag",
                init="kmeans++",
                tol=0.0,
                max_iter=n_iter,
                random_state=0,
                dtype=dtype,
            )
            Xc = X
        t, c = time.perf_counter(), time.process_time()
        est.fit(Xc)
        times[n_iter] = time.perf_counter() - t
        cpus[n_iter] = time.process_time() - c
        ll = float(est.lower_bound_)
    q.put(
        {
            "per_iter": (times[11] - times[1]) / 10.0,
            "cpu_per_iter": (cpus[11] - cpus[1]) / 10.0,
            "fit1": times[1],
            "fit11": times[11],
            "ll": ll,
        }
    )


def run_fit(case: str, data_path: Path, K: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_fit_child, args=(case, str(data_path), K, q))
    p.start()
    out = q.get()
    p.join()
    return out


def run_case(case: str, data_path: Path, state_path: Path, repeat: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(case, str(data_path), str(state_path), repeat, q))
    p.start()
    out = q.get()
    p.join()
    return out


def matmul_rate(N: int, D: int, K: int, dtype: str) -> float:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((N, 2 * D + 1)).astype(dtype)
    W = rng.standard_normal((2 * D + 1, K)).astype(dtype)
    best = np.inf
    for _ in range(3):
        t = time.perf_counter()
        A @ W
        best = min(best, time.perf_counter() - t)
    return 2.0 * N * (2 * D + 1) * K / best / 1e9


# ------------------------------------------------------------------------ per-pass times
def pass_times(X: np.ndarray, K: int, state: str, reps: int = 9) -> None:
    """Time every pass of the float32 diag E-step on X's tiles, one thread, one BLAS thread.

    The passes are those of ``kernel.diag_tile`` / ``diag_unit_stats`` / ``StatSum`` /
    ``FarSum``, called one by one (the tile's operands are checked equal to
    ``kernel.diag_tile``'s, so this copy cannot drift from the kernel); CPU time of this
    thread (``time.thread_time``, ~1.4 us per reading: ~0.01 ns per frame-component per
    pass), the best of ``reps`` passes over the frames. The reference is two plain GEMMs,
    ``(N, 2D+1) @ (2D+1, K)``, at the one-thread matmul rate of the same run.
    """
    from collections import defaultdict

    from threadpoolctl import threadpool_limits

    from gmmspeaker.gmm import kernel as kn

    p = mid_state(X, K)[0] if state == "mid" else sharp_state(X, K)[0]
    prep = kn.prepare(p, np.dtype(np.float32))
    N, D = X.shape
    rows = kn.tile_rows(K)
    unit = rows * kn._UNIT_TILES
    ws = kn.DiagWorkspace(rows, K, D, prep.dtype, frames=unit)
    W = prep.W if prep.stats_W is None else prep.stats_W
    clock = time.thread_time
    R = np.empty((K, 2 * D + 1))

    def tile(Xt: np.ndarray, a: int, acc: dict) -> tuple[np.ndarray, ...]:
        n = Xt.shape[0]
        A, P, m, s = ws.A[:n], ws.L[:n], ws.m[a : a + n], ws.s[a : a + n]
        t0 = clock()
        np.subtract(Xt, prep.shift.astype(prep.dtype), out=A[:, D : 2 * D], casting="unsafe")
        np.square(A[:, D : 2 * D], out=A[:, :D])
        A[:, 2 * D] = 1.0
        t1 = clock()
        np.matmul(A, W, out=P)
        t2 = clock()
        np.max(P, axis=1, out=m)
        if not np.isfinite(m.sum()):
            m[~np.isfinite(m)] = 0.0
        t3 = clock()
        np.subtract(P, m[:, None], out=P)
        t4 = clock()
        np.maximum(P, ws.clip[:n], out=P)
        t5 = clock()
        np.exp(P, out=P)
        t6 = clock()
        np.matmul(P, ws.ones, out=s)
        t7 = clock()
        inv = np.divide(1.0, s, out=ws.inv[:n])
        np.multiply(A, inv[:, None], out=A)
        t8 = clock()
        for k, dt in (
            ("augment [(x-c)^2, x-c, 1]", t1 - t0),
            ("GEMM 1 (log-densities)", t2 - t1),
            ("row max", t3 - t2),
            ("subtract max", t4 - t3),
            ("clip at -50", t5 - t4),
            ("exp", t6 - t5),
            ("row sums (GEMV)", t7 - t6),
            ("scale frames by 1/s", t8 - t7),
        ):
            acc[k] += dt
        return P, A, m, s

    def one_pass(acc: dict) -> float:
        t_all = clock()
        for u in range(0, N, unit):
            Xu = X[u : u + unit]
            far = kn.FarSum(prep.far.size, prep.dtype) if prep.far.size else None
            stat = kn.StatSum(R, ws, kn._STAT_BLOCK, kn._STAT_GROUP)
            for a in range(0, Xu.shape[0], rows):
                P, A, m, s = tile(Xu[a : a + rows], a, acc)
                t0 = clock()
                if far is not None:
                    far.take(P, s, a)
                t1 = clock()
                stat.add(P, A)
                t2 = clock()
                acc[f"far: take ({prep.far.size} far components)"] += t1 - t0
                acc["GEMM 2 (statistics, 128-frame blocks, groups of 8)"] += t2 - t1
            t0 = clock()
            stat.flush()
            if far is not None:
                R[K - far.n_far :] += far.stats(Xu, prep.shift, True)
            nu = Xu.shape[0]
            float(np.sum(ws.m[:nu], dtype=np.float64) + np.sum(np.log(ws.s[:nu].astype(np.float64))))
            acc["per unit: flush, far product, log-likelihood"] += clock() - t0
        return clock() - t_all

    with threadpool_limits(1, "blas"):
        # this copy of the passes computes what the kernel computes
        P1, A1 = (v.copy() for v in tile(X[:rows], 0, defaultdict(float))[:2])
        P0, A0 = kn.diag_tile(X[:rows], prep, kn.DiagWorkspace(rows, K, D, prep.dtype))[:2]
        assert np.array_equal(P1, P0) and np.array_equal(A1, A0), (
            "bench_em --passes: out of step with the kernel"
        )
        best_total, best = np.inf, {}
        for _ in range(reps):
            acc: dict = defaultdict(float)
            total = one_pass(acc)
            if total < best_total:
                best_total, best = total, dict(acc)
        Ab = np.random.default_rng(0).standard_normal((N, 2 * D + 1)).astype(np.float32)
        Wb = np.random.default_rng(1).standard_normal((2 * D + 1, K)).astype(np.float32)
        mm = np.inf
        for _ in range(5):
            t = clock()
            Ab @ Wb
            mm = min(mm, clock() - t)
    el = N * K / 1e9  # ns per frame-component
    print(
        f"\nPer-pass CPU time of one thread's float32 E-step, K={K}, {state} state, N={N}, tiles of {rows} frames"
    )
    print(f"(ns per frame and component; best of {reps} passes over the frames)")
    for k, v in best.items():
        print(f"  {k:<52} {v / el:6.3f}")
    print(f"  {'timer and loop overhead':<52} {(best_total - sum(best.values())) / el:6.3f}")
    print(f"  {'total':<52} {best_total / el:6.3f}")
    print(
        f"  two GEMMs at the one-thread matmul rate ({2 * N * (2 * D + 1) * K / mm / 1e9:.1f} GF/s): "
        f"{2 * mm / el:.3f} ns -> the E-step at {100 * 2 * mm / best_total:.0f} % of the matmul rate"
    )


# -------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="K in {64, 256}, a quarter of the frames, 1 repeat")
    ap.add_argument("--ks", type=int, nargs="+", default=None)
    ap.add_argument("--datasets", nargs="+", default=["fsdd", "synthetic"], choices=["fsdd", "synthetic"])
    ap.add_argument("--states", nargs="+", default=["mid", "sharp"], choices=["mid", "sharp"])
    ap.add_argument("--fit-ks", type=int, nargs="*", default=None, help="K of the public-fit timing (FSDD)")
    ap.add_argument("--repeat", type=int, default=None, help="timed iterations per case (best kept)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gmmspeaker-bench"))
    ap.add_argument(
        "--passes",
        action="store_true",
        help="only the per-pass times of one thread's E-step (FSDD, --ks, --states)",
    )
    args = ap.parse_args()
    import logging

    logging.getLogger("gmmspeaker").setLevel(logging.ERROR)  # the 5 warm-up iterations may re-seed
    ks = args.ks or ([64, 256] if args.quick else [64, 256, 512, 1024])
    repeat = args.repeat or (1 if args.quick else 2)
    if args.fit_ks is None:
        args.fit_ks = [] if args.quick else [512]
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.passes:
        X = fsdd_features(args.workdir / "fsdd_mfcc60.npy")
        for K in args.ks or [512, 1024]:
            for state in args.states:
                pass_times(X, K, state)
        return

    rows = []
    fit_rows: list[tuple[str, int, int, dict]] = []
    t_start = time.perf_counter()
    for name in args.datasets:
        if name == "fsdd":
            if not (FSDD / "recordings").is_dir():
                print(f"# skipping fsdd: corpus not found at {FSDD}")
                continue
            X = fsdd_features(args.workdir / "fsdd_mfcc60.npy")
        else:
            X = synthetic(200_000)
        if args.quick:
            X = X[: X.shape[0] // 4]
        N, D = X.shape
        data_path = args.workdir / f"{name}_data.npy"
        np.save(data_path, X)
        print(f"# {name}: N={N} D={D}", flush=True)
        for K in ks:
            for state in args.states:
                p, floor = mid_state(X, K) if state == "mid" else sharp_state(X, K)
                state_path = args.workdir / f"{name}_K{K}_{state}_state.npz"
                np.savez(state_path, weights=p.weights, means=p.means, covariances=p.covariances, floor=floor)
                flops = 2 * 2.0 * N * (2 * D + 1) * K
                # scikit-learn: one timed iteration (it dominates the run time and varies little)
                res = {
                    c: run_case(c, data_path, state_path, 1 if c == "sklearn" else repeat)
                    for c in ("sklearn", "gmm32", "gmm64")
                }
                mm32, mm64 = matmul_rate(N, D, K, "float32"), matmul_rate(N, D, K, "float64")
                row = {
                    "data": name,
                    "state": state,
                    "N": N,
                    "K": K,
                    "sk_s": res["sklearn"]["time"],
                    "g32_s": res["gmm32"]["time"],
                    "g64_s": res["gmm64"]["time"],
                    "x32": res["sklearn"]["time"] / res["gmm32"]["time"],
                    "x64": res["sklearn"]["time"] / res["gmm64"]["time"],
                    "cpu_x32": res["sklearn"]["cpu"] / res["gmm32"]["cpu"],
                    "sk_cpu": res["sklearn"]["cpu"],
                    "g32_cpu": res["gmm32"]["cpu"],
                    "gf32": flops / res["gmm32"]["time"] / 1e9,
                    "mm32": mm32,
                    "gf64": flops / res["gmm64"]["time"] / 1e9,
                    "mm64": mm64,
                    "sk_mib": res["sklearn"]["peak_mib"],
                    "g32_mib": res["gmm32"]["peak_mib"],
                    "g64_mib": res["gmm64"]["peak_mib"],
                    "sk_rss": res["sklearn"]["rss_mib"],
                    "g32_rss": res["gmm32"]["rss_mib"],
                    "g64_rss": res["gmm64"]["rss_mib"],
                }
                rows.append(row)
                print(
                    f"  K={K} {state}: sklearn {row['sk_s']:.3f}s  f32 {row['g32_s']:.3f}s ({row['x32']:.1f}x, "
                    f"{100 * row['gf32'] / mm32:.0f} % of matmul)  f64 {row['g64_s']:.3f}s ({row['x64']:.1f}x); "
                    f"CPU s sklearn {row['sk_cpu']:.2f} f32 {row['g32_cpu']:.3f} ({row['cpu_x32']:.1f}x)",
                    flush=True,
                )
        if name == "fsdd":
            for K in args.fit_ks:
                fr = {c: run_fit(c, data_path, K) for c in ("sklearn", "fit32", "fit64")}
                fit_rows.append((name, N, K, fr))
                print(
                    f"  fit K={K}: sklearn {fr['sklearn']['per_iter']:.3f}s/it  f32 {fr['fit32']['per_iter']:.3f}s/it "
                    f"({fr['sklearn']['per_iter'] / fr['fit32']['per_iter']:.1f}x)  f64 "
                    f"{fr['fit64']['per_iter']:.3f}s/it ({fr['sklearn']['per_iter'] / fr['fit64']['per_iter']:.1f}x); "
                    f"CPU s/it sklearn {fr['sklearn']['cpu_per_iter']:.2f} f32 {fr['fit32']['cpu_per_iter']:.3f} "
                    f"({fr['sklearn']['cpu_per_iter'] / fr['fit32']['cpu_per_iter']:.1f}x)",
                    flush=True,
                )

    print()
    print(
        "Seconds per EM iteration (diag; state mid = mid-training, sharp = k-means++ start; sklearn 1 iteration, gmmspeaker best of "
        f"{repeat}); peak RSS of each case's own process (data + interpreter + iteration), and the extra "
        "over its high-water mark after loading the data"
    )
    head = (
        f"{'data':<9} {'state':<5} {'N':>7} {'K':>5} | {'sklearn s':>9} {'f32 s':>7} {'x':>5} {'f64 s':>7} {'x':>5} | "
        f"{'f32 GF/s':>8} {'%mm':>4} {'f64 GF/s':>8} {'%mm':>4} | {'peak RSS MiB sk/f32/f64':>23} | {'extra MiB sk/f32/f64':>20}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['data']:<9} {r['state']:<5} {r['N']:>7} {r['K']:>5} | {r['sk_s']:>9.3f} {r['g32_s']:>7.3f} {r['x32']:>5.1f} "
            f"{r['g64_s']:>7.3f} {r['x64']:>5.1f} | {r['gf32']:>8.1f} {100 * r['gf32'] / r['mm32']:>4.0f} "
            f"{r['gf64']:>8.1f} {100 * r['gf64'] / r['mm64']:>4.0f} | {r['sk_rss']:>7.0f} {r['g32_rss']:>7.0f} {r['g64_rss']:>7.0f} "
            f"| {r['sk_mib']:>6.0f} {r['g32_mib']:>6.0f} {r['g64_mib']:>6.0f}"
        )
    if fit_rows:
        print(
            "\nPublic fit, seconds per EM iteration = (fit with max_iter=11 - fit with max_iter=1) / 10, "
            "both from k-means++ (seed 0), tol=0"
        )
        print(
            f"{'data':<9} {'N':>7} {'K':>5} | {'sklearn':>8} {'f32':>7} {'x':>5} {'f64':>7} {'x':>5} | final mean log-lik sk/f32/f64"
        )
        for name, N, K, fr in fit_rows:
            sk, f32, f64 = fr["sklearn"], fr["fit32"], fr["fit64"]
            print(
                f"{name:<9} {N:>7} {K:>5} | {sk['per_iter']:>8.3f} {f32['per_iter']:>7.3f} "
                f"{sk['per_iter'] / f32['per_iter']:>5.1f} {f64['per_iter']:>7.3f} {sk['per_iter'] / f64['per_iter']:>5.1f} | "
                f"{sk['ll']:.4f} {f32['ll']:.4f} {f64['ll']:.4f}"
            )
    print(
        f"\n(total {time.perf_counter() - t_start:.0f} s; matmul rates measured in this run; "
        f"machine: {mp.cpu_count()} cores)"
    )


if __name__ == "__main__":
    sys.exit(main())
