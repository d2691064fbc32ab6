"""Tests of gmmspeaker.corpora.lists (protocol list readers and writers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gmmspeaker.corpora.lists import (
    Enrollment,
    Trial,
    Utterance,
    read_enroll_list,
    read_trials,
    read_ubm_list,
    write_enroll_list,
    write_trials,
    write_ubm_list,
)
from gmmspeaker.errors import DataError

FSDD = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora" / "fsdd"


def _touch(root: Path, *rels: str) -> None:
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"RIFF")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    _touch(tmp_path, "a/x1.wav", "a/x2.wav", "b/y1.wav", "b/y2.wav", "b/y3.flac")
    return tmp_path


# --------------------------------------------------------------------------- ubm


def test_ubm_list_reads_paths_ids_comments(corpus: Path) -> None:
    lst = _write(corpus / "ubm.txt", "# header\n\na/x1.wav\n  b/y1.wav  \n   # indented comment\nb/y3.flac\n")
    utts = read_ubm_list(lst)
    assert [u.utt_id for u in utts] == ["a/x1", "b/y1", "b/y3"]
    assert utts[0] == Utterance(utt_id="a/x1", path=corpus / "a" / "x1.wav", speaker=None)
    assert all(u.path.is_absolute() for u in utts)


def test_ubm_list_root_argument_and_absolute_paths(
    corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("lists")
    outside = tmp_path_factory.mktemp("outside")
    _touch(outside, "z.wav")
    lst = _write(elsewhere / "ubm.txt", f"a/x2.wav\n{outside / 'z.wav'}\n{corpus / 'b' / 'y2.wav'}\n")
    utts = read_ubm_list(lst, root=corpus)
    assert utts[0].path == corpus / "a" / "x2.wav"
    # absolute path outside the root: id is the absolute path without suffix
    assert utts[1].utt_id == (outside / "z").as_posix()
    # absolute path under the root: id relative to the root
    assert utts[2].utt_id == "b/y2"
    # default root is the list's folder, where a/x2.wav does not exist
    with pytest.raises(DataError, match="missing"):
        read_ubm_list(lst)


def test_ubm_list_check_exists_false_skips_file_checks(tmp_path: Path) -> None:
    lst = _write(tmp_path / "ubm.txt", "no/such.wav\n")
    (u,) = read_ubm_list(lst, check_exists=False)
    assert u.utt_id == "no/such" and u.path == tmp_path / "no" / "such.wav"


def test_ubm_list_duplicate_path(corpus: Path) -> None:
    lst = _write(corpus / "ubm.txt", "a/x1.wav\nb/y1.wav\n./a/x1.wav\n")
    with pytest.raises(DataError, match=r"ubm\.txt:3: duplicate entry.*line 1"):
        read_ubm_list(lst)


def test_ubm_list_too_many_fields(corpus: Path) -> None:
    lst = _write(corpus / "ubm.txt", "a/x1.wav\na/x2.wav extra\n")
    with pytest.raises(DataError, match=r"ubm\.txt:2: expected one audio path per line, got 2 fields"):
        read_ubm_list(lst)


@pytest.mark.parametrize("text", ["", "# only a comment\n\n   \n"])
def test_empty_lists(corpus: Path, text: str) -> None:
    for name, reader in (
        ("ubm.txt", read_ubm_list),
        ("enroll.txt", read_enroll_list),
        ("trials.txt", read_trials),
    ):
        lst = _write(corpus / name, text)
        with pytest.raises(DataError, match=rf"{re.escape(name)}: empty list"):
            reader(lst)


def test_missing_list_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: list file not found"):
        read_ubm_list(tmp_path / "nope.txt")


def test_all_missing_files_reported_once(tmp_path: Path) -> None:
    lines = [f"d/f{i:02d}.wav" for i in range(14)]
    _touch(tmp_path, lines[3])
    lst = _write(tmp_path / "ubm.txt", "# c\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_ubm_list(lst)
    msg = str(info.value)
    assert "13 audio path(s) missing" in msg
    # first ten listed with their line numbers (line 1 is the comment)
    assert "ubm.txt:2: 'd/f00.wav'" in msg and "ubm.txt:12: 'd/f10.wav'" in msg
    assert "d/f03.wav" not in msg  # exists
    assert "d/f11.wav" not in msg and "and 3 more" in msg


def test_directory_instead_of_file(corpus: Path) -> None:
    lst = _write(corpus / "ubm.txt", "a/x1.wav\nb\n")
    with pytest.raises(DataError, match=r"1 audio path\(s\) directories, not files: .*ubm\.txt:2: 'b'"):
        read_ubm_list(lst)


@pytest.mark.parametrize("bad", ["../x.wav", "a/../../x.wav", "a/../../" + "q/x.wav"])
def test_path_escaping_root_rejected(corpus: Path, bad: str) -> None:
    lst = _write(corpus / "ubm.txt", f"a/x1.wav\n{bad}\n")
    with pytest.raises(DataError, match=r"ubm\.txt:2: path .* escapes the corpus root"):
        read_ubm_list(lst, check_exists=False)


def test_dotdot_staying_under_root_is_fine(corpus: Path) -> None:
    lst = _write(corpus / "ubm.txt", "a/../b/y1.wav\n")
    assert read_ubm_list(lst)[0].utt_id == "b/y1"


# --------------------------------------------------------------------------- enroll


def test_enroll_list(corpus: Path) -> None:
    lst = _write(corpus / "enroll.txt", "m1 a/x1.wav a/x2.wav\n\n# c\nm2 b/y1.wav\n")
    models = read_enroll_list(lst)
    assert [m.model_id for m in models] == ["m1", "m2"]
    assert isinstance(models[0], Enrollment)
    assert [u.utt_id for u in models[0].utterances] == ["a/x1", "a/x2"]
    assert models[1].utterances == (Utterance("b/y1", corpus / "b" / "y1.wav"),)


def test_enroll_duplicate_model(corpus: Path) -> None:
    lst = _write(corpus / "enroll.txt", "m1 a/x1.wav\nm2 b/y1.wav\nm1 a/x2.wav\n")
    with pytest.raises(DataError, match=r"enroll\.txt:3: duplicate model 'm1' \(already on line 1\)"):
        read_enroll_list(lst)


def test_enroll_line_without_paths(corpus: Path) -> None:
    lst = _write(corpus / "enroll.txt", "m1 a/x1.wav\nm2\n")
    with pytest.raises(DataError, match=r"enroll\.txt:2: expected 'model_id path"):
        read_enroll_list(lst)


def test_enroll_same_file_twice_for_model(corpus: Path) -> None:
    lst = _write(corpus / "enroll.txt", "m1 a/x1.wav a/x1.wav\n")
    with pytest.raises(DataError, match=r"enroll\.txt:1: file 'a/x1\.wav' listed twice"):
        read_enroll_list(lst)


def test_enroll_missing_files_all_reported(corpus: Path) -> None:
    lst = _write(corpus / "enroll.txt", "m1 a/x1.wav a/nope1.wav\nm2 b/nope2.wav b/y1.wav\n")
    with pytest.raises(
        DataError,
        match=r"2 audio path\(s\) missing: .*enroll\.txt:1: 'a/nope1\.wav'.*enroll\.txt:2: 'b/nope2\.wav'",
    ):
        read_enroll_list(lst)


# --------------------------------------------------------------------------- trials


def test_trials_labeled(corpus: Path) -> None:
    lst = _write(
        corpus / "trials.txt", "m1 b/y1.wav nontarget\n# x\nm2 b/y1.wav target\nm1 a/x1.wav target\n"
    )
    trials = read_trials(lst, models=["m1", "m2"])
    assert trials[0] == Trial(
        model_id="m1", test=Utterance("b/y1", corpus / "b" / "y1.wav"), target=False, line=1
    )
    assert [(t.model_id, t.test.utt_id, t.target, t.line) for t in trials[1:]] == [
        ("m2", "b/y1", True, 3),
        ("m1", "a/x1", True, 4),
    ]


def test_trials_unlabeled(corpus: Path) -> None:
    lst = _write(corpus / "trials.txt", "m1 b/y1.wav\nm2 b/y1.wav\n")
    assert [t.target for t in read_trials(lst)] == [None, None]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        (
            "m1 b/y1.wav target\nm1 a/x1.wav yes\n",
            r"trials\.txt:2: key must be 'target' or 'nontarget', got 'yes'",
        ),
        (
            "m1 b/y1.wav target\nm1\n",
            r"trials\.txt:2: expected 'model_id test_path \[target\|nontarget\]', got 1 fields",
        ),
        ("m1 b/y1.wav target x\n", r"trials\.txt:1: expected .* got 4 fields"),
        (
            "m1 b/y1.wav target\nm2 a/x1.wav\n",
            r"trials\.txt:2: has no target\|nontarget key but line 1 has one",
        ),
        ("m1 b/y1.wav\nm2 a/x1.wav target\n", r"trials\.txt:2: has a key but line 1 has none"),
        (
            "m1 b/y1.wav target\nm1 b/y1.wav target\n",
            r"trials\.txt:2: duplicate trial 'm1 b/y1\.wav' \(already on line 1\)",
        ),
    ],
)
def test_trials_malformed(corpus: Path, text: str, pattern: str) -> None:
    lst = _write(corpus / "trials.txt", text)
    with pytest.raises(DataError, match=pattern):
        read_trials(lst)


def test_trials_unknown_models_all_reported(corpus: Path) -> None:
    lst = _write(corpus / "trials.txt", "m1 b/y1.wav target\nm9 b/y1.wav nontarget\nm8 a/x1.wav nontarget\n")
    with pytest.raises(
        DataError,
        match=r"2 trial\(s\) name a model that is not enrolled: .*trials\.txt:2: 'm9'.*trials\.txt:3: 'm8'",
    ):
        read_trials(lst, models={"m1"})
    assert len(read_trials(lst)) == 3  # no check without models


def test_trials_missing_test_file_counted_once(corpus: Path) -> None:
    lst = _write(corpus / "trials.txt", "m1 b/gone.wav target\nm2 b/gone.wav nontarget\nm1 a/x1.wav target\n")
    with pytest.raises(DataError, match=r"1 audio path\(s\) missing: .*trials\.txt:1: 'b/gone\.wav'"):
        read_trials(lst)


def test_not_utf8(tmp_path: Path) -> None:
    lst = tmp_path / "trials.txt"
    lst.write_bytes(b"m1 \xff\xfe.wav\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_trials(lst)


# --------------------------------------------------------------------------- writers


def test_writers_round_trip(corpus: Path) -> None:
    out = corpus / "lists"
    write_ubm_list(out / "ubm.txt", ["a/x1.wav", "b/y1.wav"])
    write_enroll_list(out / "enroll.txt", {"m1": ["a/x1.wav", "a/x2.wav"], "m2": ["b/y2.wav"]})
    write_trials(out / "trials.txt", [("m1", "b/y1.wav", False), ("m2", "b/y1.wav", True)])
    assert [u.utt_id for u in read_ubm_list(out / "ubm.txt", root=corpus)] == ["a/x1", "b/y1"]
    models = read_enroll_list(out / "enroll.txt", root=corpus)
    assert {m.model_id: len(m.utterances) for m in models} == {"m1": 2, "m2": 1}
    trials = read_trials(out / "trials.txt", root=corpus, models=[m.model_id for m in models])
    assert [t.target for t in trials] == [False, True]
    assert (out / "trials.txt").read_text() == "m1 b/y1.wav nontarget\nm2 b/y1.wav target\n"
    assert not list(out.glob(".*tmp"))  # no temporary leftovers


def test_writers_reject_spaces_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="white space"):
        write_ubm_list(tmp_path / "u.txt", ["a b.wav"])
    with pytest.raises(DataError, match="empty"):
        write_trials(tmp_path / "t.txt", [])
    assert not (tmp_path / "u.txt").exists()


# --------------------------------------------------------------------------- FSDD


@pytest.mark.corpus
def test_fsdd_lists() -> None:
    if not (FSDD / "trials.txt").is_file():
        pytest.skip(f"FSDD corpus not found at {FSDD.resolve()}")
    ubm = read_ubm_list(FSDD / "ubm.txt")
    enroll = read_enroll_list(FSDD / "enroll.txt")
    trials = read_trials(FSDD / "trials.txt", models=[m.model_id for m in enroll])
    assert len(ubm) == 1500
    assert ubm[0].utt_id == "recordings/0_george_0"
    assert len(enroll) == 6 and all(len(m.utterances) == 100 for m in enroll)
    assert len(trials) == 5400
    assert sum(t.target for t in trials) == 900
    # an independent check of the keys: target iff the speaker name is in the file name
    assert all(t.target == (t.test.utt_id.split("_")[1] == t.model_id) for t in trials)
    # ubm, enroll and test files are disjoint
    ids_ubm = {u.utt_id for u in ubm}
    ids_enroll = {u.utt_id for m in enroll for u in m.utterances}
    ids_test = {t.test.utt_id for t in trials}
    assert len(ids_test) == 900
    assert not (ids_ubm & ids_enroll) and not (ids_ubm & ids_test) and not (ids_enroll & ids_test)


@pytest.mark.parametrize(
    "rel",
    [
        "recordings/0_george_0.wav",
        "a/b.tar.gz",
        "a/.hidden",
        "a/noext",
        "a/b.",
        "a/b..",
        "a.d/file",
        "x.y/z.w.v",
        "deep/er/still/f.flac",
    ],
)
def test_utterance_id_is_pathlib_s_relative_path_without_suffix(rel, tmp_path):
    """The string implementation list loading uses agrees with the pathlib definition,
    under the root and outside it."""
    from pathlib import PurePosixPath

    from gmmspeaker.corpora.lists import utterance_id

    root = tmp_path / "corpus"
    inside = root / rel
    assert utterance_id(inside, root) == PurePosixPath(rel).with_suffix("").as_posix()
    outside = tmp_path / "elsewhere" / rel
    assert utterance_id(outside, root) == outside.with_suffix("").as_posix()
    # a sibling folder whose name starts with the root's is outside it
    sibling = tmp_path / "corpus2" / rel
    assert utterance_id(sibling, root) == sibling.with_suffix("").as_posix()
