"""Seam tests: serving (``gmmspeaker verify|identify``) reproduces what the recipe run evaluated.

For every system (GMM-UBM with each score normalisation, i-vector, fusion) a tiny run,
then ``verify --json`` on the run's own trials: the run's score within 1e-4 and the
decision at the run's threshold; ``identify`` ranks every model. The same checks on the
three shipped DSPSpeech-20 recipes (smaller UBM / T matrix) when the corpus is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gmmspeaker.recipe.runner import run_recipe
from tests.recipe.seams import check_identify, check_verify_reproduces_run, tiny_recipe

REPO = Path(__file__).resolve().parents[2]
DSP = (REPO / ".." / "shared" / "corpora" / "dspspeech20").resolve()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("seams")


def _top1(out: list[dict]) -> float:
    right = [r["decision"] == r["audio"].split("/")[-2] for r in out]
    return sum(right) / len(right)


@pytest.mark.parametrize("norm", ["none", "znorm", "tnorm", "ztnorm", "snorm", "asnorm"])
def test_gmm_ubm_verify_and_identify_reproduce_the_run(root, capsys, norm):
    wd = root / f"gmm-{norm}"
    run_recipe(tiny_recipe(root, name=f"gmm-{norm}", norm=norm), workdir=wd, log_file=False)
    assert check_verify_reproduces_run(wd, capsys) == 32
    assert _top1(check_identify(wd, capsys)) >= 0.5


@pytest.mark.parametrize("norm", ["none", "snorm"])
def test_ivector_verify_and_identify_reproduce_the_run(root, capsys, norm):
    wd = root / f"ivec-{norm}"
    run_recipe(
        tiny_recipe(root, name=f"ivec-{norm}", system="ivector", norm=norm), workdir=wd, log_file=False
    )
    assert check_verify_reproduces_run(wd, capsys) == 32
    check_identify(wd, capsys)


@pytest.mark.parametrize("gmm_norm", ["none", "snorm"])
def test_fusion_verify_and_identify_reproduce_the_run(root, capsys, gmm_norm):
    """Equal-weight fusion: a system without its own normalisation is Z-normed for the fusion."""
    wd = root / f"fusion-{gmm_norm}"
    recipe = tiny_recipe(root, name=f"fusion-{gmm_norm}", system="[gmm_ubm, ivector]", norm=gmm_norm)
    run_recipe(recipe, workdir=wd, log_file=False)
    fusion = json.loads((wd / "fusion.json").read_text())
    assert fusion["normalization"]["ivector"] == "znorm"
    assert check_verify_reproduces_run(wd, capsys) == 32
    check_identify(wd, capsys)


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["dspspeech20.yaml", "dspspeech20-ivector.yaml", "dspspeech20-fusion.yaml"])
def test_dspspeech20_recipes_verify_and_identify_reproduce_the_run(tmp_path, capsys, name):
    if not (DSP / "trials.txt").is_file():
        pytest.skip(f"corpus not found at {DSP} (../shared/corpora/dspspeech20 beside the repo)")
    recipe = tmp_path / name
    recipe.write_text(
        f"defaults: {REPO / 'recipes' / name}\nexperiment: seam\njobs: 2\n"
        "ubm: {components: 32, iterations: 4}\nivector: {rank: 40, iterations: 3}\n"
        "evaluation: {det_plot: false}\n"
    )
    wd = tmp_path / "wd"
    run_recipe(recipe, workdir=wd, log_file=False)
    assert check_verify_reproduces_run(wd, capsys, every=97) > 20
    check_identify_subset = json.loads((wd / "recipe.json").read_text())["system"]
    assert check_identify_subset  # the served system is the recipe's (to_dict keeps it)


def test_user_models_follow_a_change_of_system(tmp_path):
    """gmm_ubm -> ivector -> fusion -> gmm_ubm in one workdir: the user model file of the
    previous system(s) is moved aside and its models re-enrolled in the new one from their
    audio; the experiment stays servable and the user model scores as the recipe model
    enrolled from the same audio."""
    from gmmspeaker.system import Experiment

    root = tmp_path
    wd = root / "wd"
    c = root / "corpus"
    run_recipe(tiny_recipe(root, name="g"), workdir=wd, log_file=False)
    enrol = [c / "wav" / "spk001" / f"utt00{i}.wav" for i in range(2)]  # spk001's enrolment files
    assert sorted((c / "enroll.txt").read_text().split("\n")[1].split()[1:]) == [
        str(p.relative_to(c)) for p in enrol
    ]
    Experiment.open(wd).enroll("alice", enrol)
    test = c / "wav" / "spk001" / "utt002.wav"
    for name, system in [("i", "ivector"), ("f", "[gmm_ubm, ivector]"), ("g2", "gmm_ubm")]:
        res = run_recipe(tiny_recipe(root, name=name, system=system), workdir=wd, log_file=False)
        assert res.refreshed == ["alice"], system
        exp = Experiment.open(wd)
        assert "alice" in exp.model_ids and not exp.stale_user_models, system
        alice, spk001 = (exp.verify(m, [test])[0] for m in ("alice", "spk001"))
        assert alice.score == pytest.approx(spk001.score, abs=1e-6), system
    assert sorted(p.name for p in wd.glob("user_models*.h5")) == ["user_models.h5"]


def test_stale_stages_checks_only_the_stages_asked(tmp_path):
    """A record of a stage the served system does not use (``short_enrolment`` left by a
    GMM-UBM run before a fusion) does not make the experiment unservable."""
    from gmmspeaker.workdir import Workdir

    w = Workdir(tmp_path, ("gmm_ubm", "ivector"))
    w.stages.mkdir()
    for stage, fp, inputs in [("score", "new", {}), ("short_enrolment", "x", {"score": "old"})]:
        w.stage_record(stage).write_text(json.dumps({"fingerprint": fp, "inputs": inputs}))
    assert w.stale_stages() == [("short_enrolment", "score")]
    assert w.stale_stages({"score", "evaluate"}) == []


def test_a_model_whose_enrolment_audio_is_all_unusable_is_a_one_line_error_naming_its_files(tmp_path, capsys):
    """``on_bad_audio: skip`` and every enrolment file of a model unreadable: exit 2, one
    line naming the model and its files; the features computed are kept."""
    from gmmspeaker.cli import main
    from gmmspeaker.store import FeatureStore

    recipe = tiny_recipe(tmp_path, name="bad", extra="on_bad_audio: skip")
    enrol = [tmp_path / "corpus" / "wav" / "spk000" / f"utt00{i}.wav" for i in range(2)]
    for p in enrol:
        p.write_bytes(b"RIFF" + bytes(2000))
    wd = tmp_path / "wd"
    capsys.readouterr()
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("gmmspeaker: error")]
    assert len(err) == 1 and "'spk000'" in err[0] and str(enrol[0]) in err[0], err
    store = FeatureStore(wd / "features")
    assert len(store) == 26 and not {"wav/spk000/utt000", "wav/spk000/utt001"} & set(store.ids)
