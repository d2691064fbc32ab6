"""Score normalisation with a cohort: Z-, T-, ZT-, S- and adaptive S-norm.

Every normalisation reduces to per-model statistics (mean and standard deviation of the
model's scores against cohort *utterances*) and per-test statistics (mean and standard
deviation of cohort *models* scored on the test utterance). The functions therefore take
two small cohort score matrices,

* ``model_cohort`` of shape ``(n_models, n_cohort)``: each enrolled model scored on each
  cohort utterance (Z-norm side),
* ``cohort_test`` of shape ``(n_cohort, n_tests)``: each cohort model scored on each test
  utterance (T-norm side),

and the raw scores in one of two layouts:

* a full matrix ``scores`` of shape ``(n_models, n_tests)`` (leave ``model_idx`` /
  ``test_idx`` as None), or
* a trial list ``scores`` of shape ``(n_trials,)`` with integer ``model_idx`` and
  ``test_idx`` of shape ``(n_trials,)`` giving each trial's row in ``model_cohort`` and
  column in ``cohort_test``.

Any cohort matrix may be a :class:`numpy.ma.MaskedArray`: masked entries are left out of
the statistics of their row or column. This is how self-trials are excluded, e.g. a
T-cohort model scored on the very utterance it was enrolled from (in ZT-norm's
``cohort_cohort``, or in ``cohort_test`` when a test utterance is also a cohort
utterance): such a score is a target trial of the cohort model and would inflate the
cohort statistics. Every row / column must keep at least one unmasked entry.

The per-trial work is one gather and one fused arithmetic expression: no Python loop over
trials. Which utterances and models form the cohort is the recipe's business; here they
are just rows and columns. Standard deviations are population standard deviations
(``ddof=0``) floored at ``std_floor`` so that a constant cohort never yields NaN or inf.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError

__all__ = [
    "NORM_METHODS",
    "cohort_stats",
    "znorm",
    "tnorm",
    "ztnorm",
    "snorm",
    "asnorm",
    "normalize_scores",
    "self_trial_masks",
]

logger = logging.getLogger(__name__)

NORM_METHODS = ("none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm")
"""Names accepted by :func:`normalize_scores` ``method``."""

DEFAULT_STD_FLOOR = 1e-6


# --------------------------------------------------------------------------- helpers


def _as_cohort(x: npt.ArrayLike, name: str) -> tuple[FloatArray, npt.NDArray[np.bool_] | None]:
    """Values and excluded entries (the mask of a masked array, None if nothing is masked)."""
    excluded = np.ma.getmaskarray(x) if np.ma.isMaskedArray(x) else None
    a = np.asarray(np.ma.getdata(x), dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{name} must be a 2-D score matrix, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{name} is empty (shape {a.shape}): the cohort needs at least one entry")
    if excluded is not None and not excluded.any():
        excluded = None
    bad = ~np.isfinite(a) if excluded is None else ~np.isfinite(a) & ~excluded
    if bad.any():
        raise DataError(f"{name} contains {int(np.count_nonzero(bad))} non-finite scores")
    return a, excluded


def _as_matrix(x: npt.ArrayLike, name: str) -> FloatArray:
    return _as_cohort(x, name)[0]


def _as_scores(x: npt.ArrayLike) -> FloatArray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise DataError(f"scores must be (n_trials,) or (n_models, n_tests), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"scores contain {int(np.count_nonzero(~np.isfinite(a)))} non-finite values")
    return a


def _check_floor(std_floor: float) -> None:
    if not (std_floor > 0.0 and np.isfinite(std_floor)):
        raise ConfigError(f"std_floor must be a positive finite number, got {std_floor!r}")


def _gather(
    stat: FloatArray,
    scores: FloatArray,
    idx: npt.ArrayLike | None,
    *,
    side: Literal["model", "test"],
) -> FloatArray:
    """Broadcast a per-model / per-test statistic to the layout of ``scores``."""
    n = stat.shape[0]
    if idx is None:
        if scores.ndim != 2:
            raise DataError(
                f"scores of shape {scores.shape} form a trial list: pass {side}_idx "
                "(or give a (n_models, n_tests) matrix)"
            )
        axis = 0 if side == "model" else 1
        if scores.shape[axis] != n:
            raise DataError(
                f"scores matrix has {scores.shape[axis]} {side}s (shape {scores.shape}) but "
                f"the {side} cohort statistics have {n}"
            )
        return stat[:, None] if side == "model" else stat[None, :]
    ix = np.asarray(idx)
    if scores.ndim != 1:
        raise DataError(f"{side}_idx given, so scores must be 1-D (n_trials,), got {scores.shape}")
    if ix.shape != scores.shape or not np.issubdtype(ix.dtype, np.integer):
        raise DataError(
            f"{side}_idx must be an integer array of shape {scores.shape}, got {ix.dtype} {ix.shape}"
        )
    if ix.size and (ix.min() < 0 or ix.max() >= n):
        raise DataError(
            f"{side}_idx out of range: values in [{ix.min()}, {ix.max()}] but only {n} "
            f"{side}s have cohort scores"
        )
    return stat[ix]


# --------------------------------------------------------------------------- public API


def cohort_stats(
    cohort_scores: npt.ArrayLike,
    *,
    axis: int,
    top_n: int | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> tuple[FloatArray, FloatArray]:
    """Mean and floored standard deviation of cohort scores, optionally of the top N.

    Parameters
    ----------
    cohort_scores : array_like, shape (n_a, n_b), float
        Cohort score matrix (e.g. ``model_cohort`` with ``axis=1`` or ``cohort_test``
        with ``axis=0``).
    axis : int
        The cohort axis, reduced away.
    top_n : int or None, default None
        Keep only the ``top_n`` highest cohort scores of each row/column (adaptive
        cohort); None keeps all. Values above the cohort size use the whole cohort.
    std_floor : float, default 1e-6
        Lower bound of the returned standard deviations.

    Returns
    -------
    mean, std : ndarray, shape (n_b,) for axis 0 or (n_a,) for axis 1, float64
    """
    _check_floor(std_floor)
    c, excluded = _as_cohort(cohort_scores, "cohort scores")
    if axis not in (0, 1):
        raise ConfigError(f"axis must be 0 or 1, got {axis!r}")
    if top_n is not None and (int(top_n) != top_n or top_n < 1):
        raise ConfigError(f"top_n must be a positive integer or None, got {top_n!r}")
    if excluded is not None:
        return _masked_stats(c, excluded, axis=axis, top_n=top_n, std_floor=std_floor)
    if top_n is not None:
        n_c = c.shape[axis]
        if top_n < n_c:
            # The top_n largest along the axis, in no particular order.
            c = -np.partition(-c, int(top_n) - 1, axis=axis)
            c = c[:, :top_n] if axis == 1 else c[:top_n, :]
        elif top_n > n_c:
            logger.debug("top_n=%d exceeds the cohort size %d: using the whole cohort", top_n, n_c)
    mean = c.mean(axis=axis)
    std = np.maximum(c.std(axis=axis), std_floor)
    return mean, std


def _masked_stats(
    c: FloatArray, excluded: npt.NDArray[np.bool_], *, axis: int, top_n: int | None, std_floor: float
) -> tuple[FloatArray, FloatArray]:
    """:func:`cohort_stats` leaving out the ``excluded`` entries (vectorised, no loop)."""
    n_left = np.count_nonzero(~excluded, axis=axis)
    if (n_left == 0).any():
        first = int(np.flatnonzero(n_left == 0)[0])
        raise DataError(
            f"cohort scores: {'column' if axis == 0 else 'row'} {first} has no cohort entry left "
            "after excluding self-trials; use a larger cohort"
        )
    filled = np.where(excluded, -np.inf, c)
    if top_n is not None and top_n < c.shape[axis]:
        # the top_n largest along the axis; excluded entries (-inf) come last
        filled = -np.partition(-filled, int(top_n) - 1, axis=axis)
        filled = filled[:, :top_n] if axis == 1 else filled[:top_n, :]
    keep = np.isfinite(filled)
    count = np.count_nonzero(keep, axis=axis)
    mean = np.where(keep, filled, 0.0).sum(axis=axis) / count
    dev = np.where(keep, filled - np.expand_dims(mean, axis), 0.0)
    std = np.sqrt((dev * dev).sum(axis=axis) / count)
    return mean, np.maximum(std, std_floor)


def znorm(
    scores: npt.ArrayLike,
    model_cohort: npt.ArrayLike,
    *,
    model_idx: npt.ArrayLike | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """Z-norm: ``(s - mu_m) / sd_m`` with the model's scores on cohort utterances.

    Parameters
    ----------
    scores : array_like, shape (n_trials,) or (n_models, n_tests), float
        Raw scores (see the module docstring for the two layouts).
    model_cohort : array_like, shape (n_models, n_cohort), float
        Each model scored on each cohort utterance.
    model_idx : array_like of int, shape (n_trials,), optional
        Row of ``model_cohort`` of each trial (trial-list layout only).
    std_floor : float, default 1e-6
        Floor of the cohort standard deviations.

    Returns
    -------
    ndarray, same shape as ``scores``, float64
    """
    s = _as_scores(scores)
    mu, sd = cohort_stats(model_cohort, axis=1, std_floor=std_floor)
    return (s - _gather(mu, s, model_idx, side="model")) / _gather(sd, s, model_idx, side="model")


def tnorm(
    scores: npt.ArrayLike,
    cohort_test: npt.ArrayLike,
    *,
    test_idx: npt.ArrayLike | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """T-norm: ``(s - mu_t) / sd_t`` with cohort models scored on the test utterance.

    Parameters
    ----------
    scores : array_like, shape (n_trials,) or (n_models, n_tests), float
        Raw scores.
    cohort_test : array_like, shape (n_cohort, n_tests), float
        Each cohort model scored on each test utterance.
    test_idx : array_like of int, shape (n_trials,), optional
        Column of ``cohort_test`` of each trial (trial-list layout only).
    std_floor : float, default 1e-6
        Floor of the cohort standard deviations.

    Returns
    -------
    ndarray, same shape as ``scores``, float64
    """
    s = _as_scores(scores)
    mu, sd = cohort_stats(cohort_test, axis=0, std_floor=std_floor)
    return (s - _gather(mu, s, test_idx, side="test")) / _gather(sd, s, test_idx, side="test")


def ztnorm(
    scores: npt.ArrayLike,
    model_cohort: npt.ArrayLike,
    cohort_test: npt.ArrayLike,
    cohort_cohort: npt.ArrayLike,
    *,
    model_idx: npt.ArrayLike | None = None,
    test_idx: npt.ArrayLike | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """ZT-norm: Z-norm every score, then T-norm with Z-normed cohort-model scores.

    Parameters
    ----------
    scores : array_like, shape (n_trials,) or (n_models, n_tests), float
        Raw scores.
    model_cohort : array_like, shape (n_models, n_zcohort), float
        Each model scored on each Z-norm cohort utterance.
    cohort_test : array_like, shape (n_tcohort, n_tests), float
        Each T-norm cohort model scored on each test utterance.
    cohort_cohort : array_like, shape (n_tcohort, n_zcohort), float
        Each T-norm cohort model scored on each Z-norm cohort utterance (Z-norm
        statistics of the cohort models). When one cohort plays both roles, mask the
        self-trials (a model scored on its own enrolment utterance) with a masked array.
    model_idx, test_idx : array_like of int, shape (n_trials,), optional
        Trial-list layout only.
    std_floor : float, default 1e-6
        Floor of the cohort standard deviations (both stages).

    Returns
    -------
    ndarray, same shape as ``scores``, float64
    """
    ct, ct_excluded = _as_cohort(cohort_test, "cohort_test")
    cc = _as_matrix(cohort_cohort, "cohort_cohort")
    mc = _as_matrix(model_cohort, "model_cohort")
    if cc.shape != (ct.shape[0], mc.shape[1]):
        raise DataError(
            f"cohort_cohort must have shape (n_tcohort, n_zcohort) = ({ct.shape[0]}, "
            f"{mc.shape[1]}), got {cc.shape}"
        )
    z = znorm(scores, model_cohort, model_idx=model_idx, std_floor=std_floor)
    # Z-norm statistics of each cohort model (its self-trial masked out by the caller)
    mu_c, sd_c = cohort_stats(cohort_cohort, axis=1, std_floor=std_floor)
    ct_z: npt.ArrayLike = (ct - mu_c[:, None]) / sd_c[:, None]  # (n_tcohort, n_tests)
    if ct_excluded is not None:
        ct_z = np.ma.MaskedArray(ct_z, mask=ct_excluded)
    return tnorm(z, ct_z, test_idx=test_idx, std_floor=std_floor)


def snorm(
    scores: npt.ArrayLike,
    model_cohort: npt.ArrayLike,
    cohort_test: npt.ArrayLike,
    *,
    model_idx: npt.ArrayLike | None = None,
    test_idx: npt.ArrayLike | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """Symmetric normalisation: the mean of the Z-normed and T-normed scores.

    Usually one cohort plays both roles (its utterances for ``model_cohort``, the models
    enrolled from them for ``cohort_test``). Arguments as in :func:`znorm` and
    :func:`tnorm`.

    Returns
    -------
    ndarray, same shape as ``scores``, float64
    """
    z = znorm(scores, model_cohort, model_idx=model_idx, std_floor=std_floor)
    t = tnorm(scores, cohort_test, test_idx=test_idx, std_floor=std_floor)
    return 0.5 * (z + t)


def asnorm(
    scores: npt.ArrayLike,
    model_cohort: npt.ArrayLike,
    cohort_test: npt.ArrayLike,
    *,
    top_n: int = 200,
    model_idx: npt.ArrayLike | None = None,
    test_idx: npt.ArrayLike | None = None,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """Adaptive S-norm: S-norm whose statistics use only the top-N cohort scores.

    For each model, the mean and standard deviation come from its ``top_n`` highest
    scores on cohort utterances; for each test utterance, from the ``top_n`` highest
    cohort-model scores on it (Matějka et al., 2017). Arguments as in :func:`snorm`.

    Parameters
    ----------
    top_n : int, default 200
        Size of the adaptive cohort; the whole cohort is used when it is smaller.

    Returns
    -------
    ndarray, same shape as ``scores``, float64
    """
    s = _as_scores(scores)
    mu_m, sd_m = cohort_stats(model_cohort, axis=1, top_n=top_n, std_floor=std_floor)
    mu_t, sd_t = cohort_stats(cohort_test, axis=0, top_n=top_n, std_floor=std_floor)
    z = (s - _gather(mu_m, s, model_idx, side="model")) / _gather(sd_m, s, model_idx, side="model")
    t = (s - _gather(mu_t, s, test_idx, side="test")) / _gather(sd_t, s, test_idx, side="test")
    return 0.5 * (z + t)


def normalize_scores(
    scores: npt.ArrayLike,
    *,
    method: str,
    model_cohort: npt.ArrayLike | None = None,
    cohort_test: npt.ArrayLike | None = None,
    cohort_cohort: npt.ArrayLike | None = None,
    model_idx: npt.ArrayLike | None = None,
    test_idx: npt.ArrayLike | None = None,
    top_n: int = 200,
    std_floor: float = DEFAULT_STD_FLOOR,
) -> FloatArray:
    """Dispatch to one normalisation by name (what a recipe's ``normalization`` selects).

    Parameters
    ----------
    method : {"none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"}
        The normalisation. "none" returns the scores as float64.
    model_cohort, cohort_test, cohort_cohort : array_like, optional
        The cohort matrices the method needs (see the individual functions).
    Other parameters
        As in the individual functions.

    Raises
    ------
    ConfigError
        Unknown method, or a cohort matrix the method needs is missing.
    """
    if method not in NORM_METHODS:
        raise ConfigError(f"unknown score normalisation {method!r}; choose one of {NORM_METHODS}")
    needs = {
        "none": (),
        "znorm": ("model_cohort",),
        "tnorm": ("cohort_test",),
        "ztnorm": ("model_cohort", "cohort_test", "cohort_cohort"),
        "snorm": ("model_cohort", "cohort_test"),
        "asnorm": ("model_cohort", "cohort_test"),
    }[method]
    given = {"model_cohort": model_cohort, "cohort_test": cohort_test, "cohort_cohort": cohort_cohort}
    missing = [k for k in needs if given[k] is None]
    if missing:
        raise ConfigError(f"score normalisation {method!r} needs {', '.join(missing)}")
    if method == "none":
        return _as_scores(scores)
    if method == "znorm":
        return znorm(scores, model_cohort, model_idx=model_idx, std_floor=std_floor)  # type: ignore[arg-type]
    if method == "tnorm":
        return tnorm(scores, cohort_test, test_idx=test_idx, std_floor=std_floor)  # type: ignore[arg-type]
    if method == "ztnorm":
        return ztnorm(
            scores,
            model_cohort,
            cohort_test,
            cohort_cohort,  # type: ignore[arg-type]
            model_idx=model_idx,
            test_idx=test_idx,
            std_floor=std_floor,
        )
    if method == "snorm":
        return snorm(
            scores,
            model_cohort,
            cohort_test,  # type: ignore[arg-type]
            model_idx=model_idx,
            test_idx=test_idx,
            std_floor=std_floor,
        )
    return asnorm(
        scores,
        model_cohort,
        cohort_test,  # type: ignore[arg-type]
        top_n=top_n,
        model_idx=model_idx,
        test_idx=test_idx,
        std_floor=std_floor,
    )


def self_trial_masks(
    model_utterances: Sequence[Collection[str]],
    cohort_ids: Sequence[str],
    test_ids: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the self-trials to leave out of the cohort statistics (True = leave out).

    A cohort model is enrolled from one cohort utterance, so it must not be scored on that
    utterance (ZT-norm's cohort-vs-cohort diagonal, and a test utterance that is itself in
    the cohort); a model's Z statistics leave out the cohort utterances it was enrolled
    from.

    Parameters
    ----------
    model_utterances : sequence of collections of str, length M
        The enrolment utterance ids of each model.
    cohort_ids : sequence of str, length C
        Cohort utterance ids (one cohort model each).
    test_ids : sequence of str, length T
        Test utterance ids.

    Returns
    -------
    (model_cohort, cohort_test, cohort_cohort) : bool ndarrays, shapes (M, C), (C, T), (C, C)
        Masks for :func:`normalize_scores`' matrices (as ``numpy.ma`` masks).
    """
    cohort = np.asarray(list(cohort_ids), dtype=object)
    own = np.array([[c in utts for c in cohort_ids] for utts in model_utterances], dtype=bool)
    own = own.reshape(len(model_utterances), len(cohort_ids))
    self_test = cohort[:, None] == np.asarray(list(test_ids), dtype=object)[None, :]
    return (
        own,
        self_test.astype(bool).reshape(len(cohort_ids), len(test_ids)),
        np.eye(len(cohort_ids), dtype=bool),
    )
