"""The ``gmmspeaker`` command line: thin wrappers over the Python API.

Errors that gmmspeaker raises on purpose print one line and exit with status 2
(a traceback only with ``--debug``); Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from gmmspeaker import __version__
from gmmspeaker.errors import GmmSpeakerError

logger = logging.getLogger("gmmspeaker.cli")


def _load_yaml_mapping(path: str, section: str | None = None) -> dict[str, Any]:
    """A YAML file of options (or one section of a recipe-shaped file), loaded like a recipe."""
    from gmmspeaker.recipe.config import _load_yaml, _Where

    data = _load_yaml(Path(path), _Where())
    if section is not None and isinstance(data.get(section), dict):
        return dict(data[section])
    return data


def _read_any_list(path: str, root: str | None) -> list[Any]:
    """Utterances named by a ubm, enroll or trials list (format guessed from its lines)."""
    from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list

    lines = [
        ln.split()
        for ln in Path(path).read_text(encoding="utf-8").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    if lines and all(len(f) == 1 for f in lines):
        return read_ubm_list(path, root=root)
    if lines and all(f[-1] in ("target", "nontarget") for f in lines):
        return [t.test for t in read_trials(path, root=root)]
    return [u for e in read_enroll_list(path, root=root) for u in e.utterances]


def _unique(utts: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for u in utts:
        seen.setdefault(u.utt_id, u)
    return list(seen.values())


def cmd_features(a: argparse.Namespace) -> int:
    from gmmspeaker.features import FeatureConfig
    from gmmspeaker.store import extract_to_store

    cfg = FeatureConfig.from_dict(
        _load_yaml_mapping(a.config, "features") if a.config else {}, source=a.config or "<defaults>"
    )
    utts = _unique(_read_any_list(a.list, a.root))
    rep = extract_to_store(
        [(u.utt_id, u.path) for u in utts],
        a.out,
        cfg,
        jobs=a.jobs,
        on_bad_audio=a.on_bad_audio,
        resample=a.resample,
        progress=not a.quiet,
        compression=a.compression,
    )
    print(f"{len(rep.computed)} computed, {len(rep.cached)} cached, {len(rep.skipped)} skipped -> {a.out}")
    if rep.computed:
        print(f"VAD kept {100 * rep.kept_fraction:.1f} % of {rep.frames_total} frames")
    return 0


def cmd_train_ubm(a: argparse.Namespace) -> int:
    from gmmspeaker.corpora.lists import read_ubm_list
    from gmmspeaker.recipe.stages import train_ubm
    from gmmspeaker.store import FeatureStore

    store = FeatureStore(a.features)
    ids = [u.utt_id for u in read_ubm_list(a.list, root=a.root)] if a.list else store.ids
    gmm = train_ubm(
        store,
        ids,
        components=a.components,
        iterations=a.iterations,
        init=a.init,
        variance_floor=a.variance_floor,
        seed=a.seed,
        jobs=a.jobs,
        progress=not a.quiet,
        checkpoint=Path(str(a.out) + ".checkpoint.h5"),
    )
    gmm.save(a.out)
    ck = Path(str(a.out) + ".checkpoint.h5")
    if ck.exists():
        ck.unlink()
    print(f"UBM with {a.components} components -> {a.out}")
    return 0


def cmd_enroll(a: argparse.Namespace) -> int:
    from gmmspeaker.corpora.lists import read_enroll_list
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.recipe.stages import enroll_models
    from gmmspeaker.store import FeatureStore

    models = enroll_models(
        FeatureStore(a.features),
        read_enroll_list(a.list, root=a.root),
        GaussianMixture.load(a.ubm),
        relevance=a.relevance,
        adapt=a.adapt.split(","),
        jobs=a.jobs,
        progress=not a.quiet,
    )
    models.save(a.out)
    print(f"{len(models.model_ids)} models -> {a.out}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from gmmspeaker.corpora.lists import read_trials
    from gmmspeaker.gmm.map import SpeakerModels
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.recipe.stages import score_trials, write_scores
    from gmmspeaker.store import FeatureStore

    models = SpeakerModels.load(a.models)
    trials = read_trials(a.trials, root=a.root, models=set(models.model_ids))
    scores = score_trials(
        FeatureStore(a.features),
        trials,
        GaussianMixture.load(a.ubm),
        models,
        method=a.method,
        top_c=a.top_c,
        jobs=a.jobs,
        progress=not a.quiet,
    )
    write_scores(a.out, trials, scores)
    print(f"{len(trials)} scores -> {a.out}")
    return 0


def format_results(res: dict[str, Any]) -> str:
    """The final results table."""
    rows = [("EER", f"{100 * res['eer']:.2f} %")]
    by_prior = lambda d: sorted(d.items(), key=lambda kv: -float(kv[0]))  # noqa: E731
    for p, v in by_prior(res.get("min_dcf", {})):
        rows.append((f"minDCF (P_tar={p})", f"{v:.4f}"))
    for p, v in by_prior(res.get("act_dcf", {})):
        rows.append((f"actDCF (P_tar={p})", f"{v:.4f}"))
    if "calibrated" in res:
        c = res["calibrated"]
        for p, v in by_prior(c.get("act_dcf", {})):
            rows.append((f"calibrated actDCF (P_tar={p})", f"{v:.4f}"))
        rows.append(("calibrated Cllr", f"{c['cllr']:.4f}"))
    if "cllr" in res:
        rows.append(("Cllr / minCllr", f"{res['cllr']:.4f} / {res.get('min_cllr', float('nan')):.4f}"))
    rows.append(("trials (target / nontarget)", f"{res['n_target']} / {res['n_nontarget']}"))
    if res.get("n_skipped_audio"):
        rows.append(("skipped audio files", str(res["n_skipped_audio"])))
    for name, m in (res.get("systems") or {}).items():  # a fusion: each system and the fused scores
        dcf = ", ".join(f"{v:.4f}" for _, v in by_prior(m.get("min_dcf", {})))
        rows.append((f"{name}: EER / minDCF / Cllr", f"{100 * m['eer']:.2f} % / {dcf} / {m['cllr']:.4f}"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from gmmspeaker.recipe.stages import evaluate_scores, read_scores

    pairs, scores, keys = read_scores(a.scores)
    if a.trials:
        from gmmspeaker.corpora.lists import read_trials

        trials = read_trials(a.trials, root=a.root, check_exists=False)
        lookup = {(t.model_id, t.test.utt_id): t.target for t in trials}
        keys = [lookup.get(p) for p in pairs]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    p_targets = tuple(float(x) for x in a.p_target.split(","))
    res = evaluate_scores(scores, keys, p_targets=p_targets, det_plot=None if a.no_plot else out / "det.png")
    (out / "results.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    print(format_results(res))
    print(f"-> {out / 'results.json'}" + ("" if a.no_plot else f", {out / 'det.png'}"))
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from gmmspeaker.recipe.runner import run_recipe

    res = run_recipe(
        a.recipe,
        workdir=a.workdir,
        jobs=a.jobs,
        force=a.force,
        from_stage=a.from_stage,
        until_stage=a.until_stage,
        dry_run=a.dry_run,
        progress=not a.quiet,
    )
    for stage, action in res.actions.items():
        why = res.reasons.get(stage, "")
        secs = res.seconds.get(stage)
        extra = f" ({why})" if why and action != "skipped" else ""
        t = f"  {secs:7.1f} s" if secs is not None and action == "ran" else ""
        print(f"{stage:<9} {action}{extra}{t}" if action != "skipped" else f"{stage:<9} up to date")
    if res.results is not None:
        print(f"\nResults ({res.workdir}):")
        print(format_results(res.results))
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    import h5py

    from gmmspeaker.errors import DataError

    p = Path(a.file)
    if p.is_dir() and (p / "manifest.json").exists():
        from gmmspeaker.store import FeatureStore

        st = FeatureStore(p)
        frames = sum(st.n_frames(u) for u in st.ids)
        print(
            f"feature store {p}: {len(st)} utterances, {frames} frames, dim {st.dim}, config {st.config_hash[:12]}"
        )
        print(json.dumps(st.config, indent=1, sort_keys=True))
        return 0
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with h5py.File(p, "r") as h5:
            print(f"{p}:")
            for k, v in sorted(h5.attrs.items()):
                s = str(v)
                print(f"  @{k} = {s[:200]}{'...' if len(s) > 200 else ''}")
            datasets: list[tuple[str, Any]] = []
            h5.visititems(lambda n, o: datasets.append((n, o)) if isinstance(o, h5py.Dataset) else None)
            for name, ds in datasets[:50]:
                print(f"  {name}: {ds.shape} {ds.dtype}")
            if len(datasets) > 50:
                print(f"  ... and {len(datasets) - 50} more datasets")
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise DataError(f"{p}: not a readable HDF5 file ({exc})") from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gmmspeaker.recipe.config import STAGES

    ap = argparse.ArgumentParser(prog="gmmspeaker", description="Speaker recognition with GMM-UBM.")
    ap.add_argument("--version", action="version", version=f"gmmspeaker {__version__}")
    ap.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    sub = ap.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a recipe (every out-of-date stage)")
    r.add_argument("recipe")
    r.add_argument("--workdir", help="outputs folder (default exp/<experiment>)")
    r.add_argument("--jobs", type=int, help="parallel workers (overrides the recipe)")
    r.add_argument("--force", action="store_true", help="rerun every stage")
    r.add_argument("--from-stage", choices=list(STAGES))
    r.add_argument("--until-stage", choices=list(STAGES))
    r.add_argument("--dry-run", action="store_true", help="say what would run and why")
    r.set_defaults(func=cmd_run)

    f = sub.add_parser("features", help="extract features of the audio in a list into an HDF5 store")
    f.add_argument("list", help="ubm, enroll or trials list")
    f.add_argument("--root", help="corpus root of the list's paths (default: the list's folder)")
    f.add_argument("--out", required=True, help="feature store folder")
    f.add_argument("--config", help="YAML of feature options (flat, or a recipe's features: section)")
    f.add_argument("--jobs", type=int, default=1)
    f.add_argument("--resample", action="store_true", help="resample audio of another rate")
    f.add_argument("--on-bad-audio", choices=["error", "skip"], default="error")
    f.add_argument("--compression", choices=["gzip", "lzf"], default=None)
    f.set_defaults(func=cmd_features)

    u = sub.add_parser("train-ubm", help="train a UBM on the features of a store")
    u.add_argument("--features", required=True, help="feature store folder")
    u.add_argument("--list", help="ubm list (default: every utterance in the store)")
    u.add_argument("--root")
    u.add_argument("--out", required=True, help="ubm.h5 to write")
    u.add_argument("--components", type=int, default=64)
    u.add_argument("--iterations", type=int, default=10)
    u.add_argument("--init", choices=["split", "kmeans++", "random"], default="split")
    u.add_argument("--variance-floor", type=float, default=1e-3)
    u.add_argument("--seed", type=int, default=0)
    u.add_argument("--jobs", type=int, default=1)
    u.set_defaults(func=cmd_train_ubm)

    e = sub.add_parser("enroll", help="MAP-adapt speaker models from an enroll list")
    e.add_argument("--features", required=True)
    e.add_argument("--ubm", required=True)
    e.add_argument("--list", required=True, help="enroll list: model_id path [path ...]")
    e.add_argument("--root")
    e.add_argument("--out", required=True, help="models.h5 to write")
    e.add_argument("--relevance", type=float, default=16.0)
    e.add_argument("--adapt", default="means", help="comma-separated: means,weights,variances")
    e.add_argument("--jobs", type=int, default=1)
    e.set_defaults(func=cmd_enroll)

    s = sub.add_parser("score", help="score a trial list")
    s.add_argument("--features", required=True)
    s.add_argument("--ubm", required=True)
    s.add_argument("--models", required=True)
    s.add_argument("--trials", required=True)
    s.add_argument("--root")
    s.add_argument("--out", required=True, help="scores file to write")
    s.add_argument("--method", choices=["full", "top_c", "linear"], default="top_c")
    s.add_argument("--top-c", type=int, default=5)
    s.add_argument("--jobs", type=int, default=1)
    s.set_defaults(func=cmd_score)

    v = sub.add_parser("evaluate", help="metrics of a scores file: table, results.json, det.png")
    v.add_argument("scores", help="model_id test_id score [target|nontarget]")
    v.add_argument("--trials", help="trial list with keys (when the scores file has none)")
    v.add_argument("--root")
    v.add_argument("--out", default=".", help="folder for results.json and det.png")
    v.add_argument("--p-target", default="0.01,0.001")
    v.add_argument("--no-plot", action="store_true")
    v.set_defaults(func=cmd_evaluate)

    i = sub.add_parser("info", help="what a feature store, UBM or models file holds")
    i.add_argument("file")
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gmmspeaker`` console script."""
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for handler in logging.getLogger().handlers:  # a run's log file may lower the package's level
        handler.setLevel(level)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except GmmSpeakerError as exc:
        if args.debug:
            raise
        msg = str(exc)
        print(f"gmmspeaker: error: {msg}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(
            "gmmspeaker: interrupted; finished work is kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
