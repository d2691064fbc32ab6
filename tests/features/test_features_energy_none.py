"""``energy: none`` drops c0: the other cepstra and everything after them are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError
from gmmspeaker.features import FeatureConfig, extract
from gmmspeaker.features.deltas import add_deltas
from gmmspeaker.features.normalize import normalize


def test_energy_none_is_c0_config_without_its_first_column(rng: np.random.Generator) -> None:
    x = rng.standard_normal(16000).astype(np.float32) * 0.1
    common = dict(sample_rate=16000, n_mfcc=13, deltas=0, vad="none", normalize="none")
    with_c0 = extract(x, FeatureConfig(energy="c0", **common), name="x").frames
    without = extract(x, FeatureConfig(energy="none", **common), name="x").frames
    assert FeatureConfig(energy="none", **common).dim == 12 == without.shape[1]
    np.testing.assert_array_equal(without, with_c0[:, 1:])


def test_energy_none_deltas_and_cmvn_follow_the_reduced_cepstra(rng: np.random.Generator) -> None:
    x = rng.standard_normal(12000).astype(np.float32) * 0.1
    base = dict(sample_rate=16000, n_mfcc=20, vad="none")
    statics = extract(x, FeatureConfig(energy="c0", deltas=0, normalize="none", **base), name="x").frames
    cfg = FeatureConfig(energy="none", deltas=2, delta_window=2, normalize="cmvn", **base)
    got = extract(x, cfg, name="x").frames
    ref = normalize(add_deltas(statics[:, 1:], order=2, window=2), "cmvn")
    assert got.shape == (statics.shape[0], 57) and cfg.dim == 57
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_energy_none_needs_two_cepstra() -> None:
    with pytest.raises(ConfigError, match="n_mfcc"):
        FeatureConfig(energy="none", n_mfcc=1)
