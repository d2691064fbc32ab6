"""User models: the models ``gmmspeaker enroll`` adds to a trained experiment.

**User models live in their own file** per system (``user_models.h5``; in a fusion
``user_models.<system>.h5``), which a recipe run never rewrites. The file records, per
model, the audio it was enrolled from, its speech seconds, when and with which channel it
was enrolled, and what it depends on (:func:`dependencies`); with a model-dependent
normalisation also its Z-norm rows on the cohort. A model whose dependencies changed is
*stale*: :func:`refresh_stale` re-enrols it from its recorded audio, or, when that audio
is gone or unreadable, warns and leaves it out. When the recipe's ``system:`` changes,
:func:`retire_foreign_user_models` moves the user model files of the previous system(s)
into ``user_models.retired/`` and hands their models over for re-enrolment.

:class:`UserModels` keeps these records for an open experiment and adds, replaces and
removes models in the files (atomically, under a lock: two enrol commands at once are
serialised); :func:`combine` puts the fresh user models beside the recipe's (a user model
replaces a recipe model of its id); :func:`list_models` describes them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_write_bytes, temp_path
from gmmspeaker._lock import lock, unlock
from gmmspeaker.errors import GmmSpeakerError, ModelError
from gmmspeaker.serving.results import ModelInfo
from gmmspeaker.systems import NormCohort, TrainedSystem
from gmmspeaker.workdir import Workdir

__all__ = [
    "SystemModels",
    "Records",
    "UserModels",
    "user_lock",
    "dependencies",
    "combine",
    "list_models",
    "refuse_existing",
    "retire_foreign_user_models",
    "refresh_stale",
]

# the serving API's messages keep the logger name users see on the command line
logger = logging.getLogger("gmmspeaker.system")

# what a changed dependency is called in a stale model's note
_DEPENDENCY_NAMES = {
    "ubm": "UBM",
    "features": "feature configuration",
    "map": "MAP settings",
    "norm": "cohort",
}


@contextlib.contextmanager
def user_lock(wd: Workdir) -> Iterator[None]:
    """Serialise writers of the user models files (two enrol commands at once)."""
    with open(wd.user_lock, "a+") as fh:
        lock(fh)
        try:
            yield
        finally:
            unlock(fh)


def _features_hash(features: dict[str, Any], resample: bool) -> str:
    body = json.dumps({"features": features, "resample": resample}, sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:16]


@dataclass
class SystemModels:
    """One system of an experiment with its models: the recipe's, fresh user models, cohort.

    ``models`` and ``model_cohort`` are what verify and identify use (set by :func:`combine`).
    """

    system: TrainedSystem
    recipe_models: Any
    cohort: NormCohort | None
    user_models: Any = None
    user_z: Any = None  # (n_user, n_cohort) Z rows of the user models, or None
    models: Any = None
    model_cohort: NormCohort | None = None


def dependencies(recipe: Any, leaves: Sequence[SystemModels]) -> dict[str, str]:
    """What a user model enrolled now depends on: features, each system's models, its cohort."""
    out = {"features": _features_hash(recipe.features, bool(recipe.data.resample))}
    for leaf in leaves:
        for k, v in leaf.system.dependencies().items():
            out[f"{leaf.system.name}.{k}" if len(leaves) > 1 else k] = v
        out[f"{leaf.system.name}.norm" if len(leaves) > 1 else "norm"] = (
            leaf.cohort.signature if leaf.cohort is not None else "none"
        )
    return out


@dataclass
class Records:
    """The per-model records of one user models file (HDF5 attributes), and its Z rows.

    Each dict maps a model id to: ``audio`` its files, ``deps`` its :func:`dependencies`,
    ``seconds`` its speech seconds, ``info`` ``{"enrolled", "channel"}`` (files of older
    gmmspeaker versions lack ``seconds`` and ``info``). ``z``: (n_models, n_cohort) or None.
    """

    audio: dict[str, Any] = field(default_factory=dict)
    deps: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    z: Any = None

    @classmethod
    def read(cls, path: Path) -> Records:
        """The records of a user models file; ModelError naming it when they are unreadable."""
        import h5py

        try:
            with h5py.File(path, "r") as h5:
                return cls(
                    audio=json.loads(str(h5.attrs["audio"])),
                    deps=json.loads(str(h5.attrs["deps"])),
                    seconds=json.loads(str(h5.attrs.get("seconds", "{}"))),
                    info=json.loads(str(h5.attrs.get("info", "{}"))),
                    z=np.asarray(h5["model_cohort"][()], dtype=np.float64) if "model_cohort" in h5 else None,
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read user model records ({exc})") from None

    def only(self, live: set[str]) -> Records:
        """The records of the models in ``live`` (``z`` is left to the caller)."""
        return Records(
            **{
                k: {m: v for m, v in getattr(self, k).items() if m in live}
                for k in ("audio", "deps", "seconds", "info")
            },
            z=self.z,
        )


def save_user_models(system: TrainedSystem, path: Path, models: Any, records: Records) -> Path:
    """Write a user models file: ``system``'s models, then the records, in one atomic write."""
    import h5py

    quiet = logging.getLogger("gmmspeaker.gmm.speaker_models")
    level = quiet.level
    with temp_path(path) as tmp:
        quiet.setLevel(max(level, logging.WARNING))  # it would log the temporary name
        try:
            system.save_models(models, tmp)
        finally:
            quiet.setLevel(level)
        image = io.BytesIO(tmp.read_bytes())
    # amended in memory and written in one go: a full disk is a one-line error naming
    # the file, never an HDF5 failure half-way (h5py crashed on those)
    with h5py.File(image, "a") as h5:
        h5.attrs["audio"] = json.dumps(records.audio, sort_keys=True)
        h5.attrs["deps"] = json.dumps(records.deps, sort_keys=True)
        h5.attrs["seconds"] = json.dumps(records.seconds, sort_keys=True)
        h5.attrs["info"] = json.dumps(records.info, sort_keys=True)
        if records.z is not None:
            h5.create_dataset("model_cohort", data=np.asarray(records.z, dtype=np.float64))
    atomic_write_bytes(path, image.getbuffer())
    return path


class UserModels:
    """The user models of an open experiment: their records and which are stale.

    Attributes
    ----------
    audio : dict of str to list of str
        Audio each user model was enrolled from.
    seconds : dict of str to float
        Speech seconds each was enrolled from.
    info : dict of str to dict
        ``enrolled`` (UTC, ISO 8601) and ``channel`` of each.
    deps : dict of str to dict
        What each depended on when enrolled (:func:`dependencies`).
    stale : dict of str to str
        Stale model id -> why.
    """

    def __init__(self) -> None:
        self.audio: dict[str, list[str]] = {}
        self.seconds: dict[str, float] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.deps: dict[str, dict[str, str]] = {}
        self.stale: dict[str, str] = {}

    def active(self, model_id: str) -> bool:
        """Whether ``model_id`` is a user model verify and identify use (known and not stale)."""
        return model_id in self.seconds and model_id not in self.stale

    def load(self, wd: Workdir, leaves: Sequence[SystemModels], deps_now: dict[str, str]) -> None:
        """Read each system's user models file into ``leaves`` and mark the stale models."""
        for leaf in leaves:
            path = wd.user_models(leaf.system.name)
            if not path.exists():
                continue
            leaf.user_models = leaf.system.load_models_file(path)
            rec = Records.read(path)
            leaf.user_z = rec.z
            self.audio.update({k: list(v) for k, v in rec.audio.items()})
            self.seconds.update({k: float(v) for k, v in rec.seconds.items()})
            self.info.update({k: dict(v) for k, v in rec.info.items()})
            self.deps.update(rec.deps)
        for mid, deps in self.deps.items():
            changed = sorted(
                {_DEPENDENCY_NAMES.get(k.split(".")[-1], k) for k, v in deps_now.items() if deps.get(k) != v}
            )
            if changed:
                self.stale[mid] = " and ".join(changed) + " changed since it was enrolled"

    def adopt(self, foreign: dict[str, tuple[list[str], dict[str, Any], str]]) -> None:
        """Take the models of retired files (:func:`retire_foreign_user_models`) as stale models."""
        for mid, (audio, info, why) in foreign.items():
            if mid not in self.audio:  # as a stale model of this system, re-enrolled by refresh_stale
                self.audio[mid], self.info[mid], self.stale[mid] = audio, info, why

    def add(
        self,
        wd: Workdir,
        leaves: Sequence[SystemModels],
        model_id: str,
        new: Sequence[tuple[Any, Any]],
        *,
        audio: list[str],
        seconds: float,
        deps: dict[str, str],
        channel: int | str | None,
        replace: bool,
    ) -> tuple[str | None, Path]:
        """Add (or replace) ``model_id`` in every system's user models file, under the lock.

        ``new`` holds, per system, the enrolled model and its Z rows (or None).

        Returns
        -------
        (replaced, path)
            ``"user"`` / ``"recipe"`` / None as in :class:`EnrollResult`; the first file written.
        """
        info_now = {"enrolled": datetime.now(timezone.utc).isoformat(timespec="seconds"), "channel": channel}
        replaced = None
        first_path = None
        with user_lock(wd):
            for leaf, (m, z) in zip(leaves, new):
                s = leaf.system
                path = wd.user_models(s.name)
                old = s.load_models_file(path) if path.exists() else None
                rec = Records.read(path) if old is not None else Records()
                ids = s.model_ids(old) if old is not None else []
                if replaced is None:
                    replaced = (
                        "user"
                        if model_id in ids
                        else ("recipe" if model_id in s.model_ids(leaf.recipe_models) else None)
                    )
                    if replaced and not replace:  # enrolled by another process since the check before
                        raise ModelError(
                            f"model {model_id!r} was enrolled meanwhile; pass --replace to replace it"
                        )
                keep = [i for i, x in enumerate(ids) if x != model_id]
                models = s.concat(s.subset(old, keep) if keep else None, m)
                zz = None
                if z is not None:
                    prev = rec.z[keep] if keep and rec.z is not None else np.zeros((0, z.shape[1]))
                    zz = np.concatenate([prev, np.asarray(z)])
                out = rec.only(set(s.model_ids(models)))
                out.audio[model_id] = audio
                out.deps[model_id] = deps
                out.seconds[model_id] = seconds
                out.info[model_id] = info_now
                out.z = zz
                p = save_user_models(s, path, models, out)
                first_path = first_path or p
                leaf.user_models, leaf.user_z = models, zz
            self.audio[model_id] = audio
            self.seconds[model_id] = seconds
            self.info[model_id] = dict(info_now)
            self.deps[model_id] = deps
        self.stale.pop(model_id, None)
        assert first_path is not None
        return replaced, first_path

    def remove(self, wd: Workdir, leaves: Sequence[SystemModels], model_id: str) -> None:
        """Remove user model ``model_id`` from every system's file (atomically, under the lock).

        Raises
        ------
        ModelError
            ``model_id`` is not a user model (a recipe model is named as such).
        """
        with user_lock(wd):
            found = False
            for leaf in leaves:
                s = leaf.system
                path = wd.user_models(s.name)
                if not path.exists():
                    continue
                old = s.load_models_file(path)
                ids = list(s.model_ids(old))
                if model_id not in ids:
                    continue
                found = True
                rec = Records.read(path)
                keep = [i for i, x in enumerate(ids) if x != model_id]
                if not keep:
                    path.unlink()
                    leaf.user_models, leaf.user_z = None, None
                    continue
                models = s.subset(old, keep)
                out = rec.only(set(ids) - {model_id})
                out.z = rec.z[keep] if rec.z is not None else None
                save_user_models(s, path, models, out)
                leaf.user_models, leaf.user_z = models, out.z
            if not found:
                if model_id in leaves[0].system.model_ids(leaves[0].recipe_models):
                    raise ModelError(
                        f"{wd.path}: {model_id!r} is a recipe model (from the recipe's enroll list), not a "
                        "user model: remove it from the enroll list and run the recipe again"
                    )
                users = sorted(self.audio)
                raise ModelError(
                    f"{wd.path}: no user model {model_id!r} (user models: {', '.join(users) or 'none'})"
                )
        for d in (self.audio, self.seconds, self.info, self.deps, self.stale):
            d.pop(model_id, None)


def combine(leaves: Sequence[SystemModels], stale: dict[str, str]) -> None:
    """Recipe models, with fresh user models added or replacing same-id recipe models.

    Sets each leaf's ``models`` and ``model_cohort`` (the cohort rows follow the models).
    """
    for leaf in leaves:
        s = leaf.system
        user = leaf.user_models
        uids = s.model_ids(user) if user is not None else []
        fresh = [i for i, m in enumerate(uids) if m not in stale]
        fresh_ids = {uids[i] for i in fresh}
        rids = s.model_ids(leaf.recipe_models)
        keep = [i for i, m in enumerate(rids) if m not in fresh_ids]
        base = s.subset(leaf.recipe_models, keep)
        added = s.subset(user, fresh) if fresh else None
        leaf.models = s.concat(base, added)
        leaf.model_cohort = leaf.cohort
        c = leaf.cohort
        if c is not None and c.model_cohort is not None:
            rows = c.model_cohort[keep]
            if fresh:
                rows = np.ma.concatenate([rows, np.ma.MaskedArray(np.asarray(leaf.user_z)[fresh])])
            leaf.model_cohort = c.with_models(s.model_ids(leaf.models), rows)


def list_models(wd: Workdir, recipe: Any, leaf: SystemModels, users: UserModels) -> list[ModelInfo]:
    """Every model of an experiment (its first system): the recipe's, then the users', in file order."""
    s = leaf.system
    user_ids = list(s.model_ids(leaf.user_models)) if leaf.user_models is not None else []
    fresh_user = set(user_ids) - set(users.stale)
    recipe_files = _recipe_enroll_files(wd, recipe)
    recs = wd.stage_fingerprints()
    run_time = None
    for stage in ("enroll", "backend"):
        rec_path = wd.stage_record(stage)
        if rec_path.is_file():
            mtime = rec_path.stat().st_mtime
            run_time = datetime.fromtimestamp(mtime, timezone.utc).isoformat(timespec="seconds")
            break
    out = []
    for mid in s.model_ids(leaf.recipe_models):
        shadowed = mid in fresh_user
        secs = None
        for stage in ("enroll", "backend"):
            if mid in (recs.get(stage, {}).get("speech_seconds") or {}):
                secs = float(recs[stage]["speech_seconds"][mid])
                break
        out.append(
            ModelInfo(
                model_id=mid,
                source="recipe",
                status="replaced" if shadowed else "active",
                files=recipe_files.get(mid, []),
                speech_seconds=secs,
                enrolled=run_time,
                note="a user model of this id replaces it" if shadowed else "",
            )
        )
    for mid in user_ids:
        info = users.info.get(mid, {})
        stale = users.stale.get(mid)
        out.append(
            ModelInfo(
                model_id=mid,
                source="user",
                status="stale" if stale else "active",
                files=list(users.audio.get(mid, [])),
                speech_seconds=users.seconds.get(mid),
                enrolled=info.get("enrolled"),
                channel=info.get("channel"),
                note=stale or "",
            )
        )
    return out


def _recipe_enroll_files(wd: Workdir, recipe: Any) -> dict[str, list[str]]:
    """Recipe model id -> its enrolment audio, from the recipe's enroll list ({} if unknown)."""
    from gmmspeaker.corpora.lists import read_enroll_list

    data = recipe.data
    if data.synthetic:
        path, root = wd.corpus / "enroll.txt", wd.corpus
    elif data.enroll:
        path, root = Path(data.enroll), data.root
    else:
        return {}
    try:
        return {
            e.model_id: [str(u.path) for u in e.utterances]
            for e in read_enroll_list(path, root=root, check_exists=False)
        }
    except GmmSpeakerError as exc:
        logger.info("recipe enrolment files unknown: %s", exc)
        return {}


def refuse_existing(models: Sequence[ModelInfo], model_id: str, workdir: Path) -> None:
    """ModelError when ``model_id`` exists among ``models``, describing the model that would be lost."""
    existing = {m.model_id: m for m in models if m.status != "replaced"}
    m = existing.get(model_id)
    if m is None:
        return
    what = "a recipe model" if m.source == "recipe" else "a user model"
    speech = f", {m.speech_seconds:.1f} s of speech" if m.speech_seconds is not None else ""
    when = f", enrolled {m.enrolled}" if m.enrolled else ""
    raise ModelError(
        f"{workdir}: model {model_id!r} already exists ({what} from {len(m.files)} file(s)"
        f"{speech}{when}); pass --replace (replace=True in Python) to replace it, or choose another id"
    )


def retire_foreign_user_models(
    wd: Workdir, systems: Sequence[TrainedSystem]
) -> dict[str, tuple[list[str], dict[str, Any], str]]:
    """Move user model files of another ``system:`` out of the way; their models' audio.

    A recipe whose ``system:`` changed (``gmm_ubm`` -> ``ivector``, one system -> a fusion)
    leaves user model files this system cannot read (``user_models.h5`` of GMM models for
    an i-vector system) or does not look at (``user_models.<system>.h5`` of a fusion). Each
    is moved into :attr:`Workdir.retired_user_models` (never deleted) and its models are
    returned as ``{model_id: (audio, info, why)}`` for re-enrolment. Call it under
    :func:`user_lock`.
    """
    ours = {wd.user_models(s.name): s for s in systems}
    out: dict[str, tuple[list[str], dict[str, Any], str]] = {}
    for path in sorted(wd.path.glob("user_models*.h5")):
        system = ours.get(path)
        if system is not None:
            try:
                system.load_models_file(path)
                continue
            except (GmmSpeakerError, OSError):
                pass
        rec = Records.read(path)
        wd.retired_user_models.mkdir(exist_ok=True)
        os.replace(path, wd.retired_user_models / path.name)
        why = f"the recipe's system changed to {'+'.join(wd.systems)} since it was enrolled ({path.name})"
        for mid, files in sorted(rec.audio.items()):
            out.setdefault(mid, ([str(f) for f in files], dict(rec.info.get(mid, {})), why))
    return out


def refresh_stale(users: UserModels, workdir: Path, enroll: Callable[..., Any]) -> list[str]:
    """Re-enrol the stale user models from their recorded audio with ``enroll``.

    ``enroll(model_id, audio, replace=True, channel=...)`` is the experiment's. A model whose
    audio is gone or no longer readable is logged as a warning and stays stale; the other
    models are refreshed regardless.

    Returns
    -------
    list of str
        The ids re-enrolled.
    """
    done = []
    for mid, why in sorted(users.stale.items()):
        audio = users.audio.get(mid, [])
        missing = [a for a in audio if not Path(a).is_file()]
        advice = f"re-enrol it with gmmspeaker enroll {workdir} --model {mid} --replace AUDIO..."
        if missing or not audio:
            logger.warning(
                "user model %r is stale (%s) and its audio %s is gone: %s",
                mid,
                why,
                missing[0] if missing else "(none recorded)",
                advice,
            )
            continue
        try:
            enroll(mid, audio, replace=True, channel=users.info.get(mid, {}).get("channel"))
        except GmmSpeakerError as exc:
            logger.warning(
                "user model %r is stale (%s) and re-enrolling it failed (%s): %s", mid, why, exc, advice
            )
            continue
        logger.warning(
            "user model %r was stale (%s): re-enrolled from its %d audio files", mid, why, len(audio)
        )
        done.append(mid)
    return done
