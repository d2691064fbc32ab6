"""Atomic file writes: a crash never leaves a half-written file under its final name."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gmmspeaker._typing import PathLike

__all__ = ["atomic_write_text", "atomic_write_json"]


def atomic_write_text(path: PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """:func:`atomic_write_text` of ``obj`` as JSON with sorted keys."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str))
