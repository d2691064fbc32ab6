"""Checks shared by the recipe tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def check_metrics_against_scores(wd: Path, res: dict[str, Any]) -> None:
    """results.json's EER and counts equal a brute-force computation on scores.txt."""
    rows = [line.split() for line in (wd / "scores.txt").read_text().splitlines()]
    tar = np.array([float(r[2]) for r in rows if r[3] == "target"])
    non = np.array([float(r[2]) for r in rows if r[3] == "nontarget"])
    assert (res["n_target"], res["n_nontarget"]) == (tar.size, non.size)
    # EER of the ROC convex hull: max over w of the min over thresholds of w*Pfa + (1-w)*Pmiss
    thr = np.r_[np.unique(np.r_[tar, non]), np.inf]
    pmiss = (tar[None, :] < thr[:, None]).mean(1)
    pfa = (non[None, :] >= thr[:, None]).mean(1)
    w = np.linspace(0, 1, 20001)[:, None]
    brute = float((w * pfa[None, :] + (1 - w) * pmiss[None, :]).min(1).max())
    assert abs(res["eer"] - brute) < 1e-4
