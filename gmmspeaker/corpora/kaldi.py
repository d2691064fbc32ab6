"""Kaldi data directories (``wav.scp``, ``utt2spk``, ``spk2utt``, ``segments``).

Only plain audio paths are supported in ``wav.scp``: piped commands
(``utt sox ... - |``) are rejected with a :class:`~gmmspeaker.errors.DataError`, because
running shell commands named in a data file is not safe; archive offsets
(``foo.ark:123``) are rejected too. Write such audio to files first (``wav-copy``).

With a ``segments`` file (``utt_id recording_id start end``, seconds; ``end`` -1 = to
the end of the recording), ``wav.scp`` lists recordings and the utterances are
:class:`Segment` objects: :meth:`Segment.load` reads only the segment's samples.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmmspeaker._typing import PathLike
from gmmspeaker.corpora.lists import MAX_REPORTED, Utterance, read_lines
from gmmspeaker.errors import DataError

__all__ = ["Segment", "read_kaldi_data_dir", "read_segments", "read_spk2utt", "read_utt2spk"]

logger = logging.getLogger(__name__)

_ARK_OFFSET = re.compile(r"\.ark:\d+$")


@dataclass(frozen=True)
class Segment:
    """One utterance cut from a recording (a line of a Kaldi ``segments`` file).

    Not an :class:`~gmmspeaker.corpora.lists.Utterance`: its ``path`` is the whole
    recording, so code that reads whole files must not take it for one. Read its audio
    with :meth:`load`, then :func:`gmmspeaker.features.extract` (or ``extract_many``).

    Attributes
    ----------
    utt_id : str
        Utterance (segment) id.
    recording_id : str
        Key of the recording in ``wav.scp``.
    path : Path
        Absolute path of the recording.
    start : float
        Start in seconds.
    end : float or None
        End in seconds (exclusive); None = the end of the recording (Kaldi's -1).
    speaker : str or None
        Speaker from ``utt2spk``.
    """

    utt_id: str
    recording_id: str
    path: Path
    start: float
    end: float | None
    speaker: str | None = None

    def load(
        self, *, sample_rate: int | None = None, resample_audio: bool = False, min_samples: int = 1
    ) -> tuple[np.ndarray, int]:
        """The segment's samples, read from disk alone (not the whole recording).

        Parameters are those of :func:`gmmspeaker.audio.load_audio`.

        Returns
        -------
        signal : ndarray of float32, shape (n_samples,)
        rate : int
            Hz.

        Raises
        ------
        AudioError
            The recording is unusable, or the segment lies outside it; the message names
            the segment and the recording.
        """
        from gmmspeaker.audio import load_audio
        from gmmspeaker.errors import AudioError

        try:
            return load_audio(
                self.path,
                sample_rate=sample_rate,
                resample_audio=resample_audio,
                min_samples=min_samples,
                start=self.start,
                end=self.end,
            )
        except AudioError as exc:
            raise AudioError(f"segment '{self.utt_id}' of recording '{self.recording_id}': {exc}") from None


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


def read_segments(data_dir: PathLike) -> list[tuple[int, str, str, float, float | None]]:
    """Read the ``segments`` file of a Kaldi data dir.

    Parameters
    ----------
    data_dir : path-like
        The data directory (it must hold ``segments``).

    Returns
    -------
    list of (line, utt_id, recording_id, start, end)
        In file order; times in seconds, ``end`` None for Kaldi's -1 (to the end).

    Raises
    ------
    DataError
        A line without 4 fields, a time that is not a number, a negative start, an end
        not after the start, a duplicate segment id, an empty file; the message names the
        file and line.
    """
    path = Path(data_dir) / "segments"
    out: list[tuple[int, str, str, float, float | None]] = []
    first: dict[str, int] = {}
    for line, fields in read_lines(path):
        if len(fields) != 4:
            raise DataError(
                f"{path}:{line}: expected 'utt_id recording_id start end', got {len(fields)} fields"
            )
        utt, rec, a, b = fields
        try:
            start, end = float(a), float(b)
        except ValueError:
            raise DataError(
                f"{path}:{line}: start and end must be numbers (seconds), got {a!r} {b!r}"
            ) from None
        if not (np.isfinite(start) and np.isfinite(end)) or start < 0:
            raise DataError(f"{path}:{line}: start must be a finite time >= 0 s, got {a!r}")
        if end != -1 and end <= start:
            raise DataError(f"{path}:{line}: end {b} s is not after start {a} s (use -1 for 'to the end')")
        if utt in first:
            raise DataError(f"{path}:{line}: duplicate segment '{utt}' (already on line {first[utt]})")
        first[utt] = line
        out.append((line, utt, rec, start, None if end == -1 else end))
    if not out:
        raise DataError(f"{path}: empty segments file")
    return out


def read_kaldi_data_dir(
    path: PathLike, *, root: PathLike | None = None, check_exists: bool = True
) -> list[Utterance] | list[Segment]:
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
    list of Utterance, or list of Segment
        Without ``segments``: Utterances in ``wav.scp`` order; ``utt_id`` is the Kaldi
        utterance id and ``speaker`` comes from ``utt2spk``. With ``segments``: Segments
        in ``segments`` order (``wav.scp`` then lists recordings; ``utt2spk`` segments).

    Raises
    ------
    DataError
        Piped commands or archive offsets in ``wav.scp``, malformed lines, duplicate
        ids, utterances missing from ``utt2spk`` (or extra ones in it), segments of a
        recording absent from ``wav.scp``, missing audio files.
    """
    data = Path(path)
    wav_scp = _data_file(data, "wav.scp")
    segmented = (data / "segments").exists()
    utt2spk = read_utt2spk(data)
    base = Path(os.path.abspath(Path.cwd() if root is None else Path(root)))
    entries: list[tuple[int, str, Path]] = []
    first: dict[str, int] = {}
    for line, fields in read_lines(wav_scp):
        utt = fields[0]
        rest = fields[1:]
        if rest and (rest[-1].endswith("|") or any(f == "|" for f in rest)):
            raise DataError(
                f"{wav_scp}:{line}: piped command for '{utt}' is unsupported (gmmspeaker never runs "
                "shell commands named in a data file: that is not safe); write the audio to files "
                "(e.g. wav-copy scp:wav.scp ark,scp:...) and list plain paths"
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
    if segmented:
        return _segments(data, entries, utt2spk, check_exists)

    _check_speakers(
        data, "wav.scp", "utterance(s) of wav.scp have", [(ln, u) for ln, u, _ in entries], utt2spk
    )

    _check_audio(wav_scp, entries, check_exists)
    out = [Utterance(utt_id=u, path=p, speaker=utt2spk[u]) for _, u, p in entries]
    logger.debug("%s: %d utterances, %d speakers", data, len(out), len(set(utt2spk.values())))
    return out


def _check_audio(wav_scp: Path, entries: list[tuple[int, str, Path]], check_exists: bool) -> None:
    """All missing audio files of ``wav.scp`` in one error."""
    if not check_exists:
        return
    missing = [(ln, u, p) for ln, u, p in entries if not p.is_file()]
    if missing:
        shown = "; ".join(f"wav.scp:{ln}: '{p}'" for ln, _, p in missing[:MAX_REPORTED])
        more = f"; ... and {len(missing) - MAX_REPORTED} more" if len(missing) > MAX_REPORTED else ""
        raise DataError(f"{wav_scp}: {len(missing)} audio file(s) missing: {shown}{more}")


def _check_speakers(
    data: Path, source: str, noun: str, items: list[tuple[int, str]], utt2spk: dict[str, str]
) -> None:
    """``utt2spk`` must name exactly the utterances of ``source`` (``(line, utt)`` pairs);
    ``spk2utt``, when present, must agree with it."""
    no_spk = [(ln, u) for ln, u in items if u not in utt2spk]
    if no_spk:
        shown = "; ".join(f"{source}:{ln}: '{u}'" for ln, u in no_spk[:MAX_REPORTED])
        more = f"; ... and {len(no_spk) - MAX_REPORTED} more" if len(no_spk) > MAX_REPORTED else ""
        raise DataError(f"{data / 'utt2spk'}: {len(no_spk)} {noun} no speaker: {shown}{more}")
    ids = {u for _, u in items}
    extra = [u for u in utt2spk if u not in ids]
    if extra:
        raise DataError(
            f"{data / 'utt2spk'}: {len(extra)} utterance(s) absent from {source}, e.g. "
            + ", ".join(repr(u) for u in extra[:MAX_REPORTED])
            + "; run fix_data_dir.sh"
        )
    if (data / "spk2utt").is_file():
        read_spk2utt(data)  # consistency check only


def _segments(
    data: Path, entries: list[tuple[int, str, Path]], utt2spk: dict[str, str], check_exists: bool
) -> list[Segment]:
    """The Segments of a data dir with ``segments``; ``entries`` are wav.scp's recordings."""
    segs = read_segments(data)
    recordings = {rec: p for _, rec, p in entries}
    unknown = [(ln, u, r) for ln, u, r, _, _ in segs if r not in recordings]
    if unknown:
        shown = "; ".join(f"segments:{ln}: '{u}' -> '{r}'" for ln, u, r in unknown[:MAX_REPORTED])
        more = f"; ... and {len(unknown) - MAX_REPORTED} more" if len(unknown) > MAX_REPORTED else ""
        raise DataError(
            f"{data / 'wav.scp'}: {len(unknown)} segment(s) name a recording absent from wav.scp: {shown}{more}"
        )
    _check_speakers(data, "segments", "segment(s) have", [(ln, u) for ln, u, _, _, _ in segs], utt2spk)
    used = {r for _, _, r, _, _ in segs}
    _check_audio(data / "wav.scp", [e for e in entries if e[1] in used], check_exists)
    out = [
        Segment(utt_id=u, recording_id=r, path=recordings[r], start=a, end=b, speaker=utt2spk[u])
        for _, u, r, a, b in segs
    ]
    logger.debug("%s: %d segments of %d recordings", data, len(out), len(used))
    return out
