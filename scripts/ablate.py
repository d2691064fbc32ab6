"""Ablation study: run a recipe with one setting changed at a time and tabulate the effect.

Each row is the recipe with a few dotted-key overrides (``features.vad=none``,
``ubm.components=512``, ``scoring.normalization=asnorm``; several comma-separated keys make
a pair). Every row reports EER, minDCF(0.01), Cllr, the wall time of the configuration
and the difference to the baseline, with 95 % intervals from a bootstrap over *models*
(each resample draws the target models with replacement and keeps all their trials, since
the trials of one speaker are correlated). The differences use a *paired* bootstrap: the
same resampled models for the row and the baseline, so shared noise cancels. A difference
whose interval excludes zero is marked ``*``.

Cheap to re-run. Every row has its own workdir under ``OUT/runs/``, and the recipe runner's
per-stage fingerprints skip what is up to date. Rows run in waves: first one row per
distinct feature configuration, then one per distinct UBM, then one per distinct set of
speaker models, then the rest; before a row runs, the feature store, UBM and models of a
finished row with the same upstream configuration are hard-linked into its workdir (with
their stage records), so the runner skips those stages. Rows of a wave run in parallel
(``--jobs``, one CLI process per row with one BLAS thread each).

Usage::

    python scripts/ablate.py recipes/dspspeech20.yaml --out /tmp/ablate-dsp --jobs 2
    python scripts/ablate.py RECIPE --out DIR --grid none --set features.vad=none \\
        --set ubm.components=512,ubm.iterations=20

Writes ``OUT/ablation.md`` and ``OUT/ablation.json`` (``--table`` renames them) and prints
the table; a second invocation with other ``--set`` rows and the same ``--out`` reuses every
finished run. A synthetic
recipe (``data.synthetic``) is generated once into ``OUT/corpus`` and run as a list
recipe, with its ``ubm.txt`` as the cohort for score normalisation.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import yaml

from gmmspeaker.errors import ConfigError, GmmSpeakerError
from gmmspeaker.features import FeatureConfig
from gmmspeaker.recipe.config import Recipe, load_recipe
from gmmspeaker.recipe.runner import run_recipe
from gmmspeaker.scoring.metrics import cllr, eer, min_dcf
from gmmspeaker.scoring.trials import read_scores

SECTIONS = ("features", "ubm", "map", "scoring")
STAGE_OUTPUTS = {"features": ["features"], "ubm": ["ubm.h5"], "enroll": ["models.h5"]}
METRICS = ("eer", "min_dcf", "cllr")

# One setting at a time (grouped as in the issue), then pairs where settings interact.
# Rows that equal the baseline are dropped.
DEFAULT_GRID: tuple[str, ...] = (
    # energy coefficient: c0 / log-energy / neither (c1..c19, or c1..c20 as in SIDEKIT)
    "features.energy=log_energy",
    "features.energy=none",
    "features.energy=none,features.n_mfcc=21",
    # number of cepstra
    "features.n_mfcc=13",
    "features.n_mfcc=20",
    # mel filters and upper frequency
    "features.n_mels=24",
    "features.n_mels=64",
    "features.fmax=5500",
    "features.fmax=8000",
    # VAD off / energy VAD at two thresholds
    "features.vad=none",
    "features.vad_threshold=25",
    "features.vad_threshold=45",
    # normalisation
    "features.normalize=cmn",
    "features.normalize=cmvn",
    "features.normalize=sliding_cmn",
    "features.normalize=warp",
    # deltas
    "features.delta_window=1",
    "features.delta_window=3",
    "features.deltas=1",
    # UBM size, EM iterations, initialisation
    "ubm.components=64",
    "ubm.components=128",
    "ubm.components=256",
    "ubm.components=512",
    "ubm.iterations=20",
    "ubm.iterations=30",
    "ubm.init=kmeans++",
    # MAP
    "map.relevance=4",
    "map.relevance=8",
    "map.relevance=16",
    "map.relevance=32",
    "map.adapt=means+weights",
    "map.adapt=means+variances",
    "map.adapt=means+weights+variances",
    # scoring
    "scoring.method=full",
    "scoring.top_c=10",
    "scoring.top_c=20",
    "scoring.method=linear",
    # score normalisation (cohort: data.cohort)
    "scoring.normalization=znorm",
    "scoring.normalization=tnorm",
    "scoring.normalization=ztnorm",
    "scoring.normalization=snorm",
    "scoring.normalization=asnorm,scoring.cohort_top_n=50",
    "scoring.normalization=asnorm,scoring.cohort_top_n=200",
    # pairs that interact
    "features.vad=none,features.normalize=warp",
    "features.vad=none,features.energy=none",
    "features.energy=none,features.n_mfcc=21,features.fmax=8000,features.vad=none",
    "ubm.components=512,ubm.iterations=20",
    "ubm.components=512,map.relevance=8",
    "ubm.components=128,map.relevance=8",
    "scoring.method=full,scoring.normalization=snorm",
)

# A cheaper subset for bigger corpora: one or two values per question of the issue.
CORE_GRID: tuple[str, ...] = (
    "features.energy=log_energy",
    "features.energy=none",
    "features.energy=none,features.n_mfcc=21",
    "features.n_mfcc=13",
    "features.n_mels=24",
    "features.fmax=8000",
    "features.vad=none",
    "features.vad_threshold=25",
    "features.normalize=cmn",
    "features.normalize=sliding_cmn",
    "features.normalize=warp",
    "features.delta_window=1",
    "ubm.components=128",
    "ubm.components=512",
    "ubm.iterations=20",
    "ubm.init=kmeans++",
    "map.relevance=8",
    "map.relevance=32",
    "map.adapt=means+weights",
    "scoring.method=full",
    "scoring.top_c=20",
    "scoring.method=linear",
    "scoring.normalization=znorm",
    "scoring.normalization=snorm",
    "scoring.normalization=asnorm,scoring.cohort_top_n=200",
    "features.energy=none,features.n_mfcc=21,features.fmax=8000,features.vad=none",
)
GRIDS = {"default": DEFAULT_GRID, "core": CORE_GRID, "none": ()}


@dataclasses.dataclass
class Row:
    """One configuration of the study: its name, overrides and (after the run) its results."""

    name: str
    overrides: dict[str, Any]
    slug: str = ""
    workdir: Path = Path()
    recipe_path: Path = Path()
    results: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str | None = None
    table: dict[str, Any] = dataclasses.field(default_factory=dict)


# -- settings ---------------------------------------------------------------------------------
def parse_value(text: str) -> Any:
    """A YAML scalar; ``a+b`` is a list (``map.adapt=means+weights``)."""
    parts = text.split("+")
    if len(parts) > 1 and all(p.isidentifier() for p in parts):
        return parts
    return yaml.safe_load(text)


def parse_setting(spec: str) -> dict[str, Any]:
    """``"features.vad=none,ubm.components=512"`` -> ``{"features.vad": "none", ...}``."""
    out: dict[str, Any] = {}
    for part in spec.split(","):
        key, sep, value = part.strip().partition("=")
        section = key.split(".", 1)[0]
        if not sep or "." not in key or section not in SECTIONS:
            raise ConfigError(
                f"setting {spec!r}: expected section.key=value with section one of {', '.join(SECTIONS)}"
            )
        out[key] = parse_value(value)
    return out


def setting_name(overrides: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        return "+".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{k}={show(v)}" for k, v in overrides.items()) or "baseline"


def baseline_values(recipe: Recipe) -> dict[str, dict[str, Any]]:
    """Every setting of the recipe, defaults filled in, as plain data."""
    feats = {f.name: f.default for f in dataclasses.fields(FeatureConfig)}
    feats.update(recipe.features)
    return {"features": feats, **{s: recipe.section(s) for s in SECTIONS[1:]}}


def same_as_baseline(overrides: dict[str, Any], base: dict[str, dict[str, Any]]) -> bool:
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        if name not in base[section]:
            raise ConfigError(f"setting {key}: unknown key {name!r} in section {section!r}")
        if base[section][name] != value:
            return False
    return True


# -- variant recipes --------------------------------------------------------------------------
def resolved_recipe(recipe: Recipe, data: dict[str, Any]) -> dict[str, Any]:
    """The recipe as one self-contained dict (no ``defaults:``, absolute paths)."""
    out: dict[str, Any] = {
        "experiment": recipe.experiment,
        "seed": recipe.seed,
        "jobs": 1,
        "backend": recipe.backend,
        "on_bad_audio": recipe.on_bad_audio,
        "data": data,
        "features": dict(recipe.features),
        "ubm": recipe.section("ubm"),
        "map": recipe.section("map"),
        "scoring": recipe.section("scoring"),
        "evaluation": {**recipe.section("evaluation"), "det_plot": False},
    }
    if recipe.scheduler:
        out["scheduler"] = recipe.scheduler
    return out


def data_section(recipe: Recipe, out: Path, jobs: int) -> dict[str, Any]:
    """The recipe's data as absolute paths; a synthetic corpus is generated once into ``out/corpus``."""
    d = recipe.data
    if d.synthetic is not None:
        from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

        paths = generate_corpus(out / "corpus", SyntheticCorpusConfig.from_dict(d.synthetic), n_jobs=jobs)
        root = (out / "corpus").resolve()
        return {
            "root": str(root),
            "ubm": str((root / paths["ubm"]).resolve()),
            "enroll": str((root / paths["enroll"]).resolve()),
            "trials": str((root / paths["trials"]).resolve()),
            "cohort": str((root / paths["ubm"]).resolve()),
            "resample": d.resample,
        }
    data: dict[str, Any] = {"root": str(d.root), "resample": d.resample}
    for k in ("ubm", "enroll", "trials", "cohort", "dev_trials"):
        if getattr(d, k) is not None:
            data[k] = str(getattr(d, k))
    return data


def apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    for key, value in overrides.items():
        section, name = key.split(".", 1)
        out[section][name] = value
    return out


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_keys(cfg: dict[str, Any]) -> dict[str, str]:
    """Keys of the upstream configuration of each shareable stage (equal key: equal outputs)."""
    f = _key(cfg["data"], cfg["features"], cfg["on_bad_audio"])
    u = _key(f, cfg["ubm"], cfg["seed"])
    e = _key(u, cfg["map"])
    return {"features": f, "ubm": u, "enroll": e}


# -- running ----------------------------------------------------------------------------------
def link_outputs(src: Path, dst: Path, stage: str) -> None:
    """Hard-link a finished row's outputs of ``stage`` (and its stage record) into ``dst``."""
    (dst / "stages").mkdir(parents=True, exist_ok=True)
    for name in STAGE_OUTPUTS[stage]:
        s, d = src / name, dst / name
        if d.exists():
            continue
        if s.is_dir():
            shutil.copytree(s, d, copy_function=os.link)
        else:
            os.link(s, d)
    shutil.copy2(src / "stages" / f"{stage}.json", dst / "stages" / f"{stage}.json")


def run_row(row: Row, jobs: int) -> tuple[dict[str, Any] | None, str | None]:
    """Run one row (in this process if ``jobs == 1``, else through the CLI in a child process)."""
    if jobs == 1:
        try:
            res = run_recipe(row.recipe_path, workdir=row.workdir, jobs=1)
        except GmmSpeakerError as exc:
            return None, str(exc)
        return res.results, None
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "gmmspeaker.cli", "run", str(row.recipe_path), "--workdir", str(row.workdir)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None, (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads((row.workdir / "results.json").read_text()), None


def run_rows(rows: list[Row], cfgs: dict[str, dict[str, Any]], jobs: int, log: Callable[[str], None]) -> None:
    """Run every row in waves so that shared stages are computed once and linked."""
    keys = {r.slug: stage_keys(cfgs[r.slug]) for r in rows}
    done: dict[tuple[str, str], Path] = {}  # (stage, key) -> workdir of a finished row
    pending = list(rows)
    for wave_stage in ("features", "ubm", "enroll", None):
        if wave_stage is None:
            wave, pending = pending, []
        else:
            wave, seen, rest = [], set(), []
            for r in pending:
                k = keys[r.slug][wave_stage]
                if (wave_stage, k) in done or k in seen:
                    rest.append(r)
                else:
                    seen.add(k)
                    wave.append(r)
            pending = rest
        for r in wave:
            for stage in ("features", "ubm", "enroll"):
                src = done.get((stage, keys[r.slug][stage]))
                if src is None:
                    break
                link_outputs(src, r.workdir, stage)
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = {pool.submit(run_row, r, jobs): r for r in wave}
            for fut in concurrent.futures.as_completed(futures):
                r = futures[fut]
                r.results, r.error = fut.result()
                if r.error is None:
                    for stage in ("features", "ubm", "enroll"):
                        done.setdefault((stage, keys[r.slug][stage]), r.workdir)
                    r.seconds = sum(
                        float(json.loads(p.read_text()).get("seconds", 0.0))
                        for p in (r.workdir / "stages").glob("*.json")
                    )
                    log(f"  {r.name}: EER {100 * r.results['eer']:.2f} % ({r.seconds:.1f} s)")
                else:
                    log(f"  {r.name}: FAILED: {r.error}")


def collect_rows(rows: list[Row]) -> None:
    """Take the results of rows already run in their workdirs; the others are marked 'not run'."""
    for r in rows:
        path = r.workdir / "results.json"
        if not path.is_file() or not (r.workdir / "scores.txt").is_file():
            r.error = "not run"
            continue
        r.results = json.loads(path.read_text())
        r.seconds = sum(
            float(json.loads(p.read_text()).get("seconds", 0.0))
            for p in (r.workdir / "stages").glob("*.json")
        )


# -- bootstrap --------------------------------------------------------------------------------
def point_metrics(scores: np.ndarray, key: np.ndarray, p_target: float) -> np.ndarray:
    """``[eer, min_dcf(p_target), cllr]`` of one score list, float64 ``(3,)``."""
    t, n = scores[key], scores[~key]
    return np.array([eer(t, n), min_dcf(t, n, p_target=p_target), cllr(t, n)])


def bootstrap_indices(models: Sequence[str], n_boot: int, seed: int) -> list[np.ndarray]:
    """Trial indices of ``n_boot`` resamples of the models (drawn with replacement)."""
    ids = sorted(set(models))
    by_model = {m: np.flatnonzero(np.asarray(models) == m) for m in ids}
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        pick = rng.integers(0, len(ids), size=len(ids))
        out.append(np.concatenate([by_model[ids[i]] for i in pick]))
    return out


def bootstrap_metrics(
    scores: np.ndarray, key: np.ndarray, resamples: list[np.ndarray], p_target: float
) -> np.ndarray:
    """Metrics of every resample, float64 ``(n_boot, 3)``; resamples lacking a class are NaN."""
    out = np.full((len(resamples), 3), np.nan)
    for b, idx in enumerate(resamples):
        k = key[idx]
        if k.any() and not k.all():
            out[b] = point_metrics(scores[idx], k, p_target)
    return out


def interval(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(v, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(rows: list[Row], base: Row, n_boot: int, seed: int, p_target: float, jobs: int) -> None:
    """Fill ``row.table``: metrics, intervals and paired differences to the baseline."""
    pairs, bscores, bkeys = read_scores(base.workdir / "scores.txt")
    key = np.array(bkeys, dtype=bool)
    resamples = bootstrap_indices([m for m, _ in pairs], n_boot, seed)
    bpoint = point_metrics(bscores, key, p_target)
    bboot = bootstrap_metrics(bscores, key, resamples, p_target)
    ok = [r for r in rows if r.error is None]
    all_scores = []
    for r in ok:
        rpairs, scores, _ = read_scores(r.workdir / "scores.txt")
        if rpairs != pairs:
            raise GmmSpeakerError(f"{r.workdir / 'scores.txt'}: trials differ from the baseline's")
        all_scores.append(scores)
    boots = joblib.Parallel(n_jobs=max(1, jobs))(
        joblib.delayed(bootstrap_metrics)(s, key, resamples, p_target) for s in all_scores[1:]
    )
    for r, scores, boot in zip(ok, all_scores, [bboot, *boots]):
        point = point_metrics(scores, key, p_target)
        entry: dict[str, Any] = {"seconds": r.seconds}
        for j, m in enumerate(METRICS):
            entry[m] = float(point[j])
            entry[f"{m}_ci"] = interval(boot[:, j])
            entry[f"d_{m}"] = float(point[j] - bpoint[j])
            entry[f"d_{m}_ci"] = interval(boot[:, j] - bboot[:, j])
        r.table = entry


# -- output -----------------------------------------------------------------------------------
def _fmt(v: float, ci: tuple[float, float], scale: float, digits: int) -> str:
    return f"{scale * v:.{digits}f} [{scale * ci[0]:.{digits}f}, {scale * ci[1]:.{digits}f}]"


def _fmt_diff(v: float, ci: tuple[float, float], scale: float, digits: int) -> str:
    star = "*" if (ci[0] > 1e-12 or ci[1] < -1e-12) else ""
    return f"{scale * v:+.{digits}f} [{scale * ci[0]:+.{digits}f}, {scale * ci[1]:+.{digits}f}]{star}"


def markdown_table(rows: list[Row], base: Row) -> str:
    head = (
        "| setting | EER % | ΔEER (points) | minDCF(0.01) | ΔminDCF | Cllr | ΔCllr | time s |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        if r.error is not None:
            status = r.error if r.error == "not run" else f"failed: {r.error}"
            lines.append(f"| {r.name} | {status} | | | | | | |")
            continue
        t = r.table

        def diff(m: str, s: float, d: int, t: dict[str, Any] = t, is_base: bool = r is base) -> str:
            return "—" if is_base else _fmt_diff(t[f"d_{m}"], t[f"d_{m}_ci"], s, d)

        lines.append(
            f"| {r.name} | {_fmt(t['eer'], t['eer_ci'], 100, 2)} | {diff('eer', 100, 2)} "
            f"| {_fmt(t['min_dcf'], t['min_dcf_ci'], 1, 3)} | {diff('min_dcf', 1, 3)} "
            f"| {_fmt(t['cllr'], t['cllr_ci'], 1, 3)} | {diff('cllr', 1, 3)} | {t['seconds']:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def build_rows(args: argparse.Namespace, base_values: dict[str, dict[str, Any]]) -> list[Row]:
    specs = list(GRIDS[args.grid])
    specs += args.set or []
    rows = [Row("baseline", {})]
    seen: set[str] = set()
    for spec in specs:
        ov = parse_setting(spec)
        if same_as_baseline(ov, base_values):
            continue
        name = setting_name(ov)
        if name in seen:
            continue
        seen.add(name)
        rows.append(Row(name, ov))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs and the tables")
    ap.add_argument("--jobs", type=int, default=1, help="rows run at the same time (default 1)")
    ap.add_argument(
        "--grid",
        choices=tuple(GRIDS),
        default="default",
        help="built-in rows: default (every setting), core (a cheaper subset) or none",
    )
    ap.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="an extra row (repeatable); list values as a+b (map.adapt=means+weights)",
    )
    ap.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples (default 500)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    ap.add_argument("--p-target", type=float, default=0.01, help="minDCF operating point")
    ap.add_argument(
        "--collect", action="store_true", help="run nothing: tabulate the rows already run in OUT"
    )
    ap.add_argument(
        "--table",
        default="ablation",
        help="name of the written tables: OUT/TABLE.md, .json (default ablation)",
    )
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        recipe = load_recipe(args.recipe)
        out = args.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
        base_cfg = resolved_recipe(recipe, data_section(recipe, out, max(1, args.jobs)))
        rows = build_rows(args, baseline_values(recipe))
        cfgs: dict[str, dict[str, Any]] = {}
        for r in rows:
            cfg = apply(base_cfg, r.overrides)
            r.slug = "baseline" if not r.overrides else _key(r.overrides)
            cfg["experiment"] = f"ablate-{r.slug}"
            r.workdir = out / "runs" / r.slug
            r.recipe_path = out / "recipes" / f"{r.slug}.yaml"
            r.recipe_path.parent.mkdir(parents=True, exist_ok=True)
            r.recipe_path.write_text(
                f"# ablation row: {r.name}\n" + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8"
            )
            load_recipe(r.recipe_path)  # validate every row before running any
            cfgs[r.slug] = cfg
        log(f"{len(rows)} rows, {args.jobs} at a time, outputs in {out}")
        if args.collect:
            collect_rows(rows)
        else:
            run_rows(rows, cfgs, args.jobs, log)
        base = rows[0]
        if base.error is not None:
            raise GmmSpeakerError(f"the baseline failed: {base.error}")
        log(f"bootstrap: {args.bootstrap} resamples of the models")
        summarise(rows, base, args.bootstrap, args.seed, args.p_target, args.jobs)
    except GmmSpeakerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    wall = time.perf_counter() - t0
    table = markdown_table(rows, base)
    note = (
        f"Recipe `{args.recipe}`; 95 % intervals: bootstrap over models ({args.bootstrap} resamples, "
        f"seed {args.seed}), differences by a paired bootstrap (* = interval excludes 0); "
        f"time = sum of the stage times of the configuration run from scratch; study wall time {wall:.0f} s "
        f"with --jobs {args.jobs}.\n"
    )
    (out / f"{args.table}.md").write_text(table + "\n" + note, encoding="utf-8")
    (out / f"{args.table}.json").write_text(
        json.dumps(
            {
                "recipe": str(args.recipe),
                "bootstrap": args.bootstrap,
                "seed": args.seed,
                "p_target": args.p_target,
                "wall_seconds": wall,
                "rows": [
                    {
                        "name": r.name,
                        "overrides": r.overrides,
                        "workdir": str(r.workdir),
                        "error": r.error,
                        **r.table,
                    }
                    for r in rows
                ],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    print(table + "\n" + note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
