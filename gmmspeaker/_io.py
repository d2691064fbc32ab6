"""Atomic file writes: a crash never leaves a half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gmmspeaker._typing import PathLike

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json"]


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


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (e.g. an HDF5 file) and then publish.

    On leaving the block normally the temporary file is renamed over ``path`` (atomic on
    one filesystem); on an exception it is removed and ``path`` is left as it was. The
    temporary name is unique (``mkstemp``) and hidden (``.<name>.<random>.tmp``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
