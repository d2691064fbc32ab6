"""Score files and the evaluation of trial scores.

A score file has one trial per line, ``model_id test_id score [target|nontarget]``, in
trial-list order; :func:`write_scores` writes it atomically, :func:`read_scores` reads it
back, :func:`evaluate_scores` computes the metrics of scores against their keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import DataError

if TYPE_CHECKING:
    from gmmspeaker.corpora.lists import Trial

__all__ = ["write_scores", "read_scores", "evaluate_scores"]


def write_scores(path: PathLike, trials: Sequence[Trial], scores: np.ndarray) -> None:
    """Write ``model_id test_id score [target|nontarget]`` lines, in trial-list order (atomically)."""
    lines = []
    for t, s in zip(trials, scores):
        key = "" if t.target is None else (" target" if t.target else " nontarget")
        lines.append(f"{t.model_id} {t.test.utt_id} {float(s):.6f}{key}\n")
    atomic_write_text(path, "".join(lines))


def read_scores(path: PathLike) -> tuple[list[tuple[str, str]], np.ndarray, list[bool | None]]:
    """Read a scores file: ([(model_id, test_id)], scores, [target flag or None])."""
    path = Path(path)
    pairs: list[tuple[str, str]] = []
    vals: list[float] = []
    keys: list[bool | None] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read scores ({exc.strerror})") from None
    for n, line in enumerate(text.splitlines(), 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if len(f) not in (3, 4):
            raise DataError(f"{path}:{n}: expected 'model_id test_id score [target|nontarget]', got {line!r}")
        try:
            v = float(f[2])
        except ValueError:
            raise DataError(f"{path}:{n}: score {f[2]!r} is not a number") from None
        if len(f) == 4 and f[3] not in ("target", "nontarget"):
            raise DataError(f"{path}:{n}: key must be target or nontarget, got {f[3]!r}")
        pairs.append((f[0], f[1]))
        vals.append(v)
        keys.append(None if len(f) == 3 else f[3] == "target")
    if not pairs:
        raise DataError(f"{path}: no scores")
    return pairs, np.asarray(vals), keys


def evaluate_scores(
    scores: np.ndarray,
    is_target: Sequence[bool | None],
    *,
    p_targets: Sequence[float] = (0.01, 0.001),
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    det_plot: PathLike | None = None,
    name: str = "system",
) -> dict[str, Any]:
    """Metrics of scores against their keys (trials without a key or with a NaN score are left out)."""
    from gmmspeaker.scoring.metrics import evaluate

    scores = np.asarray(scores, dtype=np.float64)
    key = np.array([k is True for k in is_target])
    known = np.array([k is not None for k in is_target]) & np.isfinite(scores)
    if not known.any():
        raise DataError("no trial has both a target/nontarget key and a score: nothing to evaluate")
    tar, non = scores[known & key], scores[known & ~key]
    result = evaluate(tar, non, p_targets=tuple(p_targets), c_miss=c_miss, c_fa=c_fa)
    result["n_unscored"] = int((~np.isfinite(scores)).sum())
    if det_plot is not None:
        from gmmspeaker.scoring.plots import plot_det

        plot_det({name: (tar, non)}, det_plot)
    return result
