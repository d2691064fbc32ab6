#!/usr/bin/env python
"""Write gmmspeaker protocol lists (ubm/enroll/trials) for a LibriSpeech tree.

Example::

    python scripts/prepare_librispeech.py LibriSpeech/train-clean-100 data/libri --seed 0

The lists' paths are relative to ROOT: use ROOT as the corpus root of the recipe.
"""

from __future__ import annotations

import argparse
import logging
import sys

from gmmspeaker.corpora.librispeech import prepare_librispeech
from gmmspeaker.errors import GmmSpeakerError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", help="LibriSpeech subset folder, e.g. LibriSpeech/train-clean-100")
    parser.add_argument("out_dir", help="folder for ubm.txt, enroll.txt, trials.txt, speakers.tsv")
    parser.add_argument("--seed", type=int, default=0, help="seed of the speaker split (default 0)")
    parser.add_argument("--n-enroll", type=int, default=3, help="enrollment files per target speaker")
    parser.add_argument("--n-test", type=int, default=5, help="test files per target speaker")
    parser.add_argument("--ubm-fraction", type=float, default=0.5, help="fraction of background speakers")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        paths = prepare_librispeech(
            args.root,
            args.out_dir,
            seed=args.seed,
            n_enroll=args.n_enroll,
            n_test=args.n_test,
            ubm_fraction=args.ubm_fraction,
        )
    except GmmSpeakerError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
