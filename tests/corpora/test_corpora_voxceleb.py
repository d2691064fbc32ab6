"""Tests of gmmspeaker.corpora.voxceleb on a tiny fake VoxCeleb1 tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list
from gmmspeaker.corpora.voxceleb import prepare_voxceleb1
from gmmspeaker.errors import DataError

# speaker -> video -> number of files
TREE = {
    "id10001": {"vidA": 2, "vidB": 1},  # dev
    "id10002": {"vidC": 2},  # dev
    "id10270": {"x6uYqmx31kE": 2, "8jEAjG6SegY": 1},  # test
    "id10271": {"1gtz-CUIygI": 2},  # test
}
TRIALS = (
    "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00001.wav\n"
    "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav\n"
    "1 id10271/1gtz-CUIygI/00001.wav id10271/1gtz-CUIygI/00002.wav\n"
    "0 id10271/1gtz-CUIygI/00001.wav id10270/x6uYqmx31kE/00002.wav\n"
)


@pytest.fixture()
def vox(tmp_path: Path) -> Path:
    root = tmp_path / "vox1"
    x = (np.random.default_rng(0).standard_normal(400) * 100).astype(np.int16)
    for spk, videos in TREE.items():
        for video, n in videos.items():
            d = root / "wav" / spk / video
            d.mkdir(parents=True)
            for i in range(1, n + 1):
                sf.write(str(d / f"{i:05d}.wav"), x, 16000, subtype="PCM_16")
    (root / "veri_test.txt").write_text(TRIALS)
    return root


def test_prepare_voxceleb1(vox: Path, tmp_path: Path) -> None:
    out = prepare_voxceleb1(vox, vox / "veri_test.txt", tmp_path / "lists")
    assert set(out) == {"ubm", "enroll", "trials"}
    ubm = read_ubm_list(out["ubm"], root=vox)
    assert [u.utt_id for u in ubm] == [
        "wav/id10001/vidA/00001",
        "wav/id10001/vidA/00002",
        "wav/id10001/vidB/00001",
        "wav/id10002/vidC/00001",
        "wav/id10002/vidC/00002",
    ]
    enroll = read_enroll_list(out["enroll"], root=vox)
    assert [(m.model_id, [u.utt_id for u in m.utterances]) for m in enroll] == [
        ("id10270/x6uYqmx31kE/00001", ["wav/id10270/x6uYqmx31kE/00001"]),
        ("id10271/1gtz-CUIygI/00001", ["wav/id10271/1gtz-CUIygI/00001"]),
    ]
    trials = read_trials(out["trials"], root=vox, models=[m.model_id for m in enroll])
    assert [(t.model_id, t.test.utt_id, t.target) for t in trials] == [
        ("id10270/x6uYqmx31kE/00001", "wav/id10270/8jEAjG6SegY/00001", True),
        ("id10270/x6uYqmx31kE/00001", "wav/id10271/1gtz-CUIygI/00001", False),
        ("id10271/1gtz-CUIygI/00001", "wav/id10271/1gtz-CUIygI/00002", True),
        ("id10271/1gtz-CUIygI/00001", "wav/id10270/x6uYqmx31kE/00002", False),
    ]


def test_root_may_be_wav_folder_and_ubm_speakers(vox: Path, tmp_path: Path) -> None:
    out = prepare_voxceleb1(vox / "wav", vox / "veri_test.txt", tmp_path / "l", ubm_speakers=["id10002"])
    assert [u.utt_id for u in read_ubm_list(out["ubm"], root=vox / "wav")] == [
        "id10002/vidC/00001",
        "id10002/vidC/00002",
    ]
    with pytest.raises(DataError, match="speaker-disjoint"):
        prepare_voxceleb1(vox, vox / "veri_test.txt", tmp_path / "l", ubm_speakers=["id10270"])
    with pytest.raises(DataError, match="not found: id99999"):
        prepare_voxceleb1(vox, vox / "veri_test.txt", tmp_path / "l", ubm_speakers=["id99999"])


def test_missing_trial_files_and_no_background(vox: Path, tmp_path: Path) -> None:
    (vox / "bad.txt").write_text(TRIALS + "1 id10270/zzz/00001.wav id10271/zzz/00009.wav\n")
    with pytest.raises(
        DataError, match=r"2 of \d+ trial files missing.*id10270/zzz/00001\.wav.*id10271/zzz/00009\.wav"
    ):
        prepare_voxceleb1(vox, vox / "bad.txt", tmp_path / "l")
    for spk in ("id10001", "id10002"):
        for f in sorted((vox / "wav" / spk).rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        (vox / "wav" / spk).rmdir()
    with pytest.raises(DataError, match="no background data"):
        prepare_voxceleb1(vox, vox / "veri_test.txt", tmp_path / "l")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("2 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav", r"bad\.txt:2: label must be 1"),
        ("1 id10270/x6uYqmx31kE/00001.wav", r"bad\.txt:2: expected 'label enrol_path test_path'"),
        ("1 ../x/y/z.wav id10271/1gtz-CUIygI/00001.wav", r"bad\.txt:2: expected a path"),
    ],
)
def test_malformed_trial_list(vox: Path, tmp_path: Path, line: str, pattern: str) -> None:
    (vox / "bad.txt").write_text(TRIALS.splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(DataError, match=pattern):
        prepare_voxceleb1(vox, vox / "bad.txt", tmp_path / "l")
