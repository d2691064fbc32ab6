"""Protocol lists: background (UBM), enrollment and trial lists.

Three plain-text formats, one entry per line, fields separated by white space
(so paths cannot contain spaces):

``ubm.txt``
    ``path`` -- one audio file for background (UBM) training.
``enroll.txt``
    ``model_id path [path ...]`` -- the enrollment files of one model.
``trials.txt``
    ``model_id test_path [target|nontarget]`` -- one trial; the key column is
    optional, but either every line or no line has it.
``train.txt``
    ``path speaker`` -- a speaker-labelled training file (i-vector T matrix, back end).

Blank lines and lines whose first non-blank character is ``#`` are ignored.
Relative paths are relative to a corpus root (by default the folder of the list
file) and must stay under it (``../`` escapes are rejected); absolute paths are
taken as they are. Every error is a :class:`~gmmspeaker.errors.DataError` whose
message starts with ``<list file>:<line>:``; missing audio files are all reported
in one error.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import DataError

__all__ = [
    "Utterance",
    "Enrollment",
    "Trial",
    "read_ubm_list",
    "read_enroll_list",
    "read_trials",
    "read_train_list",
    "write_ubm_list",
    "write_enroll_list",
    "write_trials",
    "utterance_id",
]

logger = logging.getLogger(__name__)

#: How many offending entries an error message lists before "... and N more".
MAX_REPORTED = 10

_KEYS = {"target": True, "nontarget": False}


@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus.

    Attributes
    ----------
    utt_id : str
        Identifier: the path relative to the corpus root without its suffix,
        POSIX style (``"recordings/0_george_0"``); for a file outside the root,
        its absolute path without suffix. Kaldi data dirs use their own ids.
    path : Path
        Absolute path of the audio file.
    speaker : str or None
        Speaker label when the corpus layout tells it, else ``None``.
    """

    utt_id: str
    path: Path
    speaker: str | None = None


@dataclass(frozen=True)
class Enrollment:
    """The enrollment utterances of one model.

    Attributes
    ----------
    model_id : str
        Model identifier (first field of the ``enroll.txt`` line).
    utterances : tuple of Utterance
        The enrollment files, in list order (at least one).
    """

    model_id: str
    utterances: tuple[Utterance, ...]


@dataclass(frozen=True)
class Trial:
    """One verification trial: does ``test`` come from the speaker of ``model_id``?

    Attributes
    ----------
    model_id : str
        Model identifier, as in the enrollment list.
    test : Utterance
        The test utterance.
    target : bool or None
        ``True`` (target), ``False`` (nontarget) or ``None`` (unlabeled list).
    line : int
        1-based line number in the trial list (for error messages).
    """

    model_id: str
    test: Utterance
    target: bool | None
    line: int


# --------------------------------------------------------------------------- helpers


def _where(list_path: Path, line: int) -> str:
    return f"{list_path}:{line}"


def read_lines(list_path: Path) -> list[tuple[int, list[str]]]:
    """Return ``(line_number, fields)`` for every non-blank, non-comment line."""
    if not list_path.exists():
        raise DataError(f"{list_path}: list file not found")
    if list_path.is_dir():
        raise DataError(f"{list_path}: is a directory, expected a list file")
    try:
        text = list_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{list_path}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise DataError(f"{list_path}: cannot read list file ({exc})") from None
    out: list[tuple[int, list[str]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        out.append((number, stripped.split()))
    return out


def _resolve_root(list_path: Path, root: PathLike | None, check_exists: bool) -> Path:
    base = list_path.parent if root is None else Path(root)
    base = Path(os.path.abspath(base))
    if check_exists and not base.is_dir():
        raise DataError(f"{list_path}: corpus root '{base}' is not a directory")
    return base


def utterance_id(path: Path, root: Path) -> str:
    """Identifier of an audio file: its path relative to ``root`` without suffix.

    Parameters
    ----------
    path : Path
        Absolute, normalised path of the file.
    root : Path
        Absolute corpus root.

    Returns
    -------
    str
        POSIX-style relative path without suffix (``"recordings/0_george_0"``), or the
        absolute path without suffix when ``path`` is not under ``root``.
    """
    return _utterance_id(os.fspath(path), os.fspath(root))


def _utterance_id(path: str, root: str) -> str:
    """:func:`utterance_id` on normalised absolute path strings (no pathlib objects: list
    loading resolves every line of every list)."""
    if path != root and _is_under(path, root):
        rel = path[len(root) :].lstrip(os.sep)
    else:
        rel = path
    rel = rel.replace(os.sep, "/")
    # pathlib's suffix: the last component's text from its last dot, when that dot is
    # neither its first nor its last character
    name_start = rel.rfind("/") + 1
    dot = rel.rfind(".")
    if name_start < dot < len(rel) - 1:
        rel = rel[:dot]
    return rel


def _is_under(path: str, root: str) -> bool:
    """Whether the normalised absolute ``path`` is ``root`` or lies below it."""
    return path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep)


class _Resolver:
    """Resolve list paths against a root; collect missing files and directories."""

    def __init__(self, list_path: Path, root: Path, check_exists: bool) -> None:
        self.list_path = list_path
        self.root = root
        self.check_exists = check_exists
        self.missing: list[tuple[int, str]] = []
        self.directories: list[tuple[int, str]] = []
        self._cache: dict[str, Utterance] = {}
        self._status: dict[Path, str] = {}
        self._root_str = os.fspath(root)

    def __call__(self, field: str, line: int) -> Utterance:
        cached = self._cache.get(field)
        if cached is None:
            cached = self._resolve(field, line)
            self._cache[field] = cached
        if self.check_exists:
            status = self._status.get(cached.path)
            if status is None:
                try:  # one stat per distinct file
                    status = "dir" if stat.S_ISDIR(os.stat(cached.path).st_mode) else "ok"
                except (OSError, ValueError):
                    status = "missing"
                self._status[cached.path] = status
                # each distinct file is reported once, at its first line
                if status == "missing":
                    self.missing.append((line, field))
                elif status == "dir":
                    self.directories.append((line, field))
        return cached

    def _resolve(self, field: str, line: int) -> Utterance:
        root = self._root_str
        if os.path.isabs(field):
            full = os.path.normpath(field)
        else:
            full = os.path.normpath(os.path.join(root, field))
            if not _is_under(full, root):
                raise DataError(
                    f"{_where(self.list_path, line)}: path '{field}' escapes the corpus "
                    f"root '{self.root}'; use a path under the root or an absolute path"
                )
        return Utterance(utt_id=_utterance_id(full, root), path=Path(full))

    def raise_problems(self) -> None:
        """Raise one DataError listing every missing file and directory seen."""
        parts: list[str] = []
        for items, what in ((self.missing, "missing"), (self.directories, "directories, not files")):
            if not items:
                continue
            shown = "; ".join(f"{self.list_path.name}:{ln}: '{p}'" for ln, p in items[:MAX_REPORTED])
            more = f"; ... and {len(items) - MAX_REPORTED} more" if len(items) > MAX_REPORTED else ""
            parts.append(f"{len(items)} audio path(s) {what}: {shown}{more}")
        if parts:
            raise DataError(
                f"{self.list_path}: " + " | ".join(parts) + f" (paths relative to root '{self.root}')"
            )


def _require_entries(list_path: Path, n: int, what: str) -> None:
    if n == 0:
        raise DataError(f"{list_path}: empty list, no {what} (only blank or comment lines)")


# --------------------------------------------------------------------------- readers


def read_ubm_list(
    path: PathLike, *, root: PathLike | None = None, check_exists: bool = True
) -> list[Utterance]:
    """Read a background (UBM) list: one audio path per line.

    Parameters
    ----------
    path : path-like
        The list file.
    root : path-like, optional
        Corpus root that relative paths refer to; default the list file's folder.
    check_exists : bool, default True
        Check that every audio file exists (and is not a directory).

    Returns
    -------
    list of Utterance
        In list order; ``speaker`` is ``None``.

    Raises
    ------
    DataError
        Missing list, empty list, a line with more than one field, a path escaping
        the root, the same file (or utterance id) twice, missing audio files (all
        reported at once).
    """
    list_path = Path(path)
    lines = read_lines(list_path)
    resolver = _Resolver(list_path, _resolve_root(list_path, root, check_exists), check_exists)
    out: list[Utterance] = []
    seen: dict[str, int] = {}
    for line, fields in lines:
        if len(fields) != 1:
            raise DataError(
                f"{_where(list_path, line)}: expected one audio path per line, got {len(fields)} fields"
            )
        utt = resolver(fields[0], line)
        if utt.utt_id in seen:
            raise DataError(
                f"{_where(list_path, line)}: duplicate entry '{fields[0]}' (utterance id "
                f"'{utt.utt_id}' already on line {seen[utt.utt_id]})"
            )
        seen[utt.utt_id] = line
        out.append(utt)
    _require_entries(list_path, len(out), "audio paths")
    resolver.raise_problems()
    logger.debug("%s: %d background utterances", list_path, len(out))
    return out


def read_enroll_list(
    path: PathLike, *, root: PathLike | None = None, check_exists: bool = True
) -> list[Enrollment]:
    """Read an enrollment list: ``model_id path [path ...]`` per line.

    Parameters
    ----------
    path : path-like
        The list file.
    root : path-like, optional
        Corpus root that relative paths refer to; default the list file's folder.
    check_exists : bool, default True
        Check that every audio file exists (and is not a directory).

    Returns
    -------
    list of Enrollment
        One per line, in list order. Utterances have ``speaker=None``.

    Raises
    ------
    DataError
        Missing or empty list, a line without paths, the same model on two lines,
        the same file twice for one model, paths escaping the root, missing audio.
    """
    list_path = Path(path)
    lines = read_lines(list_path)
    resolver = _Resolver(list_path, _resolve_root(list_path, root, check_exists), check_exists)
    out: list[Enrollment] = []
    seen: dict[str, int] = {}
    for line, fields in lines:
        if len(fields) < 2:
            raise DataError(
                f"{_where(list_path, line)}: expected 'model_id path [path ...]', got only '{fields[0]}'"
            )
        model_id = fields[0]
        if model_id in seen:
            raise DataError(
                f"{_where(list_path, line)}: duplicate model '{model_id}' (already on "
                f"line {seen[model_id]}); put all its files on one line"
            )
        seen[model_id] = line
        utts: list[Utterance] = []
        ids: set[str] = set()
        for field in fields[1:]:
            utt = resolver(field, line)
            if utt.utt_id in ids:
                raise DataError(
                    f"{_where(list_path, line)}: file '{field}' listed twice for model '{model_id}'"
                )
            ids.add(utt.utt_id)
            utts.append(utt)
        out.append(Enrollment(model_id=model_id, utterances=tuple(utts)))
    _require_entries(list_path, len(out), "models")
    resolver.raise_problems()
    logger.debug("%s: %d models", list_path, len(out))
    return out


def read_trials(
    path: PathLike,
    *,
    root: PathLike | None = None,
    check_exists: bool = True,
    models: Collection[str] | None = None,
) -> list[Trial]:
    """Read a trial list: ``model_id test_path [target|nontarget]`` per line.

    Parameters
    ----------
    path : path-like
        The list file.
    root : path-like, optional
        Corpus root that relative paths refer to; default the list file's folder.
    check_exists : bool, default True
        Check that every test file exists (and is not a directory).
    models : collection of str, optional
        Known model ids (e.g. from the enrollment list); a trial naming another
        model is an error. ``None`` skips the check.

    Returns
    -------
    list of Trial
        In list order. ``target`` is ``None`` for every trial of an unlabeled list.

    Raises
    ------
    DataError
        Missing or empty list, wrong number of fields, a key other than
        ``target``/``nontarget``, labeled and unlabeled lines mixed, the same
        (model, test) pair twice, unknown models, paths escaping the root, missing
        audio. Unknown models and missing files are each reported all at once.
    """
    list_path = Path(path)
    lines = read_lines(list_path)
    resolver = _Resolver(list_path, _resolve_root(list_path, root, check_exists), check_exists)
    known = None if models is None else frozenset(models)
    out: list[Trial] = []
    seen: dict[tuple[str, str], int] = {}
    unknown: list[tuple[int, str]] = []
    labeled: tuple[bool, int] | None = None  # (has key, first line)
    for line, fields in lines:
        if len(fields) not in (2, 3):
            raise DataError(
                f"{_where(list_path, line)}: expected 'model_id test_path [target|nontarget]', "
                f"got {len(fields)} fields"
            )
        has_key = len(fields) == 3
        if labeled is None:
            labeled = (has_key, line)
        elif labeled[0] != has_key:
            raise DataError(
                f"{_where(list_path, line)}: "
                + ("has a key but line " if has_key else "has no target|nontarget key but line ")
                + f"{labeled[1]} "
                + ("has none" if has_key else "has one")
                + "; label every trial or none"
            )
        target: bool | None = None
        if has_key:
            key = fields[2]
            if key not in _KEYS:
                raise DataError(
                    f"{_where(list_path, line)}: key must be 'target' or 'nontarget', got '{key}'"
                )
            target = _KEYS[key]
        model_id = fields[0]
        if known is not None and model_id not in known:
            unknown.append((line, model_id))
        test = resolver(fields[1], line)
        pair = (model_id, test.utt_id)
        if pair in seen:
            raise DataError(
                f"{_where(list_path, line)}: duplicate trial '{model_id} {fields[1]}' "
                f"(already on line {seen[pair]})"
            )
        seen[pair] = line
        out.append(Trial(model_id=model_id, test=test, target=target, line=line))
    _require_entries(list_path, len(out), "trials")
    if unknown:
        shown = "; ".join(f"{list_path.name}:{ln}: '{m}'" for ln, m in unknown[:MAX_REPORTED])
        more = f"; ... and {len(unknown) - MAX_REPORTED} more" if len(unknown) > MAX_REPORTED else ""
        raise DataError(
            f"{list_path}: {len(unknown)} trial(s) name a model that is not enrolled: {shown}{more}"
        )
    resolver.raise_problems()
    logger.debug("%s: %d trials", list_path, len(out))
    return out


def read_train_list(
    path: PathLike, *, root: PathLike | None = None, check_exists: bool = True
) -> list[Utterance]:
    """Read a speaker-labelled training list: ``path speaker`` per line.

    Paths are resolved as in the other lists (relative to ``root``, normalised but not
    resolved through symbolic links), so a file has one utterance id whichever list
    names it.

    Parameters
    ----------
    path : path-like
        The list file.
    root : path-like, optional
        Corpus root that relative paths refer to; default the list file's folder.
    check_exists : bool, default True
        Check that every audio file exists (and is not a directory).

    Returns
    -------
    list of Utterance
        With ``speaker`` set, in list order.

    Raises
    ------
    DataError
        Missing or empty list, a line without exactly two fields, the same file twice,
        a path escaping the root, missing audio (all at once), fewer than two speakers.
    """
    list_path = Path(path)
    lines = read_lines(list_path)
    resolver = _Resolver(list_path, _resolve_root(list_path, root, check_exists), check_exists)
    out: list[Utterance] = []
    seen: dict[str, int] = {}
    for line, fields in lines:
        if len(fields) != 2:
            raise DataError(f"{_where(list_path, line)}: expected 'path speaker', got {len(fields)} field(s)")
        utt = resolver(fields[0], line)
        if utt.utt_id in seen:
            raise DataError(
                f"{_where(list_path, line)}: duplicate entry '{fields[0]}' (already on line {seen[utt.utt_id]})"
            )
        seen[utt.utt_id] = line
        out.append(Utterance(utt_id=utt.utt_id, path=utt.path, speaker=fields[1]))
    _require_entries(list_path, len(out), "labelled audio paths")
    resolver.raise_problems()
    n_speakers = len({u.speaker for u in out})
    if n_speakers < 2:
        raise DataError(f"{list_path}: the training list needs at least 2 speakers, got {n_speakers}")
    logger.debug("%s: %d labelled utterances of %d speakers", list_path, len(out), n_speakers)
    return out


# --------------------------------------------------------------------------- writers


def _check_field(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise DataError(f"{what} '{value}' is empty or contains white space; lists cannot hold it")
    return value


def write_ubm_list(path: PathLike, paths: Iterable[str]) -> Path:
    """Write a background list (one path per line) atomically.

    Parameters
    ----------
    path : path-like
        Output list file (parent folders are created).
    paths : iterable of str
        Audio paths, normally POSIX paths relative to the corpus root.

    Returns
    -------
    Path
        ``path``.
    """
    out = Path(path)
    lines = [_check_field(str(p), "path") for p in paths]
    if not lines:
        raise DataError(f"{out}: refusing to write an empty background list")
    atomic_write_text(out, "".join(f"{p}\n" for p in lines))
    return out


def write_enroll_list(path: PathLike, models: Mapping[str, Sequence[str]]) -> Path:
    """Write an enrollment list (``model_id path [path ...]``) atomically.

    Parameters
    ----------
    path : path-like
        Output list file.
    models : mapping of str to sequence of str
        Model id -> its enrollment paths, written in mapping order.

    Returns
    -------
    Path
        ``path``.
    """
    out = Path(path)
    rows: list[str] = []
    for model_id, paths in models.items():
        files = [_check_field(str(p), "path") for p in paths]
        if not files:
            raise DataError(f"{out}: model '{model_id}' has no enrollment files")
        rows.append(" ".join([_check_field(model_id, "model id"), *files]) + "\n")
    if not rows:
        raise DataError(f"{out}: refusing to write an empty enrollment list")
    atomic_write_text(out, "".join(rows))
    return out


def write_trials(path: PathLike, trials: Iterable[tuple[str, str, bool | None]]) -> Path:
    """Write a trial list (``model_id test_path [target|nontarget]``) atomically.

    Parameters
    ----------
    path : path-like
        Output list file.
    trials : iterable of (model_id, test_path, target)
        ``target`` is True, False or None (no key column).

    Returns
    -------
    Path
        ``path``.
    """
    out = Path(path)
    rows: list[str] = []
    for model_id, test, target in trials:
        fields = [_check_field(model_id, "model id"), _check_field(str(test), "path")]
        if target is not None:
            fields.append("target" if target else "nontarget")
        rows.append(" ".join(fields) + "\n")
    if not rows:
        raise DataError(f"{out}: refusing to write an empty trial list")
    atomic_write_text(out, "".join(rows))
    return out
