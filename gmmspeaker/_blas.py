"""BLAS thread limits through one threadpoolctl controller per process.

``threadpoolctl.threadpool_limits`` scans the loaded libraries on every call (1-2 ms); the
controller here is found once (on first use, in each process) and its ``limit`` context
only sets and restores the thread counts.
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["blas_limit"]


@functools.lru_cache(maxsize=1)
def _controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_limit(n_threads: int) -> Any:
    """A context in which the BLAS libraries use ``n_threads`` threads (restored after)."""
    return _controller().limit(limits=int(n_threads), user_api="blas")
