"""The ``gmmspeaker`` command line: thin wrappers over the Python API.

Errors that gmmspeaker raises on purpose print one line and exit with status 2
(a traceback only with ``--debug``); Ctrl-C exits with 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gmmspeaker import __version__
from gmmspeaker.errors import GmmSpeakerError

logger = logging.getLogger("gmmspeaker.cli")


def _load_yaml_mapping(path: str, section: str | None = None) -> dict[str, Any]:
    """A YAML file of options: flat, or a recipe-shaped file (a whole recipe) whose ``section`` is taken.

    ``defaults:`` are resolved as ``gmmspeaker run`` does (recipe-shaped files merged
    underneath); keys of a flat file override the ``section`` of its defaults. Keys of a
    recipe's other sections are ignored.
    """
    import dataclasses

    from gmmspeaker.recipe.config import Recipe, load_yaml_with_defaults

    data = load_yaml_with_defaults(Path(path))
    if section is None:
        return data
    # every top-level key a recipe may have (system, ivector, fusion, ... included)
    recipe_keys = {f.name for f in dataclasses.fields(Recipe)}
    out = dict(data[section]) if isinstance(data.get(section), dict) else {}
    out.update({k: v for k, v in data.items() if k not in recipe_keys})
    return out


def _p_targets(text: str) -> tuple[float, ...]:
    """``--p-target`` values: comma-separated probabilities in (0, 1) (an argparse type)."""
    out = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a number (in {text!r})") from None
        if not 0.0 < v < 1.0:
            raise argparse.ArgumentTypeError(f"{part.strip()} is not a probability in (0, 1) (in {text!r})")
        out.append(v)
    return tuple(out)


def _channel(text: str) -> int | str:
    """``--channel``: a channel index (0 = first/left) or ``mix`` (an argparse type)."""
    if text == "mix":
        return "mix"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a channel number (0, 1, ...) nor 'mix'"
        ) from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"channel numbers start at 0, got {v}")
    return v


def _p_target(text: str) -> float:
    """One ``--p-target`` probability in (0, 1) (an argparse type)."""
    vals = _p_targets(text)
    if len(vals) != 1:
        raise argparse.ArgumentTypeError(f"one probability expected, got {text!r}")
    return vals[0]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``gmmspeaker verify: error: ...``) and exit status 2."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _jobs(text: str) -> int:
    """``--jobs``: a positive number of workers or -1 for all cores (an argparse type)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n == 0 or n < -1:
        raise argparse.ArgumentTypeError(f"{n}: give a positive number of workers, or -1 for all cores")
    return n


def _utf8(value: str, option: str) -> str:
    """``value`` of ``option`` if it is valid UTF-8 text (ids are stored as UTF-8), else a GmmSpeakerError."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise GmmSpeakerError(
            f"{option} {value.encode('utf-8', 'surrogateescape')!r}: not valid UTF-8; use a UTF-8 name"
        ) from None
    return value


def _read_any_list(path: str, root: str | None) -> list[Any]:
    """Utterances named by a ubm, enroll or trials list (format guessed from its lines)."""
    from gmmspeaker.corpora.lists import read_enroll_list, read_lines, read_trials, read_ubm_list

    lines = [fields for _, fields in read_lines(Path(path))]
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
    from gmmspeaker.features.extract import resolve_sample_rate
    from gmmspeaker.store import extract_to_store

    # no --config: sample_rate auto (8 or 16 kHz defaults, from the audio)
    given = _load_yaml_mapping(a.config, "features") if a.config else {"sample_rate": "auto"}
    cfg = FeatureConfig.from_dict(given, source=a.config or "<defaults>")
    utts = _unique(_read_any_list(a.list, a.root))
    cfg = resolve_sample_rate(
        cfg, [u.path for u in utts], resample=a.resample, resample_flag="--resample", config_flag="--config"
    )
    if not a.config:
        print(f"sample rate {cfg.sample_rate} Hz: default features for {cfg.sample_rate // 1000} kHz audio")
    rep = extract_to_store(
        [(u.utt_id, u.path) for u in utts],
        a.out,
        cfg,
        jobs=a.jobs,
        on_bad_audio=a.on_bad_audio,
        resample=a.resample,
        progress=not a.quiet,
        compression=a.compression,
        content_check=a.content_check,
        channel=a.channel,
    )
    print(f"{len(rep.computed)} computed, {len(rep.cached)} cached, {len(rep.skipped)} skipped -> {a.out}")
    if rep.computed:
        print(f"VAD kept {100 * rep.kept_fraction:.1f} % of {rep.frames_total} frames")
    return 0


def cmd_train_ubm(a: argparse.Namespace) -> int:
    from gmmspeaker.corpora.lists import read_ubm_list
    from gmmspeaker.gmm.batch import train_ubm
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
    if a.features is None and a.list is None and a.ubm is None and a.out is None:
        return cmd_enroll_audio(a)
    missing = [f"--{k}" for k in ("features", "ubm", "list", "out") if getattr(a, k) is None]
    if missing or a.expdir is not None or a.model is not None:
        a.parser.error(
            "use either 'enroll EXPDIR --model ID AUDIO...' or "
            "'enroll --features STORE --ubm UBM --list LIST --out MODELS'"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    a.relevance = 16.0 if a.relevance is None else a.relevance
    a.adapt = "means" if a.adapt is None else a.adapt
    from gmmspeaker.corpora.lists import read_enroll_list
    from gmmspeaker.gmm.batch import enroll_models
    from gmmspeaker.gmm.model import GaussianMixture
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


def _experiment_args(a: argparse.Namespace, *, model: bool) -> Any:
    """Open EXPDIR after checking the positional arguments of enroll/verify/identify."""
    from gmmspeaker.system import Experiment

    if a.expdir is None or not a.audio:
        a.parser.error("expected EXPDIR and at least one AUDIO file")
    if model and not a.model:
        a.parser.error("--model ID is required")
    if model:
        _utf8(a.model, "--model")
    return Experiment.open(a.expdir)


def cmd_enroll_audio(a: argparse.Namespace) -> int:
    """``enroll EXPDIR --model ID AUDIO...``: MAP-adapt a model from audio into a trained experiment."""
    if a.relevance is not None or a.adapt is not None:
        a.parser.error(
            "--relevance/--adapt belong to list-based enrolment; EXPDIR uses its recipe's map settings"
        )
    exp = _experiment_args(a, model=True)
    r = exp.enroll(a.model, a.audio, replace=a.replace, channel=a.channel)
    if r.duplicates:
        print(f"{len(r.duplicates)} file(s) listed more than once were used once: {', '.join(r.duplicates)}")
    if r.replaced == "user":
        print(f"model {r.model_id!r} already enrolled: re-enrolled, the previous model is replaced")
    elif r.replaced == "recipe":
        print(
            f"model {r.model_id!r} is a recipe model: the new model replaces it for verify and identify "
            "(the recipe's models file is left as the run wrote it)"
        )
    thr = "" if r.threshold is None else f"; default threshold {r.threshold:.4f}"
    print(
        f"enrolled {r.model_id} from {r.n_files} file(s), {r.n_frames} frames "
        f"({r.speech_seconds:.2f} s of speech{thr}) -> {r.path}"
    )
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    """``verify EXPDIR --model ID AUDIO...``: scores and accept/reject decisions."""
    exp = _experiment_args(a, model=True)
    results = exp.verify(
        a.model,
        a.audio,
        threshold=a.threshold,
        p_target=a.p_target,
        channel=a.channel,
        on_bad_audio=a.on_bad_audio,
    )

    def lines(r: Any) -> list[str]:
        cal = "" if r.calibrated_llr is None else f"  calibrated LLR {r.calibrated_llr:8.4f}"
        norm = "" if exp.normalization == "none" else f"  score ({exp.normalization}) {r.score:8.4f}"
        return [f"{r.audio}  model {r.model}  raw LLR {r.raw_llr:8.4f}{norm}{cal}  {r.decision}"]

    first = results[0]
    header = f"threshold {first.threshold:.4f}: {first.threshold_source}"
    return _print_batch(results, as_json=a.json, header=header, skipped="  skipped: ", lines=lines)


def _print_batch(
    results: list[Any], *, as_json: bool, header: str | None, skipped: str, lines: Callable[[Any], list[str]]
) -> int:
    """Print a verify/identify batch and return its exit status.

    ``--json``: one object per file (skipped files too, with their ``error``); else the
    ``header``, then per file ``lines(result)``, or ``audio + skipped + error`` for a file
    skipped as unusable.
    """
    if not as_json and header is not None:
        print(header)
    for r in results:
        if as_json:
            print(json.dumps(r.to_dict()))
        elif r.error is not None:
            print(f"{r.audio}{skipped}{r.error}")
        else:
            for line in lines(r):
                print(line)
    return _batch_status(results)


def _batch_status(results: list[Any]) -> int:
    """Exit status of a verify/identify batch: 0, or 2 when every file was skipped."""
    skipped = sum(r.error is not None for r in results)
    if skipped:
        print(f"gmmspeaker: {skipped} of {len(results)} file(s) skipped (unusable audio)", file=sys.stderr)
    return 2 if results and skipped == len(results) else 0


def cmd_identify(a: argparse.Namespace) -> int:
    """``identify EXPDIR AUDIO...``: enrolled models ranked per file."""
    if a.top_n < 1:
        a.parser.error(f"--top-n must be >= 1, got {a.top_n}")
    exp = _experiment_args(a, model=False)
    results = exp.identify(
        a.audio, top_n=a.top_n, threshold=a.threshold, channel=a.channel, on_bad_audio=a.on_bad_audio
    )

    def lines(r: Any) -> list[str]:
        return [f"{r.audio}: {r.decision}"] + [
            f"  {rank:2d}. {m:<20} {sc:8.4f}" for rank, (m, sc) in enumerate(r.ranking, 1)
        ]

    return _print_batch(results, as_json=a.json, header=None, skipped=": skipped: ", lines=lines)


def cmd_models(a: argparse.Namespace) -> int:
    """``models EXPDIR``: the recipe's and the users' models."""
    from gmmspeaker.system import Experiment

    models = Experiment.open(a.expdir).list_models()
    if a.json:
        for m in models:
            print(json.dumps(m.to_dict()))
        return 0
    w = max([len(m.model_id) for m in models] + [5])
    print(f"{'model':<{w}}  {'source':<6}  {'status':<8}  {'files':>5}  {'speech':>8}  enrolled (UTC)")
    for m in models:
        note = f"  ({m.note})" if m.note else ""
        print(
            f"{m.model_id:<{w}}  {m.source:<6}  {m.status:<8}  {len(m.files):>5}  "
            f"{'?' if m.speech_seconds is None else f'{m.speech_seconds:.1f}':>7}s  {m.enrolled or '?'}{note}"
        )
    return 0


def cmd_unenroll(a: argparse.Namespace) -> int:
    """``unenroll EXPDIR --model ID``: remove a user model."""
    from gmmspeaker.system import Experiment

    restored = Experiment.open(a.expdir).unenroll(a.model)
    extra = "; the recipe's model of that id is used again" if restored else ""
    print(f"user model {a.model} removed{extra}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from gmmspeaker.corpora.lists import read_trials
    from gmmspeaker.gmm.batch import score_trials
    from gmmspeaker.gmm.map import SpeakerModels
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.scoring.trials import write_scores
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
    ident = res.get("identification")
    if ident and ident.get("n_tests"):
        rows.append(
            (
                "identification top-1 / top-5",
                f"{100 * ident['top1']:.2f} % / {100 * ident['top5']:.2f} % ({ident['n_tests']} tests)",
            )
        )
    if res.get("n_skipped_audio"):
        rows.append(("skipped audio files", str(res["n_skipped_audio"])))
    for name, m in (res.get("systems") or {}).items():  # a fusion: each system and the fused scores
        dcf = ", ".join(f"{v:.4f}" for _, v in by_prior(m.get("min_dcf", {})))
        rows.append((f"{name}: EER / minDCF / Cllr", f"{100 * m['eer']:.2f} % / {dcf} / {m['cllr']:.4f}"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from gmmspeaker.scoring.report import write_experiment_report, write_score_histogram
    from gmmspeaker.scoring.trials import evaluate_scores, read_scores

    pairs, scores, keys = read_scores(a.scores)
    if a.trials:
        from gmmspeaker.corpora.lists import read_trials

        trials = read_trials(a.trials, root=a.root, check_exists=False)
        lookup = {(t.model_id, t.test.utt_id): t.target for t in trials}
        keys = [lookup.get(p) for p in pairs]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    p_targets = tuple(a.p_target)
    res = evaluate_scores(scores, keys, p_targets=p_targets, det_plot=None if a.no_plot else out / "det.png")
    res["score_label"] = f"score from {Path(a.scores).name}"
    res["thresholds"] = write_score_histogram(
        out, scores, keys, p_targets=p_targets, plot=not a.no_plot, score_label=res["score_label"]
    )
    (out / "results.json").write_text(json.dumps(res, indent=1, sort_keys=True))
    report = write_experiment_report(out, res)
    print(format_results(res))
    plots = "" if a.no_plot else f", {out / 'det.png'}, {out / 'score_hist.png'}"
    print(f"-> {out / 'results.json'}{plots}, {report}")
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
    width = max((len(s) for s in res.actions), default=0)
    for stage, action in res.actions.items():
        why = res.reasons.get(stage, "")
        secs = res.seconds.get(stage)
        extra = f" ({why})" if why and action != "skipped" else ""
        t = f"  {secs:7.1f} s" if secs is not None and action == "ran" else ""
        name = f"{stage:<{width}}"
        print(f"{name} {action}{extra}{t}" if action != "skipped" else f"{name} up to date")
    for mid in res.refreshed:
        print(f"user model {mid} re-enrolled from its recorded audio (it depended on what this run changed)")
    if res.results is not None:
        print(f"\nResults ({res.workdir}):")
        print(format_results(res.results))
    return 0


def describe_experiment(wd: Path) -> list[tuple[str, str]]:
    """``(label, text)`` rows describing a trained experiment (a ``gmmspeaker run`` workdir)."""
    from gmmspeaker.scoring.report import data_rows
    from gmmspeaker.workdir import Workdir

    recipe = json.loads((wd / "recipe.json").read_text(encoding="utf-8"))
    rows: list[tuple[str, str]] = [("experiment", f"{recipe.get('experiment', '?')} in {wd}")]
    system = recipe.get("system") or ["gmm_ubm"]
    sc = recipe.get("scoring") or {}
    method = sc.get("method", "top_c")
    method += f" (C={sc.get('top_c', 5)})" if method == "top_c" else ""
    rows.append(
        (
            "system",
            f"{' + '.join(system)}; LLR scoring {method}; normalisation {sc.get('normalization', 'none')}",
        )
    )
    rows += [(k, v) for k, v in data_rows(wd, recipe) if k != "report written"]
    feats = recipe.get("features") or {}
    manifest = wd / "features" / "manifest.json"
    if manifest.is_file():
        feats = json.loads(manifest.read_text(encoding="utf-8")).get("config", feats)
    rows.append(
        (
            "features",
            f"{feats.get('sample_rate', '?')} Hz, {feats.get('n_mfcc', '?')} MFCC, deltas {feats.get('deltas', '?')}, "
            f"VAD {feats.get('vad', '?')}, normalisation {feats.get('normalize', '?')} "
            "(audio of another rate is resampled when served)",
        )
    )
    ubm = recipe.get("ubm") or {}
    if (wd / "ubm.h5").is_file():
        rows.append(("UBM", f"{ubm.get('components', '?')} diagonal Gaussians, {wd / 'ubm.h5'}"))
    try:
        from gmmspeaker.system import Experiment

        models = Experiment.open(wd).list_models()
        n_rec = sum(m.source == "recipe" for m in models)
        users = [m for m in models if m.source == "user"]
        stale = sum(m.status == "stale" for m in users)
        rows.append(
            (
                "models",
                f"{n_rec} from the recipe, {len(users)} enrolled by users"
                + (f" ({stale} stale)" if stale else "")
                + f": gmmspeaker models {wd}",
            )
        )
    except GmmSpeakerError as exc:
        rows.append(("models", f"not usable yet ({exc})"))
    res_path = wd / "results.json"
    if res_path.is_file():
        res = json.loads(res_path.read_text(encoding="utf-8"))
        dcf = ", ".join(
            f"minDCF({p}) {v:.3f}" for p, v in sorted(res.get("min_dcf", {}).items(), reverse=True)
        )
        rows.append(
            (
                "results",
                f"EER {100 * res['eer']:.2f} %, {dcf} on {res.get('n_target')} target / "
                f"{res.get('n_nontarget')} non-target trials; {Workdir(wd).report}",
            )
        )
    else:
        rows.append(("results", "none yet (the evaluate stage has not run)"))
    rows.append(
        ("use it", f"gmmspeaker verify {wd} --model ID AUDIO...  |  gmmspeaker identify {wd} AUDIO...")
    )
    return rows


def cmd_info(a: argparse.Namespace) -> int:
    import h5py

    from gmmspeaker.errors import DataError

    p = Path(a.file)
    if p.is_dir() and (p / "recipe.json").is_file():
        rows = describe_experiment(p)
        w = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
        return 0
    if p.is_dir() and not (p / "manifest.json").exists():
        raise DataError(
            f"{p}: neither a trained experiment (no recipe.json: run a recipe into it, gmmspeaker run RECIPE "
            f"--workdir {p}) nor a feature store (no manifest.json)"
        )
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


_CHANNEL_HELP = (
    "channel of multi-channel audio: 0 = first (left), 1 = second (right), ...; "
    "'mix' averages them (default: averaged, with a warning)"
)
_BAD_AUDIO_HELP = (
    "'skip': report an unusable file (its error, a JSON line with --json) and score the others; "
    "'error': stop at it (default: %(default)s)"
)


class _HelpFormatter(argparse.HelpFormatter):
    """Paragraphs wrapped, indented lines kept as written; every option's default shown unless
    it is empty (None/False)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        out = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                out.append(indent + line)
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
        return "\n".join(out)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and not any(default is empty for empty in (None, False, argparse.SUPPRESS))  # 0 is shown
            and action.option_strings
            and action.nargs != 0
        ):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else "%(default)s"
            text += f" (default: {shown})"
        return text


_QUIET_HELP = "warnings and errors only: no progress bars, no information lines"
_DEBUG_HELP = "show tracebacks and debug logs"
_EXPDIR_HELP = "a trained experiment: the workdir of a 'gmmspeaker run'"


def _audio_batch_args(p: argparse.ArgumentParser, verb: str) -> None:
    """EXPDIR and AUDIO... of verify and identify."""
    p.add_argument("expdir", metavar="EXPDIR", help=_EXPDIR_HELP)
    p.add_argument("audio", nargs="+", metavar="AUDIO", help=f"audio files to {verb}")


def _audio_batch_options(p: argparse.ArgumentParser) -> None:
    """--json, --channel and --on-bad-audio of verify and identify."""
    p.add_argument("--json", action="store_true", help="one JSON object per line and file")
    p.add_argument("--channel", type=_channel, help=_CHANNEL_HELP)
    p.add_argument("--on-bad-audio", choices=["error", "skip"], default="error", help=_BAD_AUDIO_HELP)


_JOBS_HELP = "parallel workers (-1 = every core this process may use)"
_ROOT_HELP = "corpus root the list's relative paths start from (default: the list's folder)"

_EPILOG = """first steps:
  gmmspeaker run recipes/demo.yaml                 train and evaluate on a synthetic corpus
  gmmspeaker info exp/demo                         what the trained experiment holds
  gmmspeaker verify exp/demo --model spk000 a.wav  accept or reject a.wav as spk000
  gmmspeaker enroll exp/demo --model me my1.wav my2.wav
                                                   add your own voice
Each command has its own --help."""


def build_parser() -> argparse.ArgumentParser:
    from gmmspeaker.recipe.config import STAGES

    ap = _Parser(
        prog="gmmspeaker",
        description="Speaker recognition with GMM-UBM: train from a recipe, then enrol, verify and identify.",
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"gmmspeaker {__version__}")
    ap.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    ap.add_argument("-q", "--quiet", action="store_true", help=_QUIET_HELP)
    # the same two flags after the subcommand; SUPPRESS keeps the top-level value when absent
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=_QUIET_HELP)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    def add_sub(name: str, *, help: str, description: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common], help=help, description=description, formatter_class=_HelpFormatter, **kw
        )
        p.set_defaults(parser=p)
        return p

    stages = ", ".join(STAGES)
    r = add_sub(
        "run",
        help="run a recipe (every out-of-date stage)",
        description="Run a recipe: every stage whose inputs or settings changed since the last run "
        "(the others say 'up to date'). Outputs go to the workdir: results.json, report.html, "
        "scores.txt, ubm.h5, models.h5, ...\n\nStages: " + stages + ".",
    )
    r.add_argument("recipe", help="the recipe YAML file (e.g. recipes/demo.yaml)")
    r.add_argument("--workdir", help="outputs folder (default: exp/<experiment> under the current folder)")
    r.add_argument("--jobs", type=_jobs, help=_JOBS_HELP + " (default: the recipe's jobs)")
    r.add_argument("--force", action="store_true", help="rerun every stage, even those up to date")
    r.add_argument(
        "--from-stage", choices=list(STAGES), metavar="STAGE", help="start at this stage (default: the first)"
    )
    r.add_argument(
        "--until-stage",
        choices=list(STAGES),
        metavar="STAGE",
        help="stop after this stage (default: the last)",
    )
    r.add_argument("--dry-run", action="store_true", help="say what would run and why, run nothing")
    r.set_defaults(func=cmd_run)

    f = add_sub(
        "features",
        help="extract features of the audio in a list into an HDF5 store",
        description="Extract MFCC features of every file a ubm, enroll or trials list names into a "
        "feature store (a folder of HDF5 shards). Files already extracted with the same settings are "
        "kept.",
    )
    f.add_argument("list", help="ubm, enroll or trials list")
    f.add_argument("--root", help=_ROOT_HELP)
    f.add_argument("--out", required=True, help="feature store folder (required)")
    f.add_argument(
        "--config",
        help="YAML of feature options (flat, or a recipe's features: section) "
        "(default: the 8 or 16 kHz defaults, from the audio's rate)",
    )
    f.add_argument("--jobs", type=_jobs, default=1, help=_JOBS_HELP)
    f.add_argument(
        "--resample", action="store_true", help="resample audio of another (or, without --config, mixed) rate"
    )
    f.add_argument("--channel", type=_channel, help=_CHANNEL_HELP)
    f.add_argument(
        "--on-bad-audio",
        choices=["error", "skip"],
        default="error",
        help="'skip': leave out unusable files (listed at the end); 'error': stop at the first",
    )
    f.add_argument(
        "--compression", choices=["gzip", "lzf"], default=None, help="HDF5 compression (default: none)"
    )
    f.add_argument(
        "--content-check",
        action="store_true",
        help="also hash every audio file and recompute those whose bytes changed "
        "(default: a file is unchanged while its size, times and inode are)",
    )
    f.set_defaults(func=cmd_features)

    u = add_sub(
        "train-ubm",
        help="train a UBM on the features of a store",
        description="Train a universal background model (a diagonal GMM, EM with binary splitting or "
        "k-means++) on the features of a store, streamed in chunks.",
    )
    u.add_argument("--features", required=True, help="feature store folder (required)")
    u.add_argument("--list", help="ubm list (default: every utterance in the store)")
    u.add_argument("--root", help=_ROOT_HELP)
    u.add_argument("--out", required=True, help="ubm.h5 to write (required)")
    u.add_argument("--components", type=int, default=64, help="Gaussian components")
    u.add_argument("--iterations", type=int, default=10, help="EM iterations at the final size")
    u.add_argument(
        "--init", choices=["split", "kmeans++", "random"], default="split", help="initialisation of EM"
    )
    u.add_argument(
        "--variance-floor", type=float, default=1e-3, help="variance floor, relative to the data's variance"
    )
    u.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    u.add_argument("--jobs", type=_jobs, default=1, help=_JOBS_HELP)
    u.set_defaults(func=cmd_train_ubm)

    e = add_sub(
        "enroll",
        help="enrol a speaker from audio into a trained experiment, or MAP-adapt models from an enroll list",
        usage="gmmspeaker enroll EXPDIR --model ID [--replace] [--channel N] AUDIO [AUDIO ...]\n"
        "       gmmspeaker enroll --features STORE --ubm UBM --list LIST --out MODELS [options]",
        description="Two forms:\n"
        "  gmmspeaker enroll EXPDIR --model ID [--replace] AUDIO [AUDIO ...]\n"
        "      add a speaker to a trained experiment (user_models.h5), from audio of any rate\n"
        "  gmmspeaker enroll --features STORE --ubm UBM --list LIST --out MODELS\n"
        "      MAP-adapt the models of an enroll list from a feature store",
    )
    e.add_argument("expdir", nargs="?", metavar="EXPDIR", help=_EXPDIR_HELP + " (first form)")
    e.add_argument("audio", nargs="*", metavar="AUDIO", help="audio files of the speaker (first form)")
    e.add_argument("--model", metavar="ID", help="model id to add (first form; required there)")
    e.add_argument(
        "--replace", action="store_true", help="replace an existing model of that id (user or recipe model)"
    )
    e.add_argument("--channel", type=_channel, help=_CHANNEL_HELP)
    e.add_argument("--features", help="feature store (second form)")
    e.add_argument("--ubm", help="ubm.h5 (second form)")
    e.add_argument("--list", help="enroll list: model_id path [path ...] (second form)")
    e.add_argument("--root", help=_ROOT_HELP)
    e.add_argument("--out", help="models.h5 to write (second form)")
    e.add_argument(
        "--relevance", type=float, default=None, help="MAP relevance factor (second form; default: 16)"
    )
    e.add_argument(
        "--adapt", default=None, help="comma-separated: means,weights,variances (second form; default: means)"
    )
    e.add_argument("--jobs", type=_jobs, default=1, help=_JOBS_HELP + " (second form)")
    e.set_defaults(func=cmd_enroll, audio_args=True)

    vf = add_sub(
        "verify",
        help="score audio against an enrolled model of a trained experiment: accept/reject",
        description="Score audio files against one model and decide accept or reject. Audio of any "
        "sampling rate is resampled to the experiment's; for multi-channel audio choose --channel. "
        "The default threshold is the EER threshold of the experiment's own trials.",
    )
    _audio_batch_args(vf, "verify")
    vf.add_argument("--model", required=True, metavar="ID", help="the claimed model id (required)")
    how = vf.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=float, help="accept when the score reaches this value")
    how.add_argument(
        "--p-target",
        type=_p_target,
        help="Bayes threshold -logit(P) on the calibrated LLR (needs data.dev_trials in the recipe)",
    )
    _audio_batch_options(vf)
    vf.set_defaults(func=cmd_verify, audio_args=True)

    idf = add_sub(
        "identify",
        help="rank the enrolled models of a trained experiment on audio files",
        description="Rank every enrolled model on each audio file by its score (closed set), or say "
        "'unknown' below a --threshold (open set). The score is the one verify reports and decides on "
        "for the same model and file: normalised as the recipe says (Z/T/ZT/S/AS-norm), fused in a "
        "fusion; the raw LLR when the recipe does not normalise.",
    )
    _audio_batch_args(idf, "identify")
    idf.add_argument("--top-n", type=int, default=5, help="models listed per file")
    idf.add_argument(
        "--threshold",
        type=float,
        help="open set: 'unknown' when the best score is below this (on verify's score scale)",
    )
    _audio_batch_options(idf)
    idf.set_defaults(func=cmd_identify, audio_args=True)

    ms = add_sub(
        "models",
        help="list the models of a trained experiment (recipe and user models)",
        description="List every model of a trained experiment: the recipe's (models.h5) and the users' "
        "(user_models.h5), with their files, seconds of speech, when enrolled and status "
        "(active, replaced by a user model, stale).",
    )
    ms.add_argument("expdir", metavar="EXPDIR", help=_EXPDIR_HELP)
    ms.add_argument("--json", action="store_true", help="one JSON object per line and model")
    ms.set_defaults(func=cmd_models)

    ue = add_sub(
        "unenroll",
        help="remove a user model from a trained experiment",
        description="Remove one user model (the others are kept). If it replaced a recipe model of the "
        "same id, the recipe model is used again.",
    )
    ue.add_argument("expdir", metavar="EXPDIR", help=_EXPDIR_HELP)
    ue.add_argument("--model", required=True, metavar="ID", help="the user model id to remove (required)")
    ue.set_defaults(func=cmd_unenroll)

    s = add_sub(
        "score",
        help="score a trial list",
        description="Score every trial of a list (model_id test_path [target|nontarget]) with models "
        "MAP-adapted from a UBM; writes a scores file for 'evaluate'.",
    )
    s.add_argument("--features", required=True, help="feature store holding the test files (required)")
    s.add_argument("--ubm", required=True, help="ubm.h5 (required)")
    s.add_argument("--models", required=True, help="models.h5 (required)")
    s.add_argument("--trials", required=True, help="trial list (required)")
    s.add_argument("--root", help=_ROOT_HELP)
    s.add_argument("--out", required=True, help="scores file to write (required)")
    s.add_argument(
        "--method",
        choices=["full", "top_c", "linear"],
        default="top_c",
        help="LLR: every component, the UBM's top-C per frame, or the linear approximation",
    )
    s.add_argument("--top-c", type=int, default=5, help="components per frame for --method top_c")
    s.add_argument("--jobs", type=_jobs, default=1, help=_JOBS_HELP)
    s.set_defaults(func=cmd_score)

    v = add_sub(
        "evaluate",
        help="metrics of a scores file: table, results.json, det.png, report.html",
        description="EER, minDCF, actDCF and Cllr of a scores file, with a DET curve, a score "
        "histogram and a self-contained report.html.",
    )
    v.add_argument("scores", help="scores file: model_id test_id score [target|nontarget]")
    v.add_argument("--trials", help="trial list with keys (when the scores file has none)")
    v.add_argument("--root", help=_ROOT_HELP)
    v.add_argument("--out", default=".", help="folder for results.json, det.png and report.html")
    v.add_argument(
        "--p-target", type=_p_targets, default="0.01,0.001", help="comma-separated target priors of the DCFs"
    )
    v.add_argument("--no-plot", action="store_true", help="no det.png nor score_hist.png")
    v.set_defaults(func=cmd_evaluate)

    i = add_sub(
        "info",
        help="describe a trained experiment, feature store, UBM or models file",
        description="Describe what a path holds: a trained experiment (a 'gmmspeaker run' workdir: its "
        "data, system, models and results), a feature store, or an HDF5 model file.",
    )
    i.add_argument(
        "file", metavar="PATH", help="an experiment workdir, a feature store folder or an .h5 file"
    )
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gmmspeaker`` console script."""
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # bare `gmmspeaker`: the help, not an error
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) is None:  # only --debug / -q
        parser.print_help()
        return 0
    if extra:  # audio files after an option (argparse stops filling positionals there)
        if getattr(args, "audio_args", False) and not any(x.startswith("-") for x in extra):
            args.audio = [*args.audio, *extra]
        else:
            (getattr(args, "parser", None) or parser).error(f"unrecognized arguments: {' '.join(extra)}")
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
    except OSError as exc:  # a full disk hit by a write that does not check it itself
        from gmmspeaker._io import is_disk_full

        if args.debug or not is_disk_full(exc):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(
            f"gmmspeaker: error: {where}disk full ({exc.strerror or exc}); free some space and run "
            "the same command again (finished work is kept)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print(
            "gmmspeaker: interrupted; finished work is kept, run the same command again to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
