"""Use a trained experiment on new audio: enrol, verify, identify.

A recipe run leaves a workdir (:class:`~gmmspeaker.workdir.Workdir`) with everything its
trained system needs: the resolved recipe (``recipe.json``), the system's models and
back end, the results (EER threshold, calibration) and, when scores are normalised, the
cohort statistics. :class:`Experiment` opens such a workdir, whatever its ``system:``
(GMM-UBM, i-vector or their fusion), and works on audio files directly::

    exp = Experiment.open("exp/demo")
    exp.enroll("alice", ["alice1.wav", "alice2.wav"])
    for r in exp.verify("alice", ["test.wav"]):
        print(r.audio, r.score, r.decision)
    for r in exp.identify(["who.wav"], top_n=3):
        print(r.audio, r.ranking[0])

Enrolment, scoring and normalisation are the trained system's
(:mod:`gmmspeaker.systems`), the same objects the recipe's stages use, so a verified
trial scores what the run's ``scores.txt`` holds.

**User models live in their own file** per system (``user_models.h5``; in a fusion
``user_models.<system>.h5``), which a recipe run never rewrites. The file records, per
model, the audio it was enrolled from, its speech seconds and what it depends on. A
model whose dependencies changed is *stale*: :func:`refresh_user_models` (which
``gmmspeaker run`` calls after its stages) re-enrols it from its recorded audio, or,
when that audio is gone or unreadable, warns and leaves it out; verifying against a
stale model is a :class:`~gmmspeaker.errors.ModelError` that says how to re-enrol.
When the recipe's ``system:`` changes, the user model files of the previous system(s)
move into ``user_models.retired/`` and their models are re-enrolled in the new one.
Enrolling an id that exists (a user model, or a recipe model) needs ``replace=True``
(``--replace``): a user model then replaces it for verify and identify.
:meth:`Experiment.list_models` lists the models (``gmmspeaker models``),
:meth:`Experiment.unenroll` removes a user model (``gmmspeaker unenroll``; a recipe model
it replaced is used again).

**Real-world audio**: a file of another rate is resampled to the system's rate (with a
notice: :func:`gmmspeaker.audio.load_for_system` says why serving resamples rather than
refuses), a multi-channel file is averaged with a warning unless a ``channel`` is chosen,
verify and identify can skip unusable files (``on_bad_audio="skip"``) and an enrolment
file listed twice is used once, with a warning.

**Short enrolment.** The run's EER threshold was set on models enrolled from its own
enrolment lists; a model enrolled from a few seconds scores every trial closer to zero
and would be rejected by it on most of its own speaker's audio. A GMM-UBM run therefore
also measures the EER threshold of models enrolled from less speech (its
``short_enrolment`` stage, :mod:`gmmspeaker.scoring.duration`), and a user model's
default threshold is the one of its enrolment speech; the run's own models keep the
run's threshold and decisions. ``enroll`` and ``verify`` warn when the enrolment or the
test speech is shorter than anything the run's evaluation covered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_write_bytes, temp_path
from gmmspeaker._lock import lock, unlock
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import AudioError, ConfigError, DataError, GmmSpeakerError, ModelError
from gmmspeaker.systems import Fused, NormCohort, Tests, TrainedSystem, build
from gmmspeaker.workdir import Workdir

__all__ = [
    "Experiment",
    "EnrollResult",
    "VerifyResult",
    "IdentifyResult",
    "ModelInfo",
    "refresh_user_models",
]

logger = logging.getLogger(__name__)


def refresh_user_models(workdir: PathLike) -> list[str]:
    """Re-enrol the stale user models of a workdir from their recorded audio.

    Called by the recipe runner after a run. A model whose audio is gone or no longer
    readable is logged as a warning and stays stale (verify then refuses it with advice);
    the other models are refreshed regardless.

    Returns
    -------
    list of str
        The ids re-enrolled.
    """
    if not any(Path(workdir).glob("user_models*.h5")):
        return []
    foreign = _retire_foreign_user_models(Experiment.open(workdir, user_models=False))
    exp = Experiment.open(workdir)
    for mid, (audio, info, why) in foreign.items():
        if mid not in exp.user_audio:  # as a stale model of this system, re-enrolled below
            exp.user_audio[mid], exp.user_info[mid], exp.stale_user_models[mid] = audio, info, why
    done = []
    for mid, why in sorted(exp.stale_user_models.items()):
        audio = exp.user_audio.get(mid, [])
        missing = [a for a in audio if not Path(a).is_file()]
        advice = f"re-enrol it with gmmspeaker enroll {exp.workdir} --model {mid} --replace AUDIO..."
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
            exp.enroll(mid, audio, replace=True, channel=exp.user_info.get(mid, {}).get("channel"))
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


def _retire_foreign_user_models(exp: Experiment) -> dict[str, tuple[list[str], dict[str, Any], str]]:
    """Move user model files of another ``system:`` out of the way; their models' audio.

    A recipe whose ``system:`` changed (``gmm_ubm`` -> ``ivector``, one system -> a fusion)
    leaves user model files this system cannot read (``user_models.h5`` of GMM models for
    an i-vector system) or does not look at (``user_models.<system>.h5`` of a fusion). Each
    is moved into :attr:`Workdir.retired_user_models` (never deleted) and its models are
    returned as ``{model_id: (audio, info, why)}`` for re-enrolment.
    """
    import h5py

    ours = {exp.wd.user_models(s.name): s for s in exp.systems}
    out: dict[str, tuple[list[str], dict[str, Any], str]] = {}
    for path in sorted(exp.wd.path.glob("user_models*.h5")):
        system = ours.get(path)
        if system is not None:
            try:
                system.load_models_file(path)
                continue
            except (GmmSpeakerError, OSError):
                pass
        try:
            with h5py.File(path, "r") as h5:
                audio = json.loads(str(h5.attrs["audio"]))
                info = json.loads(str(h5.attrs.get("info", "{}")))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read user model records ({exc})") from None
        exp.wd.retired_user_models.mkdir(exist_ok=True)
        os.replace(path, exp.wd.retired_user_models / path.name)
        why = f"the recipe's system changed to {'+'.join(exp.wd.systems)} since it was enrolled ({path.name})"
        for mid, files in sorted(audio.items()):
            out.setdefault(mid, ([str(f) for f in files], dict(info.get(mid, {})), why))
    return out


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class EnrollResult:
    """What :meth:`Experiment.enroll` did.

    Attributes
    ----------
    model_id : str
    n_files, n_frames : int
        Audio files and feature frames (after VAD) pooled into the model.
    replaced : str or None
        ``"user"`` when a user model of that id was replaced, ``"recipe"`` when the
        model shadows a recipe model of that id, else None.
    path : Path
        The user models file written (the first system's in a fusion).
    speech_seconds : float
        Speech the model was enrolled from (frames kept by VAD x frame shift).
    duplicates : list of str
        Files listed more than once (each was used once).
    threshold : float or None
        The default threshold :meth:`Experiment.verify` applies to the model (None before
        the run's evaluation).
    """

    model_id: str
    n_files: int
    n_frames: int
    replaced: str | None
    path: Path
    speech_seconds: float = 0.0
    duplicates: list[str] = field(default_factory=list)
    threshold: float | None = None


@dataclass(frozen=True)
class VerifyResult:
    """One verification decision.

    Attributes
    ----------
    audio : str
    model : str
    raw_llr : float
        The raw score (GMM-UBM: frame-averaged LLR against the UBM; i-vector: PLDA LLR or
        cosine; in a fusion: the first system's raw score).
    score : float
        The system score ``scores.txt`` holds: raw normalised as the recipe says, or fused.
    calibrated_llr : float or None
        ``score`` through the experiment's calibration (None without one). For a user
        model enrolled from less speech than the run's models, the score is first moved
        by the run's EER threshold minus the model's default threshold (its duration
        offset, :mod:`gmmspeaker.scoring.duration`), so the calibration, fitted on the
        run's models, sees it where a score of theirs at the same operating point would be.
    threshold : float
        By default the run's EER threshold for the recipe's models and, for a user model,
        the EER threshold of models enrolled from as much speech (:meth:`Experiment.threshold`).
    threshold_source : str
        What the threshold is and which score it applies to.
    decision : str
        ``"accept"`` or ``"reject"``; ``"skipped"`` when the file was unusable and the
        call asked to skip (scores NaN).
    system_scores : dict
        In a fusion, each system's own score.
    error : str or None
        Why a skipped file was skipped.
    """

    audio: str
    model: str
    raw_llr: float
    score: float
    calibrated_llr: float | None
    threshold: float
    threshold_source: str
    decision: str
    system_scores: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        out = {
            "audio": self.audio,
            "model": self.model,
            "raw_llr": self.raw_llr,
            "score": self.score,
            "calibrated_llr": self.calibrated_llr,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "decision": self.decision,
            "error": self.error,
        }
        if self.system_scores:
            out["system_scores"] = dict(self.system_scores)
        return out


@dataclass(frozen=True)
class IdentifyResult:
    """The enrolled models ranked on one audio file.

    Attributes
    ----------
    audio : str
    ranking : list of (model_id, score)
        The ``top_n`` best models, best first (raw scores of one system; fused scores of a fusion).
    decision : str
        The best model's id, or ``"unknown"`` when a threshold is set and its score is below
        it; ``"skipped"`` when the file was unusable and the call asked to skip.
    threshold : float or None
    error : str or None
        Why a skipped file was skipped.
    """

    audio: str
    ranking: list[tuple[str, float]]
    decision: str
    threshold: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``audio``, ``ranking`` ([{"model", "score"}], best first), ``decision``,
        ``threshold``, ``error``."""
        return {
            "audio": self.audio,
            "ranking": [{"model": m, "score": s} for m, s in self.ranking],
            "decision": self.decision,
            "threshold": self.threshold,
            "error": self.error,
        }


@dataclass(frozen=True)
class ModelInfo:
    """One model of an experiment, as :meth:`Experiment.list_models` describes it.

    Attributes
    ----------
    model_id : str
    source : str
        ``"recipe"`` (the run's models, from the recipe's enroll list) or ``"user"``
        (``user_models.h5``, from ``enroll``).
    status : str
        ``"active"`` (used by verify and identify), ``"replaced"`` (a recipe model a user
        model of the same id replaces) or ``"stale"`` (a user model whose UBM, features,
        MAP or cohort changed: re-enrol it).
    files : list of str
        The audio it was enrolled from.
    speech_seconds : float or None
        Speech it was enrolled from (frames kept by the VAD times the frame shift).
    enrolled : str or None
        When (UTC, ISO 8601): the user's enrol call, or the run's enroll stage.
    channel : int, str or None
        The channel asked for at enrolment (user models).
    note : str
        Why a model is stale or replaced ("" otherwise).
    """

    model_id: str
    source: str
    status: str
    files: list[str]
    speech_seconds: float | None
    enrolled: str | None
    channel: int | str | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field, plus ``n_files``."""
        return {
            "model": self.model_id,
            "source": self.source,
            "status": self.status,
            "n_files": len(self.files),
            "files": list(self.files),
            "speech_seconds": None if self.speech_seconds is None else round(self.speech_seconds, 3),
            "enrolled": self.enrolled,
            "channel": self.channel,
            "note": self.note,
        }


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _user_lock(wd: Workdir) -> Iterator[None]:
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
class _Leaf:
    """One system of the experiment with its models: the recipe's, fresh user models, cohort."""

    system: TrainedSystem
    recipe_models: Any
    cohort: NormCohort | None
    user_models: Any = None
    user_z: Any = None  # (n_user, n_cohort) Z rows of the user models, or None
    models: Any = None
    model_cohort: NormCohort | None = None


class Experiment:
    """A trained experiment (a recipe's workdir), used on audio files.

    Open one with :meth:`open`.

    Attributes
    ----------
    workdir : Path
    recipe : Recipe
        The resolved recipe of the run (``recipe.json``).
    system : TrainedSystem
        The experiment's system (a :class:`~gmmspeaker.systems.Fused` of several in a fusion).
    results : dict
        ``results.json``.
    stale_user_models : dict of str to str
        Stale user model id -> why.
    user_audio : dict of str to list of str
        Audio each user model was enrolled from.
    user_seconds : dict of str to float
        Speech seconds each user model was enrolled from.
    user_info : dict of str to dict
        Per user model: ``enrolled`` (UTC, ISO 8601) and ``channel`` (files of older
        gmmspeaker versions lack them).
    """

    def __init__(self) -> None:  # use Experiment.open
        self.wd = Workdir(".")
        self.recipe: Any = None
        self.system: Any = None
        self.results: dict[str, Any] = {}
        self.stale_user_models: dict[str, str] = {}
        self.user_audio: dict[str, list[str]] = {}
        self.user_seconds: dict[str, float] = {}
        self.user_info: dict[str, dict[str, Any]] = {}
        self._user_deps: dict[str, dict[str, str]] = {}
        self._leaves: list[_Leaf] = []

    @property
    def workdir(self) -> Path:
        return self.wd.path

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, workdir: PathLike, *, user_models: bool = True) -> Experiment:
        """Open a workdir written by ``gmmspeaker run``.

        Parameters
        ----------
        workdir : path-like
        user_models : bool, default True
            Also load the models enrolled with ``gmmspeaker enroll`` (False: the recipe's alone).

        Raises
        ------
        ModelError
            The workdir lacks a file its system needs, or holds outputs of stages run
            from older inputs (a partial rerun): the message names the file and the fix.
        """
        from gmmspeaker.recipe.config import Recipe

        path = Path(workdir)
        if not path.is_dir():
            raise ModelError(f"{path}: no such experiment folder (run a recipe first: gmmspeaker run RECIPE)")
        wd = Workdir(path)
        if not wd.recipe.is_file():
            raise ModelError(
                f"{wd.recipe}: not found; this workdir was trained by an older gmmspeaker or a run that "
                f"did not finish: run its recipe again (gmmspeaker run RECIPE --workdir {path})"
            )
        raw = wd.read_json(wd.recipe, what="resolved recipe")
        try:
            recipe = Recipe.from_dict(raw)
        except (GmmSpeakerError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{wd.recipe}: unreadable resolved recipe ({exc}); run the recipe again"
            ) from None
        return cls.load(path, recipe, user_models=user_models)

    @classmethod
    def load(
        cls, workdir: PathLike, recipe: Any, *, check_stale: bool = True, user_models: bool = True
    ) -> Experiment:
        """An experiment of ``recipe`` in ``workdir`` (:meth:`open` reads the recipe from the workdir)."""
        exp = cls()
        exp.wd = Workdir(workdir, recipe.system)
        exp.recipe = recipe
        if check_stale:
            stale = exp.wd.stale_stages(exp._stage_names())
            if stale:
                s, inp = stale[0]
                raise ModelError(
                    f"{exp.wd.stage_record(s)}: the {s} stage's outputs were computed before its input "
                    f"stage {inp} was rerun (a partial run, --until-stage?): run the recipe to the end "
                    f"(gmmspeaker run RECIPE --workdir {exp.workdir})"
                )
        if exp.wd.results.is_file():
            exp.results = exp.wd.read_json(exp.wd.results, what="results")
        exp.system = build(exp.wd, recipe)
        for s in exp.systems:
            s._results = exp.results
            models = s.load_models()
            exp._leaves.append(_Leaf(system=s, recipe_models=models, cohort=s.load_cohort(models)))
        if user_models:
            exp._load_user()
        exp._combine()
        return exp

    def _stage_names(self) -> set[str]:
        """The recipe stages this experiment's system was trained by."""
        names = {"features", "ubm", "evaluate"}
        system = build(self.wd, self.recipe)
        for s in [system, *getattr(system, "systems", [])]:
            names.update(s.stages)
        return names

    @property
    def systems(self) -> list[TrainedSystem]:
        """The systems scored (several in a fusion)."""
        return list(self.system.systems) if isinstance(self.system, Fused) else [self.system]

    @property
    def normalization(self) -> str:
        """The score normalisation of a one-system experiment (``"fusion"`` for a fusion)."""
        return "fusion" if isinstance(self.system, Fused) else self.system.normalization

    @property
    def models(self) -> Any:
        """The usable models of the (first) system: the recipe's, with fresh user models added."""
        return self._leaves[0].models

    @property
    def model_ids(self) -> list[str]:
        return list(self._leaves[0].system.model_ids(self._leaves[0].models))

    # -- user models -------------------------------------------------------------
    def _deps(self) -> dict[str, str]:
        """What a user model enrolled now depends on."""
        r = self.recipe
        out = {"features": _features_hash(r.features, bool(r.data.resample))}
        for leaf in self._leaves:
            for k, v in leaf.system.dependencies().items():
                out[f"{leaf.system.name}.{k}" if len(self._leaves) > 1 else k] = v
            out[f"{leaf.system.name}.norm" if len(self._leaves) > 1 else "norm"] = (
                leaf.cohort.signature if leaf.cohort is not None else "none"
            )
        return out

    def _load_user(self) -> None:
        import h5py

        names = {"ubm": "UBM", "features": "feature configuration", "map": "MAP settings", "norm": "cohort"}
        for leaf in self._leaves:
            path = self.wd.user_models(leaf.system.name)
            if not path.exists():
                continue
            leaf.user_models = leaf.system.load_models_file(path)
            try:
                with h5py.File(path, "r") as h5:
                    audio = json.loads(str(h5.attrs["audio"]))
                    deps = json.loads(str(h5.attrs["deps"]))
                    seconds = json.loads(str(h5.attrs.get("seconds", "{}")))
                    info = json.loads(str(h5.attrs.get("info", "{}")))
                    if "model_cohort" in h5:
                        leaf.user_z = np.asarray(h5["model_cohort"][()], dtype=np.float64)
            except (OSError, KeyError, ValueError) as exc:
                raise ModelError(f"{path}: cannot read user model records ({exc})") from None
            self.user_audio.update({k: list(v) for k, v in audio.items()})
            self.user_seconds.update({k: float(v) for k, v in seconds.items()})
            self.user_info.update({k: dict(v) for k, v in info.items()})
            self._user_deps.update(deps)
        now = self._deps()
        for mid, deps in self._user_deps.items():
            changed = sorted({names.get(k.split(".")[-1], k) for k, v in now.items() if deps.get(k) != v})
            if changed:
                self.stale_user_models[mid] = " and ".join(changed) + " changed since it was enrolled"

    def _combine(self) -> None:
        """Recipe models, with fresh user models added or replacing same-id recipe models."""
        for leaf in self._leaves:
            s = leaf.system
            user = leaf.user_models
            uids = s.model_ids(user) if user is not None else []
            fresh = [i for i, m in enumerate(uids) if m not in self.stale_user_models]
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

    def _save_user(
        self,
        leaf: _Leaf,
        models: Any,
        z: Any,
        audio: dict[str, Any],
        deps: dict[str, Any],
        seconds: dict[str, Any],
        info: dict[str, Any],
    ) -> Path:
        import io

        import h5py

        final = self.wd.user_models(leaf.system.name)
        quiet = logging.getLogger("gmmspeaker.gmm.speaker_models")
        level = quiet.level
        with temp_path(final) as tmp:
            quiet.setLevel(max(level, logging.WARNING))  # it would log the temporary name
            try:
                leaf.system.save_models(models, tmp)
            finally:
                quiet.setLevel(level)
            image = io.BytesIO(tmp.read_bytes())
        # amended in memory and written in one go: a full disk is a one-line error naming
        # the file, never an HDF5 failure half-way (h5py crashed on those)
        with h5py.File(image, "a") as h5:
            h5.attrs["audio"] = json.dumps(audio, sort_keys=True)
            h5.attrs["deps"] = json.dumps(deps, sort_keys=True)
            h5.attrs["seconds"] = json.dumps(seconds, sort_keys=True)
            h5.attrs["info"] = json.dumps(info, sort_keys=True)
            if z is not None:
                h5.create_dataset("model_cohort", data=np.asarray(z, dtype=np.float64))
        atomic_write_bytes(final, image.getbuffer())
        return final

    # -- features ----------------------------------------------------------------
    def features(self, path: PathLike, *, channel: int | str | None = None) -> FloatArray:
        """Feature frames of one audio file, with the experiment's configuration.

        A file of another sampling rate is resampled to the system's (logged); a
        multi-channel file is averaged (with a warning) unless ``channel`` picks one
        (0 = first) or is ``"mix"``. See :func:`gmmspeaker.audio.load_for_system`.

        Returns
        -------
        ndarray, shape (n_frames, dim), float32

        Raises
        ------
        AudioError, DataError
            Unreadable or unusable audio, or no frames kept (the message names the file).
        """
        from gmmspeaker.audio import load_for_system
        from gmmspeaker.features import FeatureConfig, extract

        cfg = FeatureConfig.from_dict(self.recipe.features, source=f"{self.wd.recipe}: features")
        signal, source = load_for_system(
            path, sample_rate=cfg.sample_rate, channel=channel, min_samples=cfg.frame_length_samples
        )
        for level, message in source.notices():
            logger.log(level, "%s", message)
        frames = extract(signal, cfg, name=str(path)).frames
        if frames.shape[0] == 0:
            raise DataError(f"{path}: no feature frames left after voice activity detection")
        return np.ascontiguousarray(frames, dtype=np.float32)

    def _frame_shift(self) -> float:
        from gmmspeaker.features import FeatureConfig

        return float(FeatureConfig.from_dict(self.recipe.features).frame_shift)

    # -- enrol -------------------------------------------------------------------
    def enroll(
        self,
        model_id: str,
        paths: Sequence[PathLike],
        *,
        replace: bool = False,
        channel: int | str | None = None,
    ) -> EnrollResult:
        """Enrol a model from audio files in every system and add it to the user models (atomically).

        Parameters
        ----------
        model_id : str
            A new id, or (with ``replace``) an existing one: a user model of that id is
            replaced, a recipe model of that id is replaced for verify and identify (the
            run's models file is left as it is); the result says which.
        paths : sequence of path-like
            Audio files, pooled, of any rate. A file listed twice (under any spelling of
            its path) is used once, with a warning.
        replace : bool
            Allow replacing an existing model.
        channel : int, "mix" or None
            Channel of multi-channel files (see :meth:`features`).

        Raises
        ------
        DataError
            No files, or an id with whitespace.
        ModelError
            The id exists and ``replace`` is false.
        AudioError
            An unreadable file (named).
        """
        from gmmspeaker.audio import unique_paths

        model_id = str(model_id)
        if not model_id or any(c.isspace() for c in model_id):
            raise DataError(f"model id {model_id!r} must be non-empty and without spaces")
        if not paths:
            raise DataError(f"model {model_id!r}: no audio files to enrol from")
        if not replace:
            self._refuse_existing(model_id)
        paths, dups = unique_paths(list(paths))
        for d in dups:
            logger.warning("%s: listed more than once for model %r; used once", d, model_id)
        frames = [self.features(p, channel=channel) for p in paths]
        n_frames = int(sum(x.shape[0] for x in frames))
        seconds = round(n_frames * self._frame_shift(), 3)
        new = []
        for leaf in self._leaves:
            m = leaf.system.enrol([model_id], [frames])
            z = None
            if leaf.cohort is not None and leaf.cohort.model_cohort is not None:
                z = leaf.system.z_rows(m, leaf.cohort)
            new.append((m, z))
        audio = [str(Path(p).resolve()) for p in paths]
        deps_now = self._deps()
        info_now = {"enrolled": datetime.now(timezone.utc).isoformat(timespec="seconds"), "channel": channel}
        replaced = None
        with _user_lock(self.wd):
            first_path = None
            for leaf, (m, z) in zip(self._leaves, new):
                s = leaf.system
                path = self.wd.user_models(s.name)
                old = s.load_models_file(path) if path.exists() else None
                old_z = None
                rec_audio: dict[str, Any] = {}
                rec_deps: dict[str, Any] = {}
                rec_sec: dict[str, Any] = {}
                rec_info: dict[str, Any] = {}
                if old is not None:
                    import h5py

                    with h5py.File(path, "r") as h5:
                        rec_audio = json.loads(str(h5.attrs["audio"]))
                        rec_deps = json.loads(str(h5.attrs["deps"]))
                        rec_sec = json.loads(str(h5.attrs.get("seconds", "{}")))
                        rec_info = json.loads(str(h5.attrs.get("info", "{}")))
                        old_z = np.asarray(h5["model_cohort"][()]) if "model_cohort" in h5 else None
                ids = s.model_ids(old) if old is not None else []
                if replaced is None:
                    replaced = (
                        "user"
                        if model_id in ids
                        else ("recipe" if model_id in s.model_ids(leaf.recipe_models) else None)
                    )
                    if replaced and not replace:  # enrolled by another process since the check above
                        raise ModelError(
                            f"model {model_id!r} was enrolled meanwhile; pass --replace to replace it"
                        )
                keep = [i for i, x in enumerate(ids) if x != model_id]
                models = s.concat(s.subset(old, keep) if keep else None, m)
                zz = None
                if z is not None:
                    prev = old_z[keep] if keep and old_z is not None else np.zeros((0, z.shape[1]))
                    zz = np.concatenate([prev, np.asarray(z)])
                live = set(s.model_ids(models))
                rec_audio = {k: v for k, v in rec_audio.items() if k in live} | {model_id: audio}
                rec_deps = {k: v for k, v in rec_deps.items() if k in live} | {model_id: deps_now}
                rec_sec = {k: v for k, v in rec_sec.items() if k in live} | {model_id: seconds}
                rec_info = {k: v for k, v in rec_info.items() if k in live} | {model_id: info_now}
                p = self._save_user(leaf, models, zz, rec_audio, rec_deps, rec_sec, rec_info)
                first_path = first_path or p
                leaf.user_models, leaf.user_z = models, zz
            self.user_audio[model_id] = audio
            self.user_seconds[model_id] = seconds
            self.user_info[model_id] = dict(info_now)
            self._user_deps[model_id] = deps_now
        self.stale_user_models.pop(model_id, None)
        self._combine()
        if replaced == "user":
            logger.info("model %r re-enrolled: the previous user model of that id is replaced", model_id)
        elif replaced == "recipe":
            logger.info("model %r enrolled: it replaces the recipe's model of that id", model_id)
        assert first_path is not None
        self._warn_short_enrolment(model_id)
        thr = self.threshold(model_id) if "eer_threshold" in self.results else None
        return EnrollResult(
            model_id,
            len(paths),
            n_frames,
            replaced,
            first_path,
            seconds,
            duplicates=[str(d) for d in dups],
            threshold=thr,
        )

    # -- short enrolment -------------------------------------------------------------
    def _is_user_model(self, model_id: str) -> bool:
        return model_id in self.user_seconds and model_id not in self.stale_user_models

    def _short_enrolment(self) -> Any:
        return None if isinstance(self.system, Fused) else self.system.short_enrolment()

    def _warn_short_enrolment(self, model_id: str) -> None:
        """Warn when a user model's enrolment speech is below what the run's evaluation covered."""
        if not self._is_user_model(model_id):
            return
        seconds = self.user_seconds[model_id]
        dt = self._short_enrolment()
        if dt is not None:
            covered = dt.shortest_seconds
        else:  # not measured: the run's own models are what it covered
            rec = self.wd.stage_fingerprints()
            known = [
                float(v)
                for st in ("enroll", "backend")
                for v in (rec.get(st, {}).get("speech_seconds") or {}).values()
            ]
            if not known:
                return
            covered = min(known)
        if seconds < covered:
            logger.warning(
                "model %r: enrolled from %.2f s of speech, below the %.2f s the run's evaluation covered; "
                "its accept/reject decisions are less reliable: enrol it from more audio%s",
                model_id,
                seconds,
                covered,
                ""
                if dt is not None or isinstance(self.system, Fused)
                else " (or run the recipe again: this workdir's evaluation predates the thresholds "
                "for short enrolment)",
            )

    def _refuse_existing(self, model_id: str) -> None:
        """ModelError when ``model_id`` exists, describing the model that would be lost."""
        existing = {m.model_id: m for m in self.list_models() if m.status != "replaced"}
        m = existing.get(model_id)
        if m is None:
            return
        what = "a recipe model" if m.source == "recipe" else "a user model"
        speech = f", {m.speech_seconds:.1f} s of speech" if m.speech_seconds is not None else ""
        when = f", enrolled {m.enrolled}" if m.enrolled else ""
        raise ModelError(
            f"{self.workdir}: model {model_id!r} already exists ({what} from {len(m.files)} file(s)"
            f"{speech}{when}); pass --replace (replace=True in Python) to replace it, or choose another id"
        )

    def list_models(self) -> list[ModelInfo]:
        """Every model of the experiment: the recipe's, then the users', in file order.

        Returns
        -------
        list of ModelInfo
            Files, speech seconds, when enrolled and status (active, replaced, stale).
        """
        leaf = self._leaves[0]
        s = leaf.system
        user_ids = list(s.model_ids(leaf.user_models)) if leaf.user_models is not None else []
        fresh_user = set(user_ids) - set(self.stale_user_models)
        recipe_files = self._recipe_enroll_files()
        recs = self.wd.stage_fingerprints()
        run_time = None
        for stage in ("enroll", "backend"):
            rec_path = self.wd.stage_record(stage)
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
            info = self.user_info.get(mid, {})
            stale = self.stale_user_models.get(mid)
            out.append(
                ModelInfo(
                    model_id=mid,
                    source="user",
                    status="stale" if stale else "active",
                    files=list(self.user_audio.get(mid, [])),
                    speech_seconds=self.user_seconds.get(mid),
                    enrolled=info.get("enrolled"),
                    channel=info.get("channel"),
                    note=stale or "",
                )
            )
        return out

    def _recipe_enroll_files(self) -> dict[str, list[str]]:
        """Recipe model id -> its enrolment audio, from the recipe's enroll list ({} if unknown)."""
        from gmmspeaker.corpora.lists import read_enroll_list

        data = self.recipe.data
        if data.synthetic:
            path, root = self.wd.corpus / "enroll.txt", self.wd.corpus
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

    def unenroll(self, model_id: str) -> str | None:
        """Remove a user model from every system (atomically; other user models are kept).

        Returns
        -------
        str or None
            The id of the recipe model that is used again (the removed user model had
            replaced it), else None.

        Raises
        ------
        ModelError
            ``model_id`` is not a user model (a recipe model is named as such: it comes
            from the recipe's enroll list, remove it there and run the recipe again).
        """
        import h5py

        model_id = str(model_id)
        with _user_lock(self.wd):
            found = False
            for leaf in self._leaves:
                s = leaf.system
                path = self.wd.user_models(s.name)
                if not path.exists():
                    continue
                old = s.load_models_file(path)
                ids = list(s.model_ids(old))
                if model_id not in ids:
                    continue
                found = True
                with h5py.File(path, "r") as h5:
                    rec = {
                        k: json.loads(str(h5.attrs.get(k, "{}")))
                        for k in ("audio", "deps", "seconds", "info")
                    }
                    old_z = np.asarray(h5["model_cohort"][()]) if "model_cohort" in h5 else None
                keep = [i for i, x in enumerate(ids) if x != model_id]
                if not keep:
                    path.unlink()
                    leaf.user_models, leaf.user_z = None, None
                    continue
                models = s.subset(old, keep)
                z = old_z[keep] if old_z is not None else None
                rec = {k: {m: v for m, v in d.items() if m != model_id} for k, d in rec.items()}
                self._save_user(leaf, models, z, rec["audio"], rec["deps"], rec["seconds"], rec["info"])
                leaf.user_models, leaf.user_z = models, z
            if not found:
                recipe_ids = self._leaves[0].system.model_ids(self._leaves[0].recipe_models)
                if model_id in recipe_ids:
                    raise ModelError(
                        f"{self.workdir}: {model_id!r} is a recipe model (from the recipe's enroll list), not a "
                        "user model: remove it from the enroll list and run the recipe again"
                    )
                users = sorted(self.user_audio)
                raise ModelError(
                    f"{self.workdir}: no user model {model_id!r} (user models: {', '.join(users) or 'none'})"
                )
        for d in (
            self.user_audio,
            self.user_seconds,
            self.user_info,
            self._user_deps,
            self.stale_user_models,
        ):
            d.pop(model_id, None)
        self._combine()
        restored = model_id if model_id in self.model_ids else None
        logger.debug(
            "user model %r removed%s", model_id, " (the recipe's model is used again)" if restored else ""
        )
        return restored

    # -- scoring -------------------------------------------------------------------
    def _check_model(self, model_id: str) -> None:
        if model_id in self.stale_user_models:
            raise ModelError(
                f"model {model_id!r} in {self.wd.user_models(self.systems[0].name)} is stale "
                f"({self.stale_user_models[model_id]}); re-enrol it: "
                f"gmmspeaker enroll {self.workdir} --model {model_id} --replace AUDIO..."
            )
        if model_id not in self.model_ids:
            known = self.model_ids
            shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise ModelError(f"{self.workdir}: unknown model id {model_id!r} (enrolled: {shown})")

    def _audio_tests(
        self, paths: Sequence[PathLike], *, channel: int | str | None = None, on_bad_audio: str = "error"
    ) -> tuple[Tests, dict[int, str]]:
        """The usable files as tests, and ``{position: error}`` of those skipped (``on_bad_audio="skip"``)."""
        if on_bad_audio not in ("error", "skip"):
            raise ConfigError(f"on_bad_audio must be 'error' or 'skip', got {on_bad_audio!r}")
        ids, source, kept, errors = [], {}, [], {}
        for i, p in enumerate(paths):
            try:
                X = self.features(p, channel=channel)
            except (AudioError, DataError) as exc:
                if on_bad_audio != "skip":
                    raise
                logger.warning("skipped %s", exc)
                errors[i] = str(exc)
                continue
            u = f"audio{i}:{p}"
            ids.append(u)
            source[u] = X
            kept.append(str(p))
        return Tests(ids=ids, source=source, paths=kept), errors

    def score_trials(
        self, trials: Sequence[tuple[str, str]], tests_for: Callable[[TrainedSystem], Tests]
    ) -> tuple[FloatArray, FloatArray, dict[str, FloatArray]]:
        """(raw of the first system, system score, each system's score) of ``(model_id, test_id)`` pairs.

        ``tests_for(system)`` gives the tests as that system takes them.
        """
        scored, tests, cohorts = [], [], []
        for leaf in self._leaves:
            s = leaf.system
            t = s.represent(tests_for(s))
            raw = s.score_trials(leaf.models, trials, t)
            own = s.normalization
            score = s.normalise(raw, trials, t, leaf.model_cohort, method=own) if own != "none" else raw
            scored.append((raw, score))
            tests.append(t)
            cohorts.append(leaf.model_cohort)
        per = {leaf.system.name: sc for leaf, (_, sc) in zip(self._leaves, scored)}
        if isinstance(self.system, Fused):
            columns = self.system.columns(scored, trials, tests, cohorts)
            return scored[0][0], self.system.combine(columns), per
        return scored[0][0], scored[0][1], per

    def score_matrix(self, tests_for: Callable[[TrainedSystem], Tests]) -> FloatArray:
        """Every model on every test, (n_models, n_tests): raw scores of one system, fused scores of a fusion.

        What :meth:`identify` ranks and the recipe's identification evaluation measures.
        """
        if not isinstance(self.system, Fused):
            leaf = self._leaves[0]
            return leaf.system.score_matrix(leaf.models, leaf.system.represent(tests_for(leaf.system)))
        ids = self.model_ids
        test_ids = tests_for(self._leaves[0].system).ids
        trials = [(m, u) for u in test_ids for m in ids]
        _, fused, _ = self.score_trials(trials, tests_for)
        return fused.reshape(len(test_ids), len(ids)).T

    def calibration(self) -> Any | None:
        """The run's :class:`~gmmspeaker.scoring.calibration.LinearCalibration`, or None."""
        return self.system.calibration()

    def eer_threshold(self) -> float:
        """The EER threshold of the experiment's own trial scores (``scores.txt``)."""
        return self.threshold()

    def speech_seconds(self, model_id: str) -> float | None:
        """Seconds of speech a model was enrolled from (None when unknown)."""
        if model_id in self.user_seconds and model_id not in self.stale_user_models:
            return self.user_seconds[model_id]
        for stage in ("enroll", "backend"):
            rec = self.wd.stage_fingerprints().get(stage, {})
            if model_id in (rec.get("speech_seconds") or {}):
                return float(rec["speech_seconds"][model_id])
        return None

    def threshold(self, model_id: str | None = None) -> float:
        """The default decision threshold for ``model_id`` (the system's; see :meth:`TrainedSystem.threshold`)."""
        if "eer_threshold" not in self.results:
            from gmmspeaker.scoring.metrics import eer_threshold
            from gmmspeaker.scoring.trials import read_scores

            _, s, keys = read_scores(self.wd.scores(None))
            key = np.array([k is True for k in keys])
            known = np.array([k is not None for k in keys])
            if not known.any():
                raise ModelError(f"{self.wd.scores(None)}: no keyed trials to set an EER threshold")
            return eer_threshold(s[known & key], s[known & ~key])
        # the run's own models keep the run's threshold; a user model's follows its enrolment speech
        secs = self.user_seconds[model_id] if model_id is not None and self._is_user_model(model_id) else None
        return self.system.threshold(model_id, speech_seconds=secs)

    def verify(
        self,
        model_id: str,
        paths: Sequence[PathLike],
        *,
        threshold: float | None = None,
        p_target: float | None = None,
        channel: int | str | None = None,
        on_bad_audio: str = "error",
    ) -> list[VerifyResult]:
        """Score audio files against one model and decide.

        Parameters
        ----------
        model_id : str
        paths : sequence of path-like
            Audio files, of any rate (resampled to the system's, see :meth:`features`).
        threshold : float, optional
            Accept when ``score >= threshold`` (``score`` as in :class:`VerifyResult`).
        p_target : float, optional
            Accept when the calibrated LLR reaches the Bayes threshold
            ``-logit(p_target)`` (needs a calibration: ``data.dev_trials``).
            Default (neither given): the system's threshold for the model (the EER
            threshold of the experiment's own trials), applied to ``score``.
        channel : int, "mix" or None
            Channel of multi-channel files (see :meth:`features`).
        on_bad_audio : {"error", "skip"}
            ``"skip"``: an unusable file (unreadable, silent, too short, no speech) gives a
            result with decision ``"skipped"`` and its ``error``, and the others are
            scored; ``"error"``: it raises and nothing is returned.

        Raises
        ------
        ModelError
            Unknown or stale model id, or ``p_target`` without a calibration.
        ConfigError
            Both ``threshold`` and ``p_target``, or ``p_target`` outside (0, 1).
        AudioError
            An unreadable file (named).
        """
        if threshold is not None and p_target is not None:
            raise ConfigError("give a threshold or a p_target, not both")
        self._check_model(model_id)
        cal = self.calibration()
        if p_target is not None:
            if not 0.0 < p_target < 1.0 or math.isnan(p_target):
                raise ConfigError(f"p_target must be in (0, 1), got {p_target}")
            if cal is None:
                raise ModelError(
                    f"{self.workdir}: no calibration (the recipe has no data.dev_trials), so --p-target "
                    f"has no calibrated score to apply to; use --threshold or the default EER threshold"
                )
            from gmmspeaker.scoring.metrics import bayes_threshold

            thr = bayes_threshold(p_target)
            source = f"Bayes threshold -logit({p_target:g}) on the calibrated LLR"
        elif threshold is not None:
            thr, source = float(threshold), "given threshold on the score"
        else:
            thr = self.threshold(model_id)
            source = "EER threshold of the experiment's trials on the score"
        shift = 0.0  # a short user model: its duration offset (the calibration is the run's models')
        if "eer_threshold" in self.results and self._is_user_model(model_id):
            shift = self.threshold(model_id) - self.threshold()
            if threshold is None and p_target is None and shift != 0.0:
                source = (
                    f"EER threshold of the experiment's trials for models enrolled from "
                    f"{self.user_seconds[model_id]:.2f} s of speech (its models': {self.threshold():.4f}) "
                    f"on the score"
                )
        self._warn_short_enrolment(model_id)
        tests, errors = self._audio_tests(paths, channel=channel, on_bad_audio=on_bad_audio)
        dt = self._short_enrolment()
        if dt is not None:
            for u, p in zip(tests.ids, tests.paths or []):
                sec = tests.source[u].shape[0] * self._frame_shift()
                if sec < dt.test_seconds_min:
                    logger.warning(
                        "%s: %.2f s of speech, below the %.2f s of the shortest test the run's evaluation "
                        "covered; its decision is less reliable",
                        p,
                        sec,
                        dt.test_seconds_min,
                    )
        trials = [(model_id, u) for u in tests.ids]
        if trials:
            raw, score, per = self.score_trials(trials, lambda s: tests)
        out = []
        j = -1
        for p_i, p in enumerate(paths):
            if p_i in errors:
                nan = float("nan")
                out.append(
                    VerifyResult(
                        str(p), model_id, nan, nan, None, float(thr), source, "skipped", error=errors[p_i]
                    )
                )
                continue
            j += 1
            i = j
            calibrated = float(cal(np.array([score[i] - shift]))[0]) if cal is not None else None
            value = calibrated if p_target is not None else float(score[i])
            out.append(
                VerifyResult(
                    audio=str(p),
                    model=model_id,
                    raw_llr=float(raw[i]),
                    score=float(score[i]),
                    calibrated_llr=calibrated,
                    threshold=float(thr),
                    threshold_source=source,
                    decision="accept" if value is not None and value >= thr else "reject",
                    system_scores={k: float(v[i]) for k, v in per.items()} if len(per) > 1 else {},
                )
            )
        return out

    def identify(
        self,
        paths: Sequence[PathLike],
        *,
        top_n: int = 5,
        threshold: float | None = None,
        channel: int | str | None = None,
        on_bad_audio: str = "error",
    ) -> list[IdentifyResult]:
        """Rank every enrolled model on each audio file.

        One system: by raw score (all models of a system share its UBM / back end, so raw
        scores compare across models); a fusion: by fused score.

        Parameters
        ----------
        paths : sequence of path-like
        top_n : int, default 5
            Models listed per file.
        threshold : float, optional
            Open-set rejection: the decision is ``"unknown"`` when the best score is below it.
        channel, on_bad_audio
            As for :meth:`verify`.
        """
        if isinstance(top_n, bool) or int(top_n) != top_n or top_n < 1:
            raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")
        ids = self.model_ids
        out = []
        for p in paths:
            tests, errors = self._audio_tests([p], channel=channel, on_bad_audio=on_bad_audio)
            if errors:
                out.append(IdentifyResult(str(p), [], "skipped", threshold, error=errors[0]))
                continue
            s = self.score_matrix(lambda system, t=tests: t)[:, 0]
            order = np.argsort(-s, kind="stable")[: int(top_n)]
            ranking = [(ids[i], float(s[i])) for i in order]
            best = ranking[0]
            unknown = threshold is not None and best[1] < threshold
            out.append(
                IdentifyResult(
                    audio=str(p),
                    ranking=ranking,
                    decision="unknown" if unknown else best[0],
                    threshold=threshold,
                )
            )
        return out
