"""Tests of gmmspeaker.corpora.kaldi (Kaldi data directories)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.corpora.kaldi import Segment, read_kaldi_data_dir, read_spk2utt, read_utt2spk
from gmmspeaker.errors import AudioError, DataError


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
    with pytest.raises(DataError, match=r"wav\.scp:1: piped command for 'spkA-a1' is unsupported.*not safe"):
        read_kaldi_data_dir(data_dir)


def test_ark_offset_rejected(data_dir: Path) -> None:
    (data_dir / "wav.scp").write_text("spkA-a1 data/wav.ark:123\n")
    with pytest.raises(DataError, match=r"wav\.scp:1: archive offset"):
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


# --------------------------------------------------------------------------- segments
RATE = 8000


@pytest.fixture()
def segmented(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Two recordings of known samples (a ramp, so every sample says where it came from)
    and a data dir cutting three segments out of them."""
    import soundfile as sf

    recs = {
        "rec1": (np.arange(3 * RATE) % 30000 - 15000).astype(np.int16),
        "rec2": (np.arange(2 * RATE) % 20000 - 9000).astype(np.int16),
    }
    for name, x in recs.items():
        sf.write(str(tmp_path / f"{name}.wav"), x, RATE, subtype="PCM_16")
    d = tmp_path / "data"
    d.mkdir()
    (d / "wav.scp").write_text("rec1 rec1.wav\nrec2 rec2.wav\n")
    (d / "segments").write_text("A-1 rec1 0.50 1.25\nB-1 rec2 0 0.5\nA-2 rec1 2.5 -1\n")
    (d / "utt2spk").write_text("A-1 A\nB-1 B\nA-2 A\n")
    return d, {k: v.astype(np.float32) / 32768.0 for k, v in recs.items()}


def test_segments_cut_the_recordings(segmented: tuple[Path, dict[str, np.ndarray]]) -> None:
    d, recs = segmented
    segs = read_kaldi_data_dir(d, root=d.parent)
    assert all(isinstance(s, Segment) for s in segs)
    assert [(s.utt_id, s.recording_id, s.speaker, s.start, s.end) for s in segs] == [
        ("A-1", "rec1", "A", 0.5, 1.25),
        ("B-1", "rec2", "B", 0.0, 0.5),
        ("A-2", "rec1", "A", 2.5, None),
    ]
    expected = {"A-1": recs["rec1"][4000:10000], "B-1": recs["rec2"][:4000], "A-2": recs["rec1"][20000:]}
    for s in segs:
        signal, rate = s.load()
        assert rate == RATE
        np.testing.assert_array_equal(signal, expected[s.utt_id])


def test_segment_reads_only_its_frames(
    segmented: tuple[Path, dict[str, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import soundfile as sf

    d, _ = segmented
    calls: list[tuple[str, int]] = []
    real_seek, real_read = sf.SoundFile.seek, sf.SoundFile.read

    def seek(self, frames, whence=sf.SEEK_SET):
        if whence == sf.SEEK_SET:  # (libsndfile's own position queries are SEEK_CUR)
            calls.append(("seek", frames))
        return real_seek(self, frames, whence)

    def read(self, frames=-1, *args, **kwargs):
        out = real_read(self, frames, *args, **kwargs)
        calls.append(("read", len(out)))
        return out

    monkeypatch.setattr(sf.SoundFile, "seek", seek)
    monkeypatch.setattr(sf.SoundFile, "read", read)
    seg = read_kaldi_data_dir(d, root=d.parent)[0]
    seg.load()
    # positioned at the segment's first frame, then its 6,000 frames read (no more)
    assert calls[0] == ("seek", 4000) and [n for op, n in calls if op == "read"] == [6000]


def test_segment_resampled_like_load_audio(segmented: tuple[Path, dict[str, np.ndarray]]) -> None:
    from gmmspeaker.audio import resample

    d, recs = segmented
    seg = read_kaldi_data_dir(d, root=d.parent)[1]
    signal, rate = seg.load(sample_rate=16000, resample_audio=True)
    assert rate == 16000
    np.testing.assert_allclose(signal, resample(recs["rec2"][:4000], RATE, 16000), atol=1e-6)
    with pytest.raises(AudioError, match="segment 'B-1' of recording 'rec2'.*8000 Hz but 16000"):
        seg.load(sample_rate=16000)


@pytest.mark.parametrize(
    ("segments", "match"),
    [
        ("A-1 rec1 0.5\n", r"segments:1: expected 'utt_id recording_id start end', got 3"),
        ("A-1 rec1 0.5 x\n", r"segments:1: start and end must be numbers"),
        ("A-1 rec1 -1 2\n", r"segments:1: start must be a finite time >= 0"),
        ("A-1 rec1 1.0 1.0\n", r"segments:1: end 1.0 s is not after start 1.0 s"),
        ("A-1 rec1 0 1\nA-1 rec1 1 2\n", r"segments:2: duplicate segment 'A-1' \(already on line 1\)"),
        (
            "A-1 rec9 0 1\nB-1 rec2 0 1\nA-2 rec1 0 1\n",
            r"wav\.scp: 1 segment\(s\) name a recording absent.*'A-1' -> 'rec9'",
        ),
        ("A-1 rec1 0 1\nB-1 rec2 0 1\n", r"utt2spk: 1 utterance\(s\) absent from segments, e.g. 'A-2'"),
        (
            "A-1 rec1 0 1\nB-1 rec2 0 1\nA-2 rec1 0 1\nC-1 rec2 0 1\n",
            r"utt2spk: 1 segment\(s\) have no speaker: segments:4: 'C-1'",
        ),
        ("\n", r"segments: empty segments file"),
    ],
)
def test_bad_segments(segmented: tuple[Path, dict[str, np.ndarray]], segments: str, match: str) -> None:
    d, _ = segmented
    (d / "segments").write_text(segments)
    with pytest.raises(DataError, match=match):
        read_kaldi_data_dir(d, root=d.parent)


def test_segment_outside_recording_and_missing_recording(
    segmented: tuple[Path, dict[str, np.ndarray]],
) -> None:
    d, _ = segmented
    (d / "segments").write_text("A-1 rec1 0.5 3.4\nB-1 rec2 2.5 3\nA-2 rec1 1 4\n")
    segs = read_kaldi_data_dir(d, root=d.parent)
    assert segs[0].load()[0].shape == (2 * RATE + RATE // 2,)  # 0.4 s past the end: clipped, as Kaldi does
    with pytest.raises(
        AudioError, match=r"segment 'B-1' of recording 'rec2'.*rec2\.wav: segment 2\.5-3 s is outside"
    ):
        segs[1].load()
    with pytest.raises(AudioError, match=r"segment 1-4 s is outside the recording \(3 s\)"):
        segs[2].load()
    (d.parent / "rec2.wav").unlink()
    with pytest.raises(DataError, match=r"wav\.scp: 1 audio file\(s\) missing: wav\.scp:2: .*rec2\.wav"):
        read_kaldi_data_dir(d, root=d.parent)


def test_piped_recording_rejected_with_segments(segmented: tuple[Path, dict[str, np.ndarray]]) -> None:
    d, _ = segmented
    (d / "wav.scp").write_text("rec1 rec1.wav\nrec2 sph2pipe -f wav rec2.sph |\n")
    with pytest.raises(DataError, match=r"wav\.scp:2: piped command for 'rec2' is unsupported.*not safe"):
        read_kaldi_data_dir(d, root=d.parent)
