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
* Per stage: seconds (the runner's stage records), its share of the total, and the
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="corpus, recipe and run folder")
    ap.add_argument("--hours", type=float, default=5.0, help="hours of audio (speakers scale with it)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--name", default="run", help="workdir name under --out/runs (kept for comparisons)")
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--p-target", type=float, default=0.01)
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
    shutil.rmtree(wd, ignore_errors=True)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run_recipe(recipe, workdir=wd, log_file=True)
    total = time.perf_counter() - t0
    load1 = os.getloadavg()
    stages = {s: float(v) for s, v in res.seconds.items()}
    m = metrics(wd, args.n_boot, args.p_target)
    summary = {
        "hours": audio_s / 3600,
        "overrides": overrides,
        "seconds": stages,
        "total_s": total,
        "rtf": audio_s / total,
        "load": [load0, load1],
        "metrics": m,
    }
    (wd / "bench_e2e.json").write_text(json.dumps(summary, indent=1) + "\n")

    print(f"\n{audio_s / 3600:.2f} h of audio, jobs {args.jobs}, settings {overrides or 'of the recipe'}")
    print(
        f"load average {load0[0]:.1f} / {load0[1]:.1f} (1 / 5 min) at start, {load1[0]:.1f} / {load1[1]:.1f} at end"
    )
    print("| stage | s | share | x real time |\n|---|---|---|---|")
    for s, v in stages.items():
        print(f"| {s} | {v:.1f} | {100 * v / total:.1f} % | {audio_s / max(v, 1e-9):.0f} |")
    other = total - sum(stages.values())
    print(f"| (runner, evaluation) | {other:.1f} | {100 * other / total:.1f} % | |")
    print(f"| **total** | **{total:.1f}** | 100 % | **{audio_s / total:.0f}** |")
    print(
        f"\n| system | EER % [95 % CI] | minDCF({args.p_target:g}) [95 % CI] | trials (target) |\n|---|---|---|---|"
    )
    for system, r in m.items():
        print(
            f"| {system} | {100 * r['eer']:.2f} [{100 * r['eer_ci'][0]:.2f}, {100 * r['eer_ci'][1]:.2f}] | "
            f"{r['min_dcf']:.3f} [{r['min_dcf_ci'][0]:.3f}, {r['min_dcf_ci'][1]:.3f}] | "
            f"{r['n_trials']} ({r['n_target']}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
