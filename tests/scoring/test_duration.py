"""Duration-aware decision thresholds (gmmspeaker.scoring.duration)."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.scoring.duration import DurationThreshold, draw_subsets, duration_grid


def _eer_threshold_slow(tar: np.ndarray, non: np.ndarray) -> float:
    """The observed score minimising max(miss, false alarm), by trying every score."""
    best, best_t = np.inf, np.inf
    for t in np.concatenate([tar, non]):
        worst = max(np.mean(tar < t), np.mean(non >= t))
        if worst < best or (worst == best and t < best_t):
            best, best_t = worst, t
    return float(best_t)


def test_duration_grid_halves_down_to_the_shortest():
    g = duration_grid(40.0, 2.0)
    np.testing.assert_allclose(g, [2.5, 5.0, 10.0, 20.0])
    assert duration_grid(40.0, 2.5, factor=4.0).tolist() == [2.5, 10.0]
    assert duration_grid(3.0, 2.0).size == 0  # nothing between the shortest and the reference
    with pytest.raises(ConfigError, match="factor"):
        duration_grid(40.0, 1.0, factor=1.0)
    with pytest.raises(DataError, match="positive"):
        duration_grid(0.0, 1.0)


def test_subsets_are_the_fewest_stratified_utterances_reaching_the_level(rng):
    secs = [rng.uniform(0.2, 0.8, 40), rng.uniform(0.5, 1.5, 12), np.full(3, 1.0)]
    levels = np.array([1.0, 4.0, 8.0])
    out = draw_subsets(secs, levels, draws=5, rng=np.random.default_rng(0))
    assert out == draw_subsets(secs, levels, draws=5, rng=np.random.default_rng(0))  # seeded
    seen = set()
    for m, k, idx in out:
        s = np.asarray(secs[m])
        n = len(idx)
        assert 0 < n < s.size and idx == sorted(set(idx))
        assert s[idx].sum() >= levels[k]
        # one utterance from each of n equal runs of the list
        edges = np.floor(np.linspace(0, s.size, n + 1)).astype(int)
        assert all(edges[j] <= i < edges[j + 1] for j, i in enumerate(idx))
        seen.add((m, k))
    # model 2 (3 s in all) has no subset reaching 4 or 8 s short of all its utterances
    assert (2, 0) in seen and (2, 1) not in seen and (2, 2) not in seen
    assert (0, 2) in seen and (1, 2) in seen


def _synthetic_levels(rng, level_seconds, per_level=400):
    """Scores whose equal-error point moves with log duration; one level per duration."""
    scores, key, level = [], [], []
    for k, d in enumerate(level_seconds):
        shift = 0.3 * np.log(d)
        tar = rng.normal(1.0 + shift, 1.0, per_level // 4)
        non = rng.normal(-1.0 + 0.5 * shift, 0.8, per_level)
        scores += [tar, non]
        key += [np.ones(tar.size, bool), np.zeros(non.size, bool)]
        level += [np.full(tar.size + non.size, k)]
    return np.concatenate(scores), np.concatenate(key), np.concatenate(level)


def test_fit_is_each_levels_eer_threshold(rng):
    secs = np.array([1.0, 2.0, 4.0, 8.0])
    scores, key, level = _synthetic_levels(rng, secs)
    scores[5] = np.nan  # an unscored trial takes no part
    sub_level = np.repeat(np.arange(4), 3)
    sub_seconds = np.repeat(secs, 3) * np.tile([0.9, 1.0, 1.2], 4)
    fit = DurationThreshold.fit(
        scores, key, level, sub_seconds, sub_level, reference_seconds=16.0, reference_threshold=0.7
    )
    ok = np.isfinite(scores)
    expect = [
        _eer_threshold_slow(scores[ok & key & (level == k)], scores[ok & ~key & (level == k)])
        for k in range(4)
    ]
    np.testing.assert_allclose(fit.level_thresholds, expect, rtol=0, atol=0)
    np.testing.assert_allclose(fit.level_seconds, secs)  # the median sub-model duration per level
    assert fit.level_trials[0] == (100 - 1, 400)
    assert fit.sub_seconds_min == pytest.approx(0.9) and fit.shortest_seconds == fit.sub_seconds_min


def test_threshold_interpolates_in_log_duration_up_to_the_runs_threshold():
    dt = DurationThreshold(
        reference_seconds=40.0,
        reference_threshold=2.0,
        level_seconds=(2.0, 4.0, 8.0),
        level_thresholds=(0.9, 0.6, 1.6),
        level_trials=((10, 50),) * 3,
        test_seconds_min=0.3,
        enrol_seconds_min=30.0,
        sub_seconds_min=1.5,
    )
    # each level's own threshold, and halfway in log d between two levels (not monotone: a U)
    assert dt.threshold(np.array([2.0, 4.0, 8.0])) == pytest.approx([0.9, 0.6, 1.6], abs=1e-12)
    assert dt.threshold(np.sqrt(2.0 * 4.0)) == pytest.approx(0.75)
    assert dt.threshold(4.0 * 2**0.25) == pytest.approx(0.6 + 0.25 * 1.0)
    # held below the shortest level; covered down to the shortest sub-model
    assert dt.threshold(0.5) == dt.threshold(2.0) == pytest.approx(0.9)
    assert not dt.covers(1.4) and dt.covers(1.5)
    # the run's threshold from the reference on (its decisions are kept), joined from the longest level
    assert dt.threshold(np.array([40.0, 400.0])).tolist() == [2.0, 2.0]
    assert dt.threshold(np.sqrt(8.0 * 40.0)) == pytest.approx((1.6 + 2.0) / 2)
    assert dt.threshold(np.ones((2, 3))).shape == (2, 3)
    with pytest.raises(DataError, match="positive"):
        dt.threshold(0.0)
    assert DurationThreshold.from_dict(dt.to_dict()) == dt
    bare = DurationThreshold(reference_seconds=10.0, reference_threshold=1.5)
    assert bare.threshold(1.0) == 1.5 and DurationThreshold.from_dict(bare.to_dict()) == bare


def test_invalid_records_are_config_errors():
    good = dict(reference_seconds=40.0, reference_threshold=2.0)
    with pytest.raises(ConfigError, match="below the reference"):
        DurationThreshold(**good, level_seconds=(50.0,), level_thresholds=(1.0,), level_trials=((1, 1),))
    with pytest.raises(ConfigError, match="increasing"):
        DurationThreshold(
            **good, level_seconds=(4.0, 2.0), level_thresholds=(1.0, 1.0), level_trials=((1, 1),) * 2
        )
    with pytest.raises(ConfigError, match="2 level durations, 1 thresholds"):
        DurationThreshold(**good, level_seconds=(1.0, 2.0), level_thresholds=(1.0,), level_trials=())
    d = DurationThreshold(**good).to_dict()
    d["extra"] = 1
    with pytest.raises(ConfigError, match="unknown keys \\['extra'\\]"):
        DurationThreshold.from_dict(d)
    del d["extra"], d["sub_seconds_min"]
    with pytest.raises(ConfigError, match="missing keys \\['sub_seconds_min'\\]"):
        DurationThreshold.from_dict(d)
