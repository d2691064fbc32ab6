"""Kaldi data directories (``wav.scp``, ``utt2spk``, ``spk2utt``).

Only plain audio paths are supported in ``wav.scp``: piped commands
(``utt sox ... - |``), archive offsets (``foo.ark:123``) and ``segments`` files are
rejected with a :class:`~gmmspeaker.errors.DataError`. Convert such data dirs to
plain files first (e.g. ``wav-copy`` / ``extract-segments``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from gmmspeaker._typing import PathLike
from gmmspeaker.corpora.lists import MAX_REPORTED, Utterance, read_lines
from gmmspeaker.errors import DataError

__all__ = ["read_kaldi_data_dir", "read_spk2utt", "read_utt2spk"]

logger = logging.getLogger(__name__)

_ARK_OFFSET = re.compile(r"\.ark:\d+$")


def _data_file(data_dir: Path, name: str) -> Path:
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: Kaldi data dir not found or not a directory")
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"{path}: missing; a Kaldi data dir needs wav.scp and utt2spk")
    return path


def read_utt2spk(data_dir: PathLike) -> dict[str, str]:
    """Read ``utt2spk`` of a Kaldi data dir.

    Parameters
    ----------
    data_dir : path-like
        The data directory.

    Returns
    -------
    dict of str to str
        Utterance id -> speaker id, in file order.

    Raises
    ------
    DataError
        Missing file, a line without exactly two fields, a duplicate utterance, an
        empty file.
    """
    path = _data_file(Path(data_dir), "utt2spk")
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for line, fields in read_lines(path):
        if len(fields) != 2:
            raise DataError(f"{path}:{line}: expected 'utt_id speaker_id', got {len(fields)} fields")
        utt, spk = fields
        if utt in out:
            raise DataError(f"{path}:{line}: duplicate utterance '{utt}' (already on line {first[utt]})")
        out[utt] = spk
        first[utt] = line
    if not out:
        raise DataError(f"{path}: empty utt2spk")
    return out


def read_spk2utt(data_dir: PathLike) -> dict[str, tuple[str, ...]]:
    """Speaker -> utterance ids of a Kaldi data dir.

    Read from ``spk2utt`` when present (and checked against ``utt2spk``), else
    derived from ``utt2spk``.

    Parameters
    ----------
    data_dir : path-like
        The data directory.

    Returns
    -------
    dict of str to tuple of str
        Speaker id -> its utterance ids (file order).

    Raises
    ------
    DataError
        Malformed or inconsistent files.
    """
    data = Path(data_dir)
    utt2spk = read_utt2spk(data)
    spk2utt_path = data / "spk2utt"
    derived: dict[str, list[str]] = {}
    for utt, spk in utt2spk.items():
        derived.setdefault(spk, []).append(utt)
    if not spk2utt_path.is_file():
        return {spk: tuple(utts) for spk, utts in derived.items()}
    out: dict[str, tuple[str, ...]] = {}
    for line, fields in read_lines(spk2utt_path):
        if len(fields) < 2:
            raise DataError(f"{spk2utt_path}:{line}: expected 'speaker_id utt_id [utt_id ...]'")
        spk = fields[0]
        if spk in out:
            raise DataError(f"{spk2utt_path}:{line}: duplicate speaker '{spk}'")
        for utt in fields[1:]:
            if utt2spk.get(utt) != spk:
                raise DataError(
                    f"{spk2utt_path}:{line}: utterance '{utt}' of speaker '{spk}' disagrees with "
                    f"utt2spk ({utt2spk.get(utt, 'absent')!r}); run utt2spk_to_spk2utt.pl"
                )
        out[spk] = tuple(fields[1:])
    n = sum(len(v) for v in out.values())
    if n != len(utt2spk):
        raise DataError(
            f"{spk2utt_path}: lists {n} utterances but utt2spk has {len(utt2spk)}; "
            "regenerate it with utt2spk_to_spk2utt.pl"
        )
    return out


def read_kaldi_data_dir(
    path: PathLike, *, root: PathLike | None = None, check_exists: bool = True
) -> list[Utterance]:
    """Read the utterances of a Kaldi data directory.

    Parameters
    ----------
    path : path-like
        Data directory holding ``wav.scp`` and ``utt2spk`` (``spk2utt`` optional,
        checked when present).
    root : path-like, optional
        Folder that relative paths in ``wav.scp`` refer to. Default: the current
        working directory, as in Kaldi, where scripts run from the recipe folder.
    check_exists : bool, default True
        Check that every audio file exists; all missing files are reported at once.

    Returns
    -------
    list of Utterance
        In ``wav.scp`` order; ``utt_id`` is the Kaldi utterance id and ``speaker``
        comes from ``utt2spk``.

    Raises
    ------
    DataError
        A ``segments`` file, piped commands or archive offsets in ``wav.scp``,
        malformed lines, duplicate ids, utterances missing from ``utt2spk`` (or
        extra ones in it), missing audio files.
    """
    data = Path(path)
    wav_scp = _data_file(data, "wav.scp")
    if (data / "segments").exists():
        raise DataError(
            f"{data / 'segments'}: segmented Kaldi data dirs are unsupported; "
            "cut the segments into files first (extract-segments)"
        )
    utt2spk = read_utt2spk(data)
    base = Path(os.path.abspath(Path.cwd() if root is None else Path(root)))
    entries: list[tuple[int, str, Path]] = []
    first: dict[str, int] = {}
    for line, fields in read_lines(wav_scp):
        utt = fields[0]
        rest = fields[1:]
        if rest and (rest[-1].endswith("|") or any(f == "|" for f in rest)):
            raise DataError(
                f"{wav_scp}:{line}: piped command for '{utt}' is unsupported; "
                "write the audio to files and list plain paths"
            )
        if len(rest) != 1:
            raise DataError(f"{wav_scp}:{line}: expected 'utt_id path', got {len(fields)} fields")
        if _ARK_OFFSET.search(rest[0]):
            raise DataError(
                f"{wav_scp}:{line}: archive offset '{rest[0]}' is unsupported; "
                "write the audio to files (wav-copy)"
            )
        if utt in first:
            raise DataError(f"{wav_scp}:{line}: duplicate utterance '{utt}' (already on line {first[utt]})")
        first[utt] = line
        audio = Path(rest[0])
        full = Path(os.path.normpath(audio if audio.is_absolute() else base / audio))
        entries.append((line, utt, full))
    if not entries:
        raise DataError(f"{wav_scp}: empty wav.scp")

    no_spk = [(ln, u) for ln, u, _ in entries if u not in utt2spk]
    if no_spk:
        shown = "; ".join(f"wav.scp:{ln}: '{u}'" for ln, u in no_spk[:MAX_REPORTED])
        more = f"; ... and {len(no_spk) - MAX_REPORTED} more" if len(no_spk) > MAX_REPORTED else ""
        raise DataError(
            f"{data / 'utt2spk'}: {len(no_spk)} utterance(s) of wav.scp have no speaker: {shown}{more}"
        )
    extra = [u for u in utt2spk if u not in first]
    if extra:
        raise DataError(
            f"{data / 'utt2spk'}: {len(extra)} utterance(s) absent from wav.scp, e.g. "
            + ", ".join(repr(u) for u in extra[:MAX_REPORTED])
            + "; run fix_data_dir.sh"
        )
    if (data / "spk2utt").is_file():
        read_spk2utt(data)  # consistency check only

    if check_exists:
        missing = [(ln, u, p) for ln, u, p in entries if not p.is_file()]
        if missing:
            shown = "; ".join(f"wav.scp:{ln}: '{p}'" for ln, _, p in missing[:MAX_REPORTED])
            more = f"; ... and {len(missing) - MAX_REPORTED} more" if len(missing) > MAX_REPORTED else ""
            raise DataError(f"{wav_scp}: {len(missing)} audio file(s) missing: {shown}{more}")
    out = [Utterance(utt_id=u, path=p, speaker=utt2spk[u]) for _, u, p in entries]
    logger.debug("%s: %d utterances, %d speakers", data, len(out), len(set(utt2spk.values())))
    return out
