"""File-system helpers: atomic writes, locks, temporaries, files opened without following links.

* Atomic writes: a crash never leaves a half-written file under its final name; the
  temporary is ``.<name>.<random>.<pid>.tmp`` beside the target, made with the mode
  ``open()`` would give (``0o666`` less the umask), so outputs are as readable as any file
  the user writes.
* :func:`file_lock`: an exclusive advisory lock (``fcntl``, imported only when used, so the
  package imports where it is missing).
* :func:`make_temp_dir` and :func:`remove_stale_temporaries`: temporaries live beside the
  outputs (e.g. ``<workdir>/tmp/``), and the next lock holder removes the ones whose
  writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from gmmspeaker._typing import PathLike

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_bytes",
    "atomic_h5",
    "temp_path",
    "free_bytes",
    "is_disk_full",
    "disk_full_error",
    "read_h5",
    "write_h5",
    "file_lock",
    "open_append_nofollow",
    "make_temp_dir",
    "remove_stale_temporaries",
    "TMP_DIR",
]

logger = logging.getLogger(__name__)

#: Folder of a workdir that holds its temporaries (:func:`make_temp_dir`).
TMP_DIR = "tmp"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _umask() -> int:
    """The process umask (read without changing it where /proc tells it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mkstemp_like_open(path: Path) -> tuple[int, str]:
    """A temporary file beside ``path`` with the permissions ``open(path, "w")`` would give.

    ``mkstemp`` makes files ``0o600`` whatever the umask; an output renamed from it would
    be unreadable by the group or a web server that may read the user's other files.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".{os.getpid()}.tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
    except OSError:
        pass
    return fd, tmp


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def free_bytes(folder: PathLike) -> int:
    """Bytes free for this user on the disk holding ``folder`` (a very large number if unknown)."""
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return 1 << 62


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the user's quota) is full, also as h5py words it."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def disk_full_error(path: PathLike, need: int | None) -> Exception:
    """The one-line :class:`~gmmspeaker.errors.DiskFullError` for ``path`` needing ``need`` bytes."""
    from gmmspeaker.errors import DiskFullError

    path = Path(path)
    free = free_bytes(path.parent if path.parent.exists() else Path("."))
    need_s = f"needs {_size(need)}" if need is not None else "needs more space"
    more = (
        f"free at least {_size(max(need - free, 0) + (1 << 20))}" if need is not None else "free some space"
    )
    return DiskFullError(
        f"{path}: disk full: writing it {need_s}, {_size(free)} are free on its disk; "
        f"{more} and run the same command again (finished work is kept)"
    )


def _check_space(path: Path, need: int) -> None:
    """Raise the disk-full error before writing ``need`` bytes where they cannot fit."""
    if free_bytes(path.parent) < need:
        raise disk_full_error(path, need)


def atomic_write_bytes(path: PathLike, data: bytes | bytearray | memoryview, *, fsync: bool = True) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The free space is checked first; a full disk (found then, or while writing) is a
    one-line :class:`~gmmspeaker.errors.DiskFullError` naming the file and the space it
    needs, and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    need = len(memoryview(data).cast("B"))
    _check_space(path, need)
    fd, tmp = _mkstemp_like_open(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, need) from None
        raise
    return path


def atomic_write_text(path: PathLike, text: str, *, fsync: bool = True) -> Path:
    """Write ``text`` (UTF-8) atomically: :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


@contextlib.contextmanager
def temp_path(beside: PathLike) -> Iterator[Path]:
    """A temporary file path beside ``beside`` (same disk), removed on leaving the block."""
    beside = Path(beside)
    beside.parent.mkdir(parents=True, exist_ok=True)
    fd, name = _mkstemp_like_open(beside)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_h5(path: PathLike) -> Iterator[Any]:
    """An ``h5py.File`` built in memory, then written to ``path`` atomically.

    HDF5 writing straight to a full disk fails inside the library, and h5py then raises
    while closing or crashes the interpreter (a segfault at exit). Here the file is built
    with the in-memory ``core`` driver and its image written by :func:`atomic_write_bytes`:
    a full disk is a clean one-line error naming the file and its size. The file must fit
    in memory (models, checkpoints, shards of a feature store: all do).
    """
    import h5py

    path = Path(path)
    h5 = h5py.File(f"{path}.{uuid.uuid4().hex}.mem", "w", driver="core", backing_store=False)
    try:
        yield h5
        h5.flush()
        image = h5.id.get_file_image()
    finally:
        h5.close()
    atomic_write_bytes(path, image)


def atomic_write_json(path: PathLike, obj: Any, *, indent: int | None = 1) -> Path:
    """:func:`atomic_write_text` of ``obj`` as JSON with sorted keys."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=True, default=str))


@contextlib.contextmanager
def atomic_path(path: PathLike, *, need: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` to write (e.g. an HDF5 file) and then publish.

    On leaving the block normally the temporary file is renamed over ``path`` (atomic on
    one filesystem); on an exception it is removed and ``path`` is left as it was. The
    temporary name is unique (``mkstemp``) and hidden (``.<name>.<random>.<pid>.tmp``).
    ``need`` (bytes, optional) is checked against the free space first; a full disk is a
    one-line :class:`~gmmspeaker.errors.DiskFullError`. For HDF5 prefer :func:`atomic_h5`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if need is not None:
        _check_space(path, need)
    fd, name = _mkstemp_like_open(path)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, need) from None
        raise


def write_h5(
    path: PathLike, fmt: str, arrays: Mapping[str, Any], attrs: Mapping[str, Any] | None = None
) -> Path:
    """Write datasets and attributes to an HDF5 file atomically (:func:`atomic_h5`).

    The file gets the attributes ``format`` (``fmt``: what readers check) and ``version``
    (the package's). A dataset given as a sequence of str is stored as UTF-8 strings;
    ``None`` values are left out.
    """
    import h5py
    import numpy as np

    from gmmspeaker import __version__

    path = Path(path)
    with atomic_h5(path) as h5:
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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _open_nofollow(path: Path, flags: int) -> int:
    """``os.open`` that refuses a symbolic link at ``path`` (a one-line error naming it)."""
    from gmmspeaker.errors import GmmSpeakerError

    try:
        return os.open(path, flags | _NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (path.is_symlink() and not _NOFOLLOW):
            raise GmmSpeakerError(
                f"{path}: is a symbolic link; gmmspeaker does not follow links for files it writes "
                "(remove it)"
            ) from None
        raise GmmSpeakerError(f"{path}: cannot open ({exc.strerror or exc})") from None


def open_append_nofollow(path: PathLike) -> IO[str]:
    """Open a text file for appending (UTF-8, undecodable characters escaped), never through a link.

    For logs the program creates: a symbolic link planted at ``path`` is an error, not a
    way to append to its target.
    """
    path = Path(path)
    if not _NOFOLLOW and path.is_symlink():
        _open_nofollow(path, os.O_RDONLY)  # raises
    fd = _open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    return os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")


@contextlib.contextmanager
def file_lock(path: PathLike, *, busy: str | None = None, wait_message: str | None = None) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created; never through a symbolic link).

    The holder's pid is written into the file. The lock itself is :mod:`gmmspeaker._lock`'s
    (``fcntl``, or ``msvcrt`` on Windows, imported only when used).

    Parameters
    ----------
    path : path-like
        The lock file.
    busy : str, optional
        If given, do not wait when another process holds the lock: raise
        :class:`~gmmspeaker.errors.GmmSpeakerError` with this message, in which ``{pid}``
        is replaced by the holder's pid.
    wait_message : str, optional
        Logged (warning, ``{pid}`` replaced) before waiting for the holder.
    """
    from gmmspeaker._lock import lock, unlock
    from gmmspeaker.errors import GmmSpeakerError

    path = Path(path)
    fh = os.fdopen(_open_nofollow(path, os.O_RDWR | os.O_CREAT), "r+b", buffering=0)
    try:
        try:
            lock(fh, blocking=False)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read(32).decode("ascii", "replace").strip() or "?"
            if busy is not None:
                raise GmmSpeakerError(busy.format(pid=holder)) from None
            if wait_message is not None:
                logger.warning(wait_message.format(pid=holder))
            lock(fh, blocking=True)
        with contextlib.suppress(OSError):  # the pid is for messages only (a full disk may refuse it)
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()).encode())
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            unlock(fh)
    finally:
        fh.close()


def make_temp_dir(parent: PathLike, prefix: str) -> Path:
    """A new empty folder ``<parent>/<prefix><random>`` (``parent`` created) for temporaries.

    Give ``<workdir>/tmp`` (:data:`TMP_DIR`) as ``parent`` for a run's temporaries: they
    then live on the workdir's disk, and :func:`remove_stale_temporaries` at the start of
    the next run removes what a killed run left. The folder gets the mode ``mkdir`` would
    give (not ``mkdtemp``'s ``0o700``), so that it can be renamed into an output.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
    except OSError:
        pass
    return tmp


def remove_stale_temporaries(folder: PathLike, *, patterns: Sequence[str] = ()) -> list[Path]:
    """Remove temporaries that no live process is writing, in ``folder`` (not recursive).

    Removes ``<folder>/tmp`` (:data:`TMP_DIR`) with everything in it, atomic-write
    temporaries (``.<name>.<random>.<pid>.tmp``) whose pid is not alive, and files or folders
    matching ``patterns`` (glob). Call it holding the lock that every writer of these
    temporaries holds, so that none of them belongs to a live writer.

    Returns
    -------
    list of Path
        What was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    candidates: list[Path] = []
    if (folder / TMP_DIR).is_dir() and not (folder / TMP_DIR).is_symlink():
        candidates.extend(sorted((folder / TMP_DIR).iterdir()))
    for pat in patterns:
        candidates.extend(sorted(folder.glob(pat)))
    for f in sorted(folder.glob(".*.tmp")):
        pid = f.name.rsplit(".", 2)[-2] if f.name.count(".") >= 3 else ""
        if pid.isdigit() and not _pid_alive(int(pid)):
            candidates.append(f)
    for f in candidates:
        try:
            if f.is_dir() and not f.is_symlink():
                shutil.rmtree(f)
            else:
                f.unlink()
        except FileNotFoundError:
            continue
        removed.append(f)
    if removed:
        logger.info("%s: removed %d temporaries left by an interrupted run", folder, len(removed))
    return removed
