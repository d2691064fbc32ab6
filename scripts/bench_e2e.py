#!/usr/bin/env python
"""End to end: the fused GMM-UBM + i-vector recipe on hours of synthetic 16 kHz speech.

How it measures
---------------
* Corpus (``gmmspeaker.corpora.synthetic``, generated once under ``--out/corpus``, seed 0,
  not timed): for ``--hours 5``, 125 target speakers (5 enrolment + 15 test recordings)
  and 125 background speakers (20 recordings), 5,000 recordings of 3.6 s +-20 % at
  16 kHz; each test recording is tried against its own model and 10 others. The cohort
  (``cohort.txt``) is the first 4 recordings of every background speaker (500), the
  i-vector training list (``train_backend.txt``) all background recordings with their
  speakers. A smaller ``--hours`` scales the number of speakers (same shape per speaker).
* Recipe: ``recipes/dspspeech20-fusion.yaml`` (which is ``dspspeech20.yaml``'s GMM-UBM
  and ``dspspeech20-ivector.yaml``'s i-vector system) with ``data:`` swapped, written to
  ``--out/recipes/fusion.yaml``; one run in a fresh workdir gives both systems' scores
  (``scores.gmm_ubm.txt``, ``scores.ivector.txt``) and the fused ``scores.txt``.
  ``--set section.key=value`` changes a setting (an ablation row).
* Per stage: seconds (the runner's stage records), CPU seconds (user + system of this
  process and every descendant -- joblib / loky workers -- over the stage, the measure
  least moved by other jobs on a shared machine), its share of the total, and the
  real-time factor (seconds of audio in all lists / seconds of processing). The load
  average at start and end is printed. EER and minDCF(0.01) per system with 95 %
  intervals from the bootstrap over models of ``scripts/ablate.py``.

Usage::

    python scripts/bench_e2e.py --out /tmp/e2e            # 5 hours
    python scripts/bench_e2e.py --out /tmp/e2e-q --hours 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

import gmmspeaker

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ablate  # the bootstrap intervals (scripts/ is not a package)

SECONDS_PER_RECORDING = 3.6
RECORDINGS_PER_SPEAKER = 20
COHORT_PER_SPEAKER = 4


def make_corpus(out: Path, hours: float, jobs: int) -> Path:
    """Generate the corpus and the cohort / training lists; return its root."""
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    per_side = max(3, round(hours * 3600 / SECONDS_PER_RECORDING / RECORDINGS_PER_SPEAKER / 2))
    cfg = SyntheticCorpusConfig(
        n_speakers=per_side,
        background_speakers=per_side,
        n_ubm_utterances=RECORDINGS_PER_SPEAKER,
        n_enroll_utterances=5,
        n_test_utterances=RECORDINGS_PER_SPEAKER - 5,
        n_nontarget_per_test=min(10, per_side - 1),
        duration=SECONDS_PER_RECORDING,
        sample_rate=16000,
        seed=0,
    )
    root = out / "corpus"
    t = time.perf_counter()
    generate_corpus(root, cfg, n_jobs=jobs)
    print(f"corpus: {root} ({2 * per_side} speakers) ready in {time.perf_counter() - t:.0f} s", flush=True)
    ubm = (root / "ubm.txt").read_text().split()
    by_spk: dict[str, list[str]] = {}
    for rel in ubm:
        by_spk.setdefault(rel.split("/")[1], []).append(rel)
    cohort = [rel for spk in sorted(by_spk) for rel in by_spk[spk][:COHORT_PER_SPEAKER]]
    (root / "cohort.txt").write_text("".join(f"{r}\n" for r in cohort))
    (root / "train_backend.txt").write_text("".join(f"{r} {r.split('/')[1]}\n" for r in ubm))
    return root


def audio_seconds(root: Path) -> float:
    """Seconds of audio in every file the recipe reads (each file counted once)."""
    files: set[str] = set()
    for name in ("ubm.txt", "cohort.txt"):
        files.update((root / name).read_text().split())
    for line in (root / "enroll.txt").read_text().splitlines():
        files.update(line.split()[1:])
    for line in (root / "trials.txt").read_text().splitlines():
        files.add(line.split()[1])
    return float(sum(sf.info(str(root / f)).duration for f in files))


def write_recipe(out: Path, root: Path, jobs: int, overrides: dict[str, Any]) -> Path:
    recipe: dict[str, Any] = {
        "experiment": "e2e-fusion",
        # the recipes beside the package under test (PYTHONPATH decides which checkout)
        "defaults": str(
            Path(gmmspeaker.__file__).resolve().parent.parent / "recipes" / "dspspeech20-fusion.yaml"
        ),
        "jobs": jobs,
        "data": {
            "root": str(root),
            "ubm": "ubm.txt",
            "enroll": "enroll.txt",
            "trials": "trials.txt",
            "cohort": "cohort.txt",
            "train": "train_backend.txt",
        },
    }
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        recipe.setdefault(section, {})[name] = value
    path = out / "recipes" / "fusion.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def metrics(wd: Path, n_boot: int, p_target: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for system, name in (
        ("gmm_ubm", "scores.gmm_ubm.txt"),
        ("ivector", "scores.ivector.txt"),
        ("fusion", "scores.txt"),
    ):
        path = wd / name
        if not path.is_file():
            continue
        pairs, scores, keys = ablate.read_scores(path)
        key = np.asarray(keys, dtype=bool)
        boot = ablate.bootstrap_metrics(
            scores, key, ablate.bootstrap_indices([m for m, _ in pairs], n_boot, 0), p_target
        )
        point = ablate.point_metrics(scores, key, p_target)
        out[system] = {
            "eer": float(point[0]),
            "eer_ci": ablate.interval(boot[:, 0]),
            "min_dcf": float(point[1]),
            "min_dcf_ci": ablate.interval(boot[:, 1]),
            "n_trials": int(key.size),
            "n_target": int(key.sum()),
            "boot": boot[:, :2].tolist(),
        }
    return out


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its descendants so far.

    A live descendant counts its own time and that of the children it reaped; a reaped
    child of this process counts through ``children_user`` / ``children_system`` (its
    whole life, so a worker ending mid-stage is neither lost nor counted twice).
    """
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:  # ended between the listing and the reading
            continue
        total += c.user + c.system + c.children_user + c.children_system
    return float(total)


def record_stage_cpu() -> dict[str, float]:
    """Wrap the runner's stage call to record each stage's CPU seconds (returned dict)."""
    from gmmspeaker.recipe import stages as stages_mod

    cpu: dict[str, float] = {}
    run = stages_mod.Run.run

    def timed(self: Any, name: str) -> dict[str, Any]:
        c0 = tree_cpu_seconds()
        try:
            return run(self, name)
        finally:
            cpu[name] = tree_cpu_seconds() - c0

    stages_mod.Run.run = timed  # type: ignore[method-assign]
    return cpu


def use_code_before() -> None:
    """Switch this process to the code paths before issue #22 (for same-code comparisons).

    The UBM's split levels and EM iterations on every frame (``SPLIT_FRAMES_PER_COMPONENT =
    0``, ``ubm.subsample`` ignored), cohort score matrices through the per-trial scorer
    (each utterance's models one batched matrix-vector product per frame and component,
    float64 log-sum-exp), and the T side of the normalisation a second pass over the tests.
    """
    from gmmspeaker.gmm import batch, em
    from gmmspeaker.systems.base import TrainedSystem
    from gmmspeaker.systems.gmm_ubm import GmmUbm

    em.SPLIT_FRAMES_PER_COMPONENT = 0
    batch.ubm_subsample_step = lambda n_frames, components, subsample: 1
    GmmUbm.score_trials_with_cohort = TrainedSystem.score_trials_with_cohort  # type: ignore[method-assign]

    def score_matrix_before(
        store, utt_ids, ubm, models, *, method="top_c", top_c=5, jobs=1, block_size=64, progress=False
    ):
        n_m, n_u = len(models.model_ids), len(utt_ids)
        every = list(range(n_m))
        groups = {u: ([j * n_m + i for i in every], every) for j, u in enumerate(utt_ids)}
        flat = batch._score_groups(
            store,
            groups,
            n_m * n_u,
            ubm,
            models,
            method=method,
            top_c=top_c,
            jobs=jobs,
            block_size=block_size,
            parts_dir=None,
            progress=progress,
            desc="cohort",
        )[0]
        return flat.reshape(n_u, n_m).T

    batch.score_matrix = score_matrix_before


def cohort_check(wd: Path, root: Path, n_utts: int) -> None:
    """Same process, same data: a score matrix of the run's models on ``n_utts`` test
    utterances by the per-utterance scorer and by :func:`score_all_models` (one BLAS thread)."""
    from threadpoolctl import threadpool_limits

    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.gmm.speaker_models import SpeakerModels
    from gmmspeaker.scoring.llr import ScoringContext, score_all_models, score_prepared
    from gmmspeaker.store import FeatureStore

    store = FeatureStore(wd / "features")
    tests = sorted({line.split()[1] for line in (root / "trials.txt").read_text().splitlines()})
    ids = [u for u in (str(Path(t).with_suffix("")) for t in tests) if u in store][:n_utts]
    feats = [store.get(u) for u in ids]
    ubm = GaussianMixture.load(wd / "ubm.h5")
    models = SpeakerModels.load(wd / "models.h5")
    load0 = os.getloadavg()[0]
    with threadpool_limits(limits=1, user_api="blas"):
        ctx = ScoringContext.build(ubm, models)
        t = time.perf_counter()
        old = np.stack([score_prepared(X, ctx, method="top_c", top_c=5) for X in feats], axis=1)
        t_old = time.perf_counter() - t
        t = time.perf_counter()
        new = score_all_models(feats, ctx, method="top_c", top_c=5)
        t_new = time.perf_counter() - t
    n = old.size
    print(
        f"\ncohort scoring, {len(models)} models x {len(feats)} "
        f"utterances, one BLAS thread, load {load0:.1f} -> {os.getloadavg()[0]:.1f}: per-utterance "
        f"{1e6 * t_old / n:.1f} us/trial, score_all_models {1e6 * t_new / n:.1f} us/trial "
        f"({t_old / t_new:.1f}x); max |score difference| {np.abs(new - old).max():.2e} "
        f"(scores span {old.min():.3f} .. {old.max():.3f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus, recipe and run folder")
    ap.add_argument("--hours", type=float, default=5.0, help="hours of audio (speakers scale with it)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--name", default="run", help="workdir name under --out/runs (kept for comparisons)")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--p-target", type=float, default=0.01)
    ap.add_argument(
        "--compare",
        default=None,
        metavar="NAME",
        help="a finished run under --out/runs: print each system's paired difference to it",
    )
    ap.add_argument("--report-only", action="store_true", help="do not run: report the run --name")
    ap.add_argument(
        "--cohort-check",
        type=int,
        default=0,
        metavar="N",
        help="after the run: time both cohort scorers on N test utterances against the run's models",
    )
    ap.add_argument(
        "--before",
        action="store_true",
        help="the code paths before issue #22: UBM on every frame, cohort scored per utterance in a second pass",
    )
    args = ap.parse_args(argv)

    from gmmspeaker.recipe.runner import run_recipe

    args.out.mkdir(parents=True, exist_ok=True)
    root = make_corpus(args.out, args.hours, args.jobs)
    audio_s = audio_seconds(root)
    overrides: dict[str, Any] = {}
    for spec in args.set:
        overrides.update(ablate.parse_setting(spec))
    recipe = write_recipe(args.out, root, args.jobs, overrides)
    wd = args.out / "runs" / args.name
    if args.before:
        use_code_before()
    if args.report_only:
        summary = json.loads((wd / "bench_e2e.json").read_text())
        stages, total, m = summary["seconds"], summary["total_s"], summary["metrics"]
        cpu = summary.get("cpu_s", {})
        cpu_total = summary.get("cpu_total_s", float("nan"))
        load0, load1 = summary["load"]
    else:
        shutil.rmtree(wd, ignore_errors=True)
        cpu_rec = record_stage_cpu()
        load0 = os.getloadavg()
        c0 = tree_cpu_seconds()
        t0 = time.perf_counter()
        res = run_recipe(recipe, workdir=wd, log_file=True)
        total = time.perf_counter() - t0
        cpu_total = tree_cpu_seconds() - c0
        load1 = os.getloadavg()
        stages = {s: float(v) for s, v in res.seconds.items()}
        cpu = {s: float(cpu_rec.get(s, float("nan"))) for s in stages}
        m = metrics(wd, args.n_boot, args.p_target)
        summary = {
            "hours": audio_s / 3600,
            "overrides": overrides,
            "seconds": stages,
            "total_s": total,
            "cpu_s": cpu,
            "cpu_total_s": cpu_total,
            "rtf": audio_s / total,
            "load": [load0, load1],
            "metrics": m,
        }
        (wd / "bench_e2e.json").write_text(json.dumps(summary, indent=1) + "\n")

    print(f"\n{audio_s / 3600:.2f} h of audio, jobs {args.jobs}, settings {overrides or 'of the recipe'}")
    print(
        f"load average {load0[0]:.1f} / {load0[1]:.1f} (1 / 5 min) at start, {load1[0]:.1f} / {load1[1]:.1f} at end"
    )
    print("| stage | s | CPU s | share | x real time |\n|---|---|---|---|---|")
    for s, v in stages.items():
        c = cpu.get(s, float("nan"))
        print(f"| {s} | {v:.1f} | {c:.1f} | {100 * v / total:.1f} % | {audio_s / max(v, 1e-9):.0f} |")
    other = total - sum(stages.values())
    c_other = cpu_total - sum(cpu.get(s, 0.0) for s in stages)
    print(f"| (runner, evaluation) | {other:.1f} | {c_other:.1f} | {100 * other / total:.1f} % | |")
    print(f"| **total** | **{total:.1f}** | **{cpu_total:.1f}** | 100 % | **{audio_s / total:.0f}** |")
    print(
        f"\n| system | EER % [95 % CI] | minDCF({args.p_target:g}) [95 % CI] | trials (target) |\n|---|---|---|---|"
    )
    for system, r in m.items():
        print(
            f"| {system} | {100 * r['eer']:.2f} [{100 * r['eer_ci'][0]:.2f}, {100 * r['eer_ci'][1]:.2f}] | "
            f"{r['min_dcf']:.3f} [{r['min_dcf_ci'][0]:.3f}, {r['min_dcf_ci'][1]:.3f}] | "
            f"{r['n_trials']} ({r['n_target']}) |"
        )
    if args.cohort_check:
        cohort_check(wd, root, args.cohort_check)
    if args.compare:
        other = args.out / "runs" / args.compare
        om = json.loads((other / "bench_e2e.json").read_text())
        ot = om["total_s"]
        oc = om.get("cpu_s", {})
        print(
            f"\nagainst {args.compare}: total {ot:.1f} s -> {total:.1f} s ({ot / total:.2f}x); "
            f"CPU {om.get('cpu_total_s', float('nan')):.1f} s -> {cpu_total:.1f} s"
        )
        print("| stage | s before | s now | speed-up | CPU s before | CPU s now | CPU ratio |")
        print("|---|---|---|---|---|---|---|")
        for s_, v in stages.items():
            b = om["seconds"].get(s_, float("nan"))
            cb, cn = oc.get(s_, float("nan")), cpu.get(s_, float("nan"))
            print(
                f"| {s_} | {b:.1f} | {v:.1f} | {b / max(v, 1e-9):.2f}x | {cb:.1f} | {cn:.1f} | "
                f"{cb / max(cn, 1e-9):.2f}x |"
            )
        print(
            "\n| system | dEER points [95 % CI] | dminDCF [95 % CI] | max abs score change |\n|---|---|---|---|"
        )
        for system, r in m.items():
            if system not in om["metrics"]:
                continue
            o = om["metrics"][system]
            d = np.asarray(r["boot"]) - np.asarray(o["boot"])  # paired: the same resampled models
            eer_ci, dcf_ci = ablate.interval(d[:, 0]), ablate.interval(d[:, 1])
            name = {"gmm_ubm": "scores.gmm_ubm.txt", "ivector": "scores.ivector.txt"}.get(
                system, "scores.txt"
            )
            _, a, _ = ablate.read_scores(wd / name)
            _, b, _ = ablate.read_scores(other / name)
            print(
                f"| {system} | {100 * (r['eer'] - o['eer']):+.2f} [{100 * eer_ci[0]:+.2f}, {100 * eer_ci[1]:+.2f}] | "
                f"{r['min_dcf'] - o['min_dcf']:+.3f} [{dcf_ci[0]:+.3f}, {dcf_ci[1]:+.3f}] | "
                f"{np.nanmax(np.abs(a - b)):.2e} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
