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
