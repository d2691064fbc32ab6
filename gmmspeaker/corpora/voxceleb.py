"""VoxCeleb1: convert the official trial list to gmmspeaker protocol lists.

Expected layout (as extracted from the official archives)::

    root/wav/id10270/x6uYqmx31kE/00001.wav
    root/wav/id10001/1zcIwhmdeo4/00001.wav
    ...

``root`` may also be the ``wav`` folder itself. The official trial lists
(``veri_test.txt``, ``veri_test2.txt``, ``list_test_hard2.txt``, ...) have lines
``label enrol test`` with ``label`` 1 (same speaker) or 0 and paths relative to
``wav/``.

Background (UBM) data: by default every speaker found under ``wav/`` that appears
in no trial. When the dev and test archives are both extracted into ``wav/`` (the
official setup), this is exactly the dev split (1211 speakers for the original
test list), so the background is speaker-disjoint from the evaluation. VoxCeleb1
has no split file inside the audio tree, so "not in the trial list" is the split
rule; pass ``ubm_speakers`` to choose another set.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path, PurePosixPath

from gmmspeaker._typing import PathLike
from gmmspeaker.corpora.lists import MAX_REPORTED, write_enroll_list, write_trials, write_ubm_list
from gmmspeaker.errors import DataError

__all__ = ["prepare_voxceleb1", "read_voxceleb_trials"]

logger = logging.getLogger(__name__)


def _wav_dir(root: Path) -> tuple[Path, str]:
    """Return the audio folder and the prefix of list paths relative to ``root``."""
    if not root.is_dir():
        raise DataError(f"{root}: VoxCeleb1 root not found or not a directory")
    if (root / "wav").is_dir():
        return root / "wav", "wav/"
    if any(p.is_dir() and p.name.startswith("id") for p in root.iterdir()):
        return root, ""
    raise DataError(f"{root}: no 'wav/' folder and no 'idXXXXX' speaker folders; is this VoxCeleb1?")


def _check_rel(path: str, where: str) -> str:
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or len(p.parts) != 3 or p.suffix.lower() != ".wav":
        raise DataError(f"{where}: expected a path 'idXXXXX/<video>/<nnnnn>.wav', got '{path}'")
    return p.as_posix()


def read_voxceleb_trials(trial_list: PathLike) -> list[tuple[str, str, bool]]:
    """Parse an official VoxCeleb trial list.

    Parameters
    ----------
    trial_list : path-like
        File with lines ``label enrol_path test_path`` (label 1 = target, 0 = nontarget).

    Returns
    -------
    list of (enrol_path, test_path, target)
        Paths relative to the ``wav/`` folder, POSIX style, in file order.

    Raises
    ------
    DataError
        Missing or empty file, wrong number of fields, a label other than 0/1, a
        path not of the form ``idXXXXX/<video>/<nnnnn>.wav``, a duplicate trial.
    """
    path = Path(trial_list)
    if not path.is_file():
        raise DataError(f"{path}: VoxCeleb trial list not found")
    out: list[tuple[str, str, bool]] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise DataError(f"{where}: expected 'label enrol_path test_path', got {len(fields)} fields")
        label, enrol, test = fields
        if label not in ("0", "1"):
            raise DataError(f"{where}: label must be 1 (target) or 0 (nontarget), got '{label}'")
        pair = (_check_rel(enrol, where), _check_rel(test, where))
        if pair in seen:
            raise DataError(f"{where}: duplicate trial (already on line {seen[pair]})")
        seen[pair] = number
        out.append((pair[0], pair[1], label == "1"))
    if not out:
        raise DataError(f"{path}: empty VoxCeleb trial list")
    return out


def prepare_voxceleb1(
    root: PathLike,
    trial_list: PathLike,
    out_dir: PathLike,
    *,
    ubm_speakers: Collection[str] | None = None,
) -> dict[str, Path]:
    """Write ``ubm.txt``, ``enroll.txt`` and ``trials.txt`` for VoxCeleb1.

    Parameters
    ----------
    root : path-like
        VoxCeleb1 folder holding ``wav/`` (or the ``wav`` folder itself).
    trial_list : path-like
        Official trial list (``label enrol test``).
    out_dir : path-like
        Where the lists are written (created). List paths are relative to ``root``
        (e.g. ``wav/id10270/x6uYqmx31kE/00001.wav``), so read them with
        ``root=root``.
    ubm_speakers : collection of str, optional
        Speaker ids (``idXXXXX``) whose files form the background list. Default:
        every speaker under ``wav/`` that appears in no trial (the dev split).

    Returns
    -------
    dict of str to Path
        ``{"ubm": ..., "enroll": ..., "trials": ...}``.

    Notes
    -----
    One model per distinct enrolment file: its id is the enrolment path without
    suffix (``id10270/x6uYqmx31kE/00001``) and it is enrolled from that single file.
    Trials keep the order of the official list. The background list is sorted.

    Raises
    ------
    DataError
        Malformed trial list, trial files missing from the tree (all reported),
        unknown or evaluation speakers in ``ubm_speakers``, no background speakers.
    """
    root_p = Path(root)
    wav_dir, prefix = _wav_dir(root_p)
    trials = read_voxceleb_trials(trial_list)

    files = sorted({p for e, t, _ in trials for p in (e, t)})
    missing = [p for p in files if not (wav_dir / p).is_file()]
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:MAX_REPORTED])
        more = f", ... and {len(missing) - MAX_REPORTED} more" if len(missing) > MAX_REPORTED else ""
        raise DataError(
            f"{trial_list}: {len(missing)} of {len(files)} trial files missing under '{wav_dir}': "
            f"{shown}{more}"
        )
    eval_speakers = {PurePosixPath(p).parts[0] for p in files}
    tree_speakers = sorted(p.name for p in wav_dir.iterdir() if p.is_dir())

    if ubm_speakers is None:
        background = [s for s in tree_speakers if s not in eval_speakers]
        if not background:
            raise DataError(
                f"{wav_dir}: every speaker folder appears in the trial list, so there is no "
                "background data; extract the VoxCeleb1 dev archive into the same 'wav/' "
                "folder or pass ubm_speakers"
            )
    else:
        background = sorted(set(ubm_speakers))
        unknown = [s for s in background if s not in set(tree_speakers)]
        if unknown:
            raise DataError(f"{wav_dir}: ubm_speakers not found: {', '.join(unknown[:MAX_REPORTED])}")
        overlap = [s for s in background if s in eval_speakers]
        if overlap:
            raise DataError(
                f"ubm_speakers {', '.join(overlap[:MAX_REPORTED])} also appear in the trials of "
                f"{trial_list}; the background must be speaker-disjoint from the evaluation"
            )
        if not background:
            raise DataError("ubm_speakers is empty")

    ubm_paths: list[str] = []
    for spk in background:
        found = sorted(p.relative_to(wav_dir).as_posix() for p in (wav_dir / spk).glob("*/*.wav"))
        if not found:
            raise DataError(f"{wav_dir / spk}: background speaker folder holds no '<video>/*.wav' files")
        ubm_paths.extend(prefix + p for p in found)

    models: dict[str, list[str]] = {}
    for enrol, _, _ in trials:
        model_id = PurePosixPath(enrol).with_suffix("").as_posix()
        if model_id not in models:
            models[model_id] = [prefix + enrol]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "ubm": write_ubm_list(out / "ubm.txt", ubm_paths),
        "enroll": write_enroll_list(out / "enroll.txt", models),
        "trials": write_trials(
            out / "trials.txt",
            ((PurePosixPath(e).with_suffix("").as_posix(), prefix + t, lab) for e, t, lab in trials),
        ),
    }
    logger.info(
        "VoxCeleb1: %d background files from %d speakers, %d models, %d trials (%d target)",
        len(ubm_paths),
        len(background),
        len(models),
        len(trials),
        sum(lab for _, _, lab in trials),
    )
    return result
