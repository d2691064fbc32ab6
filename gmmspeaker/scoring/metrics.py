"""Detection metrics over verification scores: EER, minDCF / actDCF, Cllr / minCllr, DET.

Every function takes two 1-D arrays of scores, ``tar`` for target trials (same speaker)
and ``non`` for non-target trials (different speakers); a higher score means "more
target". The EER and the minimum DCF are read from the ROC convex hull (ROCCH), as in
the BOSARIS toolkit and the NIST SRE tools: the scores are sorted, the pool-adjacent-
violators algorithm (PAV) turns the target/non-target labels into a monotone posterior,
and the PAV blocks are the vertices (and collinear points) of the convex hull. Tied
scores are therefore handled as one block whose ROC segment is the straight line between
its end points, never by an arbitrary order.

Detection cost functions are *normalised* as NIST does: the cost is divided by the cost
of the best trivial system, ``min(P_target * C_miss, (1 - P_target) * C_fa)``, so a
system that always accepts or always rejects scores 1.0 (or less).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError

__all__ = [
    "eer",
    "min_dcf",
    "act_dcf",
    "cllr",
    "min_cllr",
    "det_curve",
    "roc_convex_hull",
    "pav_llrs",
    "bayes_threshold",
    "eer_threshold",
    "evaluate",
    "identification_accuracy",
]

logger = logging.getLogger(__name__)

_LOG2 = math.log(2.0)


# --------------------------------------------------------------------------- validation


def check_scores(tar: npt.ArrayLike, non: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return ``tar``, ``non`` as 1-D float64 arrays; DataError on empty / NaN / bad shape."""
    out = []
    for name, x in (("target", tar), ("non-target", non)):
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 1:
            raise DataError(f"{name} scores must be a 1-D array, got shape {a.shape}")
        if a.size == 0:
            raise DataError(f"no {name} scores: metrics need at least one {name} trial")
        n_nan = int(np.count_nonzero(np.isnan(a)))
        if n_nan:
            raise DataError(
                f"{name} scores contain {n_nan} NaN value(s) out of {a.size}; "
                "fix the scoring stage before evaluating"
            )
        out.append(a)
    return out[0], out[1]


def _check_costs(p_target: float, c_miss: float, c_fa: float) -> None:
    if not (0.0 < p_target < 1.0):
        raise ConfigError(f"p_target must lie strictly between 0 and 1, got {p_target!r}")
    if not (c_miss > 0.0 and math.isfinite(c_miss)):
        raise ConfigError(f"c_miss must be a positive finite number, got {c_miss!r}")
    if not (c_fa > 0.0 and math.isfinite(c_fa)):
        raise ConfigError(f"c_fa must be a positive finite number, got {c_fa!r}")


# --------------------------------------------------------------------------- PAV / ROCCH


def _pav(y: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """Weighted isotonic (non-decreasing) regression by pool-adjacent-violators.

    Parameters
    ----------
    y, w : ndarray, shape (n,), float64
        Values and positive weights.

    Returns
    -------
    values : ndarray, shape (n_blocks,), float64
        Fitted value of each block (non-decreasing).
    weights : ndarray, shape (n_blocks,), float64
        Total weight of each block.
    starts : ndarray, shape (n_blocks + 1,), intp
        Start index of each block in ``y``, then ``n``.
    """
    try:
        from scipy.optimize import isotonic_regression  # scipy >= 1.12
    except ImportError:  # pragma: no cover - exercised only with old scipy
        return _pav_python(y, w)
    res = isotonic_regression(y, weights=w, increasing=True)
    starts = np.asarray(res.blocks, dtype=np.intp)
    return np.asarray(res.x, dtype=np.float64)[starts[:-1]], np.asarray(res.weights), starts


def _pav_python(y: FloatArray, w: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """Stack-based PAV; the fallback for scipy < 1.12 (same outputs as :func:`_pav`)."""
    vals: list[float] = []
    wts: list[float] = []
    starts: list[int] = []
    for i in range(y.shape[0]):
        v, wt, st = float(y[i]), float(w[i]), i
        while vals and vals[-1] >= v:
            pv, pw = vals.pop(), wts.pop()
            st = starts.pop()
            v = (pv * pw + v * wt) / (pw + wt)
            wt = pw + wt
        vals.append(v)
        wts.append(wt)
        starts.append(st)
    starts.append(int(y.shape[0]))
    return np.asarray(vals), np.asarray(wts), np.asarray(starts, dtype=np.intp)


@dataclass(frozen=True)
class _Pav:
    """PAV of the target labels over scores sorted ascending (targets first in ties)."""

    order: npt.NDArray[np.intp]  # (n,) argsort of the concatenated scores
    n_tar_blocks: FloatArray  # (n_blocks,) number of targets per PAV block
    n_non_blocks: FloatArray  # (n_blocks,) number of non-targets per PAV block
    popt: FloatArray  # (n_blocks,) target posterior of each block (at the empirical prior)
    sizes: npt.NDArray[np.intp]  # (n_blocks,) number of trials per block
    n_tar: int
    n_non: int


def _pav_labels(tar: FloatArray, non: FloatArray) -> _Pav:
    scores = np.concatenate([tar, non])
    labels = np.concatenate([np.ones(tar.size), np.zeros(non.size)])
    # Stable ascending sort: among tied scores targets come first, the pessimistic order,
    # which PAV then pools into one block (the straight ROC segment through the tie).
    order = np.argsort(scores, kind="stable")
    lab = labels[order]
    # Compress runs of equal labels first: PAV never splits a run, and this shrinks the
    # problem a lot for well-separated systems.
    change = np.flatnonzero(np.diff(lab)) + 1
    run_starts = np.concatenate([[0], change])
    run_len = np.diff(np.concatenate([run_starts, [lab.size]])).astype(np.float64)
    run_val = lab[run_starts]
    values, weights, block_runs = _pav(run_val, run_len)
    # Trials per block: sum of run lengths in that block.
    cum = np.concatenate([[0.0], np.cumsum(run_len)])
    sizes = np.rint(np.diff(cum[block_runs])).astype(np.intp)
    n_tar_b = np.rint(values * weights)
    n_non_b = weights - n_tar_b
    return _Pav(
        order=order,
        n_tar_blocks=n_tar_b,
        n_non_blocks=n_non_b,
        popt=n_tar_b / weights,
        sizes=sizes,
        n_tar=tar.size,
        n_non=non.size,
    )


def _hull_from_pav(p: _Pav) -> tuple[FloatArray, FloatArray]:
    """ROCCH points, ascending threshold: ``pfa`` from 1 down to 0, ``pmiss`` 0 up to 1."""
    cum_tar = np.concatenate([[0.0], np.cumsum(p.n_tar_blocks)])
    cum_non = np.concatenate([[0.0], np.cumsum(p.n_non_blocks)])
    pmiss = cum_tar / p.n_tar
    pfa = (p.n_non - cum_non) / p.n_non
    return pfa, pmiss


def _eer_from_hull(pfa: FloatArray, pmiss: FloatArray) -> float:
    """EER where the convex hull crosses ``pfa == pmiss``.

    Each hull segment lies on a supporting line of the (convex) hull, and a supporting
    line meets the diagonal no later than the hull does, so the EER is the largest
    intersection over all segments. Segments parallel to an axis lie on the axes (pure
    blocks at either end) and contribute 0.
    """
    x1, x2 = pfa[:-1], pfa[1:]
    y1, y2 = pmiss[:-1], pmiss[1:]
    dx, dy = x2 - x1, y2 - y1
    ok = (dx != 0.0) & (dy != 0.0)
    if not np.any(ok):
        return 0.0
    seg = (y1[ok] * x2[ok] - x1[ok] * y2[ok]) / (dx[ok] - dy[ok])
    return float(max(0.0, seg.max()))


def _min_dcf_from_hull(
    pfa: FloatArray, pmiss: FloatArray, p_target: float, c_miss: float, c_fa: float
) -> float:
    cost = p_target * c_miss * pmiss + (1.0 - p_target) * c_fa * pfa
    norm = min(p_target * c_miss, (1.0 - p_target) * c_fa)
    return float(cost.min() / norm)


# --------------------------------------------------------------------------- public API


def roc_convex_hull(tar: npt.ArrayLike, non: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Points of the ROC convex hull (ROCCH), as in BOSARIS ``rocch``.

    Parameters
    ----------
    tar : array_like, shape (n_tar,), float
        Target-trial scores (higher = more target).
    non : array_like, shape (n_non,), float
        Non-target-trial scores.

    Returns
    -------
    pfa : ndarray, shape (n_points,), float64
        False-alarm rates, non-increasing from 1 to 0 (thresholds ascending).
    pmiss : ndarray, shape (n_points,), float64
        Miss rates, non-decreasing from 0 to 1.

    Raises
    ------
    DataError
        If either array is empty, not 1-D or contains NaN.
    """
    t, n = check_scores(tar, non)
    return _hull_from_pav(_pav_labels(t, n))


def det_curve(tar: npt.ArrayLike, non: npt.ArrayLike, *, hull: bool = True) -> tuple[FloatArray, FloatArray]:
    """Operating points of the DET curve.

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target scores.
    hull : bool, default True
        True: the vertices of the ROC convex hull (what BOSARIS plots and what the EER is
        read from). False: the empirical step curve, one point per distinct threshold
        (a trial is accepted when ``score >= threshold``), plus the reject-all point.

    Returns
    -------
    pfa : ndarray, shape (n_points,), float64
        False-alarm rates (fractions, not percent), non-increasing.
    pmiss : ndarray, shape (n_points,), float64
        Miss rates (fractions), non-decreasing. Both start at the accept-all point
        ``(1, 0)`` and end at the reject-all point ``(0, 1)``.
    """
    t, n = check_scores(tar, non)
    if hull:
        return _hull_from_pav(_pav_labels(t, n))
    thr = np.concatenate([np.unique(np.concatenate([t, n])), [np.inf]])
    t_sorted, n_sorted = np.sort(t), np.sort(n)
    pmiss = np.searchsorted(t_sorted, thr, side="left") / t.size
    pfa = (n.size - np.searchsorted(n_sorted, thr, side="left")) / n.size
    return pfa.astype(np.float64), pmiss.astype(np.float64)


def eer(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """Equal error rate from the ROC convex hull (BOSARIS / NIST convention).

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target scores.

    Returns
    -------
    float
        EER as a fraction in [0, 0.5] (not percent): 0 for separable scores, 0.5 when
        target and non-target scores are indistinguishable.

    Raises
    ------
    DataError
        If either array is empty, not 1-D or contains NaN.
    """
    pfa, pmiss = roc_convex_hull(tar, non)
    return _eer_from_hull(pfa, pmiss)


def min_dcf(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Minimum normalised detection cost over all thresholds.

    ``DCF(t) = P_target C_miss P_miss(t) + (1 - P_target) C_fa P_fa(t)``, divided by
    ``min(P_target C_miss, (1 - P_target) C_fa)`` (NIST normalisation), minimised over
    every threshold ``t`` (equivalently over the ROC convex hull vertices).

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target scores.
    p_target : float, default 0.01
        Prior probability of a target trial, in (0, 1).
    c_miss, c_fa : float, default 1.0
        Costs of a miss and of a false alarm, positive.

    Returns
    -------
    float
        Normalised minimum DCF, in [0, 1].
    """
    _check_costs(p_target, c_miss, c_fa)
    pfa, pmiss = roc_convex_hull(tar, non)
    return _min_dcf_from_hull(pfa, pmiss, p_target, c_miss, c_fa)


def eer_threshold(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """The score threshold at the equal-error point of target and non-target scores.

    Accepting scores ``>= t``, the miss rate is ``P_miss(t) = #{tar < t} / n_tar`` and the
    false-alarm rate ``P_fa(t) = #{non >= t} / n_non``. The threshold returned is the
    observed score ``t`` that minimises ``max(P_miss(t), P_fa(t))`` (the point of the
    empirical curve closest to the equal-error line; the lowest such score on ties).

    Parameters
    ----------
    tar, non : ndarray, shape (n_tar,), (n_non,), float
        Finite target and non-target scores (NaN are left out).

    Returns
    -------
    float

    Raises
    ------
    DataError
        No finite target or no finite non-target score.
    """
    t = np.sort(np.asarray(tar, dtype=np.float64)[np.isfinite(tar)])
    n = np.sort(np.asarray(non, dtype=np.float64)[np.isfinite(non)])
    if t.size == 0 or n.size == 0:
        raise DataError(f"EER threshold needs target and non-target scores, got {t.size} and {n.size}")
    cand = np.unique(np.concatenate([t, n]))
    p_miss = np.searchsorted(t, cand, side="left") / t.size
    p_fa = 1.0 - np.searchsorted(n, cand, side="left") / n.size
    return float(cand[int(np.argmin(np.maximum(p_miss, p_fa)))])


def bayes_threshold(p_target: float, *, c_miss: float = 1.0, c_fa: float = 1.0) -> float:
    """Bayes decision threshold on log-likelihood ratios (natural log).

    Returns ``log((1 - P_target) C_fa / (P_target C_miss))``: accept a trial when its
    LLR is ``>=`` this value.
    """
    _check_costs(p_target, c_miss, c_fa)
    return math.log((1.0 - p_target) * c_fa) - math.log(p_target * c_miss)


def _act_dcf(t: FloatArray, n: FloatArray, p_target: float, c_miss: float, c_fa: float) -> float:
    thr = bayes_threshold(p_target, c_miss=c_miss, c_fa=c_fa)
    pmiss = np.count_nonzero(t < thr) / t.size
    pfa = np.count_nonzero(n >= thr) / n.size
    cost = p_target * c_miss * pmiss + (1.0 - p_target) * c_fa * pfa
    return float(cost / min(p_target * c_miss, (1.0 - p_target) * c_fa))


def act_dcf(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    *,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> float:
    """Actual normalised detection cost, treating scores as natural-log LLRs.

    Trials are accepted when ``score >= bayes_threshold(p_target, c_miss, c_fa)``; the
    cost is normalised by ``min(P_target C_miss, (1 - P_target) C_fa)`` as NIST does. It
    equals :func:`min_dcf` only for well-calibrated scores; see
    :mod:`gmmspeaker.scoring.calibration`.

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target LLRs (natural log).
    p_target : float, default 0.01
        Prior probability of a target trial, in (0, 1).
    c_miss, c_fa : float, default 1.0
        Costs of a miss and of a false alarm, positive.

    Returns
    -------
    float
        Normalised actual DCF, >= :func:`min_dcf` (it may exceed 1 for badly
        calibrated scores).
    """
    _check_costs(p_target, c_miss, c_fa)
    t, n = check_scores(tar, non)
    return _act_dcf(t, n, p_target, c_miss, c_fa)


def _cllr(t: FloatArray, n: FloatArray) -> float:
    # softplus(-llr) = -log sigmoid(llr) = log(1 + exp(-llr)), in nats; logaddexp is stable
    # and maps +inf / -inf to 0 / inf as it should.
    c_tar = np.mean(np.logaddexp(0.0, -t))
    c_non = np.mean(np.logaddexp(0.0, n))
    return float((c_tar + c_non) / (2.0 * _LOG2))


def cllr(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """Log-likelihood-ratio cost (Brümmer), in bits.

    ``Cllr = (mean(log2(1 + exp(-tar))) + mean(log2(1 + exp(non)))) / 2``, scores read
    as natural-log LLRs. All-zero LLRs (a system that says nothing) give exactly 1.0;
    perfect, infinitely confident LLRs give 0.

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target LLRs (natural log).

    Returns
    -------
    float
        Cllr in bits, >= 0.
    """
    t, n = check_scores(tar, non)
    return _cllr(t, n)


def _pav_llrs_from(p: _Pav) -> tuple[FloatArray, FloatArray]:
    n_tot = p.n_tar + p.n_non
    with np.errstate(divide="ignore"):
        logit = np.log(p.popt) - np.log1p(-p.popt)  # +-inf for pure blocks
    llr_block = logit - (math.log(p.n_tar) - math.log(p.n_non))
    llr_sorted = np.repeat(llr_block, p.sizes)
    llr = np.empty(n_tot)
    llr[p.order] = llr_sorted
    return llr[: p.n_tar], llr[p.n_tar :]


def pav_llrs(tar: npt.ArrayLike, non: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Optimal monotone (PAV) transform of the scores into LLRs, as in BOSARIS ``opt_loglr``.

    This is the "oracle" calibration behind :func:`min_cllr`: the best LLRs any
    monotone rescaling of these scores can reach on these very trials.

    Returns
    -------
    tar_llr : ndarray, shape (n_tar,), float64
    non_llr : ndarray, shape (n_non,), float64
        LLRs (natural log), possibly ``+inf`` for targets / ``-inf`` for non-targets in
        pure blocks, in the same order as the inputs.
    """
    t, n = check_scores(tar, non)
    return _pav_llrs_from(_pav_labels(t, n))


def min_cllr(tar: npt.ArrayLike, non: npt.ArrayLike) -> float:
    """Minimum Cllr: the Cllr of the PAV-calibrated scores (:func:`pav_llrs`), in bits.

    ``min_cllr <= cllr`` for any scores; 0 for separable scores; 1 for scores that carry
    no information.
    """
    t, n = check_scores(tar, non)
    return _cllr(*_pav_llrs_from(_pav_labels(t, n)))


def evaluate(
    tar: npt.ArrayLike,
    non: npt.ArrayLike,
    *,
    p_targets: Sequence[float] = (0.01, 0.001),
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> dict[str, Any]:
    """Every summary metric at once (one sort, one PAV), as a JSON-serialisable dict.

    Parameters
    ----------
    tar, non : array_like, shape (n_tar,) and (n_non,), float
        Target and non-target scores (read as natural-log LLRs for ``act_dcf``/``cllr``).
    p_targets : sequence of float, default (0.01, 0.001)
        Target priors of the operating points.
    c_miss, c_fa : float, default 1.0
        Costs of a miss and of a false alarm.

    Returns
    -------
    dict
        ``{"eer": float (fraction), "min_dcf": {str(p): float}, "act_dcf": {str(p): float},
        "cllr": float (bits), "min_cllr": float (bits), "n_target": int,
        "n_nontarget": int}``; DCFs are normalised (NIST), actual DCF uses the Bayes
        threshold on the scores as LLRs.

    Raises
    ------
    DataError
        Empty score arrays or NaN scores.
    ConfigError
        A prior outside (0, 1) or a non-positive cost.
    """
    p_list = [float(p) for p in p_targets]
    if not p_list:
        raise ConfigError("p_targets is empty: give at least one target prior")
    for p in p_list:
        _check_costs(p, c_miss, c_fa)
    t, n = check_scores(tar, non)
    pav = _pav_labels(t, n)
    pfa, pmiss = _hull_from_pav(pav)
    result: dict[str, Any] = {
        "eer": _eer_from_hull(pfa, pmiss),
        "min_dcf": {str(p): _min_dcf_from_hull(pfa, pmiss, p, c_miss, c_fa) for p in p_list},
        "act_dcf": {str(p): _act_dcf(t, n, p, c_miss, c_fa) for p in p_list},
        "cllr": _cllr(t, n),
        "min_cllr": _cllr(*_pav_llrs_from(pav)),
        "n_target": int(t.size),
        "n_nontarget": int(n.size),
    }
    logger.debug("evaluated %d target / %d non-target trials: %s", t.size, n.size, result)
    return result


def identification_accuracy(
    scores: npt.ArrayLike, true_rows: npt.ArrayLike, ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Top-k identification accuracy of a score matrix.

    Parameters
    ----------
    scores : ndarray, shape (n_models, n_tests), float
        Every model scored on every test utterance.
    true_rows : ndarray, shape (n_tests,), int
        Row of each test's true model.
    ks : sequence of int
        Ranks to report.

    Returns
    -------
    dict
        ``{"top1": fraction, "top5": fraction, ...}``: the share of tests whose true model
        is among the k best-scoring models (a tie with the true model's score counts
        against it).
    """
    s = np.asarray(scores, dtype=np.float64)
    rows = np.asarray(true_rows, dtype=np.intp)
    if s.ndim != 2 or s.shape[1] != rows.size or rows.size == 0:
        raise DataError(f"identification: scores {s.shape} do not match {rows.size} tests")
    true_score = s[rows, np.arange(rows.size)]
    # rank of the true model: models scoring at least as high, other than itself
    rank = (s >= true_score[None, :]).sum(axis=0) - 1
    return {f"top{k}": float(np.mean(rank < k)) for k in ks}
