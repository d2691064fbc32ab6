#!/usr/bin/env python
"""Compare score files of one trial list: EER, minDCF, Cllr with model-bootstrap intervals.

The intervals and the paired differences to the first file are those of
``scripts/ablate.py`` (a bootstrap over *models*: each resample draws the target models
with replacement and keeps all their trials; the differences use the same resamples for
both files, so shared noise cancels). A difference whose 95 % interval excludes zero is
marked ``*``.

Usage::

    python scripts/compare_scores.py WORKDIR/scores.gmm_ubm.txt WORKDIR/scores.isv.txt \\
        WORKDIR/scores.ivector.txt WORKDIR/scores.txt [--n-boot 1000] [--p-target 0.01]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ablate import METRICS, bootstrap_indices, bootstrap_metrics, interval, point_metrics

from gmmspeaker.scoring.trials import read_scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("scores", type=Path, nargs="+", help="score files; the first is the baseline")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--p-target", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    pairs, base, keys = read_scores(args.scores[0])
    key = np.array(keys, dtype=bool)
    resamples = bootstrap_indices([m for m, _ in pairs], args.n_boot, args.seed)
    bpoint = point_metrics(base, key, args.p_target)
    bboot = bootstrap_metrics(base, key, resamples, args.p_target)
    print(
        f"{len(pairs)} trials ({int(key.sum())} target), {len(set(m for m, _ in pairs))} models, {args.n_boot} resamples"
    )
    print("| scores | EER % [95 %] | d EER | minDCF | d minDCF | Cllr |")
    print("|---|---|---|---|---|---|")
    for path in args.scores:
        p, s, _ = read_scores(path)
        if p != pairs:
            print(f"{path}: trials differ from {args.scores[0]}", file=sys.stderr)
            return 2
        point = point_metrics(s, key, args.p_target)
        boot = bootstrap_metrics(s, key, resamples, args.p_target)
        cells = []
        for j, m in enumerate(METRICS):
            scale = 100.0 if m == "eer" else 1.0
            lo, hi = interval(boot[:, j])
            cell = f"{scale * point[j]:.2f} [{scale * lo:.2f}, {scale * hi:.2f}]"
            if m != "cllr":
                dlo, dhi = interval(boot[:, j] - bboot[:, j])
                star = "*" if dlo > 0 or dhi < 0 else ""
                d = f"{scale * (point[j] - bpoint[j]):+.2f} [{scale * dlo:+.2f}, {scale * dhi:+.2f}]{star}"
                cells += [cell, "—" if path == args.scores[0] else d]
            else:
                cells.append(cell)
        print(f"| {path.name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
