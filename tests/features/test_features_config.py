"""FeatureConfig: validation, serialisation, shipped YAML defaults, input errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.features import FeatureConfig, extract

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"n_mel": 40}, "n_mel"),
        ({"n_mels": "40"}, "n_mels"),
        ({"deltas": 1.5}, "deltas"),
        ({"deltas": 3}, "deltas"),
        ({"center": "yes"}, "center"),
        ({"window": "blackman"}, "window"),
        ({"n_mfcc": 50}, "n_mfcc"),
        ({"fmax": 9000.0}, "fmax"),
        ({"preemphasis": 1.0}, "preemphasis"),
        ({"frame_shift": 0.0}, "frame_shift"),
        ({"vad_proportion": 0.0}, "vad_proportion"),
        ({"normalize": "cmvn_sliding"}, "normalize"),
        ({"n_fft": 256}, "n_fft"),
        ({"sample_rate": None}, "sample_rate"),
        ({"vad_threshold": True}, "vad_threshold"),
    ],
)
def test_config_errors_name_source_and_key(mapping: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"recipe\.yaml.*{key}"):
        FeatureConfig.from_dict(mapping, source="recipe.yaml")


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        FeatureConfig(n_mels=0)
    with pytest.raises(ConfigError, match="energy"):
        FeatureConfig(energy="c1")


def test_round_trip_and_json() -> None:
    cfg = FeatureConfig(sample_rate=8000, n_mels=24, fmax=3800, normalize="warp")
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert FeatureConfig.from_dict(d) == cfg
    assert d["fmax"] == 3800.0 and isinstance(d["fmax"], float)  # ints given for floats are stored as floats
    assert FeatureConfig(fmin=20).to_dict() == FeatureConfig().to_dict()
    assert list(d) == list(FeatureConfig().to_dict())


@pytest.mark.parametrize(("name", "rate"), [("features-8k.yaml", 8000), ("features-16k.yaml", 16000)])
def test_shipped_configs_load(name: str, rate: int, rng: np.random.Generator) -> None:
    cfg = FeatureConfig.from_dict(yaml.safe_load((CONFIGS / name).read_text())["features"], source=name)
    assert cfg.sample_rate == rate and cfg.dim == 60
    assert cfg.fmax_hz < rate / 2
    x = (0.1 * rng.standard_normal(rate)).astype(np.float32)
    feats = extract(x, cfg)
    assert feats.frames.shape[1] == cfg.dim and np.isfinite(feats.frames).all()


def test_too_short_and_bad_signals_raise_naming_utterance() -> None:
    cfg = FeatureConfig()
    with pytest.raises(DataError, match=r"utt-3: 399 samples .*too short for one frame of 400 samples"):
        extract(np.zeros(399, np.float32), cfg, name="utt-3")
    with pytest.raises(DataError, match="utt-4.*too short"):
        extract(np.zeros(0, np.float32), cfg, name="utt-4")
    with pytest.raises(DataError, match="utt-5.*NaN"):
        extract(np.full(1000, np.nan, np.float32), cfg, name="utt-5")
    with pytest.raises(DataError, match="utt-6.*1-D"):
        extract(np.zeros((2, 1000), np.float32), cfg, name="utt-6")


def test_fmax_negative_is_offset_from_nyquist() -> None:
    assert FeatureConfig(sample_rate=8000, fmax=-200.0).fmax_hz == 3800.0
    assert FeatureConfig(sample_rate=8000).fmax_hz == 4000.0
    assert FeatureConfig().fft_size == 512 and FeatureConfig(sample_rate=8000).fft_size == 256
