"""Serving real-world audio and managing user models (issue 20, items 1-6).

Any sample rate (resampled with a notice), multi-channel files (a warning, or a chosen
channel), skipping unusable files in verify/identify batches, a file listed twice at
enrolment, ``replace`` to replace a model, and listing / removing user models, in Python
and on the command line, on a workdir a recipe trained.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from gmmspeaker.audio import load_audio, load_for_system, resample, unique_paths
from gmmspeaker.cli import main
from gmmspeaker.errors import AudioError, ModelError
from gmmspeaker.system import Experiment
from tests.helpers import speechlike, tiny_recipe, write_wav

# --------------------------------------------------------------------------- audio level


def test_load_for_system_resamples_any_rate_and_selects_channels(tmp_path, rng, caplog):
    left, right = speechlike(rng, 1.0, 44100, f0=110.0), speechlike(rng, 1.0, 44100, f0=230.0)
    stereo = write_wav(tmp_path / "call.wav", np.stack([left, right], axis=1), rate=44100, subtype="FLOAT")
    # the reference: scipy's polyphase resampler at the exact ratio 8000/44100 = 80/441
    ref_left = resample_poly(left.astype(np.float64), 80, 441)
    ref_mix = resample_poly((left.astype(np.float64) + right) / 2, 80, 441)
    x, src = load_for_system(stereo, sample_rate=8000, channel=0)
    assert x.dtype == np.float32 and x.shape == (8000,)
    np.testing.assert_allclose(x, ref_left, atol=1e-6)  # float32 rounding of values <= 1
    assert (src.source_rate, src.rate, src.n_channels, src.channel) == (44100, 8000, 2, 0)
    levels = dict((m.split(":")[1].strip().split()[0], lv) for lv, m in src.notices())
    assert levels == {"resampled": logging.INFO}  # a chosen channel: no channel warning
    x1, _ = load_for_system(stereo, sample_rate=8000, channel=1)
    np.testing.assert_allclose(x1, resample_poly(right.astype(np.float64), 80, 441), atol=1e-6)
    mixed, src = load_for_system(stereo, sample_rate=8000)
    np.testing.assert_allclose(mixed, ref_mix, atol=1e-6)
    (warn,) = [m for lv, m in src.notices() if lv == logging.WARNING]
    assert "call.wav: 2 channels averaged" in warn and "--channel" in warn
    _, quiet = load_for_system(stereo, sample_rate=8000, channel="mix")
    assert all(lv == logging.INFO for lv, _ in quiet.notices())
    # up-sampling works too, and says the upper band is empty
    low = write_wav(tmp_path / "low.wav", speechlike(rng, 0.5, 8000), rate=8000)
    y, src = load_for_system(low, sample_rate=16000)
    assert y.shape == (8000,) and src.notices()[0][0] == logging.WARNING
    assert "nothing above 4000 Hz" in src.notices()[0][1]
    with pytest.raises(AudioError, match=r"call.wav: has 2 channel\(s\); channel 2 does not exist"):
        load_for_system(stereo, sample_rate=8000, channel=2)
    # load_audio itself is unchanged by default: the recipes' path still refuses another rate
    with pytest.raises(AudioError, match="44100 Hz but 8000 Hz is expected"):
        load_audio(stereo, sample_rate=8000)
    np.testing.assert_array_equal(load_audio(stereo, channel=1)[0], right)
    np.testing.assert_array_equal(resample(x, 8000, 8000), x)


def test_unique_paths_sees_every_spelling_of_one_file(tmp_path, monkeypatch):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"x")
    b.write_bytes(b"y")
    (tmp_path / "link.wav").symlink_to(a)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    given = [str(a), "a.wav", "./sub/../a.wav", "link.wav", str(b), Path("b.wav")]
    unique, dups = unique_paths(given)
    assert unique == [str(a), str(b)]
    assert dups == ["a.wav", "./sub/../a.wav", "link.wav", Path("b.wav")]


# --------------------------------------------------------------------------- on a trained workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from gmmspeaker.recipe.runner import run_recipe

    root = tmp_path_factory.mktemp("serving")
    recipe = tiny_recipe(root, k=16)
    recipe.write_text(recipe.read_text().replace("duration: 1.0", "duration: 2.0"))
    wd = root / "wd"
    run_recipe(recipe, workdir=wd, log_file=False)
    return wd


@pytest.fixture
def wd(trained, tmp_path):
    dst = tmp_path / "wd"
    shutil.copytree(trained, dst)
    return dst


def _enrol_lists(wd: Path) -> dict[str, list[Path]]:
    out = {}
    for ln in (wd / "corpus" / "enroll.txt").read_text().splitlines():
        mid, *files = ln.split()
        out[mid] = [wd / "corpus" / f for f in files]
    return out


def _tests_of(wd: Path, speaker: str) -> list[Path]:
    found = set()
    for ln in (wd / "corpus" / "trials.txt").read_text().splitlines():
        m, t, k = ln.split()
        if m == speaker and k == "target":
            found.add(wd / "corpus" / t)
    return sorted(found)


def _to_44k(path: Path) -> np.ndarray:
    x, rate = sf.read(str(path), dtype="float64")
    assert rate == 8000
    return resample_poly(x, 441, 80)


def test_a_44k_stereo_call_is_served_channel_by_channel(wd, tmp_path, caplog):
    """Two speakers on the two channels of a 44.1 kHz file: each channel verifies as its speaker."""
    a_file, b_file = _tests_of(wd, "spk000")[0], _tests_of(wd, "spk001")[0]
    a44, b44 = _to_44k(a_file), _to_44k(b_file)
    n = min(len(a44), len(b44))
    call = write_wav(tmp_path / "call.wav", np.stack([a44[:n], b44[:n]], axis=1), rate=44100, subtype="FLOAT")
    exp = Experiment.open(wd)
    with caplog.at_level(logging.INFO, logger="gmmspeaker"):
        (left,) = exp.verify("spk000", [call], channel=0)
    assert "resampled from 44100 Hz to the system's 8000 Hz" in caplog.text
    assert "channels averaged" not in caplog.text
    (right,) = exp.verify("spk000", [call], channel=1)
    assert left.raw_llr > right.raw_llr
    # a channel is scored exactly as a mono file holding that channel
    for k, r in ((0, left), (1, right)):
        mono = write_wav(tmp_path / f"mono{k}.wav", [a44, b44][k][:n], rate=44100, subtype="FLOAT")
        assert exp.verify("spk000", [mono])[0].raw_llr == r.raw_llr
    # and ranks like the 8 kHz originals (resampling keeps the band the features use)
    (orig_a,) = exp.verify("spk000", [a_file])
    (orig_b,) = exp.verify("spk000", [b_file])
    assert (orig_a.raw_llr > orig_b.raw_llr) and (left.decision, right.decision) == (
        orig_a.decision,
        orig_b.decision,
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gmmspeaker"):
        (mixed,) = exp.verify("spk000", [call])
    assert "call.wav: 2 channels averaged" in caplog.text
    (who,) = exp.identify([call], channel=1)
    assert who.decision == "spk001"
    # the command line takes the same file and option
    assert main(["-q", "verify", str(wd), "--model", "spk000", str(call), "--channel", "0", "--json"]) == 0


def test_verify_and_identify_can_skip_unusable_files(wd, tmp_path, capsys):
    good = _tests_of(wd, "spk002")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not audio")
    silent = write_wav(tmp_path / "silent.wav", np.zeros(8000, dtype=np.float32))
    exp = Experiment.open(wd)
    batch = [good[0], broken, good[1], silent]
    with pytest.raises(AudioError, match="broken.wav"):
        exp.verify("spk002", batch)
    res = exp.verify("spk002", batch, on_bad_audio="skip")
    assert [r.decision == "skipped" for r in res] == [False, True, False, True]
    assert "broken.wav" in res[1].error and "silent" in res[3].error and np.isnan(res[1].score)
    alone = [exp.verify("spk002", [g])[0] for g in good[:2]]
    assert [res[0].score, res[2].score] == [r.score for r in alone]  # the others are unaffected
    ids = exp.identify(batch, on_bad_audio="skip", top_n=2)
    assert [r.decision for r in ids][1::2] == ["skipped", "skipped"] and ids[0].ranking
    # --json: one JSON line per file, a skipped one with its error; exit 0
    argv = ["verify", str(wd), "--model", "spk002", *map(str, batch), "--json", "--on-bad-audio", "skip"]
    assert main(argv) == 0
    cap = capsys.readouterr()
    rows = [json.loads(ln) for ln in cap.out.splitlines()]
    assert [r["audio"] for r in rows] == [str(p) for p in batch]
    assert rows[1]["decision"] == "skipped" and "broken.wav" in rows[1]["error"] and rows[0]["error"] is None
    assert "2 of 4 file(s) skipped" in cap.err
    assert main(["identify", str(wd), str(broken), "--json", "--on-bad-audio", "skip"]) == 2  # nothing usable
    (row,) = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert row["decision"] == "skipped" and row["ranking"] == []


def test_a_file_listed_twice_is_enrolled_once(wd, caplog, monkeypatch):
    files = _enrol_lists(wd)["spk003"]
    monkeypatch.chdir(files[0].parent)
    exp = Experiment.open(wd)
    with caplog.at_level(logging.WARNING, logger="gmmspeaker"):
        r = exp.enroll("twice", [files[0], files[1], files[0].name, str(files[1])])
    assert r.n_files == 2 and r.duplicates == [files[0].name, str(files[1])]
    assert "listed more than once for model 'twice'" in caplog.text
    once = exp.enroll("once", files[:2])
    test = _tests_of(wd, "spk003")[0]
    assert exp.verify("twice", [test])[0].raw_llr == exp.verify("once", [test])[0].raw_llr
    assert once.n_frames == r.n_frames
    assert exp.user_audio["twice"] == [str(f.resolve()) for f in files[:2]]


def test_replacing_needs_replace_and_models_can_be_listed_and_removed(wd):
    from gmmspeaker.store import FeatureStore

    exp = Experiment.open(wd)
    lists = _enrol_lists(wd)
    test = _tests_of(wd, "spk001")[0]
    (before,) = exp.verify("spk001", [test])
    other = _enrol_lists(wd)["spk004"][:1]
    with pytest.raises(
        ModelError, match=r"'spk001' already exists \(a recipe model from 2 file\(s\), .*--replace"
    ):
        exp.enroll("spk001", other)
    assert exp.verify("spk001", [test])[0].raw_llr == before.raw_llr  # nothing changed
    r = exp.enroll("spk001", other, replace=True)
    assert r.replaced == "recipe" and exp.verify("spk001", [test])[0].raw_llr != before.raw_llr
    exp.enroll("carol", lists["spk002"][:1])
    with pytest.raises(ModelError, match="'carol' already exists \\(a user model from 1 file"):
        Experiment.open(wd).enroll("carol", lists["spk002"])

    info = {(m.model_id, m.source): m for m in Experiment.open(wd).list_models()}
    assert sorted(info) == sorted(
        [(f"spk00{i}", "recipe") for i in range(5)] + [("spk001", "user"), ("carol", "user")]
    )
    rec = info[("spk001", "recipe")]
    assert rec.status == "replaced" and info[("spk001", "user")].status == "active"
    assert rec.files == [str(f) for f in lists["spk001"]]
    # speech seconds: frames kept by the VAD in the store, times the 10 ms frame shift
    store = FeatureStore(wd / "features")
    ids = [f"wav/{p.parent.name}/{p.stem}" for p in lists["spk001"]]
    assert all(u in store for u in ids)
    # (the model's counts are float32-GEMM posterior sums: each frame's row sums to 1 within ~1e-7)
    assert rec.speech_seconds == pytest.approx(sum(store.n_frames(u) for u in ids) * 0.01, rel=1e-6)
    carol = info[("carol", "user")]
    assert carol.files == [str(lists["spk002"][0].resolve())] and carol.enrolled.endswith("+00:00")

    exp = Experiment.open(wd)
    assert exp.unenroll("spk001") == "spk001"  # the recipe model is used again
    assert exp.verify("spk001", [test])[0].raw_llr == before.raw_llr
    with pytest.raises(ModelError, match="'spk002' is a recipe model"):
        exp.unenroll("spk002")
    with pytest.raises(ModelError, match="no user model 'nobody' \\(user models: carol\\)"):
        exp.unenroll("nobody")
    assert exp.unenroll("carol") is None
    assert not (wd / "user_models.h5").exists() and "carol" not in Experiment.open(wd).models.model_ids


def test_cli_models_and_unenroll(wd, capsys):
    files = [str(f) for f in _enrol_lists(wd)["spk002"]]
    assert main(["-q", "enroll", str(wd), "--model", "dave", *files]) == 0
    capsys.readouterr()
    assert main(["models", str(wd), "--json"]) == 0
    rows = {(r["model"], r["source"]): r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert rows[("dave", "user")]["n_files"] == 2 and rows[("dave", "user")]["status"] == "active"
    assert rows[("dave", "user")]["speech_seconds"] == pytest.approx(
        rows[("spk002", "recipe")]["speech_seconds"]
    )
    assert main(["models", str(wd)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["model", "source", "status"] and "dave" in table
    assert main(["unenroll", str(wd), "--model", "dave"]) == 0
    assert "user model dave removed" in capsys.readouterr().out
    assert main(["unenroll", str(wd), "--model", "dave"]) == 2
    assert "no user model 'dave'" in capsys.readouterr().err


def test_a_rerun_reenrols_a_user_model_with_its_channel(wd, tmp_path):
    """Enrol from the right channel of a stereo file, change the UBM, run again: re-enrolled from that channel."""
    from gmmspeaker.recipe.runner import run_recipe

    a, b = _enrol_lists(wd)["spk000"][0], _enrol_lists(wd)["spk004"][0]
    xa, _ = sf.read(str(a))
    xb, _ = sf.read(str(b))
    n = min(len(xa), len(xb))
    stereo = write_wav(tmp_path / "st.wav", np.stack([xa[:n], xb[:n]], axis=1), subtype="FLOAT")
    mono_right = write_wav(tmp_path / "right.wav", xb[:n], subtype="FLOAT")
    Experiment.open(wd).enroll("eve", [stereo], channel=1)
    recipe = Path(json.loads((wd / "recipe.json").read_text())["path"])
    changed = tmp_path / "changed.yaml"
    changed.write_text(recipe.read_text().replace("iterations: 3", "iterations: 4"))
    assert changed.read_text() != recipe.read_text()
    res = run_recipe(changed, workdir=wd, log_file=False)
    assert res.refreshed == ["eve"]
    exp = Experiment.open(wd)
    assert exp.user_info["eve"]["channel"] == 1
    exp.enroll("eve-right", [mono_right])
    test = _tests_of(wd, "spk004")[0]
    assert exp.verify("eve", [test])[0].raw_llr == pytest.approx(
        exp.verify("eve-right", [test])[0].raw_llr, abs=1e-9
    )


def test_info_describes_a_trained_experiment(wd, capsys):
    Experiment.open(wd).enroll("zoe", _enrol_lists(wd)["spk001"][:1])
    assert main(["info", str(wd)]) == 0
    out = capsys.readouterr().out
    rows = dict(re.split(r"\s{2,}", ln.strip(), maxsplit=1) for ln in out.splitlines())
    res = json.loads((wd / "results.json").read_text())
    recipe = json.loads((wd / "recipe.json").read_text())
    assert rows["experiment"] == f"tiny in {wd}"
    assert rows["recipe"] == recipe["path"]
    assert rows["models"].startswith("5 from the recipe, 1 enrolled by users")
    assert rows["results"].startswith(f"EER {100 * res['eer']:.2f} %")
    assert rows["UBM"].startswith("16 diagonal Gaussians")
    assert rows["features"].startswith("8000 Hz")
    n_trials = len((wd / "corpus" / "trials.txt").read_text().splitlines())
    assert f"trials.txt ({n_trials} lines" in rows["trials list"]
