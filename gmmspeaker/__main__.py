"""``python -m gmmspeaker ...``: the same command line as ``gmmspeaker ...``."""

from gmmspeaker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
