"""Bad input: every case is a clear error naming the file (exit status 2, one line, no
traceback) or, with on_bad_audio: skip, a warning and a count; nothing computed is lost."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from gmmspeaker.cli import main
from gmmspeaker.errors import ModelError
from tests.helpers import REPO, speechlike, tiny_recipe, write_wav


def _good(path: Path, rng: np.random.Generator, rate: int = 8000) -> Path:
    return write_wav(path, speechlike(rng, 0.6, rate=rate), rate=rate)


def _truncated(d: Path, rng) -> Path:
    p = _good(d / "full.wav", rng)
    bad = d / "truncated.wav"
    bad.write_bytes(p.read_bytes()[:40])
    p.unlink()
    return bad


def _text(d: Path, rng) -> Path:
    p = d / "text.wav"
    p.write_text("this is not audio\n" * 20)
    return p


def _zero_length(d: Path, rng) -> Path:
    p = d / "zero.wav"
    p.write_bytes(b"")
    return p


def _nan(d: Path, rng) -> Path:
    x = speechlike(rng, 0.6)
    x[100] = np.nan
    return write_wav(d / "nan.wav", x, subtype="FLOAT")


def _inf(d: Path, rng) -> Path:
    x = speechlike(rng, 0.6)
    x[100] = np.inf
    return write_wav(d / "inf.wav", x, subtype="FLOAT")


def _all_zero(d: Path, rng) -> Path:
    return write_wav(d / "silent.wav", np.zeros(8000, np.float32))


def _vad_empties(d: Path, rng) -> Path:
    # far below the VAD's absolute floor (-80 dBFS): no frame is speech
    return write_wav(
        d / "whisper.wav", (1e-6 * rng.standard_normal(8000)).astype(np.float32), subtype="FLOAT"
    )


def _wrong_rate(d: Path, rng) -> Path:
    return _good(d / "rate16k.wav", rng, rate=16000)


def _directory(d: Path, rng) -> Path:
    p = d / "folder.wav"
    p.mkdir()
    return p


def _missing(d: Path, rng) -> Path:
    return d / "missing.wav"


CASES = {
    "truncated header": (_truncated, "truncated.wav"),
    "text file named .wav": (_text, "not a readable audio"),
    "zero-length file": (_zero_length, "zero.wav"),
    "NaN samples": (_nan, "NaN"),
    "inf samples": (_inf, "infinite"),
    "all-zero audio": (_all_zero, "silent"),
    "VAD empties it": (_vad_empties, "VAD"),
    "wrong sample rate": (_wrong_rate, "16000 Hz"),
    "a directory": (_directory, "folder.wav"),
    "a missing file": (_missing, "missing.wav"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_features_cli_names_the_bad_file(tmp_path, capsys, case):
    rng = np.random.default_rng(7)
    make, match = CASES[case]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [_good(corpus / f"g{i}.wav", rng) for i in range(2)]
    bad = make(corpus, rng)
    (corpus / "ubm.txt").write_text("".join(f"{p.name}\n" for p in [*good, bad]))
    cfg = tmp_path / "features.yaml"
    cfg.write_text("sample_rate: 8000\nn_mels: 24\n")
    rc = main(
        ["-q", "features", str(corpus / "ubm.txt"), "--out", str(tmp_path / "store"), "--config", str(cfg)]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "Traceback" not in err and err.startswith("gmmspeaker: error:")
    assert bad.name in err and match in err
    if case not in ("a directory", "a missing file"):  # those fail in the list, before any work
        # the good files' features are kept for the next run
        from gmmspeaker.store import FeatureStore

        assert len(FeatureStore(tmp_path / "store")) == 2


def test_three_channel_audio_is_mixed_down(tmp_path):
    from gmmspeaker.audio import load_audio

    rng = np.random.default_rng(0)
    x = np.stack([speechlike(rng, 0.5), speechlike(rng, 0.5, f0=200), np.zeros(4000, np.float32)], axis=1)
    p = write_wav(tmp_path / "three.wav", x, subtype="FLOAT")
    y, _ = load_audio(p, sample_rate=8000)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-6)


def _lists_recipe(tmp_path: Path, ubm: str, enroll: str, trials: str, extra: str = "") -> Path:
    rng = np.random.default_rng(3)
    corpus = tmp_path / "corpus"
    for i in range(6):
        _good(corpus / f"s{i}.wav", rng)
    (corpus / "ubm.txt").write_text(ubm)
    (corpus / "enroll.txt").write_text(enroll)
    (corpus / "trials.txt").write_text(trials)
    r = tmp_path / "r.yaml"
    r.write_text(
        f"defaults: {REPO}/configs/features-8k.yaml\ndata: {{root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt}}\n"
        f"ubm: {{components: 2, iterations: 1}}\nevaluation: {{det_plot: false}}\n{extra}"
    )
    return r


@pytest.mark.parametrize(
    "ubm, enroll, trials, match",
    [
        ("s0.wav\ns1.wav\n", "a s2.wav\n", "a s3.wav target\nzed s4.wav nontarget\n", r"trials.txt:2.*'zed'"),
        (
            "s0.wav\nnope1.wav\nnope2.wav\n",
            "a s2.wav\n",
            "a s3.wav target\n",
            r"ubm.txt.*2 .*nope1.wav.*nope2.wav",
        ),
        ("s0.wav\ns0.wav\n", "a s2.wav\n", "a s3.wav target\n", r"ubm.txt:2.*s0.wav"),
        ("", "a s2.wav\n", "a s3.wav target\n", r"ubm.txt.*empty|ubm.txt.*no "),
        ("s0.wav\n", "a s2.wav\na s3.wav\n", "a s4.wav target\n", r"enroll.txt:2.*'a'"),
        ("s0.wav\n", "a s2.wav\n", "a s4.wav maybe\n", r"trials.txt:1"),
    ],
    ids=[
        "unknown model",
        "missing files (all)",
        "duplicate ids",
        "empty list",
        "duplicate model",
        "malformed line",
    ],
)
def test_list_errors_stop_the_run_before_any_work(tmp_path, capsys, ubm, enroll, trials, match):
    r = _lists_recipe(tmp_path, ubm, enroll, trials)
    assert main(["-q", "run", str(r), "--workdir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    import re

    assert re.search(match, err, re.S), err
    assert not (tmp_path / "wd" / "features").exists()


@pytest.mark.parametrize(
    "text, match",
    [
        ("experiment: x\ndata: [1, 2\n", "broken YAML"),
        ("experiment: x\nflavour: mint\n", "unknown key 'flavour'"),
    ],
    ids=["broken YAML", "unknown key"],
)
def test_recipe_errors_are_one_line(tmp_path, capsys, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    assert main(["run", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml:" in err[0] and match in err[0]


def test_skip_bad_audio_warns_and_counts(tmp_path):
    rng = np.random.default_rng(5)
    r = _lists_recipe(
        tmp_path,
        "s0.wav\ns1.wav\nbad.wav\n",
        "a s2.wav\nb s3.wav\n",
        "a s4.wav target\nb s4.wav nontarget\na s5.wav nontarget\nb s5.wav target\n",
        "on_bad_audio: skip\n",
    )
    (tmp_path / "corpus" / "bad.wav").write_text("garbage")
    from gmmspeaker.errors import SkippedInputWarning
    from gmmspeaker.recipe.runner import run_recipe

    with pytest.warns(SkippedInputWarning, match="bad.wav"):
        res = run_recipe(r, workdir=tmp_path / "wd")
    assert res.results["n_skipped_audio"] == 1 and res.results["skipped_audio"] == ["bad"]
    del rng


def test_failed_run_loses_nothing(tmp_path, capsys):
    """A run that fails on a new bad file leaves the previous outputs and records intact."""
    r = tiny_recipe(tmp_path)
    wd = tmp_path / "wd"
    assert main(["-q", "run", str(r), "--workdir", str(wd)]) == 0
    before = {
        p: p.read_bytes() for p in [wd / "scores.txt", wd / "results.json", wd / "ubm.h5", wd / "models.h5"]
    }
    stages = {p.name: p.read_text() for p in (wd / "stages").iterdir()}
    # corrupt one audio file the features depend on: the run must stop at features
    victim = sorted((wd / "corpus" / "wav").rglob("*.wav"))[0]
    victim.write_bytes(victim.read_bytes()[:30])
    capsys.readouterr()
    assert main(["-q", "run", str(r), "--workdir", str(wd)]) == 2
    assert victim.name in capsys.readouterr().err
    for p, data in before.items():
        assert p.read_bytes() == data, f"{p} changed by a failed run"
    assert {p.name: p.read_text() for p in (wd / "stages").iterdir()} == stages


def test_corrupted_feature_store(tmp_path, capsys):
    r = tiny_recipe(tmp_path)
    wd = tmp_path / "wd"
    assert main(["-q", "run", str(r), "--workdir", str(wd), "--until-stage", "features"]) == 0
    shard = sorted((wd / "features").glob("shard-*.h5"))[0]
    shard.write_bytes(b"\x89HDF\r\n" + b"\0" * 500)
    assert main(["-q", "run", str(r), "--workdir", str(wd)]) == 2
    err = capsys.readouterr().err
    assert shard.name in err and "Traceback" not in err


def _write_model(path: Path, *, weights, means, variances) -> None:
    from gmmspeaker.gmm.model import GaussianMixture

    GaussianMixture.from_params(np.asarray(weights), np.asarray(means), np.asarray(variances)).save(path)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("covariances", lambda v: -v, "variance|covariance|positive"),
        ("means", lambda m: m[:, :2], "shape"),
        ("weights", lambda w: w * 3, "sum"),
    ],
)
def test_model_file_validated_on_load(tmp_path, capsys, field, value, match):
    from gmmspeaker.gmm.model import GaussianMixture

    rng = np.random.default_rng(0)
    p = tmp_path / "ubm.h5"
    _write_model(p, weights=np.full(4, 0.25), means=rng.normal(size=(4, 3)), variances=np.ones((4, 3)))
    with h5py.File(p, "r+") as h5:
        name = next(k for k in h5.keys() if k.startswith(field[:5]))
        data = value(h5[name][()])
        del h5[name]
        h5[name] = data
    with pytest.raises(ModelError, match=match) as info:
        GaussianMixture.load(p)
    assert str(p) in str(info.value)
    assert main(["-q", "info", str(tmp_path / "absent.h5")]) == 2


def test_models_file_validated_on_load(tmp_path):
    from gmmspeaker.gmm.map import SpeakerModels

    p = tmp_path / "models.h5"
    p.write_bytes(b"not hdf5 at all")
    with pytest.raises(ModelError, match="models.h5"):
        SpeakerModels.load(p)
