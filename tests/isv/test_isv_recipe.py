"""ISV as a recipe system: a tiny run alone and in a fusion, then serving reproduces its scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gmmspeaker.recipe.runner import run_recipe
from tests.recipe.seams import check_identify, check_verify_reproduces_run, tiny_recipe

ISV = "isv: {rank: 3, iterations: 3, relevance: 8, normalization: NORM, cohort_top_n: 5}"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("isv-seams")


@pytest.mark.parametrize("norm", ["none", "snorm"])
def test_isv_run_then_verify_reproduces_scores(root, capsys, norm):
    wd = root / f"isv-{norm}"
    recipe = tiny_recipe(root, name=f"isv-{norm}", system="isv", extra=ISV.replace("NORM", norm))
    run_recipe(recipe, workdir=wd, log_file=False)
    for name in ("isv.h5", "isv_models.h5", "scores.txt", "results.json", "ivector_stats.h5"):
        assert (wd / name).is_file(), name
    res = json.loads((wd / "results.json").read_text())
    assert res["system"] == ["isv"] and res["config"]["isv"]["rank"] == 3
    trace = json.loads((wd / "stages" / "isv_train.json").read_text())["elbo"]
    assert len(trace) == 3 and trace == sorted(trace)  # the EM objective never decreased
    assert check_verify_reproduces_run(wd, capsys) == 32
    check_identify(wd, capsys)
    # a second run is up to date; a changed ISV setting reruns ISV stages only
    recipe.write_text(recipe.read_text())
    before = {p: (wd / p).stat().st_mtime_ns for p in ("ubm.h5", "ivector_stats.h5", "isv.h5")}
    run_recipe(recipe, workdir=wd, log_file=False)
    assert {p: (wd / p).stat().st_mtime_ns for p in before} == before
    recipe.write_text(recipe.read_text().replace("rank: 3", "rank: 2"))
    run_recipe(recipe, workdir=wd, log_file=False)
    after = {p: (wd / p).stat().st_mtime_ns for p in before}
    assert after["ubm.h5"] == before["ubm.h5"] and after["ivector_stats.h5"] == before["ivector_stats.h5"]
    assert after["isv.h5"] != before["isv.h5"]
    assert check_verify_reproduces_run(wd, capsys, every=5) > 5


def test_three_way_fusion_run_then_verify(root, capsys):
    wd = root / "fusion3"
    recipe = tiny_recipe(
        root, name="fusion3", system="[gmm_ubm, ivector, isv]", extra=ISV.replace("NORM", "none")
    )
    run_recipe(recipe, workdir=wd, log_file=False)
    res = json.loads((wd / "results.json").read_text())
    assert set(res["systems"]) == {"gmm_ubm", "ivector", "isv", "fusion"}
    assert (wd / "scores.isv.txt").is_file()
    assert check_verify_reproduces_run(wd, capsys, every=3) > 5


def test_user_model_enrolled_with_the_cli_scores_like_the_recipe_model(root, capsys):
    """``gmmspeaker enroll`` on an ISV workdir: a user model from spk002's enrolment files scores as spk002."""
    from gmmspeaker.cli import main
    from tests.recipe.seams import audio_of

    wd = root / "isv-user"
    run_recipe(
        tiny_recipe(root, name="isv-user", system="isv", extra=ISV.replace("NORM", "snorm")), workdir=wd
    )
    corpus = Path(json.loads((wd / "recipe.json").read_text())["data"]["root"])
    line = next(x for x in (corpus / "enroll.txt").read_text().splitlines() if x.startswith("spk002 "))
    files = [str(corpus / p) for p in line.split()[1:]]
    assert main(["-q", "enroll", str(wd), "--model", "dave", *files]) == 0
    assert (wd / "user_models.isv.h5").is_file() or (wd / "user_models.h5").is_file()
    test = str(audio_of(wd, "wav/spk002/utt002"))
    out = []
    for model in ("spk002", "dave"):
        capsys.readouterr()
        assert main(["-q", "verify", str(wd), "--model", model, "--json", test]) == 0
        out.append(json.loads(capsys.readouterr().out.splitlines()[0])["score"])
    assert out[1] == pytest.approx(out[0], abs=1e-6)
