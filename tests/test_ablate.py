"""scripts/ablate.py on a tiny synthetic corpus: rows, baseline, shared stages, bootstrap."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError
from gmmspeaker.recipe.runner import run_recipe
from gmmspeaker.scoring.metrics import cllr, eer, min_dcf
from gmmspeaker.scoring.trials import read_scores

REPO = Path(__file__).resolve().parents[1]

RECIPE = """\
experiment: tiny
seed: 0
jobs: 1
defaults: {defaults}
data:
  synthetic: {{n_speakers: 5, background_speakers: 4, n_ubm_utterances: 3, n_enroll_utterances: 2,
              n_test_utterances: 3, duration: 1.0, sample_rate: 8000, seed: 3}}
ubm: {{components: 8, iterations: 3, init: split}}
map: {{relevance: 16, adapt: [means]}}
scoring: {{method: top_c, top_c: 5, normalization: none}}
evaluation: {{det_plot: false}}
"""


@pytest.fixture(scope="module")
def ablate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ablate_script", REPO / "scripts" / "ablate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["ablate_script"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def study(ablate: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("ablate")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(RECIPE.format(defaults=REPO / "configs" / "features-8k.yaml"))
    out = tmp / "out"
    sets = [
        "features.vad=none",
        "ubm.components=4",
        "map.relevance=8",
        "map.relevance=16",  # equals the baseline: dropped
        "scoring.method=full",
        "scoring.normalization=snorm",
        "map.adapt=means+weights",
        "ubm.components=4,map.relevance=8",
    ]
    argv = [str(recipe), "--out", str(out), "--grid", "none", "--bootstrap", "40"]
    for s in sets:
        argv += ["--set", s]
    assert ablate.main(argv) == 0
    return recipe, out, json.loads((out / "ablation.json").read_text())


def test_table_has_the_expected_rows(study: tuple[Path, Path, dict]) -> None:
    _, out, table = study
    names = [r["name"] for r in table["rows"]]
    assert names == [
        "baseline",
        "features.vad=none",
        "ubm.components=4",
        "map.relevance=8",
        "scoring.method=full",
        "scoring.normalization=snorm",
        "map.adapt=means+weights",
        "ubm.components=4, map.relevance=8",
    ]
    assert all(r["error"] is None for r in table["rows"])
    md = (out / "ablation.md").read_text()
    for name in names:
        assert f"| {name} |" in md


def test_baseline_row_equals_a_plain_run(study: tuple[Path, Path, dict], tmp_path: Path) -> None:
    recipe, out, table = study
    plain = run_recipe(recipe, workdir=tmp_path / "plain", log_file=False).results
    assert plain is not None
    base = table["rows"][0]
    assert base["eer"] == pytest.approx(plain["eer"], abs=1e-12)
    assert base["min_dcf"] == pytest.approx(plain["min_dcf"]["0.01"], abs=1e-12)
    assert base["cllr"] == pytest.approx(plain["cllr"], abs=1e-12)
    _, s_plain, _ = read_scores(tmp_path / "plain" / "scores.txt")
    _, s_base, _ = read_scores(Path(base["workdir"]) / "scores.txt")
    np.testing.assert_array_equal(s_base, s_plain)
    # the baseline's difference to itself is exactly zero, interval included
    for m in ("eer", "min_dcf", "cllr"):
        assert base[f"d_{m}"] == 0.0 and base[f"d_{m}_ci"] == [0.0, 0.0]


def test_rows_change_what_they_say(study: tuple[Path, Path, dict]) -> None:
    _, _, table = study
    rows = {r["name"]: r for r in table["rows"]}
    for name, r in rows.items():
        res = json.loads((Path(r["workdir"]) / "results.json").read_text())
        assert r["eer"] == pytest.approx(res["eer"], abs=1e-12)
        cfg = res["config"]
        for key, value in r["overrides"].items():
            section, k = key.split(".")
            assert cfg[section][k] == value, (name, key)
        if name == "scoring.normalization=snorm":
            assert (Path(r["workdir"]) / "scores.raw.txt").is_file()


def test_later_stages_share_the_upstream_outputs(study: tuple[Path, Path, dict]) -> None:
    _, _, table = study
    rows = {r["name"]: Path(r["workdir"]) for r in table["rows"]}
    base = rows["baseline"]

    def log(name: str) -> str:
        return (rows[name] / "run.log").read_text()

    # MAP and scoring rows reuse the baseline's features and UBM (hard links, not recomputed)
    for name in ("map.relevance=8", "scoring.method=full", "map.adapt=means+weights"):
        assert "stage features up to date" in log(name)
        assert "stage ubm      up to date" in log(name)
        assert (rows[name] / "ubm.h5").stat().st_ino == (base / "ubm.h5").stat().st_ino
    assert "stage enroll   up to date" in log("scoring.method=full")
    # a UBM row reuses the features only; the pair reuses that row's UBM
    assert "stage features up to date" in log("ubm.components=4")
    assert "stage ubm      running" in log("ubm.components=4")
    assert "stage ubm      up to date" in log("ubm.components=4, map.relevance=8")
    assert "stage features running" in log("features.vad=none")


def test_intervals_match_a_reference_bootstrap(ablate: ModuleType, study: tuple[Path, Path, dict]) -> None:
    """Recompute one row's intervals by a slow reference: resample models, keep all their trials."""
    _, _, table = study
    rows = {r["name"]: r for r in table["rows"]}
    pairs, base, keys = read_scores(Path(rows["baseline"]["workdir"]) / "scores.txt")
    _, other, _ = read_scores(Path(rows["map.relevance=8"]["workdir"]) / "scores.txt")
    key = np.array(keys, dtype=bool)
    models = sorted({m for m, _ in pairs})
    rng = np.random.default_rng(table["seed"])
    d = []
    for _ in range(table["bootstrap"]):
        pick = rng.integers(0, len(models), size=len(models))
        idx = [i for j in pick for i, (m, _) in enumerate(pairs) if m == models[j]]
        k = key[idx]
        vals = []
        for s in (other, base):
            t, n = s[idx][k], s[idx][~k]
            vals.append([eer(t, n), min_dcf(t, n, p_target=0.01), cllr(t, n)])
        d.append(np.subtract(*vals))
    lo, hi = np.percentile(np.array(d), [2.5, 97.5], axis=0)
    row = rows["map.relevance=8"]
    for j, m in enumerate(("eer", "min_dcf", "cllr")):
        assert row[f"d_{m}_ci"] == pytest.approx([lo[j], hi[j]], abs=1e-12)


def test_collect_tabulates_finished_rows_without_running(
    ablate: ModuleType, study: tuple[Path, Path, dict]
) -> None:
    recipe, out, table = study
    argv = [str(recipe), "--out", str(out), "--grid", "none", "--bootstrap", "40", "--collect"]
    argv += ["--table", "collected", "--set", "map.relevance=8", "--set", "map.relevance=2"]
    assert ablate.main(argv) == 0
    got = {r["name"]: r for r in json.loads((out / "collected.json").read_text())["rows"]}
    assert list(got) == ["baseline", "map.relevance=8", "map.relevance=2"]
    assert got["map.relevance=2"]["error"] == "not run"
    assert not Path(got["map.relevance=2"]["workdir"]).exists()
    before = {r["name"]: r for r in table["rows"]}
    for name in ("baseline", "map.relevance=8"):
        assert got[name]["eer"] == before[name]["eer"]
        assert got[name]["d_eer_ci"] == before[name]["d_eer_ci"]
    assert "| map.relevance=2 | not run |" in (out / "collected.md").read_text()


def test_settings_are_parsed_and_checked(ablate: ModuleType) -> None:
    assert ablate.parse_setting("ubm.init=kmeans++,ubm.components=512") == {
        "ubm.init": "kmeans++",
        "ubm.components": 512,
    }
    assert ablate.parse_setting("map.adapt=means+weights") == {"map.adapt": ["means", "weights"]}
    assert ablate.parse_setting("features.vad=none") == {"features.vad": "none"}
    with pytest.raises(ConfigError, match="section.key=value"):
        ablate.parse_setting("data.root=/x")
    with pytest.raises(ConfigError, match="section.key=value"):
        ablate.parse_setting("ubm.components")


def test_unknown_key_is_an_error(ablate: ModuleType, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(RECIPE.format(defaults=REPO / "configs" / "features-8k.yaml"))
    argv = [str(recipe), "--out", str(tmp_path / "o"), "--grid", "none", "--set", "ubm.size=3"]
    assert ablate.main(argv) == 2
