"""A self-contained HTML report of an evaluated experiment, and its decision thresholds.

``report.html`` holds the results table, the decision thresholds, the DET curve and the
score histogram (PNG files embedded as base64 ``data:`` URIs), the resolved configuration
and the stage times: one file that opens in any browser with nothing beside it. Without
matplotlib there are no pictures, and the report still has every table.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker import __version__
from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import PathLike
from gmmspeaker.scoring.metrics import bayes_threshold, eer_threshold

__all__ = [
    "decision_thresholds",
    "eer_threshold",
    "render_report",
    "result_rows",
    "write_experiment_report",
    "write_report",
    "write_score_histogram",
]

logger = logging.getLogger(__name__)

#: File names of the pictures that :func:`write_experiment_report` embeds, with captions.
REPORT_IMAGES = (("det.png", "DET curve"), ("score_hist.png", "Score histogram"))


def decision_thresholds(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    *,
    p_targets: Sequence[float] = (),
    calibration: Mapping[str, float] | None = None,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, float]:
    """Thresholds to draw on the raw-score histogram.

    Parameters
    ----------
    tar, non : array_like of float
        Raw target and non-target scores.
    p_targets : sequence of float
        Priors of the Bayes thresholds (used only with a calibration).
    calibration : mapping, optional
        ``{"scale", "offset"}`` of a linear calibration (``llr = scale * score + offset``);
        the Bayes threshold on calibrated LLRs is mapped back to the raw-score scale.
    c_miss, c_fa : float
        Costs of the Bayes thresholds.

    Returns
    -------
    dict of str to float
        ``"EER threshold"`` and, with a calibration of positive scale, one
        ``"Bayes threshold (P_tar=p)"`` per prior; raw-score units.
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

    Formats: EER in percent with 2 decimals (``"4.47 %"``), DCFs and Cllr with 4
    decimals, thresholds with 4 significant digits.
    """
    rows = [("EER", f"{100 * float(results['eer']):.2f} %")]
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
    for label, v in (results.get("thresholds") or {}).items():
        rows.append((f"{label} (raw score)", f"{v:.4g}"))
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
pre{background:#f7f7f7;padding:0.8em;overflow:auto;font-size:90%}
"""


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
        sample rate), shown beside the recipe's configuration.

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
    if features is not None:
        config["features (resolved)"] = dict(features)
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
    out = atomic_write_text(path, render_report(results, images=pngs, title=title, features=features))
    logger.info("wrote %s", out)
    return out


def write_experiment_report(workdir: PathLike, results: Mapping[str, Any]) -> Path:
    """``<workdir>/report.html`` from ``results`` and the plots in ``workdir``
    (:data:`REPORT_IMAGES`), with the feature store's resolved configuration when present."""
    wd = Path(workdir)
    features = None
    manifest = wd / "features" / "manifest.json"
    if manifest.is_file():
        try:
            features = json.loads(manifest.read_text(encoding="utf-8")).get("config")
        except (OSError, ValueError):
            features = None
    images = [(caption, wd / name) for name, caption in REPORT_IMAGES]
    return write_report(wd / "report.html", results, images=images, features=features)


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
) -> dict[str, float]:
    """The evaluate stage's thresholds, and ``<workdir>/score_hist.png`` showing them.

    Parameters
    ----------
    workdir : path-like
        Experiment folder.
    scores : array_like of float, shape (n_trials,)
        Raw scores (NaN = unscored, left out).
    is_target : sequence of bool or None, length n_trials
        Keys (None = unknown, left out).
    p_targets, calibration, c_miss, c_fa
        See :func:`decision_thresholds`.
    plot : bool
        Draw the histogram (skipped with a log line when matplotlib is not installed).

    Returns
    -------
    dict of str to float
        :func:`decision_thresholds` (raw-score units), for ``results.json``.
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
            Path(workdir) / "score_hist.png",
            thresholds=thresholds,
            xlabel="raw score (LLR)",
            title="Target and non-target scores",
        )
    elif plot:
        logger.warning("matplotlib is not installed: no score histogram (pip install gmmspeaker[plot])")
    return thresholds
