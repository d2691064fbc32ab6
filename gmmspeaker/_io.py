"""Atomic file writes: a crash never leaves a half-written file under its final name."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gmmspeaker._typing import PathLike

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "read_h5", "write_h5"]


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


def write_h5(
    path: PathLike, fmt: str, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None
) -> Path:
    """Write datasets and attributes to an HDF5 file atomically (:func:`atomic_path`).

    The file gets the attributes ``format`` (``fmt``: what readers check) and ``version``
    (the package's). A dataset given as a sequence of str is stored as UTF-8 strings;
    ``None`` values are left out.
    """
    import h5py
    import numpy as np

    from gmmspeaker import __version__

    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = fmt
        h5.attrs["version"] = __version__
        for k, v in (attrs or {}).items():
            h5.attrs[k] = v
        for k, v in arrays.items():
            if v is None:
                continue
            a = np.asarray(v) if not isinstance(v, list) else np.array(v, dtype=object)
            if a.dtype.kind in "OUS":
                h5.create_dataset(k, data=a.astype(object), dtype=h5py.string_dtype("utf-8"))
            else:
                h5.create_dataset(k, data=a)
    return path


def read_h5(
    path: PathLike, fmt: str, required: Sequence[str], *, what: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read every dataset and attribute of a file written by :func:`write_h5`.

    Parameters
    ----------
    path : path-like
    fmt : str
        The ``format`` attribute the file must carry.
    required : sequence of str
        Datasets that must be present.
    what : str, optional
        What the file is, for messages (default ``"<fmt> file"``).

    Returns
    -------
    (arrays, attrs) : dicts
        String datasets as lists of str, numeric ones as ndarrays; bytes attributes decoded.

    Raises
    ------
    ModelError
        Missing file, another format, a missing dataset, unreadable HDF5, or NaN/inf in a
        float dataset; the message names the file.
    """
    import h5py
    import numpy as np

    from gmmspeaker.errors import ModelError

    path = Path(path)
    what = what or f"{fmt} file"
    if not path.is_file():
        raise ModelError(f"{path}: {what} not found")
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in h5.attrs.items()}
            if str(attrs.get("format", "")) != fmt:
                raise ModelError(f"{path}: not a {what} (format {attrs.get('format', '')!r})")
            missing = [k for k in required if k not in h5]
            if missing:
                raise ModelError(f"{path}: missing dataset(s) {missing}")
            arrays: dict[str, Any] = {}
            for k in h5.keys():
                v = h5[k][()]
                if h5[k].dtype.kind in "OS":
                    v = [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(v)]
                arrays[k] = v
    except ModelError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelError(f"{path}: cannot read {what} ({exc})") from None
    for k, v in arrays.items():
        if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and not np.all(np.isfinite(v)):
            raise ModelError(f"{path}: dataset {k!r} holds NaN/inf values")
    return arrays, attrs
