"""The EM driver's helpers (gmmspeaker.ivector.em_driver)."""

from __future__ import annotations

import pytest

from gmmspeaker.ivector.em_driver import one_blas_thread


def _blas_threads() -> list[int]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [int(i["num_threads"]) for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]


def test_one_blas_thread_limits_and_restores():
    """Inside: every BLAS library on one thread; after: the numbers of before, also when
    the block raises and when contexts nest (the controller is found once and reused)."""
    before = _blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):  # a known number, even on one core
        outer = _blas_threads()
        with one_blas_thread():
            assert _blas_threads() == [1] * len(before)
            with one_blas_thread():
                assert _blas_threads() == [1] * len(before)
            assert _blas_threads() == [1] * len(before)
        assert _blas_threads() == outer
        with pytest.raises(RuntimeError), one_blas_thread():
            raise RuntimeError("inside")
        assert _blas_threads() == outer
    assert _blas_threads() == before


def test_blas_limit_sets_any_number_and_is_one_controller():
    """gmmspeaker._blas.blas_limit (which one_blas_thread and the UBM's EM workers use): any
    thread count, restored after, through the one cached controller."""
    from gmmspeaker import _blas

    before = _blas_threads()
    if not before:
        pytest.skip("threadpoolctl finds no BLAS library")
    with _blas.blas_limit(1):
        with _blas.blas_limit(2):
            assert _blas_threads() == [2] * len(before)
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before
    assert _blas._controller() is _blas._controller()
