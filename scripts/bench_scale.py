#!/usr/bin/env python
"""Scale benchmark: wall time per recipe stage and peak RSS, synthetic corpus of growing size.

What it runs
------------
For every size (number of target speakers; default 100, 300 and 1000) a recipe is written
to ``<workdir>/spk<N>/recipe.yaml`` with ``data: synthetic:`` (per speaker 8 UBM + 3
enrollment + 2 test utterances of 3 s on average, so 1000 speakers give about 10.8 hours
of audio; 10 nontarget models per test utterance keep the trial count linear in the
speakers), the 8 kHz front end of ``configs/features-8k.yaml`` (60 dims), a 64-component
UBM trained by binary splitting, mean-only MAP and top-5 scoring.

How it measures
---------------
* Every step runs in its own child process (this script re-invoked with ``--child``):
  first the corpus generation (``generate_corpus``, not a pipeline stage, timed apart),
  then each stage alone through the public runner,
  ``run_recipe(recipe, workdir=..., from_stage=S, until_stage=S)``; its
  ``RunResult.seconds[S]`` is the stage's wall time.
* Peak RSS of the child ("main") is its own ``ru_maxrss``. Its joblib (loky) workers are
  sampled every 0.2 s by a thread of the child: the kernel's per-process high-water mark
  (``VmHWM`` in ``/proc/<pid>/status``) of every descendant; "workers" is the largest of
  them. "tree" is the largest sampled sum of the resident sizes of the child and its
  descendants at one instant. "base" is the child's RSS after importing the package
  (before any work): main - base is what the stage itself needs.
* CPU seconds: the child's own user+system time plus the last sampled user+system time of
  its descendants; less sensitive than wall time to other jobs on the shared cores.
* UBM seconds per EM iteration: the EM loop logs one DEBUG record per iteration
  (``gmmspeaker.gmm.em``); the time between a main-phase (full size) iteration's record
  and the record before it is one iteration (E-step over every frame + M-step). The
  median over the main-phase iterations is reported.
* K sweep: on the feature store of one size (default the largest), ``train_ubm`` with
  ``init="kmeans++"`` (no splitting phase) for each K, a few iterations, each K in its own
  child; the median interval between iteration records 2..n is seconds per iteration.
* Growth factors are relative to the smallest size: frames ratio, time ratio, time per
  frame ratio (1.0 = linear) and peak RSS ratio (1.0 = flat).

Usage::

    python scripts/bench_scale.py                       # 100, 300, 1000 speakers (~10.8 h)
    python scripts/bench_scale.py --quick               # 20, 60, 200 speakers (smoke run)
    python scripts/bench_scale.py --sizes 50,500 --jobs 2 --workdir /tmp/scale --ks 32,64,128
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAGES = ("features", "ubm", "enroll", "score", "evaluate")
_TICK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------ process tree
def _children_of(pid: int) -> list[int]:
    """Every descendant pid of ``pid`` (psutil if installed, else a /proc scan)."""
    try:
        import psutil

        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    except ImportError:
        pass
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
            parent[int(entry)] = int(rest[1])
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _status_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) of a process in KiB; (0, 0) when it is gone."""
    hwm = rss = 0
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return hwm, rss


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / _TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


class TreeMonitor:
    """Samples the descendants of this process every ``interval`` seconds in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.pid = os.getpid()
        self.hwm: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.tree_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        _, own = _status_kib(self.pid)
        total = own
        for c in _children_of(self.pid):
            hwm, rss = _status_kib(c)
            if hwm:
                self.hwm[c] = max(self.hwm.get(c, 0), hwm)
                total += rss
            cpu = _cpu_seconds(c)
            if cpu is not None:
                self.cpu[c] = cpu
        self.tree_peak = max(self.tree_peak, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


class _Records(logging.Handler):
    """Keeps (time, logger, message) of every record it sees."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.items: list[tuple[float, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.items.append((record.created, record.name, record.getMessage()))


_MAIN_ITER = re.compile(r"EM run \d+, iter (\d+):")
_SPLIT_ITER = re.compile(r"EM run \d+, split size (\d+), iter (\d+):")
_UBM_FRAMES = re.compile(r"UBM on (\d+) frames of (\d+) utterances")


def _em_timings(items: list[tuple[float, str, str]]) -> dict[str, Any]:
    """Per-iteration intervals from the EM log records (see the module docstring)."""
    em = [(t, m) for t, name, m in items if name == "gmmspeaker.gmm.em"]
    main: list[float] = []
    split: dict[int, list[float]] = {}
    for (t0, _), (t1, msg) in zip(em[:-1], em[1:]):
        if _MAIN_ITER.search(msg):
            main.append(t1 - t0)
        elif (m := _SPLIT_ITER.search(msg)) is not None:
            split.setdefault(int(m.group(1)), []).append(t1 - t0)
    out: dict[str, Any] = {"iter_seconds": main, "split_iter_seconds": {str(k): v for k, v in split.items()}}
    for _, _name, msg in items:
        if (m := _UBM_FRAMES.search(msg)) is not None:
            out["ubm_frames"], out["ubm_utterances"] = int(m.group(1)), int(m.group(2))
    return out


# ------------------------------------------------------------------------------ child
def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one step in this (child) process and measure it."""
    import joblib
    import numpy as np  # noqa: F401

    import gmmspeaker.features
    import gmmspeaker.gmm.model
    import gmmspeaker.store  # noqa: F401
    from gmmspeaker.recipe.config import load_recipe
    from gmmspeaker.recipe.runner import run_recipe

    base = _status_kib(os.getpid())[1]
    rec_handler = _Records()
    for name in ("gmmspeaker.gmm.em", "gmmspeaker.gmm.batch"):
        lg = logging.getLogger(name)
        lg.addHandler(rec_handler)
        lg.setLevel(logging.DEBUG)
    wd = Path(spec["workdir"])
    recipe_path = wd / "recipe.yaml"
    mon = TreeMonitor()
    load0 = os.getloadavg()[0]
    mon.start()
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    kind = spec["kind"]
    if kind == "corpus":
        import soundfile as sf

        from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

        recipe = load_recipe(recipe_path)
        assert recipe.data.synthetic is not None
        cfg = SyntheticCorpusConfig.from_dict(recipe.data.synthetic)
        out["cached"] = (wd / "corpus" / "corpus.json").is_file()
        generate_corpus(wd / "corpus", cfg, n_jobs=int(spec["jobs"]))
        out["seconds"] = time.perf_counter() - t0
        wavs = sorted((wd / "corpus" / "wav").rglob("*.wav"))
        out["n_files"] = len(wavs)
        out["audio_seconds"] = float(sum(sf.info(str(w)).duration for w in wavs))
    elif kind == "stage":
        stage = spec["stage"]
        res = run_recipe(recipe_path, workdir=wd, jobs=int(spec["jobs"]), from_stage=stage, until_stage=stage)
        if res.actions.get(stage) != "ran":
            raise SystemExit(f"stage {stage} did not run: {res.actions}")
        out["seconds"] = float(res.seconds[stage])
        try:
            out["record"] = json.loads((wd / "stages" / f"{stage}.json").read_text())
            out["record"].pop("history", None)
        except (OSError, ValueError):
            pass
        if stage == "features":
            from gmmspeaker.store import FeatureStore

            store = FeatureStore(wd / "features")
            out["all_frames"] = int(sum(store.n_frames(u) for u in store.ids))
            out["n_utterances"] = len(store)
        if stage == "ubm":
            out.update(_em_timings(rec_handler.items))
    elif kind == "ksweep":
        import joblib

        from gmmspeaker.corpora.lists import read_ubm_list
        from gmmspeaker.gmm.batch import train_ubm
        from gmmspeaker.store import FeatureStore

        ids = [
            u.utt_id for u in read_ubm_list(wd / "corpus" / "ubm.txt", root=wd / "corpus", check_exists=False)
        ]
        with joblib.parallel_config(backend="loky", n_jobs=int(spec["jobs"])):
            train_ubm(
                FeatureStore(wd / "features"),
                ids,
                components=int(spec["components"]),
                iterations=int(spec["iterations"]),
                init="kmeans++",
                tol=None,
                seed=0,
                jobs=int(spec["jobs"]),
            )
        out["seconds"] = time.perf_counter() - t0
        out.update(_em_timings(rec_handler.items))
    elif kind == "stream":
        from gmmspeaker.corpora.lists import read_ubm_list
        from gmmspeaker.store import FeatureStore

        store = FeatureStore(wd / "features")
        ids = sorted(
            u.utt_id for u in read_ubm_list(wd / "corpus" / "ubm.txt", root=wd / "corpus", check_exists=False)
        )
        sources = store.sources(ids, n_parts=8, chunk_frames=20_000)
        passes = []
        for _ in range(2):  # the first pass warms the page cache; the second is reported
            t1, n = time.perf_counter(), 0
            for src in sources:
                for chunk in src():
                    n += chunk.shape[0]
            passes.append(time.perf_counter() - t1)
        out.update(seconds=passes[-1], pass_seconds=passes, ubm_frames=n, ubm_utterances=len(ids))
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    mon.stop()
    own = resource.getrusage(resource.RUSAGE_SELF)
    out.update(
        main_peak_kib=int(own.ru_maxrss),
        base_kib=int(base),
        workers_peak_kib=max(mon.hwm.values(), default=0),
        n_descendants=len(mon.hwm),
        tree_peak_kib=int(max(mon.tree_peak, own.ru_maxrss)),
        cpu_seconds=float(own.ru_utime + own.ru_stime + sum(mon.cpu.values())),
        load_before=load0,
        load_after=os.getloadavg()[0],
    )
    return out


# ----------------------------------------------------------------------------- parent
def _recipe_text(n_speakers: int, args: argparse.Namespace) -> str:
    n_ubm, n_enroll, n_test = args.utterances
    synthetic = {
        "n_speakers": n_speakers,
        "n_ubm_utterances": n_ubm,
        "n_enroll_utterances": n_enroll,
        "n_test_utterances": n_test,
        "background_speakers": 0,
        "duration": args.duration,
        "duration_jitter": 0.2,
        "sample_rate": 8000,
        "snr_db": 30.0,
        "n_nontarget_per_test": min(args.nontargets, n_speakers - 1),
        "seed": 0,
    }
    lines = [
        f"# written by scripts/bench_scale.py ({n_speakers} speakers)",
        f"experiment: scale-spk{n_speakers}",
        "seed: 0",
        f"jobs: {args.jobs}",
        "backend: loky",
        f"defaults: {json.dumps(str(REPO / 'configs' / 'features-8k.yaml'))}",
        "data:",
        "  synthetic:",
        *(f"    {k}: {json.dumps(v)}" for k, v in synthetic.items()),
        "ubm:",
        f"  components: {args.components}",
        f"  iterations: {args.iterations}",
        "  init: split",
        "map:",
        "  relevance: 16",
        "  adapt: [means]",
        "scoring:",
        "  method: top_c",
        "  top_c: 5",
        "evaluation:",
        "  p_target: [0.01]",
        "  det_plot: true",
    ]
    return "\n".join(lines) + "\n"


def _run_child(spec: dict[str, Any], log: Path) -> dict[str, Any]:
    spec_path = log.with_suffix(".spec.json")
    out_path = log.with_suffix(".out.json")
    spec_path.write_text(json.dumps(spec))
    if out_path.exists():
        out_path.unlink()
    with open(log, "w") as fh:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_path), str(out_path)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(REPO),
        )
    if proc.returncode != 0 or not out_path.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise SystemExit(f"child {spec} failed (exit {proc.returncode}); log {log}:\n{tail}")
    return json.loads(out_path.read_text())


def _mib(kib: float) -> float:
    return kib / 1024.0


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _fit_line(x: list[float], y: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope of y = a + b x."""
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((v - mx) ** 2 for v in x)
    b = sum((u - mx) * (v - my) for u, v in zip(x, y)) / sxx if sxx else 0.0
    return my - b * mx, b


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt.format(*header), sep, *(fmt.format(*r) for r in rows)])


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    wd = args.workdir / f"spk{n}"
    earlier = None  # the measurement of the corpus generation, when a kept corpus is reused
    try:
        earlier = json.loads((wd / "bench-logs" / "corpus.out.json").read_text())
    except (OSError, ValueError):
        pass
    if wd.exists():
        for p in wd.iterdir():
            if args.reuse_corpus and p.name == "corpus":
                continue
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "recipe.yaml").write_text(_recipe_text(n, args))
    logs = wd / "bench-logs"
    logs.mkdir(exist_ok=True)
    res: dict[str, Any] = {"speakers": n}
    res["corpus"] = _run_child({"kind": "corpus", "workdir": str(wd), "jobs": args.jobs}, logs / "corpus.log")
    if res["corpus"].get("cached"):
        if earlier is not None and not earlier.get("cached"):
            res["corpus"] = {**earlier, "earlier": True}
            (logs / "corpus.out.json").write_text(json.dumps(earlier))
            _say(f"# {n} speakers: corpus reused; its generation time is the earlier measurement")
        else:
            _say(f"# {n} speakers: corpus reused and its generation time unknown (shown as the check time)")
    _say(
        f"# {n} speakers: corpus {res['corpus']['audio_seconds'] / 3600:.2f} h in {res['corpus']['n_files']} files, "
        f"{res['corpus']['seconds']:.1f} s"
    )
    for stage in STAGES:
        r = _run_child(
            {"kind": "stage", "stage": stage, "workdir": str(wd), "jobs": args.jobs}, logs / f"{stage}.log"
        )
        res[stage] = r
        extra = ""
        if stage == "ubm":
            extra = f", {statistics.median(r['iter_seconds']):.2f} s/iter on {r.get('ubm_frames', 0)} frames"
        _say(
            f"#   {stage:<8} {r['seconds']:7.1f} s (cpu {r['cpu_seconds']:7.1f} s), peak main {_mib(r['main_peak_kib']):6.0f} MiB "
            f"workers {_mib(r['workers_peak_kib']):6.0f} MiB, load {r['load_before']:.1f}->{r['load_after']:.1f}{extra}"
        )
    return res


def run_ksweep(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """The stream-only pass and the K sweep on the store of ``n`` speakers."""
    wd = args.workdir / f"spk{n}"
    st = _run_child({"kind": "stream", "workdir": str(wd), "jobs": 1}, wd / "bench-logs" / "stream.log")
    _say(
        f"# stream only (1 process, no E-step), {n} speakers: {st['seconds']:.2f} s per pass over {st['ubm_frames']} frames "
        f"of {st['ubm_utterances']} utterances, peak main {_mib(st['main_peak_kib']):.0f} MiB (base {_mib(st['base_kib']):.0f})"
    )
    ks = []
    for k in args.ks:
        r = _run_child(
            {
                "kind": "ksweep",
                "workdir": str(wd),
                "jobs": args.jobs,
                "components": k,
                "iterations": args.k_iterations,
            },
            wd / "bench-logs" / f"ksweep-{k}.log",
        )
        r["components"] = k
        ks.append(r)
        _say(
            f"# K sweep, {n} speakers, K={k}: {statistics.median(r['iter_seconds']):.2f} s/iter "
            f"({', '.join(f'{x:.2f}' for x in r['iter_seconds'])}), peak main {_mib(r['main_peak_kib']):.0f} MiB "
            f"workers {_mib(r['workers_peak_kib']):.0f} MiB"
        )
    return {"speakers": n, "stream": st, "ks": ks}


def report(sizes: list[dict[str, Any]], sweep: dict[str, Any] | None, args: argparse.Namespace) -> str:
    lines: list[str] = []
    w = lines.append
    w(
        f"# bench_scale: jobs={args.jobs}, UBM K={args.components} (split init, {args.iterations} iterations per size), "
        f"utterances/speaker ubm+enroll+test={'+'.join(map(str, args.utterances))}, {args.duration} s each, "
        f"{args.nontargets} nontargets/test, {os.cpu_count()} cores"
    )
    # ---- absolute numbers
    header = [
        "speakers",
        "hours",
        "utts",
        "UBM frames",
        "all frames",
        "trials",
        "corpus s",
        *[f"{s} s" for s in STAGES],
        "UBM s/iter",
        "main MiB",
        "workers MiB",
        "tree MiB",
    ]
    rows = []
    for r in sizes:
        st = [r[s] for s in STAGES]
        rows.append(
            [
                str(r["speakers"]),
                f"{r['corpus']['audio_seconds'] / 3600:.2f}",
                str(r["features"]["n_utterances"]),
                str(r["ubm"].get("ubm_frames", "?")),
                str(r["features"]["all_frames"]),
                str(r["score"].get("record", {}).get("n_trials", "?")),
                f"{r['corpus']['seconds']:.1f}" + ("*" if r["corpus"].get("earlier") else ""),
                *[f"{x['seconds']:.1f}" for x in st],
                f"{statistics.median(r['ubm']['iter_seconds']):.3f}",
                f"{max(_mib(x['main_peak_kib']) for x in st):.0f}",
                f"{max(_mib(x['workers_peak_kib']) for x in st):.0f}",
                f"{max(_mib(x['tree_peak_kib']) for x in st):.0f}",
            ]
        )
    w("")
    w("## Wall time per stage and peak RSS (max over the stages; each stage in its own process)")
    w(_table(header, rows))
    if any(r["corpus"].get("earlier") for r in sizes):
        w(
            "* corpus reused (--reuse-corpus): its generation time and CPU are those measured when it was generated"
        )
    # ---- peak RSS per stage
    header = ["speakers", "base MiB", *[f"{s} main/wrk" for s in STAGES]]
    rows = [
        [
            str(r["speakers"]),
            f"{_mib(r['features']['base_kib']):.0f}",
            *[f"{_mib(r[s]['main_peak_kib']):.0f}/{_mib(r[s]['workers_peak_kib']):.0f}" for s in STAGES],
        ]
        for r in sizes
    ]
    w("")
    w("## Peak RSS per stage, MiB (main process / largest worker)")
    w(_table(header, rows))
    header = ["speakers", *[f"{s} cpu s" for s in ("corpus", *STAGES)], "load avg (min-max)"]
    rows = []
    for r in sizes:
        loads = [x for s in ("corpus", *STAGES) for x in (r[s]["load_before"], r[s]["load_after"])]
        rows.append(
            [
                str(r["speakers"]),
                *[f"{r[s]['cpu_seconds']:.1f}" for s in ("corpus", *STAGES)],
                f"{min(loads):.1f}-{max(loads):.1f}",
            ]
        )
    w("")
    w("## CPU seconds (main + workers) per step; 1-min load average seen by the steps")
    w(_table(header, rows))
    # ---- growth factors
    if len(sizes) > 1:
        b = sizes[0]
        header = [
            "speakers",
            "hours x",
            "UBM frames x",
            "all frames x",
            "stage",
            "time x",
            "time/frame x",
            "cpu/frame x",
            "main RSS x",
            "worker RSS x",
            "main-base x",
        ]
        rows = []
        for r in sizes[1:]:
            fu = _ratio(r["ubm"]["ubm_frames"], b["ubm"]["ubm_frames"])
            fa = _ratio(r["features"]["all_frames"], b["features"]["all_frames"])
            hx = _ratio(r["corpus"]["audio_seconds"], b["corpus"]["audio_seconds"])
            items = [("corpus", r["corpus"], b["corpus"], hx)] + [
                (s, r[s], b[s], fu if s == "ubm" else fa) for s in STAGES
            ]
            items.append(
                (
                    "UBM iter",
                    {"seconds": statistics.median(r["ubm"]["iter_seconds"])},
                    {"seconds": statistics.median(b["ubm"]["iter_seconds"])},
                    fu,
                )
            )
            for name, x, y, f in items:
                tx = _ratio(x["seconds"], y["seconds"])
                cpu = _ratio(x["cpu_seconds"], y["cpu_seconds"]) / f if "cpu_seconds" in x else float("nan")
                mx = _ratio(x["main_peak_kib"], y["main_peak_kib"]) if "main_peak_kib" in x else float("nan")
                wx = (
                    _ratio(x["workers_peak_kib"], y["workers_peak_kib"])
                    if "workers_peak_kib" in x
                    else float("nan")
                )
                dx = (
                    _ratio(x["main_peak_kib"] - x["base_kib"], y["main_peak_kib"] - y["base_kib"])
                    if "main_peak_kib" in x
                    else float("nan")
                )
                rows.append(
                    [
                        str(r["speakers"]),
                        f"{hx:.2f}",
                        f"{fu:.2f}",
                        f"{fa:.2f}",
                        name,
                        f"{tx:.2f}",
                        f"{tx / f:.2f}",
                        f"{cpu:.2f}",
                        f"{mx:.2f}",
                        f"{wx:.2f}",
                        f"{dx:.2f}",
                    ]
                )
        w("")
        w(
            f"## Growth factors vs {b['speakers']} speakers (time/frame x = 1.00: linear in frames; RSS x = 1.00: flat)"
        )
        w(
            "## (per frame: UBM frames for ubm and UBM iter, hours of audio for corpus, all frames for the other stages)"
        )
        w(_table(header, rows))
    # ---- K sweep
    ks = sweep["ks"] if sweep else []
    if ks:
        b = ks[0]
        tb = statistics.median(b["iter_seconds"])
        header = [
            "K",
            "frames",
            "s/iter",
            "ms/iter/K",
            "K x",
            "s/iter x",
            "(s/iter/K) x",
            "ns/frame/K",
            "main MiB",
            "workers MiB",
        ]
        rows = []
        for r in ks:
            t = statistics.median(r["iter_seconds"])
            rows.append(
                [
                    str(r["components"]),
                    str(r.get("ubm_frames", "?")),
                    f"{t:.3f}",
                    f"{1000 * t / r['components']:.2f}",
                    f"{r['components'] / b['components']:.2f}",
                    f"{t / tb:.2f}",
                    f"{(t / r['components']) / (tb / b['components']):.2f}",
                    f"{1e9 * t / r['components'] / r['ubm_frames']:.3f}",
                    f"{_mib(r['main_peak_kib']):.0f}",
                    f"{_mib(r['workers_peak_kib']):.0f}",
                ]
            )
        w("")
        w(
            f"## UBM K sweep on the {sweep['speakers']}-speaker store (kmeans++ init, jobs={args.jobs}, median of EM "
            f"iterations 2..{args.k_iterations}; (s/iter/K) x = 1.00: proportional to K)"
        )
        w(_table(header, rows))
    if sweep:
        st = sweep["stream"]
        w(
            f"stream only (read every UBM frame from the store once, 1 process, no E-step): {st['seconds']:.2f} s per pass, "
            f"{1e9 * st['seconds'] / st['ubm_frames']:.0f} ns/frame, {1e3 * st['seconds'] / st['ubm_utterances']:.2f} ms/utterance; "
            f"peak RSS {_mib(st['main_peak_kib']):.0f} MiB (base {_mib(st['base_kib']):.0f} MiB)"
        )

    # ---- affine fits and marginal slopes: a fixed cost per iteration plus a part proportional to frames (or K)
    def slopes(x: list[float], y: list[float]) -> list[float]:
        return [(y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(len(x) - 1)]

    w("")
    if len(sizes) > 1:
        fx = [float(r["ubm"]["ubm_frames"]) for r in sizes]
        fy = [statistics.median(r["ubm"]["iter_seconds"]) for r in sizes]
        a, b_ = _fit_line(fx, fy)
        sl = slopes(fx, fy)
        w(
            f"fit over sizes: UBM s/iter = {a:.3f} s + {1e9 * b_:.0f} ns x frames (K={args.components}); fixed part at the "
            f"largest size {100 * a / fy[-1]:.1f} %; marginal ns/frame between consecutive sizes: "
            f"{', '.join(f'{1e9 * v:.0f}' for v in sl)}"
        )
        per_frame = (fy[-1] / fy[0]) / (fx[-1] / fx[0])
        marg = sl[-1] / sl[0]
        ok = per_frame <= 1.33 and marg <= 1.33
        w(
            f"verdict: UBM s/iter in frames, {sizes[-1]['speakers']} vs {sizes[0]['speakers']} speakers "
            f"({fx[-1] / fx[0]:.1f}x frames): time/frame x {per_frame:.2f}, marginal slope last/first {marg:.2f} "
            f"(both <= 1.33: not superlinear; < 0.75: sublinear, a fixed cost or less contention at the top) -> "
            f"{'LINEAR OR BETTER' if ok else 'SUPERLINEAR'}"
        )
        pairs = [(sizes[-1], sizes[0])] + ([(sizes[-1], sizes[-2])] if len(sizes) > 2 else [])
        for key, label in (("main_peak_kib", "main"), ("workers_peak_kib", "largest worker")):
            for hi, lo in pairs:
                x = _ratio(hi["ubm"][key], lo["ubm"][key])
                fr = _ratio(hi["ubm"]["ubm_frames"], lo["ubm"]["ubm_frames"])
                w(
                    f"verdict: UBM stage peak RSS ({label}), {hi['speakers']} vs {lo['speakers']} speakers ({fr:.1f}x frames): "
                    f"{x:.2f}x -> {'FLAT' if x <= 1.25 else 'GROWS'} (<= 1.25x)"
                )
    if len(ks) > 1:
        kx = [float(r["components"]) for r in ks]
        ky = [statistics.median(r["iter_seconds"]) for r in ks]
        a, b_ = _fit_line(kx, ky)
        sl = slopes(kx, ky)
        w(
            f"fit over K: UBM s/iter = {a:.3f} s + {1000 * b_:.2f} ms x K on {ks[0].get('ubm_frames', 0)} frames; fixed part "
            f"at the largest K {100 * a / ky[-1]:.1f} % (the K-independent work: reading the store, validation, chunking); "
            f"marginal ms per component: {', '.join(f'{1000 * v:.2f}' for v in sl)}"
        )
        per_k = (ky[-1] / kx[-1]) / (ky[0] / kx[0])
        marg = sl[-1] / sl[0] if len(sl) > 1 else 1.0
        ok = per_k <= 1.33 and 0.75 <= marg <= 1.33
        w(
            f"verdict: UBM s/iter in K, K={ks[-1]['components']} vs K={ks[0]['components']}: time/K x {per_k:.2f} "
            f"(<= 1.33: not superlinear), marginal slope last/first {marg:.2f} (in [0.75, 1.33]: constant cost per "
            f"component) -> {'LINEAR (affine: fixed part + cost per component)' if ok else 'NOT LINEAR'}"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        spec = json.loads(Path(sys.argv[2]).read_text())
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        Path(sys.argv[3]).write_text(json.dumps(_child(spec)))
        return
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="100,300,1000", help="numbers of target speakers (default 100,300,1000)"
    )
    ap.add_argument("--quick", action="store_true", help="smoke run: 20,60,200 speakers, K sweep 16,32,64")
    ap.add_argument("--jobs", type=int, default=2, help="joblib workers (default 2)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/gmmspeaker-scale"), help="work folder")
    ap.add_argument("--components", type=int, default=64, help="UBM components of the recipe (default 64)")
    ap.add_argument(
        "--iterations",
        type=int,
        default=5,
        help="UBM EM iterations (per split size and at full size; default 5)",
    )
    ap.add_argument(
        "--utterances", default="8,3,2", help="UBM,enroll,test utterances per speaker (default 8,3,2)"
    )
    ap.add_argument("--duration", type=float, default=3.0, help="mean utterance duration, s (default 3.0)")
    ap.add_argument(
        "--nontargets", type=int, default=10, help="nontarget models per test utterance (default 10)"
    )
    ap.add_argument(
        "--ks", default=None, help="K sweep components (default 32,64,128; --quick 16,32,64; '' = none)"
    )
    ap.add_argument(
        "--k-iterations", type=int, default=4, help="EM iterations per K in the sweep (default 4)"
    )
    ap.add_argument(
        "--sweep-size",
        type=int,
        default=None,
        help="speakers of the store used by the K sweep (default largest)",
    )
    ap.add_argument(
        "--reuse-corpus", action="store_true", help="keep an existing corpus (its time is then not measured)"
    )
    ap.add_argument("--cleanup", action="store_true", help="delete the work folder at the end")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write every measurement here (default <workdir>/results.json)",
    )
    args = ap.parse_args()
    sizes = [20, 60, 200] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.ks is None:
        args.ks = [16, 32, 64] if args.quick else [32, 64, 128]
    else:
        args.ks = [int(k) for k in args.ks.split(",") if k.strip()]
    args.utterances = tuple(int(x) for x in args.utterances.split(","))
    if len(args.utterances) != 3 or min(sizes) < 2:
        ap.error("--utterances needs 3 numbers and every size at least 2 speakers")
    sizes = sorted(sizes)
    sweep_n = args.sweep_size if args.sweep_size is not None else sizes[-1]
    if args.ks and sweep_n not in sizes:
        ap.error(f"--sweep-size {sweep_n} is not one of the sizes {sizes}")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    _say(f"# bench_scale: sizes {sizes}, jobs {args.jobs}, workdir {args.workdir}, load {os.getloadavg()}")
    results = [run_size(n, args) for n in sizes]
    sweep = run_ksweep(sweep_n, args) if args.ks else None
    text = report(results, sweep, args)
    _say("")
    _say(text)
    _say(f"\n# total {time.perf_counter() - t0:.0f} s, load at the end {os.getloadavg()}")
    out = args.json or args.workdir / "results.json"
    out.write_text(
        json.dumps(
            {
                "sizes": results,
                "ksweep": sweep,
                "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            },
            indent=1,
        )
    )
    _say(f"# measurements: {out}")
    if args.cleanup:  # the size folders; results.json stays
        for n in sizes:
            shutil.rmtree(args.workdir / f"spk{n}", ignore_errors=True)


if __name__ == "__main__":
    main()
