from __future__ import annotations

from pathlib import Path

import pytest

from gmmspeaker.errors import ConfigError
from gmmspeaker.recipe.config import load_recipe


def _corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("ubm.txt", "enroll.txt", "trials.txt", "cohort.txt"):
        (root / name).write_text("")
    return root


def _write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


BASE = """experiment: t
data:
  root: corpus
  ubm: ubm.txt
  enroll: enroll.txt
  trials: trials.txt
"""


def test_valid_recipe_paths_relative_to_file(tmp_path):
    root = _corpus(tmp_path)
    r = load_recipe(_write(tmp_path, BASE + "ubm: {components: 8}\nmap: {relevance: 4}\n"))
    assert r.data.root == root.resolve()
    assert r.data.ubm == (root / "ubm.txt").resolve()
    assert r.ubm.components == 8 and r.map.relevance == 4.0
    assert r.ubm.iterations == 10  # default kept


@pytest.mark.parametrize(
    "extra, line, match",
    [
        ("ubm:\n  componentz: 8\n", 8, "unknown key 'ubm.componentz'"),
        ("ubm:\n  components: eight\n", 8, "must be an integer"),
        ("ubm:\n  components: -4\n", 8, "must be positive"),
        ("scoring:\n  method: best\n", 8, "must be one of"),
        ("colour: blue\n", 7, "unknown key 'colour'"),
        ("evaluation:\n  p_target: [0.01, 2]\n", 8, r"in \(0, 1\)"),
        ("map:\n  adapt: [means, covariance]\n", 8, "means, weights or variances"),
        ("jobs: 0\n", 7, "jobs"),
    ],
)
def test_errors_name_file_key_and_line(tmp_path, extra, line, match):
    _corpus(tmp_path)
    p = _write(tmp_path, BASE + extra)
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(p)
    assert f"{p}:{line}" in str(info.value)


def test_feature_key_errors_name_line(tmp_path):
    _corpus(tmp_path)
    p = _write(tmp_path, BASE + "features:\n  n_mfcc: 20\n  wobble: 3\n")
    with pytest.raises(ConfigError, match="wobble") as info:
        load_recipe(p)
    assert f"{p}:9" in str(info.value)


def test_broken_yaml_names_line(tmp_path):
    p = _write(tmp_path, "experiment: t\ndata: [unclosed\nubm: {}\n")
    with pytest.raises(ConfigError, match="broken YAML") as info:
        load_recipe(p)
    assert str(p) in str(info.value)


def test_missing_list_file(tmp_path):
    _corpus(tmp_path)
    p = _write(tmp_path, BASE.replace("trials.txt", "nope.txt"))
    with pytest.raises(ConfigError, match="nope.txt") as info:
        load_recipe(p)
    assert f"{p}:6" in str(info.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_env_variables_in_paths(tmp_path, monkeypatch):
    root = _corpus(tmp_path)
    monkeypatch.setenv("MY_CORPUS", str(root))
    p = _write(tmp_path, BASE.replace("root: corpus", "root: ${MY_CORPUS}"))
    assert load_recipe(p).data.root == root.resolve()
    monkeypatch.delenv("MY_CORPUS")
    with pytest.raises(ConfigError, match="MY_CORPUS"):
        load_recipe(p)


def test_recipe_dir_names_the_recipe_files_folder(tmp_path, monkeypatch):
    """``${RECIPE_DIR}``: a list beside the recipe under a data.root elsewhere, also from a
    defaults file in another folder (the loaded recipe's folder, not the defaults file's)."""
    root = _corpus(tmp_path)
    rdir = tmp_path / "recipes"
    (rdir / "sub").mkdir(parents=True)
    (rdir / "train.txt").write_text("")
    monkeypatch.setenv("RECIPE_DIR", str(tmp_path / "elsewhere"))  # the recipe's own wins
    text = BASE.replace("root: corpus", f"root: {root}") + "  train: ${RECIPE_DIR}/train.txt\n"
    r = load_recipe(_write(rdir, text))
    assert r.data.train == (rdir / "train.txt").resolve() and r.data.root == root.resolve()
    assert r.data.ubm == (root / "ubm.txt").resolve()
    (rdir / "sub" / "base.yaml").write_text(text)
    r2 = load_recipe(_write(rdir, "defaults: sub/base.yaml\n", name="top.yaml"))
    assert r2.data.train == (rdir / "train.txt").resolve()
    (rdir / "train.txt").unlink()
    with pytest.raises(ConfigError, match="train"):
        load_recipe(rdir / "r.yaml")


def test_defaults_inherited_and_overridden(tmp_path):
    _corpus(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "base.yaml").write_text(
        "features:\n  n_mfcc: 13\n  deltas: 1\nubm:\n  components: 32\n  iterations: 3\n"
    )
    p = _write(
        tmp_path, "defaults: configs/base.yaml\n" + BASE + "ubm:\n  components: 16\nfeatures:\n  deltas: 2\n"
    )
    r = load_recipe(p)
    assert r.ubm.components == 16 and r.ubm.iterations == 3
    assert r.features == {"n_mfcc": 13, "deltas": 2}


def test_unknown_key_in_defaults_names_defaults_file(tmp_path):
    _corpus(tmp_path)
    d = tmp_path / "d.yaml"
    d.write_text("ubm:\n  bogus: 1\n")
    p = _write(tmp_path, "defaults: d.yaml\n" + BASE)
    with pytest.raises(ConfigError, match="bogus") as info:
        load_recipe(p)
    assert f"{d}:2" in str(info.value)


def test_overrides_win(tmp_path):
    _corpus(tmp_path)
    assert load_recipe(_write(tmp_path, BASE + "jobs: 1\n"), overrides={"jobs": 2}).jobs == 2


def test_normalization_needs_cohort(tmp_path):
    _corpus(tmp_path)
    with pytest.raises(ConfigError, match="cohort"):
        load_recipe(_write(tmp_path, BASE + "scoring: {normalization: snorm}\n"))
    r = load_recipe(_write(tmp_path, BASE + "  cohort: cohort.txt\nscoring: {normalization: snorm}\n"))
    assert r.data.cohort == (tmp_path / "corpus" / "cohort.txt").resolve()


def test_synthetic_excludes_lists(tmp_path):
    p = _write(tmp_path, "data:\n  synthetic: {n_speakers: 3}\n  ubm: x.txt\n")
    with pytest.raises(ConfigError, match="synthetic"):
        load_recipe(p)
