"""``sample_rate: auto``: the 8/16 kHz default sets, resolution from the audio, and the errors
that name the flag of the interface (``--resample`` on the CLI, ``data.resample: true`` in a
recipe)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from gmmspeaker.cli import main
from gmmspeaker.errors import AudioError, ConfigError
from gmmspeaker.features.extract import RATE_DEFAULTS, FeatureConfig, resolve_sample_rate
from gmmspeaker.store import FeatureStore
from tests.features.conftest import FSDD
from tests.helpers import REPO, speechlike, tiny_recipe, write_wav


@pytest.mark.parametrize(("rate", "name"), [(8000, "features-8k.yaml"), (16000, "features-16k.yaml")])
def test_yaml_defaults_agree_with_the_package(rate: int, name: str) -> None:
    section = yaml.safe_load((REPO / "configs" / name).read_text())["features"]
    assert set(section) == set(RATE_DEFAULTS[rate]) == {f.name for f in dataclasses.fields(FeatureConfig)}
    for key, value in section.items():
        assert value == RATE_DEFAULTS[rate][key], key
    assert FeatureConfig.from_dict(section) == FeatureConfig.for_rate(rate)


def test_auto_resolves_to_the_rate_defaults_and_keeps_explicit_values() -> None:
    auto = FeatureConfig(sample_rate="auto")
    assert auto.resolve(8000) == FeatureConfig.for_rate(8000)
    assert auto.resolve(16000) == FeatureConfig.for_rate(16000)
    mine = FeatureConfig(sample_rate="auto", n_mfcc=13, vad="none").resolve(8000)
    assert (mine.n_mfcc, mine.vad, mine.n_mels, mine.fmax, mine.sample_rate) == (13, "none", 24, 3800.0, 8000)
    fixed = FeatureConfig(sample_rate=8000)
    assert fixed.resolve(16000) is fixed  # a fixed rate is the caller's to check
    assert FeatureConfig.from_dict({"sample_rate": "auto"}).sample_rate == "auto"


def test_auto_config_needs_resolving_and_other_strings_are_rejected() -> None:
    auto = FeatureConfig(sample_rate="auto")
    with pytest.raises(ConfigError, match="sample_rate is 'auto'"):
        auto.spectral_params()
    with pytest.raises(ConfigError, match="sample_rate.*'auto'.*'fast'"):
        FeatureConfig.from_dict({"sample_rate": "fast"}, source="x.yaml")
    with pytest.raises(ConfigError, match=r"no default features for 44100 Hz.*sample_rate: 44100"):
        auto.resolve(44100)


@pytest.fixture
def wavs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    return {
        "a8": write_wav(tmp_path / "a8.wav", speechlike(rng, 0.5, 8000), 8000),
        "b8": write_wav(tmp_path / "b8.wav", speechlike(rng, 0.5, 8000), 8000),
        "c16": write_wav(tmp_path / "c16.wav", speechlike(rng, 0.5, 16000), 16000),
        "d44": write_wav(tmp_path / "d44.wav", speechlike(rng, 0.5, 44100), 44100),
    }


def test_resolve_sample_rate_from_the_audio(wavs: dict[str, Path]) -> None:
    auto = FeatureConfig(sample_rate="auto")
    assert resolve_sample_rate(auto, [wavs["a8"], wavs["b8"]]).sample_rate == 8000
    assert resolve_sample_rate(auto, [wavs["c16"]]) == FeatureConfig.for_rate(16000)
    # mixed: one error naming two files, their rates and the flag of the interface
    with pytest.raises(AudioError, match=r"a8\.wav is 8000 Hz but .*c16\.wav is 16000 Hz.*with --resample"):
        resolve_sample_rate(auto, [wavs["a8"], wavs["b8"], wavs["c16"]], resample_flag="--resample")
    mixed = resolve_sample_rate(auto, [wavs["a8"], wavs["c16"]], resample=True)
    assert mixed.sample_rate == 8000  # downsample to the common band, never invent one
    assert resolve_sample_rate(auto, [wavs["d44"], wavs["c16"]], resample=True).sample_rate == 16000
    with pytest.raises(
        ConfigError, match=r"d44\.wav: sample rate 44100 Hz has no default.*--config.*--resample"
    ):
        resolve_sample_rate(auto, [wavs["d44"]], resample_flag="--resample", config_flag="--config")
    # a fixed rate is left to the extraction (a wrong-rate file is a bad file like the others)
    fixed = FeatureConfig.for_rate(8000)
    assert resolve_sample_rate(fixed, [wavs["a8"], wavs["c16"]]) is fixed
    with pytest.raises(AudioError, match="none of the 1 file"):
        resolve_sample_rate(auto, [wavs["a8"].with_name("missing.wav")])


def _list(tmp_path: Path, *paths: Path) -> Path:
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{p.name}\n" for p in paths))
    return lst


def test_cli_features_without_config(
    tmp_path: Path, wavs: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "store"
    assert main(["-q", "features", str(_list(tmp_path, wavs["a8"], wavs["b8"])), "--out", str(out)]) == 0
    assert FeatureStore(out).config == FeatureConfig.for_rate(8000).to_dict()
    capsys.readouterr()
    mixed = _list(tmp_path, wavs["a8"], wavs["c16"])
    assert main(["-q", "features", str(mixed), "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert "mixed sample rates" in err and "--resample" in err and "resample: true" not in err
    assert main(["-q", "features", str(mixed), "--out", str(tmp_path / "s2"), "--resample"]) == 0
    assert FeatureStore(tmp_path / "s2").config["sample_rate"] == 8000


def test_recipe_accepts_auto(tmp_path: Path) -> None:
    from gmmspeaker.recipe.runner import run_recipe

    recipe = tiny_recipe(tmp_path, extra="features: {sample_rate: auto, n_mfcc: 13}")
    res = run_recipe(recipe, workdir=tmp_path / "exp")
    store_cfg = json.loads((tmp_path / "exp" / "features" / "manifest.json").read_text())["config"]
    assert store_cfg == FeatureConfig.for_rate(8000, {"n_mfcc": 13}).to_dict()
    assert res.results is not None and res.results["n_target"] > 0


def test_cli_features_on_fsdd_with_no_option(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    if not (FSDD / "ubm.txt").is_file():
        pytest.skip(f"FSDD corpus absent ({FSDD / 'ubm.txt'} not found)")
    out = tmp_path / "store"
    assert main(["-q", "features", str(FSDD / "ubm.txt"), "--root", str(FSDD), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sample rate 8000 Hz" in printed and "1500 computed" in printed
    store = FeatureStore(out)
    assert len(store) == 1500 and store.config == FeatureConfig.for_rate(8000).to_dict()


def test_recipe_mixed_rates_name_the_recipe_flag(tmp_path: Path, wavs: dict[str, Path]) -> None:
    from gmmspeaker.recipe.runner import run_recipe

    (tmp_path / "ubm.txt").write_text("a8.wav\nc16.wav\n")
    (tmp_path / "enroll.txt").write_text("m1 b8.wav\n")
    (tmp_path / "trials.txt").write_text("m1 a8.wav target\nm1 c16.wav nontarget\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt}\n"
        "features: {sample_rate: auto}\nubm: {components: 2, iterations: 1}\n"
        "evaluation: {det_plot: false}\n"
    )
    with pytest.raises(
        AudioError, match=r"mixed sample rates: .*a8\.wav is 8000 Hz.*c16\.wav is 16000 Hz"
    ) as info:
        run_recipe(recipe, workdir=tmp_path / "exp")
    assert "data.resample: true" in str(info.value) and "--resample" not in str(info.value)
    recipe.write_text(
        recipe.read_text().replace("trials: trials.txt}", "trials: trials.txt, resample: true}")
    )
    run_recipe(recipe, workdir=tmp_path / "exp", until_stage="features")
    store_cfg = json.loads((tmp_path / "exp" / "features" / "manifest.json").read_text())["config"]
    assert store_cfg["sample_rate"] == 8000
