"""BLAS thread limits through one threadpoolctl controller per process.

``threadpoolctl.threadpool_limits`` scans the loaded libraries on every call (1-2 ms); the
controller here is found once per process (again once scipy.linalg, which loads scipy's own
BLAS, has been imported: a controller only knows the libraries loaded when it was made) and
its ``limit`` context only sets and restores the thread counts.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

__all__ = ["blas_limit", "blas_threads"]


def _controller() -> Any:
    return _controller_for("scipy.linalg" in sys.modules)


@functools.lru_cache(maxsize=2)
def _controller_for(scipy_linalg: bool) -> Any:
    import numpy  # noqa: F401  (its BLAS must be loaded before the scan, or none is found)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_limit(n_threads: int) -> Any:
    """A context in which the BLAS libraries use ``n_threads`` threads (restored after)."""
    return _controller().limit(limits=int(n_threads), user_api="blas")


def blas_threads() -> int:
    """Threads the BLAS libraries would use now (the largest; 1 when none is found)."""
    return max([int(i.get("num_threads", 1)) for i in _controller().select(user_api="blas").info()] or [1])
