"""A self-contained HTML report of an evaluated experiment, and its decision thresholds.

``report.html`` holds the results table (saying which scores it describes: raw or
normalised LLRs, PLDA or cosine scores, fused scores), the decision thresholds, a note on
what an actDCF of 1 or more means, the data the run used and when it ran, the DET curve and
the score histogram (PNG files embedded as base64 ``data:`` URIs), the configuration and the
stage times: one file that opens in any browser with nothing beside it. Without matplotlib
there are no pictures, and the report still has every table.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker import __version__
from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import PathLike
from gmmspeaker.scoring.metrics import bayes_threshold, eer_threshold
from gmmspeaker.workdir import Workdir

__all__ = [
    "actdcf_note",
    "data_rows",
    "decision_thresholds",
    "eer_threshold",
    "render_report",
    "result_rows",
    "score_label",
    "write_experiment_report",
    "write_report",
    "write_score_histogram",
]

logger = logging.getLogger(__name__)

#: The pictures :func:`write_experiment_report` embeds (:class:`~gmmspeaker.workdir.Workdir` properties), with captions.
REPORT_IMAGES = (("det_plot", "DET curve"), ("score_hist", "Score histogram"))


_NORM_NAMES = {
    "znorm": "Z-normalised",
    "tnorm": "T-normalised",
    "ztnorm": "ZT-normalised",
    "snorm": "S-normalised",
    "asnorm": "adaptive-S-normalised",
}


def score_label(
    *,
    system: Sequence[str] = ("gmm_ubm",),
    normalization: str = "none",
    ivector_scoring: str = "plda",
    ivector_normalization: str = "none",
) -> str:
    """What the scores of an experiment are, in words (the axis label and the table's caption).

    Examples: ``"raw LLR (GMM-UBM)"``, ``"S-normalised LLR (GMM-UBM)"``,
    ``"Z-normalised cosine score (i-vector)"``, ``"fused score (gmm_ubm + ivector)"``.
    """
    system = tuple(system)
    if len(system) > 1:
        return f"fused score ({' + '.join(system)})"
    if system == ("ivector",):
        kind = "PLDA LLR" if ivector_scoring == "plda" else f"{ivector_scoring} score"
        norm = _NORM_NAMES.get(ivector_normalization)
        return f"{norm} {kind} (i-vector)" if norm else f"raw {kind} (i-vector)"
    norm = _NORM_NAMES.get(normalization)
    return f"{norm} LLR (GMM-UBM)" if norm else "raw LLR (GMM-UBM)"


def _label_of(results: Mapping[str, Any]) -> str:
    """The scores' label of a results dict: its ``score_label``, or one from its configuration."""
    if results.get("score_label"):
        return str(results["score_label"])
    config = results.get("config") or {}
    if "scoring" not in config:
        return "score"
    iv = config.get("ivector") or {}
    return score_label(
        system=results.get("system") or ("gmm_ubm",),
        normalization=str(config["scoring"].get("normalization", "none")),
        ivector_scoring=str(iv.get("scoring", "plda")),
        ivector_normalization=str(iv.get("normalization", "none")),
    )


def decision_thresholds(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    *,
    p_targets: Sequence[float] = (),
    calibration: Mapping[str, float] | None = None,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """Thresholds to draw on the score histogram, in the units of the scores given.

    Parameters
    ----------
    tar, non : array_like of float
        Target and non-target scores, as the experiment wrote them (raw or normalised).
    p_targets : sequence of float
        Priors of the Bayes thresholds (used only with a calibration).
    calibration : mapping, optional
        ``{"scale", "offset"}`` of a linear calibration (``llr = scale * score + offset``);
        the Bayes threshold on calibrated LLRs is mapped back to the scale of the scores.
    c_miss, c_fa : float
        Costs of the Bayes thresholds.

    Returns
    -------
    dict of str to float
        ``"EER threshold"`` and, with a calibration of positive scale, one
        ``"Bayes threshold (P_tar=p)"`` per prior; units of the scores given.
    """
    out = {"EER threshold": eer_threshold(tar, non)}
    if calibration is not None and float(calibration["scale"]) > 0:
        a, b = float(calibration["scale"]), float(calibration["offset"])
        for p in p_targets:
            out[f"Bayes threshold (P_tar={p:g})"] = (bayes_threshold(p, c_miss=c_miss, c_fa=c_fa) - b) / a
    return out


def _by_prior(d: Mapping[str, float]) -> list[tuple[str, float]]:
    return sorted(d.items(), key=lambda kv: -float(kv[0]))


def result_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The results table as ``(label, formatted value)`` rows.

    The first row says which scores the metrics and thresholds describe (see
    :func:`score_label`). Formats: EER in percent with 2 decimals (``"4.47 %"``), DCFs and
    Cllr with 4 decimals, thresholds with 4 significant digits.
    """
    label = _label_of(results)
    rows = [("scores", label), ("EER", f"{100 * float(results['eer']):.2f} %")]
    for p, v in _by_prior(results.get("min_dcf", {})):
        rows.append((f"minDCF (P_tar={p})", f"{v:.4f}"))
    for p, v in _by_prior(results.get("act_dcf", {})):
        rows.append((f"actDCF (P_tar={p})", f"{v:.4f}"))
    if "cllr" in results:
        rows.append(
            ("Cllr / minCllr", f"{results['cllr']:.4f} / {results.get('min_cllr', float('nan')):.4f}")
        )
    cal = results.get("calibrated")
    if cal:
        for p, v in _by_prior(cal.get("act_dcf", {})):
            rows.append((f"calibrated actDCF (P_tar={p})", f"{v:.4f}"))
        rows.append(("calibrated Cllr", f"{cal['cllr']:.4f}"))
    for name, v in (results.get("thresholds") or {}).items():
        rows.append((f"{name}, on the {label}", f"{v:.4g}"))
    rows.append(("trials (target / nontarget)", f"{results['n_target']} / {results['n_nontarget']}"))
    if results.get("n_unscored"):
        rows.append(("unscored trials", str(results["n_unscored"])))
    if results.get("n_skipped_audio"):
        rows.append(("skipped audio files", str(results["n_skipped_audio"])))
    if results.get("vad_kept_fraction") is not None:
        rows.append(("frames kept by the VAD", f"{100 * float(results['vad_kept_fraction']):.1f} %"))
    return rows


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:0.25em 0.7em}
td.v{text-align:right;font-variant-numeric:tabular-nums}th{background:#f2f2f2;text-align:left}
figure{display:inline-block;margin:0 1em 1em 0}img{max-width:100%;border:1px solid #ddd}
p.note{background:#fff8e1;border-left:4px solid #f0b400;padding:0.5em 0.8em}
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:90%}
"""


def actdcf_note(results: Mapping[str, Any]) -> str | None:
    """Why an actDCF of 1 or more is what it is (None when every actDCF is below 1)."""
    high = {p: float(v) for p, v in (results.get("act_dcf") or {}).items() if float(v) >= 1.0 - 1e-9}
    if not high:
        return None
    priors = ", ".join(f"P_tar={p}" for p in sorted(high, key=float, reverse=True))
    calibrated = results.get("calibrated")
    fix = (
        "The calibrated actDCF rows show the same scores after the linear calibration trained on "
        "data.dev_trials."
        if calibrated
        else "To get decisions worth their threshold, calibrate: give the recipe a development "
        "trial list (data.dev_trials) and the report adds calibrated actDCF rows."
    )
    return (
        f"actDCF is 1 or more at {priors}: these scores ({_label_of(results)}) are not calibrated "
        "log-likelihood ratios, so the Bayes threshold log((1-P_tar)/P_tar) read on them decides "
        "no better than ignoring the scores and always rejecting (a cost of exactly 1 when every "
        "trial falls below the threshold; above 1 when the threshold lets false alarms through). "
        "minDCF is the cost at the best threshold for these scores, and shows what they can do. " + fix
    )


def data_rows(workdir: PathLike, recipe: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """Which data a run used, and when: rows for the report's "Data" table.

    Parameters
    ----------
    workdir : path-like
        The experiment folder (its ``corpus/`` holds a generated synthetic corpus).
    recipe : mapping, optional
        The resolved recipe (``<workdir>/recipe.json``): its file, its corpus (root or
        synthetic settings) and its lists.

    Returns
    -------
    list of (label, value)
        The recipe file; the corpus; each list with its number of entries and its
        modification time (UTC); utterances with features; when the report was written (UTC).
    """
    wd = Path(workdir)
    rows: list[tuple[str, str]] = []
    recipe = recipe or {}
    data = dict(recipe.get("data") or {})
    if recipe.get("path"):
        rows.append(("recipe", str(recipe["path"])))
    lists: dict[str, Path] = {}
    if data.get("synthetic"):
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(data["synthetic"].items()))
        rows.append(("corpus", f"synthetic, generated into {wd / 'corpus'} ({cfg})"))
        lists = {k: wd / "corpus" / f"{k}.txt" for k in ("ubm", "enroll", "trials")}
    elif data.get("root"):
        rows.append(("corpus root", str(data["root"])))
    for key in ("ubm", "enroll", "trials", "cohort", "dev_trials", "train"):
        if data.get(key):
            lists[key] = Path(data[key])
    for key, path in lists.items():
        if path.is_file():
            n = sum(1 for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip())
            when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            rows.append((f"{key} list", f"{path} ({n} lines, modified {when})"))
        else:
            rows.append((f"{key} list", f"{path} (no longer there)"))
    feats = wd / "stages" / "features.json"
    if feats.is_file():
        try:
            f = json.loads(feats.read_text(encoding="utf-8"))
            rows.append(
                (
                    "utterances with features",
                    f"{int(f.get('computed', 0)) + int(f.get('cached', 0))} "
                    f"({len(f.get('skipped') or {})} skipped as unreadable)",
                )
            )
        except (OSError, ValueError, TypeError):
            pass
    rows.append(("report written", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")))
    return rows


def _table(rows: Sequence[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    head = f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>" if header else ""
    body = "".join(f'<tr><td>{html.escape(k)}</td><td class="v">{html.escape(v)}</td></tr>' for k, v in rows)
    return f"<table>{head}{body}</table>"


def render_report(
    results: Mapping[str, Any],
    *,
    images: Sequence[tuple[str, bytes]] = (),
    title: str | None = None,
    features: Mapping[str, Any] | None = None,
    data: Sequence[tuple[str, str]] = (),
) -> str:
    """The report as one HTML string (no external resources).

    Parameters
    ----------
    results : mapping
        ``results.json`` content: metrics (see :func:`result_rows`), and optionally
        ``config``, ``stage_seconds``, ``experiment``.
    images : sequence of (caption, PNG bytes)
        Embedded as ``data:image/png;base64`` URIs.
    title : str, optional
        Page title; default ``"gmmspeaker report: <experiment>"``.
    features : mapping, optional
        The resolved feature configuration (e.g. the feature store's, with a concrete
        sample rate): shown in place of the recipe's ``features`` (one block, not two).
    data : sequence of (label, value)
        The "Data" table (see :func:`data_rows`).

    Returns
    -------
    str
    """
    name = str(results.get("experiment", "experiment"))
    title = title or f"gmmspeaker report: {name}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Results</h2>",
        _table(result_rows(results), ("metric", "value")),
    ]
    note = actdcf_note(results)
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    if data:
        parts += ["<h2>Data</h2>", _table(data, ("what", "which / when"))]
    if images:
        parts.append("<h2>Plots</h2>")
        for caption, png in images:
            data = base64.b64encode(png).decode("ascii")
            parts.append(
                f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    else:
        parts.append("<p>No plots (matplotlib is not installed, or plots are turned off).</p>")
    seconds = results.get("stage_seconds") or {}
    if seconds:
        rows = [(stage, f"{float(s):.1f} s") for stage, s in seconds.items()]
        rows.append(("total", f"{sum(float(s) for s in seconds.values()):.1f} s"))
        parts += ["<h2>Stage times</h2>", _table(rows, ("stage", "wall time"))]
    config = dict(results.get("config") or {})
    if features is not None:  # the store's resolved settings replace the recipe's: one block
        config["features"] = dict(features)
    if config:
        text = json.dumps(config, indent=2, sort_keys=True, default=str)
        parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(text, quote=False)}</pre>"]
    parts.append(f"<p><small>gmmspeaker {html.escape(__version__)}</small></p></body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    path: PathLike,
    results: Mapping[str, Any],
    *,
    images: Sequence[tuple[str, PathLike]] = (),
    title: str | None = None,
    features: Mapping[str, Any] | None = None,
    data: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write :func:`render_report` to ``path`` (atomically), embedding the PNG files named
    in ``images`` (``(caption, path)``; missing files are left out with a log line)."""
    pngs: list[tuple[str, bytes]] = []
    for caption, p in images:
        f = Path(p)
        if f.is_file():
            pngs.append((caption, f.read_bytes()))
        else:
            logger.info("report: %s not found, left out", f)
    out = atomic_write_text(
        path, render_report(results, images=pngs, title=title, features=features, data=data)
    )
    logger.info("wrote %s", out)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_experiment_report(
    workdir: PathLike, results: Mapping[str, Any], *, recipe: Mapping[str, Any] | None = None
) -> Path:
    """``<workdir>/report.html`` from ``results`` and the plots in ``workdir``
    (:data:`REPORT_IMAGES`), with the feature store's resolved configuration and the data
    the run used (:func:`data_rows` of ``recipe``, the resolved recipe as
    ``Recipe.to_dict()`` gives it; default: ``<workdir>/recipe.json`` when present)."""
    w = Workdir(workdir)
    features = (_read_json(w.features_manifest) or {}).get("config")
    data = data_rows(w.path, recipe if recipe is not None else _read_json(w.recipe))
    images = [(caption, getattr(w, name)) for name, caption in REPORT_IMAGES]
    return write_report(w.report, results, images=images, features=features, data=data)


def write_score_histogram(
    workdir: PathLike,
    scores: npt.ArrayLike,
    is_target: Sequence[bool | None],
    *,
    p_targets: Sequence[float] = (),
    calibration: Mapping[str, float] | None = None,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    plot: bool = True,
    score_label: str = "score",
) -> dict[str, float]:
    """The evaluate stage's thresholds, and ``<workdir>/score_hist.png`` showing them.

    Parameters
    ----------
    workdir : path-like
        Experiment folder.
    scores : array_like of float, shape (n_trials,)
        The experiment's scores, raw or normalised (NaN = unscored, left out).
    is_target : sequence of bool or None, length n_trials
        Keys (None = unknown, left out).
    p_targets, calibration, c_miss, c_fa
        See :func:`decision_thresholds`.
    plot : bool
        Draw the histogram (skipped with a log line when matplotlib is not installed).
    score_label : str
        What the scores are (the x axis label; see :func:`score_label`).

    Returns
    -------
    dict of str to float
        :func:`decision_thresholds` (units of the scores), for ``results.json``.
    """
    from gmmspeaker.scoring.plots import plot_score_histograms, plots_available

    s = np.asarray(scores, dtype=np.float64)
    key = np.array([k is True for k in is_target])
    known = np.array([k is not None for k in is_target]) & np.isfinite(s)
    tar, non = s[known & key], s[known & ~key]
    thresholds = decision_thresholds(
        tar, non, p_targets=p_targets, calibration=calibration, c_miss=c_miss, c_fa=c_fa
    )
    if plot and plots_available():
        plot_score_histograms(
            tar,
            non,
            Workdir(workdir).score_hist,
            thresholds=thresholds,
            xlabel=score_label,
            title="Target and non-target scores",
        )
    elif plot:
        logger.warning("matplotlib is not installed: no score histogram (pip install gmmspeaker[plot])")
    return thresholds
