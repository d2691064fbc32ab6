"""DET curves and score histograms saved as PNG (needs the ``plot`` extra: matplotlib).

matplotlib is imported lazily, inside the functions, and used through its object API
(``matplotlib.figure.Figure`` rendered by the Agg canvas): nothing touches pyplot or the
global backend, so the functions are safe in workers and on headless machines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri  # the probit (scipy.stats.norm.ppf; scipy.stats takes ~0.8 s to import)

from gmmspeaker._io import atomic_path
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import DataError, GmmSpeakerError
from gmmspeaker.scoring.metrics import check_scores, det_curve, eer

__all__ = ["plot_det", "plot_score_histograms", "plots_available", "DET_TICKS"]

logger = logging.getLogger(__name__)

DET_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
"""Tick positions of the DET axes, as probabilities (labelled in percent)."""

_DET_LIMITS = (0.0005, 0.5)


def plots_available() -> bool:
    """Whether matplotlib can be imported (the ``plot`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _new_figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise GmmSpeakerError(
            "plotting needs matplotlib, which is not installed: pip install gmmspeaker[plot]"
        ) from exc
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: PathLike) -> Path:
    """Write ``fig`` as PNG to a temporary file in the same folder, then rename it."""
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    logger.info("wrote %s", out)
    return out


def _tick_label(p: float) -> str:
    pct = 100.0 * p
    return f"{pct:g}"


def plot_det(
    systems: Mapping[str, tuple[npt.ArrayLike, npt.ArrayLike]],
    path: PathLike,
    *,
    title: str | None = None,
    hull: bool = True,
) -> Path:
    """Plot the DET curves of one or more systems on normal-deviate axes and save a PNG.

    Parameters
    ----------
    systems : mapping of str to (tar, non)
        System name -> (target scores ``(n_tar,)``, non-target scores ``(n_non,)``).
        Each system is drawn with its EER marked on the diagonal and quoted in the legend.
    path : str or os.PathLike
        Output PNG file (parent folders are created; written atomically).
    title : str, optional
        Plot title.
    hull : bool, default True
        Draw the ROC convex hull (BOSARIS style) rather than the empirical step curve.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    DataError
        No systems, or a system with empty / NaN scores.
    GmmSpeakerError
        matplotlib is not installed (``pip install gmmspeaker[plot]``).
    """
    if not systems:
        raise DataError("plot_det: no systems to plot")
    curves = []
    for name, pair in systems.items():
        try:
            tar, non = pair
            t, n = check_scores(tar, non)
        except (TypeError, ValueError) as exc:
            raise DataError(f"plot_det: system {name!r}: {exc}") from exc
        pfa, pmiss = det_curve(t, n, hull=hull)
        curves.append((name, pfa, pmiss, eer(t, n)))

    fig = _new_figure((6.0, 6.0))
    ax = fig.add_subplot(1, 1, 1)
    lo, hi = _DET_LIMITS
    # Clip away 0 and 1 (infinite deviates), then draw on the probit scale.
    eps_lo, eps_hi = lo / 10.0, 1.0 - lo / 10.0
    for name, pfa, pmiss, e in curves:
        x = ndtri(np.clip(pfa, eps_lo, eps_hi))
        y = ndtri(np.clip(pmiss, eps_lo, eps_hi))
        (line,) = ax.plot(x, y, linewidth=1.5, label=f"{name} (EER {100.0 * e:.2f}%)")
        d = ndtri(np.clip(e, eps_lo, eps_hi))
        ax.plot([d], [d], marker="o", markersize=6, color=line.get_color(), linestyle="none")
    ticks = ndtri(np.asarray(DET_TICKS))
    labels = [_tick_label(p) for p in DET_TICKS]
    lim = (ndtri(lo), ndtri(hi))
    ax.plot(lim, lim, color="0.7", linewidth=0.8, linestyle=":")  # the EER diagonal
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    ax.set_xlabel("False alarm rate (%)")
    ax.set_ylabel("Miss rate (%)")
    ax.grid(True, color="0.85", linewidth=0.6)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_png(fig, path)


def plot_score_histograms(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    path: PathLike,
    *,
    title: str | None = None,
    bins: int = 60,
    thresholds: Mapping[str, float] | None = None,
    xlabel: str = "score",
) -> Path:
    """Overlaid, density-normalised histograms of target and non-target scores (PNG).

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target scores.
    path : str or os.PathLike
        Output PNG file (written atomically).
    title : str, optional
        Plot title.
    bins : int, default 60
        Number of histogram bins over the common score range.
    thresholds : mapping of str to float, optional
        Decision thresholds (on the same scale as the scores) drawn as labelled vertical
        lines, e.g. ``{"EER threshold": 0.12}``; non-finite values are left out.
    xlabel : str
        Label of the score axis.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    t, n = check_scores(tar, non)
    finite = np.concatenate([t, n])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise DataError("plot_score_histograms: every score is infinite")
    edges = np.linspace(finite.min(), finite.max() + (finite.min() == finite.max()), bins + 1)
    fig = _new_figure((7.0, 4.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(n[np.isfinite(n)], bins=edges, density=True, alpha=0.55, label=f"non-target ({n.size})")
    ax.hist(t[np.isfinite(t)], bins=edges, density=True, alpha=0.55, label=f"target ({t.size})")
    styles = ("--", ":", "-.", (0, (5, 1, 1, 1)))
    for i, (label, value) in enumerate((thresholds or {}).items()):
        if np.isfinite(value):
            ax.axvline(
                float(value),
                color="0.15",
                linewidth=1.2,
                linestyle=styles[i % len(styles)],
                label=f"{label} = {value:.3g}",
            )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return _save_png(fig, path)
