"""Advisory locks on open files, on POSIX (``fcntl``) and on Windows (``msvcrt``).

``fcntl`` does not exist on Windows, so no module imports it at the top: they call
:func:`lock` and :func:`unlock`, which use what the platform has. Where neither exists the
lock is a no-op (with one warning): concurrent writers are then not serialised.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import IO, Any

__all__ = ["lock", "unlock", "locking_backend"]

logger = logging.getLogger(__name__)

#: Windows locks a byte range; this far-off byte leaves the file's content readable by others.
_WIN_OFFSET = 2**31 - 2
_warned: list[bool] = []


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def locking_backend() -> str:
    """``"fcntl"``, ``"msvcrt"`` or ``"none"``: what :func:`lock` uses on this platform."""
    if _module("fcntl") is not None:
        return "fcntl"
    if _module("msvcrt") is not None:
        return "msvcrt"
    return "none"


def lock(fh: IO[Any], *, blocking: bool = True) -> None:
    """Take an exclusive lock on the open file ``fh``.

    Raises
    ------
    BlockingIOError
        ``blocking=False`` and another process holds the lock.
    """
    fcntl = _module("fcntl")
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return
    msvcrt = _module("msvcrt")
    if msvcrt is not None:
        pos = fh.tell()
        while True:
            fh.seek(_WIN_OFFSET)
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                break
            except OSError:
                if not blocking:
                    fh.seek(pos)
                    raise BlockingIOError(f"{getattr(fh, 'name', fh)}: locked by another process") from None
                time.sleep(0.1)
        fh.seek(pos)
        return
    if not _warned:
        _warned.append(True)
        logger.warning("no file locking on this platform: do not run two gmmspeaker writers at once")


def unlock(fh: IO[Any]) -> None:
    """Release a lock taken by :func:`lock`."""
    fcntl = _module("fcntl")
    if fcntl is not None:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return
    msvcrt = _module("msvcrt")
    if msvcrt is not None:
        pos = fh.tell()
        fh.seek(_WIN_OFFSET)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        fh.seek(pos)
