"""LibriSpeech: split speakers into background and targets, write protocol lists.

Expected layout: ``root/<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac``
(``root`` is a subset folder such as ``LibriSpeech/train-clean-100``), or a folder
holding several subsets (``root/<subset>/<speaker>/<chapter>/...``): files are
found recursively. Speakers of LibriSpeech subsets are disjoint.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import numpy as np

from gmmspeaker._io import atomic_write_text
from gmmspeaker._typing import PathLike
from gmmspeaker.corpora.lists import (
    write_enroll_list,
    write_trials,
    write_ubm_list,
)
from gmmspeaker.errors import ConfigError, DataError, SkippedInputWarning

__all__ = ["prepare_librispeech", "scan_librispeech"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d+)-(\d+)-(\d+)\.flac$")


def _speaker_key(spk: str) -> tuple[int, str]:
    return (int(spk), spk) if spk.isdigit() else (1 << 62, spk)


def scan_librispeech(root: PathLike) -> dict[str, list[str]]:
    """Find the LibriSpeech files under ``root``, grouped by speaker.

    Parameters
    ----------
    root : path-like
        A subset folder (``train-clean-100``) or a folder of subsets.

    Returns
    -------
    dict of str to list of str
        Speaker id -> its files as sorted POSIX paths relative to ``root``; speakers
        in numeric order.

    Raises
    ------
    DataError
        ``root`` missing, no ``.flac`` file, or a file whose name does not match its
        ``<speaker>/<chapter>/`` folders.
    """
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"{base}: LibriSpeech root not found or not a directory")
    by_speaker: dict[str, list[str]] = {}
    for path in base.rglob("*.flac"):
        m = _NAME.match(path.name)
        if m is None or m.group(1) != path.parent.parent.name or m.group(2) != path.parent.name:
            raise DataError(
                f"{path}: expected '<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac'; "
                "is this a LibriSpeech tree?"
            )
        by_speaker.setdefault(m.group(1), []).append(path.relative_to(base).as_posix())
    if not by_speaker:
        raise DataError(f"{base}: no .flac files found; point root at e.g. 'LibriSpeech/train-clean-100'")
    return {spk: sorted(by_speaker[spk]) for spk in sorted(by_speaker, key=_speaker_key)}


def prepare_librispeech(
    root: PathLike,
    out_dir: PathLike,
    *,
    seed: int = 0,
    n_enroll: int = 3,
    n_test: int = 5,
    ubm_fraction: float = 0.5,
) -> dict[str, Path]:
    """Write a speaker-disjoint verification protocol for a LibriSpeech tree.

    Speakers (numeric order) are shuffled by ``np.random.default_rng(seed)``; the
    first ``round(ubm_fraction * n_speakers)`` become background speakers, all of
    whose files go to ``ubm.txt``. Each remaining (target) speaker gets
    ``n_enroll`` randomly chosen files for enrollment (model id = speaker id) and
    ``n_test`` other files for testing. Every test file is tried against every
    target model.

    Parameters
    ----------
    root : path-like
        LibriSpeech subset folder (or folder of subsets).
    out_dir : path-like
        Output folder for ``ubm.txt``, ``enroll.txt``, ``trials.txt`` and
        ``speakers.tsv``. List paths are relative to ``root``.
    seed : int, default 0
        Seed of the split and file choice; same seed and tree, same lists.
    n_enroll, n_test : int, default 3 and 5
        Files per target speaker for enrollment and for testing (at least 1 each).
    ubm_fraction : float, default 0.5
        Fraction of speakers used as background, in (0, 1).

    Returns
    -------
    dict of str to Path
        ``{"ubm", "enroll", "trials", "speakers"}`` -> written files.

    Raises
    ------
    ConfigError
        Invalid ``n_enroll``, ``n_test`` or ``ubm_fraction``.
    DataError
        No files, fewer than two speakers, no target speaker with enough files.

    Warns
    -----
    SkippedInputWarning
        Target speakers with fewer than ``n_enroll + n_test`` files are skipped.
    """
    if not (isinstance(n_enroll, int) and n_enroll >= 1):
        raise ConfigError(f"n_enroll must be an integer >= 1, got {n_enroll!r}")
    if not (isinstance(n_test, int) and n_test >= 1):
        raise ConfigError(f"n_test must be an integer >= 1, got {n_test!r}")
    if not 0.0 < float(ubm_fraction) < 1.0:
        raise ConfigError(f"ubm_fraction must be in (0, 1), got {ubm_fraction!r}")

    files = scan_librispeech(root)
    speakers = list(files)
    n = len(speakers)
    n_bg = int(round(ubm_fraction * n))
    if n_bg < 1 or n - n_bg < 1:
        raise DataError(
            f"{root}: {n} speaker(s) cannot be split with ubm_fraction={ubm_fraction} into at "
            "least one background and one target speaker"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    chosen_bg = {speakers[i] for i in perm[:n_bg]}
    background = [s for s in speakers if s in chosen_bg]
    candidates = [s for s in speakers if s not in chosen_bg]

    need = n_enroll + n_test
    enroll: dict[str, list[str]] = {}
    tests: list[tuple[str, str]] = []  # (speaker, path)
    skipped: list[str] = []
    for spk in candidates:
        spk_files = files[spk]
        if len(spk_files) < need:
            skipped.append(spk)
            continue
        idx = rng.choice(len(spk_files), size=need, replace=False)
        enroll[spk] = sorted(spk_files[i] for i in idx[:n_enroll])
        tests.extend((spk, p) for p in sorted(spk_files[i] for i in idx[n_enroll:]))
    if skipped:
        msg = f"{root}: skipped {len(skipped)} target speaker(s) with fewer than {need} files: " + ", ".join(
            skipped[:10]
        )
        logger.warning(msg)
        warnings.warn(msg, SkippedInputWarning, stacklevel=2)
    if not enroll:
        raise DataError(f"{root}: no target speaker has the {need} files needed (n_enroll + n_test)")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ubm_paths = [p for s in background for p in files[s]]
    roles = [(s, "background", len(files[s])) for s in background]
    roles += [(s, "target", len(files[s])) for s in enroll]
    roles += [(s, "skipped", len(files[s])) for s in skipped]
    roles.sort(key=lambda r: _speaker_key(r[0]))
    speakers_tsv = out / "speakers.tsv"
    atomic_write_text(
        speakers_tsv, "speaker\trole\tfiles\n" + "".join(f"{s}\t{r}\t{k}\n" for s, r, k in roles)
    )
    result = {
        "ubm": write_ubm_list(out / "ubm.txt", ubm_paths),
        "enroll": write_enroll_list(out / "enroll.txt", enroll),
        "trials": write_trials(
            out / "trials.txt",
            ((model, path, spk == model) for model in enroll for spk, path in tests),
        ),
        "speakers": speakers_tsv,
    }
    logger.info(
        "LibriSpeech: %d background speakers (%d files), %d models, %d trials",
        len(background),
        len(ubm_paths),
        len(enroll),
        len(enroll) * len(tests),
    )
    return result
