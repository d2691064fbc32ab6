"""Tests of gmmspeaker.corpora.kaldi (Kaldi data directories)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gmmspeaker.corpora.kaldi import read_kaldi_data_dir, read_spk2utt, read_utt2spk
from gmmspeaker.errors import DataError


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("a1", "a2", "b1"):
        (audio / f"{name}.wav").write_bytes(b"RIFF")
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(
        f"spkA-a1 {audio / 'a1.wav'}\nspkA-a2 audio/a2.wav\nspkB-b1 {audio / 'b1.wav'}\n"
    )
    (d / "utt2spk").write_text("spkA-a1 spkA\nspkA-a2 spkA\nspkB-b1 spkB\n")
    return d


def test_read_data_dir(data_dir: Path) -> None:
    root = data_dir.parent.parent
    utts = read_kaldi_data_dir(data_dir, root=root)
    assert [(u.utt_id, u.speaker) for u in utts] == [
        ("spkA-a1", "spkA"),
        ("spkA-a2", "spkA"),
        ("spkB-b1", "spkB"),
    ]
    assert utts[1].path == root / "audio" / "a2.wav"
    assert read_spk2utt(data_dir) == {"spkA": ("spkA-a1", "spkA-a2"), "spkB": ("spkB-b1",)}


def test_relative_paths_default_to_cwd(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data_dir.parent.parent)
    assert read_kaldi_data_dir(data_dir)[1].path == data_dir.parent.parent / "audio" / "a2.wav"


def test_spk2utt_checked(data_dir: Path) -> None:
    (data_dir / "spk2utt").write_text("spkA spkA-a1 spkA-a2\nspkB spkB-b1\n")
    assert read_spk2utt(data_dir)["spkA"] == ("spkA-a1", "spkA-a2")
    read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)
    (data_dir / "spk2utt").write_text("spkA spkA-a1 spkB-b1\nspkB spkA-a2\n")
    with pytest.raises(DataError, match=r"spk2utt:1: utterance 'spkB-b1' of speaker 'spkA' disagrees"):
        read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)


def test_piped_command_rejected(data_dir: Path) -> None:
    (data_dir / "wav.scp").write_text("spkA-a1 sox x.flac -t wav - |\n")
    with pytest.raises(DataError, match=r"wav\.scp:1: piped command for 'spkA-a1' is unsupported"):
        read_kaldi_data_dir(data_dir)


def test_ark_offset_and_segments_rejected(data_dir: Path) -> None:
    (data_dir / "wav.scp").write_text("spkA-a1 data/wav.ark:123\n")
    with pytest.raises(DataError, match=r"wav\.scp:1: archive offset"):
        read_kaldi_data_dir(data_dir)
    (data_dir / "segments").write_text("seg1 spkA-a1 0.0 1.0\n")
    with pytest.raises(DataError, match="segments.*unsupported"):
        read_kaldi_data_dir(data_dir)


def test_missing_utt2spk_entries(data_dir: Path) -> None:
    (data_dir / "utt2spk").write_text("spkA-a1 spkA\n")
    with pytest.raises(
        DataError,
        match=r"utt2spk: 2 utterance\(s\) of wav\.scp have no speaker: wav\.scp:2: 'spkA-a2'.*'spkB-b1'",
    ):
        read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)
    (data_dir / "utt2spk").unlink()
    with pytest.raises(DataError, match="utt2spk: missing"):
        read_kaldi_data_dir(data_dir)


def test_extra_utt2spk_entries_and_malformed(data_dir: Path) -> None:
    (data_dir / "utt2spk").write_text("spkA-a1 spkA\nspkA-a2 spkA\nspkB-b1 spkB\nspkC-c1 spkC\n")
    with pytest.raises(DataError, match="absent from wav.scp"):
        read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)
    (data_dir / "utt2spk").write_text("spkA-a1 spkA extra\n")
    with pytest.raises(DataError, match=r"utt2spk:1: expected 'utt_id speaker_id'"):
        read_utt2spk(data_dir)


def test_missing_audio_all_reported(data_dir: Path) -> None:
    (data_dir / "wav.scp").write_text("spkA-a1 gone1.wav\nspkA-a2 audio/a2.wav\nspkB-b1 gone2.wav\n")
    with pytest.raises(
        DataError, match=r"2 audio file\(s\) missing: .*wav\.scp:1: .*gone1.*wav\.scp:3: .*gone2"
    ):
        read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)
    assert len(read_kaldi_data_dir(data_dir, root=data_dir.parent.parent, check_exists=False)) == 3


def test_duplicate_utterance(data_dir: Path) -> None:
    (data_dir / "wav.scp").write_text("spkA-a1 audio/a1.wav\nspkA-a1 audio/a2.wav\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: duplicate utterance 'spkA-a1'"):
        read_kaldi_data_dir(data_dir, root=data_dir.parent.parent)
