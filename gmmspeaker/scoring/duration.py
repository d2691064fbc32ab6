"""Decision thresholds that follow the amount of enrolment speech.

A MAP-adapted mean moves from the UBM mean by the fraction ``n_k / (n_k + r)`` of the
way to the enrolment data (``n_k`` the frames a component saw, ``r`` the relevance
factor). A model enrolled from two seconds of speech therefore stays close to the UBM and
scores every trial, target or not, closer to zero than a model enrolled from forty
seconds; at the threshold set on the run's own models most of its same-speaker trials are
rejected. How far the scores move depends on the corpus, the features, the UBM and the
normalisation, so it is measured on the run's own data rather than modelled:

* :func:`duration_grid` places enrolment durations on a geometric grid below the run's
  models (half, a quarter, ... of their median enrolment speech);
* :func:`draw_subsets` draws, per model and grid duration, random subsets of the model's
  own enrolment utterances that reach that duration;
* the caller enrols those sub-models and scores them on the trials of their model,
  exactly as the run scores its trials (same scoring, same normalisation);
* :meth:`DurationThreshold.fit` takes the equal-error threshold of each duration level;
  for a model enrolled from ``d`` seconds of speech the threshold is interpolated
  linearly in ``log d`` between the levels and, above the longest, the run's EER
  threshold at the run's median enrolment. At or above that median the threshold *is*
  the run's, so models like the run's keep its decisions. Below the shortest level the
  shortest level's threshold is kept (and enrolment warns: nothing shorter was
  measured). Each level's threshold pools the trials of every sub-model of that
  duration (thousands on FSDD), and is interpolated rather than smoothed by a line in
  ``log d``: on FSDD the thresholds fall from one utterance to a few seconds and rise
  again towards the run's models, a shape a line does not follow.

The thresholds are the equal-error points of each level: a short model's miss and false
alarm rates stay balanced, as the run's are, instead of the misses alone growing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.scoring.metrics import eer_threshold

__all__ = ["DurationThreshold", "duration_grid", "draw_subsets"]


def duration_grid(
    reference_seconds: float, shortest_seconds: float, *, factor: float = 2.0, max_levels: int = 8
) -> FloatArray:
    """Enrolment durations to measure: ``reference / factor**k`` down to ``shortest``.

    Parameters
    ----------
    reference_seconds : float
        Enrolment speech of the run's models (their median), in s.
    shortest_seconds : float
        Shortest duration worth measuring (e.g. one typical enrolment utterance), in s.
    factor : float, default 2
        Ratio of consecutive durations (> 1).
    max_levels : int, default 8
        At most this many durations.

    Returns
    -------
    ndarray, shape (n_levels,), float64
        Increasing durations in s, all ``< reference_seconds`` and ``>= shortest_seconds``
        (empty when the reference is not above ``shortest * factor``).
    """
    if not (factor > 1.0 and math.isfinite(factor)):
        raise ConfigError(f"duration grid factor must be > 1, got {factor!r}")
    if not (reference_seconds > 0 and shortest_seconds > 0):
        raise DataError(
            f"duration grid needs positive durations, got reference {reference_seconds!r} "
            f"and shortest {shortest_seconds!r}"
        )
    k = np.arange(1, max_levels + 1)
    levels = reference_seconds / factor**k
    return np.sort(levels[levels >= shortest_seconds])


def draw_subsets(
    utt_seconds: Sequence[npt.ArrayLike],
    levels: npt.ArrayLike,
    *,
    draws: int,
    rng: np.random.Generator,
) -> list[tuple[int, int, list[int]]]:
    """Random subsets of each model's enrolment utterances reaching each duration.

    For each model, level and draw, the model's utterances are put in a random order and
    the shortest prefix whose speech reaches the level's duration is kept. A subset that
    would need every utterance of the model is left out (it is the model itself).

    Parameters
    ----------
    utt_seconds : sequence of array_like, one per model, shape (n_utts_m,), float
        Speech seconds of each enrolment utterance of each model.
    levels : array_like, shape (n_levels,), float
        Target durations in s.
    draws : int
        Subsets per model and level.
    rng : numpy.random.Generator

    Returns
    -------
    list of (model index, level index, utterance indices)
        Utterance indices into that model's ``utt_seconds``, sorted.
    """
    lv = np.asarray(levels, dtype=np.float64)
    out: list[tuple[int, int, list[int]]] = []
    for m, secs in enumerate(utt_seconds):
        s = np.asarray(secs, dtype=np.float64)
        for k, target in enumerate(lv):
            for _ in range(int(draws)):
                pick = _stratified(s, float(target), rng)
                if pick is not None:
                    out.append((m, k, pick))
    return out


def _stratified(seconds: FloatArray, target: float, rng: np.random.Generator) -> list[int] | None:
    """The fewest utterances, one drawn at random from each of ``n`` equal runs of the list, reaching ``target`` s.

    None when that needs the whole list. Drawing one utterance per run of the list spreads
    a subset over it: lists grouped by content or session (FSDD lists ten recordings of
    each digit in a row) then give varied subsets, as a user enrolling a few different
    recordings would, rather than repeats of one word.
    """
    n_utts = seconds.size
    u = rng.random(n_utts)  # one draw, reused for every n: the search below is monotone enough
    for n in range(1, n_utts):
        edges = np.linspace(0, n_utts, n + 1)
        lo, hi = np.floor(edges[:-1]).astype(int), np.floor(edges[1:]).astype(int)
        idx = lo + np.minimum((u[:n] * (hi - lo)).astype(int), hi - lo - 1)
        if seconds[idx].sum() >= target:
            return sorted(int(i) for i in idx)
    return None


@dataclass(frozen=True, kw_only=True)
class DurationThreshold:
    """The decision threshold as a function of a model's enrolment speech.

    Attributes
    ----------
    reference_seconds : float
        Median enrolment speech of the run's models, in s.
    reference_threshold : float
        The run's EER threshold (on the system score).
    level_seconds : tuple of float
        Measured enrolment durations (median speech of each level's sub-models), in s,
        increasing, all below ``reference_seconds``.
    level_thresholds : tuple of float
        EER threshold of each level's sub-model trials.
    level_trials : tuple of (int, int)
        Target and non-target trials behind each level's threshold.
    test_seconds_min : float
        Shortest test speech among the run's scored trials, in s (what its evaluation
        covered on the test side).
    enrol_seconds_min : float
        Shortest enrolment speech of the run's models, in s.
    sub_seconds_min : float
        Shortest enrolment speech of a sub-model behind the levels, in s (0 without).
    """

    reference_seconds: float
    reference_threshold: float
    level_seconds: tuple[float, ...] = ()
    level_thresholds: tuple[float, ...] = ()
    level_trials: tuple[tuple[int, int], ...] = ()
    test_seconds_min: float = 0.0
    enrol_seconds_min: float = 0.0
    sub_seconds_min: float = 0.0

    def __post_init__(self) -> None:
        ls = np.asarray(self.level_seconds, dtype=np.float64)
        lt = np.asarray(self.level_thresholds, dtype=np.float64)
        if ls.shape != lt.shape or len(self.level_trials) != ls.size:
            raise ConfigError(
                f"DurationThreshold: {ls.size} level durations, {lt.size} thresholds and "
                f"{len(self.level_trials)} trial counts"
            )
        if not (
            self.reference_seconds > 0
            and math.isfinite(self.reference_seconds)
            and math.isfinite(self.reference_threshold)
        ):
            raise ConfigError(
                f"DurationThreshold: reference {self.reference_seconds!r} s / "
                f"{self.reference_threshold!r} must be finite (and the duration positive)"
            )
        if ls.size and (
            not np.all(np.isfinite(lt))
            or np.any(ls <= 0)
            or np.any(np.diff(ls) <= 0)
            or ls[-1] >= self.reference_seconds
        ):
            raise ConfigError(
                "DurationThreshold: level durations must be positive, increasing and below the "
                f"reference ({list(ls)} vs {self.reference_seconds}), thresholds finite"
            )

    # -- use -------------------------------------------------------------------
    @property
    def shortest_seconds(self) -> float:
        """The shortest enrolment the run's evaluation covered (a sub-model's or its models'), in s."""
        return float(self.sub_seconds_min) if self.level_seconds else float(self.enrol_seconds_min)

    def covers(self, seconds: float) -> bool:
        """Whether ``seconds`` of enrolment speech is within what was measured."""
        return bool(seconds >= self.shortest_seconds)

    def threshold(self, seconds: npt.ArrayLike) -> FloatArray:
        """Threshold for models enrolled from ``seconds`` of speech.

        Linear in ``log(seconds)`` between the levels and the reference (the run's
        threshold at ``reference_seconds``); the reference threshold above it, the
        shortest level's below that level.

        Parameters
        ----------
        seconds : array_like, any shape, float (s, > 0)

        Returns
        -------
        ndarray, same shape, float64
        """
        d = np.asarray(seconds, dtype=np.float64)
        if np.any(~(d > 0)):
            raise DataError(f"enrolment speech must be positive, got {d[~(d > 0)].ravel()[:3].tolist()} s")
        xs = np.log([*self.level_seconds, self.reference_seconds])
        ys = np.array([*self.level_thresholds, self.reference_threshold], dtype=np.float64)
        return np.interp(np.log(d), xs, ys)

    # -- fitting ---------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        scores: npt.ArrayLike,
        is_target: npt.ArrayLike,
        level: npt.ArrayLike,
        sub_seconds: npt.ArrayLike,
        sub_level: npt.ArrayLike,
        *,
        reference_seconds: float,
        reference_threshold: float,
        test_seconds_min: float = 0.0,
        enrol_seconds_min: float = 0.0,
    ) -> DurationThreshold:
        """Equal-error threshold per duration level, from sub-model trial scores.

        Parameters
        ----------
        scores : array_like, shape (n_trials,), float
            System scores (normalised as the run's) of sub-model trials; NaN are ignored.
        is_target : array_like, shape (n_trials,), bool
        level : array_like, shape (n_trials,), int
            Level index of each trial's sub-model.
        sub_seconds : array_like, shape (n_sub,), float
            Enrolment speech of every sub-model, in s.
        sub_level : array_like, shape (n_sub,), int
            Level index of every sub-model.
        reference_seconds, reference_threshold : float
            The run's models' median enrolment speech and the run's EER threshold.
        test_seconds_min, enrol_seconds_min : float
            For the record (see the attributes).

        Returns
        -------
        DurationThreshold
            Levels without both target and non-target scores, or whose median duration
            is not below the reference, are left out.
        """
        s = np.asarray(scores, dtype=np.float64)
        key = np.asarray(is_target, dtype=bool)
        lev = np.asarray(level, dtype=np.int64)
        sec = np.asarray(sub_seconds, dtype=np.float64)
        slev = np.asarray(sub_level, dtype=np.int64)
        if not (s.shape == key.shape == lev.shape) or sec.shape != slev.shape:
            raise DataError(
                f"duration fit: scores {s.shape}, keys {key.shape}, levels {lev.shape}; "
                f"sub-model durations {sec.shape}, levels {slev.shape}"
            )
        ok = np.isfinite(s)
        found: list[tuple[float, float, tuple[int, int]]] = []
        used: list[int] = []
        for k in np.unique(slev):
            t = s[ok & key & (lev == k)]
            n = s[ok & ~key & (lev == k)]
            d = float(np.median(sec[slev == k]))
            if t.size == 0 or n.size == 0 or not d < reference_seconds:
                continue
            found.append((d, eer_threshold(t, n), (int(t.size), int(n.size))))
            used.append(int(k))
        found.sort()
        # two levels with one median duration (coarse utterances): keep the one with more trials
        uniq: dict[float, tuple[float, float, tuple[int, int]]] = {}
        for f in found:
            if f[0] not in uniq or sum(f[2]) > sum(uniq[f[0]][2]):
                uniq[f[0]] = f
        found = [uniq[d] for d in sorted(uniq)]
        return cls(
            reference_seconds=float(reference_seconds),
            reference_threshold=float(reference_threshold),
            level_seconds=tuple(f[0] for f in found),
            level_thresholds=tuple(f[1] for f in found),
            level_trials=tuple(f[2] for f in found),
            test_seconds_min=float(test_seconds_min),
            enrol_seconds_min=float(enrol_seconds_min),
            sub_seconds_min=float(sec[np.isin(slev, used)].min()) if found else 0.0,
        )

    # -- storage -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the inverse of :meth:`from_dict`)."""
        return {
            "reference_seconds": float(self.reference_seconds),
            "reference_threshold": float(self.reference_threshold),
            "level_seconds": [float(v) for v in self.level_seconds],
            "level_thresholds": [float(v) for v in self.level_thresholds],
            "level_trials": [[int(a), int(b)] for a, b in self.level_trials],
            "test_seconds_min": float(self.test_seconds_min),
            "enrol_seconds_min": float(self.enrol_seconds_min),
            "sub_seconds_min": float(self.sub_seconds_min),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DurationThreshold:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ConfigError."""
        keys = set(_KEYS)
        unknown, missing = set(d) - keys, keys - set(d)
        if unknown or missing:
            raise ConfigError(
                f"duration threshold: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}"
            )
        try:
            return cls(
                reference_seconds=float(d["reference_seconds"]),
                reference_threshold=float(d["reference_threshold"]),
                level_seconds=tuple(float(v) for v in d["level_seconds"]),
                level_thresholds=tuple(float(v) for v in d["level_thresholds"]),
                level_trials=tuple((int(a), int(b)) for a, b in d["level_trials"]),
                test_seconds_min=float(d["test_seconds_min"]),
                enrol_seconds_min=float(d["enrol_seconds_min"]),
                sub_seconds_min=float(d["sub_seconds_min"]),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"duration threshold: a malformed value ({exc})") from None


_KEYS = (
    "reference_seconds",
    "reference_threshold",
    "level_seconds",
    "level_thresholds",
    "level_trials",
    "test_seconds_min",
    "enrol_seconds_min",
    "sub_seconds_min",
)
