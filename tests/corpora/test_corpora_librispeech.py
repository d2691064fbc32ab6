"""Tests of gmmspeaker.corpora.librispeech on a tiny fake LibriSpeech tree."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gmmspeaker.corpora.librispeech import prepare_librispeech, scan_librispeech
from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list
from gmmspeaker.errors import ConfigError, DataError, SkippedInputWarning

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "prepare_librispeech.py"


def make_tree(root: Path, speakers: dict[int, int]) -> Path:
    """speaker id -> number of files (split over two chapters)."""
    x = (np.random.default_rng(0).standard_normal(200) * 50).astype(np.int16)
    for spk, n in speakers.items():
        for i in range(n):
            chapter = 100 + spk * 10 + i % 2
            d = root / str(spk) / str(chapter)
            d.mkdir(parents=True, exist_ok=True)
            sf.write(str(d / f"{spk}-{chapter}-{i:04d}.flac"), x, 16000)
    return root


@pytest.fixture(scope="module")
def libri(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("libri") / "LibriSpeech" / "train-clean-100"
    return make_tree(root, {19: 9, 26: 8, 103: 10, 198: 9, 200: 8, 250: 9})


def test_scan(libri: Path) -> None:
    files = scan_librispeech(libri)
    assert list(files) == ["19", "26", "103", "198", "200", "250"]  # numeric order
    assert files["19"][0] == "19/290/19-290-0000.flac"
    assert sum(map(len, files.values())) == 53


def test_prepare(libri: Path, tmp_path: Path) -> None:
    out = prepare_librispeech(libri, tmp_path / "a", seed=3, n_enroll=2, n_test=3, ubm_fraction=0.5)
    ubm = read_ubm_list(out["ubm"], root=libri)
    enroll = read_enroll_list(out["enroll"], root=libri)
    trials = read_trials(out["trials"], root=libri, models=[m.model_id for m in enroll])
    files = scan_librispeech(libri)
    bg = {u.utt_id.split("/")[0] for u in ubm}
    targets = [m.model_id for m in enroll]
    assert len(bg) == 3 and len(targets) == 3 and not bg & set(targets)
    assert len(ubm) == sum(len(files[s]) for s in bg)  # all files of background speakers
    assert all(len(m.utterances) == 2 for m in enroll)
    for m in enroll:
        assert all(u.utt_id.split("/")[0] == m.model_id for u in m.utterances)
    tests = sorted({t.test.utt_id for t in trials})
    assert len(tests) == 3 * 3 and len(trials) == 3 * 9
    enroll_ids = {u.utt_id for m in enroll for u in m.utterances}
    assert not enroll_ids & set(tests)
    # independent key check: target iff the test file's speaker folder is the model
    assert all(t.target == (t.test.utt_id.split("/")[0] == t.model_id) for t in trials)
    assert sum(t.target for t in trials) == 9
    assert "speaker\trole\tfiles" in out["speakers"].read_text()


def test_deterministic_per_seed(libri: Path, tmp_path: Path) -> None:
    def lists(seed: int, name: str) -> list[str]:
        out = prepare_librispeech(libri, tmp_path / name, seed=seed, n_enroll=2, n_test=2)
        return [out[k].read_text() for k in ("ubm", "enroll", "trials")]

    assert lists(0, "a") == lists(0, "b")
    assert any(lists(s, f"s{s}") != lists(0, "a") for s in (1, 2, 3))


def test_skips_short_speakers_and_errors(libri: Path, tmp_path: Path) -> None:
    # only speaker 103 has the 10 files needed; seed 10 makes it a target speaker
    with pytest.warns(SkippedInputWarning, match="skipped 2 target speaker.*fewer than 10 files"):
        out = prepare_librispeech(libri, tmp_path / "s", seed=10, n_enroll=5, n_test=5, ubm_fraction=0.5)
    assert [m.model_id for m in read_enroll_list(out["enroll"], root=libri)] == ["103"]
    assert out["speakers"].read_text().count("\tskipped\t") == 2
    with pytest.raises(ConfigError, match="ubm_fraction"):
        prepare_librispeech(libri, tmp_path / "x", ubm_fraction=1.0)
    with pytest.raises(ConfigError, match="n_enroll"):
        prepare_librispeech(libri, tmp_path / "x", n_enroll=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .flac files"):
        prepare_librispeech(tmp_path / "empty", tmp_path / "y")
    bad = make_tree(tmp_path / "bad", {7: 2})
    (bad / "7" / "170" / "7-170-0000.flac").rename(bad / "7" / "170" / "8-170-0000.flac")
    with pytest.raises(DataError, match="8-170-0000.flac: expected"):
        scan_librispeech(bad)


def test_cli(libri: Path, tmp_path: Path) -> None:
    res = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            str(libri),
            str(tmp_path / "cli"),
            "--seed",
            "3",
            "--n-enroll",
            "2",
            "--n-test",
            "3",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    ref = prepare_librispeech(libri, tmp_path / "api", seed=3, n_enroll=2, n_test=3)
    assert (tmp_path / "cli" / "trials.txt").read_text() == ref["trials"].read_text()
    res = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "none"), str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1 and res.stderr.startswith("error: ") and "Traceback" not in res.stderr
