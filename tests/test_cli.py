"""The stage-by-stage command line: features -> train-ubm -> enroll -> score -> evaluate -> info."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from gmmspeaker.cli import main
from gmmspeaker.errors import GmmSpeakerError
from tests.helpers import REPO


def test_cli_chain(tmp_path, capsys):
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    c = tmp_path / "corpus"
    generate_corpus(
        c,
        SyntheticCorpusConfig(
            n_speakers=4, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=2, duration=1.0, seed=9
        ),
    )
    cfg = REPO / "configs" / "features-8k.yaml"
    st, ubm, models, scores = (
        tmp_path / "store",
        tmp_path / "ubm.h5",
        tmp_path / "models.h5",
        tmp_path / "scores.txt",
    )
    for lst in ("ubm.txt", "enroll.txt", "trials.txt"):
        assert (
            main(["-q", "features", str(c / lst), "--out", str(st), "--config", str(cfg), "--jobs", "2"]) == 0
        )
    out = capsys.readouterr().out
    assert "VAD kept" in out and "cached" in out
    assert (
        main(
            [
                "-q",
                "train-ubm",
                "--features",
                str(st),
                "--list",
                str(c / "ubm.txt"),
                "--out",
                str(ubm),
                "--components",
                "4",
                "--iterations",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "enroll",
                "--features",
                str(st),
                "--ubm",
                str(ubm),
                "--list",
                str(c / "enroll.txt"),
                "--out",
                str(models),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "score",
                "--features",
                str(st),
                "--ubm",
                str(ubm),
                "--models",
                str(models),
                "--trials",
                str(c / "trials.txt"),
                "--out",
                str(scores),
                "--method",
                "full",
            ]
        )
        == 0
    )
    lines = scores.read_text().splitlines()
    assert len(lines) == len((c / "trials.txt").read_text().splitlines())
    assert all(np.isfinite(float(ln.split()[2])) for ln in lines)
    capsys.readouterr()
    assert main(["-q", "evaluate", str(scores), "--out", str(tmp_path / "eval")]) == 0
    assert "EER" in capsys.readouterr().out
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["n_target"] == 8 and (tmp_path / "eval" / "det.png").stat().st_size > 1000
    assert (tmp_path / "eval" / "score_hist.png").stat().st_size > 1000
    html = (tmp_path / "eval" / "report.html").read_text()
    assert f"{100 * res['eer']:.2f}" in html and "data:image/png;base64," in html
    for f in (ubm, models, st):
        assert main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "n_components" in out and "means: (4, 4, 60)" in out and "feature store" in out


# --------------------------------------------------------------------------- a trained experiment


@pytest.fixture(scope="module")
def expdir(tmp_path_factory):
    """A trained experiment without score normalisation (tests/test_system.py covers S-norm)."""
    from tests.test_system import build_experiment

    return build_experiment(tmp_path_factory.mktemp("cli"), normalization="none")


def _wav(wd, speaker, utt):
    from tests.test_system import wav

    return str(wav(wd, speaker, utt))


def _json_lines(text):
    return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def test_cli_enroll_verify_identify(expdir, tmp_path, capsys):
    wd = tmp_path / "wd"
    shutil.copytree(expdir, wd)
    alice = [_wav(wd, "spk004", i) for i in range(4)]
    bob = [_wav(wd, "spk005", i) for i in range(4)]
    # audio before and after the option: both are the model's files
    assert main(["enroll", str(wd), alice[0], "--model", "alice", *alice[1:], "-q"]) == 0
    assert main(["-q", "enroll", str(wd), "--model", "bob", *bob]) == 0
    out = capsys.readouterr().out
    assert "enrolled alice from 4 file(s)" in out and "enrolled bob from 4 file(s)" in out
    assert main(["enroll", str(wd), "--model", "bob", *bob[:2]]) == 2  # replacing needs --replace
    assert "'bob' already exists" in capsys.readouterr().err
    assert main(["enroll", str(wd), "--model", "bob", *bob[:2], "--replace"]) == 0
    assert "already enrolled" in capsys.readouterr().out

    target, nontarget = _wav(wd, "spk004", 4), _wav(wd, "spk005", 4)
    assert main(["verify", str(wd), "--model", "alice", target, nontarget, "--json"]) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert [r["audio"] for r in rows] == [target, nontarget]
    assert [r["decision"] for r in rows] == ["accept", "reject"]
    assert all(r["model"] == "alice" and "EER" in r["threshold_source"] for r in rows)
    # without normalisation the score is the raw LLR; the calibration is the run's
    res = json.loads((wd / "results.json").read_text())
    cal = res["calibration"]
    for r in rows:
        assert r["score"] == r["raw_llr"]
        # a user model's score moves by its duration offset first (gmmspeaker.scoring.duration)
        moved = r["score"] - (r["threshold"] - res["eer_threshold"])
        assert r["calibrated_llr"] == pytest.approx(cal["scale"] * moved + cal["offset"])
        assert (r["score"] >= r["threshold"]) == (r["decision"] == "accept")
    # text output says which threshold; --p-target uses the calibrated LLR
    assert main(["verify", str(wd), "--model", "alice", target]) == 0
    text = capsys.readouterr().out
    assert "EER threshold of the experiment's trials" in text and "accept" in text
    assert main(["verify", str(wd), "--model", "alice", target, "--p-target", "0.999", "--json"]) == 0
    (r,) = _json_lines(capsys.readouterr().out)
    assert r["threshold"] == pytest.approx(np.log(0.001 / 0.999)) and "calibrated" in r["threshold_source"]

    assert main(["identify", str(wd), target, nontarget, "--json", "--top-n", "3"]) == 0
    found = _json_lines(capsys.readouterr().out)
    assert [f["ranking"][0]["model"] for f in found] == ["alice", "bob"]
    assert all(len(f["ranking"]) == 3 for f in found)
    scores = [x["score"] for x in found[0]["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert found[0]["ranking"][0]["score"] == pytest.approx(rows[0]["raw_llr"])
    assert main(["identify", str(wd), target, "--threshold", "1000"]) == 0
    assert f"{target}: unknown" in capsys.readouterr().out


def test_cli_use_errors(expdir, tmp_path, capsys):
    target = _wav(expdir, "spk000", 4)
    assert main(["verify", str(expdir), "--model", "nobody", target]) == 2
    err = capsys.readouterr().err.strip()
    assert "nobody" in err and len(err.splitlines()) == 1
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF but not really audio")
    for cmd in (["verify", str(expdir), "--model", "spk000"], ["identify", str(expdir)]):
        assert main([*cmd, str(bad)]) == 2
        err = capsys.readouterr().err.strip()
        assert str(bad) in err and len(err.splitlines()) == 1
    assert main(["enroll", str(tmp_path), "--model", "x", target]) == 2
    assert "recipe.json" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:  # the two enroll forms are not mixed
        main(["enroll", str(expdir), "--model", "x", target, "--features", str(tmp_path)])
    assert ex.value.code == 2 and "either" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["verify", str(expdir), target])
    assert ex.value.code == 2 and "--model" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0.01,x", "0.01,2", ""])
def test_cli_bad_p_target_is_a_one_line_usage_error(value, tmp_path, capsys):
    scores = tmp_path / "s.txt"
    scores.write_text("a t1 1.0 target\na t2 0.0 nontarget\n")
    with pytest.raises(SystemExit) as ex:
        main(["evaluate", str(scores), "--p-target", value, "--no-plot", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--p-target" in err and (value.split(",")[-1] in err)


def test_cli_quiet_and_debug_after_the_subcommand(tmp_path, capsys):
    missing = str(tmp_path / "nothing.h5")
    assert main(["info", missing]) == 2
    assert main(["info", missing, "-q"]) == 2
    with pytest.raises(GmmSpeakerError, match="nothing.h5"):  # --debug: the exception, not exit 2
        main(["info", missing, "--debug"])
    with pytest.raises(GmmSpeakerError):
        main(["--debug", "info", missing])


def test_cli_features_config_resolves_defaults_and_accepts_a_recipe(tmp_path):
    from gmmspeaker.store import FeatureStore
    from tests.helpers import speechlike, write_wav

    rng = np.random.default_rng(0)
    write_wav(tmp_path / "a.wav", speechlike(rng, 1.0, 8000))
    (tmp_path / "list.txt").write_text("a.wav\n")
    flat = tmp_path / "flat.yaml"  # a flat features file over a recipe-shaped defaults file
    flat.write_text(f"defaults: {REPO / 'configs' / 'features-8k.yaml'}\nn_mfcc: 13\n")
    for config, n_mfcc in ((flat, 13), (REPO / "recipes" / "demo.yaml", 20)):
        out = tmp_path / f"store-{config.stem}"
        assert (
            main(["-q", "features", str(tmp_path / "list.txt"), "--out", str(out), "--config", str(config)])
            == 0
        )
        cfg = FeatureStore(out).config
        assert cfg["sample_rate"] == 8000 and cfg["n_mfcc"] == n_mfcc and cfg["fmax"] == 3800.0
