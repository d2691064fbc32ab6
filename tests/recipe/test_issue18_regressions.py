"""Regression tests of issue #18's items 1-7 (each failed on the code before the redesign)."""

from __future__ import annotations

import os
from pathlib import Path

from gmmspeaker.corpora.lists import read_train_list, read_ubm_list


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"RIFF")
    return path


def test_item4_train_list_through_a_symlinked_folder_gives_one_id_per_file(tmp_path):
    """A symlinked audio folder under the root: the training list and the UBM list name the
    same file by the same utterance id (it was resolved through the link: two ids, two extractions)."""
    root = tmp_path / "corpus"
    for spk in ("a", "b"):
        _touch(root / "real" / f"{spk}1.wav")
    os.symlink(root / "real", root / "link")
    (root / "train.txt").write_text("link/a1.wav a\nlink/b1.wav b\n")
    (root / "ubm.txt").write_text("link/a1.wav\nlink/b1.wav\n")
    train = read_train_list(root / "train.txt", root=root)
    ubm = read_ubm_list(root / "ubm.txt", root=root)
    assert [u.utt_id for u in train] == [u.utt_id for u in ubm] == ["link/a1", "link/b1"]
    assert [u.path for u in train] == [u.path for u in ubm]
    assert [u.speaker for u in train] == ["a", "b"]


# --------------------------------------------------------------------------- runs on a tiny corpus

import json  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from gmmspeaker.cli import main  # noqa: E402
from gmmspeaker.errors import ModelError  # noqa: E402
from gmmspeaker.recipe.runner import run_recipe  # noqa: E402
from tests.recipe.seams import audio_of, check_verify_reproduces_run, read_scores, tiny_recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("issue18")


def test_item1_recipe_round_trips_and_a_fusion_is_served_fused(root, capsys):
    """``Recipe.to_dict`` dropped system/ivector/fusion: a fusion workdir was served as GMM-UBM
    with the fused scores' threshold (wrong decisions)."""
    from gmmspeaker.recipe.config import Recipe, load_recipe

    recipe = tiny_recipe(
        root, name="item1", system="[gmm_ubm, ivector]", norm="snorm", extra="fusion: {p_target: 0.3}"
    )
    r = load_recipe(recipe)
    back = Recipe.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.system == ("gmm_ubm", "ivector") and back.fusion.p_target == 0.3
    for shipped in sorted((REPO / "recipes").glob("*.yaml")):
        try:
            s = load_recipe(shipped)
        except Exception:  # a corpus recipe whose corpus is absent here
            continue
        assert Recipe.from_dict(json.loads(json.dumps(s.to_dict()))) == s, shipped.name
    wd = root / "item1"
    run_recipe(recipe, workdir=wd, log_file=False)
    assert check_verify_reproduces_run(wd, capsys) == 32
    capsys.readouterr()
    m, t = sorted(read_scores(wd / "scores.txt"))[0]
    main(["-q", "verify", str(wd), "--model", m, "--json", str(audio_of(wd, t))])
    out = json.loads(capsys.readouterr().out)
    assert set(out["system_scores"]) == {"gmm_ubm", "ivector"}
    assert out["system_scores"]["gmm_ubm"] == pytest.approx(
        read_scores(wd / "scores.gmm_ubm.txt")[(m, t)], abs=1e-4
    )


def test_item2_ivector_identification_evaluation(root, capsys):
    """``system: ivector`` with ``evaluation.identification`` failed at evaluate (no models.h5)."""
    recipe = tiny_recipe(root, name="item2", system="ivector", extra="")
    text = recipe.read_text().replace(
        "evaluation: {p_target: [0.01], det_plot: false}",
        "evaluation: {p_target: [0.01], det_plot: false, identification: true}",
    )
    recipe.write_text(text)
    res = run_recipe(recipe, workdir=root / "item2", log_file=False)
    ident = res.results["identification"]
    assert ident["n_tests"] == 8 and ident["n_models"] == 4 and ident["top1"] >= 0.5
    assert not (root / "item2" / "models.h5").exists()


def test_item3_a_lost_norm_cohort_is_rebuilt(root):
    """``outputs_exist("score")`` returned before checking norm_cohort.h5: 'up to date' with it gone."""
    from gmmspeaker.system import Experiment

    recipe = tiny_recipe(root, name="item3", norm="snorm")
    wd = root / "item3"
    run_recipe(recipe, workdir=wd, log_file=False)
    (wd / "norm_cohort.h5").unlink()
    again = run_recipe(recipe, workdir=wd, log_file=False)
    assert again.actions["score"] == "ran" and again.reasons["score"] == "outputs missing"
    assert (wd / "norm_cohort.h5").exists()
    Experiment.open(wd)
    (wd / "cohort_models.h5").unlink()  # the T side's cohort models are an output too
    assert run_recipe(recipe, workdir=wd, log_file=False).actions["score"] == "ran"


def test_item5_partial_rerun_is_not_served_with_stale_cohort_statistics(root, capsys):
    """``--until-stage enroll`` with new MAP settings left norm_cohort.h5 (and the threshold) of
    the old models, and verify used them."""
    from gmmspeaker.system import Experiment

    recipe = tiny_recipe(root, name="item5", norm="snorm")
    wd = root / "item5"
    run_recipe(recipe, workdir=wd, log_file=False)
    changed = recipe.with_name("item5-map.yaml")
    changed.write_text(recipe.read_text() + "map: {relevance: 4}\n")
    run_recipe(changed, workdir=wd, log_file=False, until_stage="enroll")
    with pytest.raises(ModelError, match="run the recipe"):
        Experiment.open(wd)
    assert main(["-q", "verify", str(wd), "--model", "spk000", str(audio_of(wd, "wav/spk000/utt002"))]) == 2
    run_recipe(changed, workdir=wd, log_file=False)
    assert check_verify_reproduces_run(wd, capsys, every=5) > 5


def test_item5_cohort_statistics_are_signed_with_their_models(root):
    """Even without stage records, cohort statistics of other models are refused."""
    from gmmspeaker.system import Experiment

    recipe = tiny_recipe(root, name="item5b", norm="znorm")
    wd = root / "item5b"
    run_recipe(recipe, workdir=wd, log_file=False)
    other = root / "item5b-other"
    changed = recipe.with_name("item5b-map.yaml")
    changed.write_text(recipe.read_text() + "map: {relevance: 4}\n")
    run_recipe(changed, workdir=other, log_file=False)
    shutil.copy(other / "models.h5", wd / "models.h5")
    shutil.rmtree(wd / "stages")
    with pytest.raises(ModelError, match="norm_cohort.h5.*other models"):
        Experiment.open(wd)


def test_item6_one_unreadable_user_model_does_not_stop_the_refresh_of_the_others(root, tmp_path):
    from gmmspeaker.system import Experiment

    recipe = tiny_recipe(root, name="item6")
    wd = tmp_path / "wd"
    run_recipe(recipe, workdir=wd, log_file=False)
    corpus = root / "corpus" / "wav"
    a = [tmp_path / f"a{i}.wav" for i in range(2)]
    for i, p in enumerate(a):
        shutil.copy(corpus / "bkg000" / f"utt00{i}.wav", p)
    exp = Experiment.open(wd)
    exp.enroll("alice", a)
    exp.enroll("bob", [corpus / "bkg001" / "utt000.wav", corpus / "bkg001" / "utt001.wav"])
    a[0].write_bytes(b"no longer audio")
    changed = recipe.with_name("item6-ubm.yaml")
    changed.write_text(recipe.read_text().replace("iterations: 3}", "iterations: 2}", 1))
    res = run_recipe(changed, workdir=wd, log_file=False)
    assert res.actions["ubm"] == "ran"
    assert res.refreshed == ["bob"]
    exp = Experiment.open(wd)
    assert "alice" in exp.stale_user_models and "bob" not in exp.stale_user_models
    exp.verify("bob", [corpus / "bkg001" / "utt002.wav"])


@pytest.mark.parametrize("norm", ["ztnorm", "tnorm"])
def test_item7_verify_leaves_out_the_cohort_self_trial(root, capsys, norm):
    """A test file that is also a cohort utterance: the run leaves its cohort model out of the
    T statistics, and so must verify (ZT-norm gave 0.34 reject against the run's 11.1 accept)."""
    wd = root / f"item7-{norm}"
    run_recipe(tiny_recipe(root, name=f"item7-{norm}", norm=norm), workdir=wd, log_file=False)
    scores = read_scores(wd / "scores.txt")
    test = "wav/spk001/utt002"  # in cohort.txt (tiny_corpus puts it there)
    models = sorted(m for m, t in scores if t == test)
    assert models
    capsys.readouterr()
    for m in models:
        assert main(["-q", "verify", str(wd), "--model", m, "--json", str(audio_of(wd, test))]) == 0
    got = [json.loads(x)["score"] for x in capsys.readouterr().out.splitlines()]
    assert got == pytest.approx([scores[(m, test)] for m in models], abs=1e-4)
