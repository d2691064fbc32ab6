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
(:mod:`gmmspeaker.serving.user_models` keeps these files.)
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
file listed twice is used once, with a warning (:mod:`gmmspeaker.serving.audio`).

**Short enrolment.** The run's EER threshold was set on models enrolled from its own
enrolment lists; a model enrolled from a few seconds scores every trial closer to zero
and would be rejected by it on most of its own speaker's audio. A single-system run
(GMM-UBM, i-vector or ISV) therefore also measures the EER threshold of models enrolled
from less speech (its ``short_enrolment`` stage, :mod:`gmmspeaker.scoring.duration`), and
a user model's default threshold is the one of its enrolment speech; the run's own models
keep the run's threshold and decisions. A fusion does not measure it: its user models keep
the run's threshold (with the warning below when their enrolment is short). ``enroll`` and ``verify`` warn when the enrolment or the
test speech is shorter than anything the run's evaluation covered.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, GmmSpeakerError, ModelError
from gmmspeaker.serving.audio import audio_features, audio_tests, enrolment_paths, frame_shift
from gmmspeaker.serving.results import EnrollResult, IdentifyResult, ModelInfo, VerifyResult
from gmmspeaker.serving.user_models import (
    SystemModels,
    UserModels,
    combine,
    dependencies,
    list_models,
    refresh_stale,
    refuse_existing,
    retire_foreign_user_models,
    user_lock,
)
from gmmspeaker.systems import Fused, Tests, TrainedSystem, build
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

    Called by the recipe runner after a run. User model files of another ``system:`` are
    retired first and their models re-enrolled in this one. A model whose audio is gone or
    no longer readable is logged as a warning and stays stale (verify then refuses it with
    advice); the other models are refreshed regardless.

    Returns
    -------
    list of str
        The ids re-enrolled.
    """
    if not any(Path(workdir).glob("user_models*.h5")):
        return []
    bare = Experiment.open(workdir, user_models=False)
    with user_lock(bare.wd):  # not while an enrol command writes a user model file
        foreign = retire_foreign_user_models(bare.wd, bare.systems)
    exp = Experiment.open(workdir)
    exp.users.adopt(foreign)
    return refresh_stale(exp.users, exp.workdir, exp.enroll)


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
        self.users = UserModels()
        self._leaves: list[SystemModels] = []

    @property
    def workdir(self) -> Path:
        return self.wd.path

    @property
    def stale_user_models(self) -> dict[str, str]:
        return self.users.stale

    @property
    def user_audio(self) -> dict[str, list[str]]:
        return self.users.audio

    @property
    def user_seconds(self) -> dict[str, float]:
        return self.users.seconds

    @property
    def user_info(self) -> dict[str, dict[str, Any]]:
        return self.users.info

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
            exp._leaves.append(SystemModels(system=s, recipe_models=models, cohort=s.load_cohort(models)))
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
        return dependencies(self.recipe, self._leaves)

    def _load_user(self) -> None:
        self.users.load(self.wd, self._leaves, self._deps())

    def _combine(self) -> None:
        """Recipe models, with fresh user models added or replacing same-id recipe models."""
        combine(self._leaves, self.users.stale)

    # -- features ----------------------------------------------------------------
    def features(self, path: PathLike, *, channel: int | str | None = None) -> FloatArray:
        """Feature frames of one audio file, with the experiment's configuration.

        A file of another sampling rate is resampled to the system's (logged); a
        multi-channel file is averaged (with a warning) unless ``channel`` picks one
        (0 = first) or is ``"mix"``: :func:`gmmspeaker.serving.audio.audio_features`
        (shape (n_frames, dim) float32; AudioError / DataError naming an unusable file).
        """
        return audio_features(
            path, self.recipe.features, source=f"{self.wd.recipe}: features", channel=channel
        )

    def _frame_shift(self) -> float:
        return frame_shift(self.recipe.features)

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
        model_id = str(model_id)
        if not model_id or any(c.isspace() for c in model_id):
            raise DataError(f"model id {model_id!r} must be non-empty and without spaces")
        if not paths:
            raise DataError(f"model {model_id!r}: no audio files to enrol from")
        if not replace:
            self._refuse_existing(model_id)
        paths, dups = enrolment_paths(paths, model_id)
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
        replaced, first_path = self.users.add(
            self.wd,
            self._leaves,
            model_id,
            new,
            audio=audio,
            seconds=seconds,
            deps=self._deps(),
            channel=channel,
            replace=replace,
        )
        self._combine()
        if replaced == "user":
            logger.info("model %r re-enrolled: the previous user model of that id is replaced", model_id)
        elif replaced == "recipe":
            logger.info("model %r enrolled: it replaces the recipe's model of that id", model_id)
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
        return self.users.active(model_id)

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
        refuse_existing(self.list_models(), model_id, self.workdir)

    def list_models(self) -> list[ModelInfo]:
        """Every model of the experiment: the recipe's, then the users', in file order.

        Returns
        -------
        list of ModelInfo
            Files, speech seconds, when enrolled and status (active, replaced, stale).
        """
        return list_models(self.wd, self.recipe, self._leaves[0], self.users)

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
        model_id = str(model_id)
        self.users.remove(self.wd, self._leaves, model_id)
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
        return audio_tests(paths, lambda p: self.features(p, channel=channel), on_bad_audio=on_bad_audio)

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
        """Every model on every test, (n_models, n_tests): the score :meth:`verify` reports.

        That is the system score decisions are made on: raw normalised as the recipe says
        (one system), fused (a fusion). What :meth:`identify` ranks and the recipe's
        identification evaluation measures; a normalised score depends only on its own
        model and test, so it is the same whichever models and tests are scored with it.
        """
        ids = self.model_ids
        test_ids = tests_for(self._leaves[0].system).ids
        trials = [(m, u) for u in test_ids for m in ids]
        _, score, _ = self.score_trials(trials, tests_for)
        return score.reshape(len(test_ids), len(ids)).T

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
        recs = self.wd.stage_fingerprints()
        ours = self._stage_names()  # not a record an earlier recipe of another system left
        for stage in ("enroll", "backend"):
            rec = recs.get(stage, {}) if stage in ours else {}
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

        By the score :meth:`verify` reports for the same model and file (normalised as the
        recipe says for one system, fused in a fusion; the raw score without
        normalisation), so a ranking's scores and ``threshold`` are on verify's scale.

        Parameters
        ----------
        paths : sequence of path-like
        top_n : int, default 5
            Models listed per file.
        threshold : float, optional
            Open-set rejection: the decision is ``"unknown"`` when the best score is below it
            (verify's default threshold for a model is :meth:`threshold`).
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
