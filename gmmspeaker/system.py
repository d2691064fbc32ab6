"""Use a trained experiment on new audio: enrol, verify, identify.

A recipe run leaves a workdir with everything a trained system needs: the resolved
recipe (``recipe.json``: feature configuration, resampling, MAP and scoring settings),
``ubm.h5``, ``models.h5``, the results (``results.json``: EER threshold, calibration)
and, when the recipe normalises scores, the cohort statistics (``norm_cohort.h5`` and
``cohort_models.h5``). :class:`Experiment` opens such a workdir and works on audio files
directly::

    exp = Experiment.open("exp/demo")
    exp.enroll("alice", ["alice1.wav", "alice2.wav"])
    for r in exp.verify("alice", ["test.wav"]):
        print(r.audio, r.score, r.decision)
    for r in exp.identify(["who.wav"], top_n=3):
        print(r.audio, r.ranking[0])

**User models live in their own file**, ``<workdir>/user_models.h5``, which a recipe run
never rewrites (the run owns ``models.h5`` and rewrites it whenever the enroll stage
reruns, so models added there would be lost or, worse, silently kept against a new UBM).
The file records, per model, the audio it was enrolled from and what it depends on (UBM
fingerprint, feature configuration, MAP settings, normalisation cohort). A model whose
dependencies changed is *stale*: :func:`refresh_user_models` (which ``gmmspeaker run``
calls after its stages) re-enrols it from its recorded audio and says so, or, when that
audio is gone, warns and leaves it out; verifying against a stale model is a
:class:`~gmmspeaker.errors.ModelError` that says how to re-enrol. A user model with the
id of a recipe model replaces it (the enrol call says so).

**Short enrolment.** The run's EER threshold was set on models enrolled from its own
enrolment lists; a model enrolled from a few seconds scores every trial closer to zero
and would be rejected by it on most of its own speaker's audio. The run therefore also
measures the EER threshold of models enrolled from less speech (``results.json``,
``short_enrolment``: :mod:`gmmspeaker.scoring.duration`), and a user model's default
threshold is the one of its enrolment speech; recipe models keep the run's threshold and
decisions. ``enroll`` and ``verify`` warn when the enrolment or the test speech is
shorter than anything the run's evaluation covered.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_path
from gmmspeaker._typing import FloatArray, IntArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError
from gmmspeaker.scoring.metrics import eer_threshold

__all__ = [
    "Experiment",
    "EnrollResult",
    "VerifyResult",
    "IdentifyResult",
    "save_norm_cohort",
    "refresh_user_models",
    "RECIPE_FILE",
    "USER_MODELS_FILE",
    "NORM_COHORT_FILE",
    "COHORT_MODELS_FILE",
]

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"
USER_MODELS_FILE = "user_models.h5"
NORM_COHORT_FILE = "norm_cohort.h5"
COHORT_MODELS_FILE = "cohort_models.h5"

_Z_SIDE = ("znorm", "ztnorm", "snorm", "asnorm")
_T_SIDE = ("tnorm", "ztnorm", "snorm", "asnorm")


# ---------------------------------------------------------------------------
# Functions the recipe stages use
# ---------------------------------------------------------------------------


def _norm_signature(method: str, cohort_ids: Sequence[str], ubm_fp: str, scoring: dict[str, Any]) -> str:
    body = {"method": method, "cohort": list(cohort_ids), "ubm": ubm_fp, "scoring": scoring}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def save_norm_cohort(
    workdir: PathLike,
    *,
    method: str,
    top_n: int,
    cohort_ids: Sequence[str],
    model_ids: Sequence[str],
    ubm_fp: str,
    scoring: dict[str, Any],
    model_cohort: FloatArray | None,
    cohort_cohort: FloatArray | None,
    cohort_models: Any | None,
) -> None:
    """Store what verification needs to normalise scores as the run did.

    Writes ``cohort_models.h5`` (the T-norm cohort models, when the method has a test
    side) and ``norm_cohort.h5`` (atomically, last): the method, ``top_n``, the cohort
    utterance ids, the enrolled model ids and the cohort score matrices the run used.

    Parameters
    ----------
    workdir : path-like
        The experiment's workdir.
    method : str
        ``scoring.normalization``.
    top_n : int
        Adaptive S-norm cohort size.
    cohort_ids : sequence of str
        Cohort utterances with features, in the column order of ``model_cohort``.
    model_ids : sequence of str
        Enrolled models, in the row order of ``model_cohort``.
    ubm_fp : str
        Fingerprint of the UBM.
    scoring : dict
        The scoring section (method, top_c) the matrices were computed with.
    model_cohort : ndarray, shape (n_models, n_cohort), float64, or None
        Enrolled models scored on cohort utterances (Z side).
    cohort_cohort : ndarray, shape (n_cohort_models, n_cohort), float64, or None
        Cohort models scored on cohort utterances (ZT-norm).
    cohort_models : SpeakerModels or None
        The T-side cohort models.
    """
    import h5py

    wd = Path(workdir)
    if cohort_models is not None:
        cohort_models.save(wd / COHORT_MODELS_FILE)
    final = wd / NORM_COHORT_FILE
    with atomic_path(final) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["method"] = method
            h5.attrs["top_n"] = int(top_n)
            h5.attrs["signature"] = _norm_signature(method, cohort_ids, ubm_fp, scoring)
            h5.attrs["cohort_models"] = cohort_models is not None
            text = h5py.string_dtype("utf-8")
            h5.create_dataset("cohort_ids", data=np.array(list(cohort_ids), dtype=object), dtype=text)
            h5.create_dataset("model_ids", data=np.array(list(model_ids), dtype=object), dtype=text)
            if model_cohort is not None:
                h5.create_dataset("model_cohort", data=np.asarray(model_cohort, dtype=np.float64))
            if cohort_cohort is not None:
                h5.create_dataset("cohort_cohort", data=np.asarray(cohort_cohort, dtype=np.float64))
            for name, m in (("model_cohort", model_cohort), ("cohort_cohort", cohort_cohort)):
                if np.ma.isMaskedArray(m):  # self-trials the run left out: verify leaves them out too
                    h5.create_dataset(f"{name}_excluded", data=np.ma.getmaskarray(m))


def refresh_user_models(workdir: PathLike) -> list[str]:
    """Re-enrol the stale user models of a workdir from their recorded audio.

    Called by the recipe runner after a run: a user model adapted from another UBM,
    feature configuration, MAP setting or normalisation cohort is re-enrolled (and
    logged); one whose audio is gone is logged as a warning and stays stale (verify then
    refuses it with advice).

    Returns
    -------
    list of str
        The ids re-enrolled.
    """
    wd = Path(workdir)
    if not (wd / USER_MODELS_FILE).exists():
        return []
    exp = Experiment.open(wd)
    done = []
    for mid, why in sorted(exp.stale_user_models.items()):
        audio = exp.user_audio.get(mid, [])
        missing = [a for a in audio if not Path(a).is_file()]
        if missing or not audio:
            logger.warning(
                "user model %r is stale (%s) and its audio %s is gone: re-enrol it with "
                "gmmspeaker enroll %s --model %s AUDIO...",
                mid,
                why,
                missing[0] if missing else "(none recorded)",
                wd,
                mid,
            )
            continue
        exp.enroll(mid, audio)
        logger.warning(
            "user model %r was stale (%s): re-enrolled from its %d audio files", mid, why, len(audio)
        )
        done.append(mid)
    return done


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
        The user models file written.
    speech_seconds : float
        Enrolment speech (feature frames kept times the frame shift), in s.
    threshold : float or None
        The default decision threshold :meth:`Experiment.verify` will apply to the model
        (None when the experiment has no EER threshold).
    """

    model_id: str
    n_files: int
    n_frames: int
    replaced: str | None
    path: Path
    speech_seconds: float = 0.0
    threshold: float | None = None


@dataclass(frozen=True)
class VerifyResult:
    """One verification decision.

    Attributes
    ----------
    audio : str
    model : str
    raw_llr : float
        Frame-averaged log-likelihood ratio against the UBM.
    score : float
        The system score: ``raw_llr`` normalised as the recipe's ``scoring.normalization``
        (equal to ``raw_llr`` without normalisation); ``scores.txt`` holds this score.
    calibrated_llr : float or None
        ``score`` through the experiment's calibration (None without one). For a user
        model enrolled from less speech than the run's models, the score is first moved
        by the run's EER threshold minus the model's default threshold (the duration
        offset of :mod:`gmmspeaker.scoring.duration`), so the calibration, fitted on the
        run's models, sees it where a score of theirs at the same operating point would be.
    threshold : float
        The decision threshold. By default the run's EER threshold for the recipe's
        models, and for a user model the EER threshold of models enrolled from as much
        speech as it was (:meth:`Experiment.default_threshold`).
    threshold_source : str
        What the threshold is and which score it applies to.
    decision : str
        ``"accept"`` or ``"reject"``.
    """

    audio: str
    model: str
    raw_llr: float
    score: float
    calibrated_llr: float | None
    threshold: float
    threshold_source: str
    decision: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return {
            "audio": self.audio,
            "model": self.model,
            "raw_llr": self.raw_llr,
            "score": self.score,
            "calibrated_llr": self.calibrated_llr,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "decision": self.decision,
        }


@dataclass(frozen=True)
class IdentifyResult:
    """The enrolled models ranked on one audio file.

    Attributes
    ----------
    audio : str
    ranking : list of (model_id, raw LLR)
        The ``top_n`` best models, best first.
    decision : str
        The best model's id, or ``"unknown"`` when a threshold is set and its score is
        below it.
    threshold : float or None
    """

    audio: str
    ranking: list[tuple[str, float]]
    decision: str
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``audio``, ``ranking`` ([{"model", "score"}], best first), ``decision``."""
        return {
            "audio": self.audio,
            "ranking": [{"model": m, "score": s} for m, s in self.ranking],
            "decision": self.decision,
            "threshold": self.threshold,
        }


# ---------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def _user_lock(wd: Path) -> Iterator[None]:
    """Serialise writers of the user models file (two enrol commands at once)."""
    with open(wd / ".user_models.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _features_hash(features: dict[str, Any], resample: bool) -> str:
    body = json.dumps({"features": features, "resample": resample}, sort_keys=True, default=str)
    return hashlib.sha1(body.encode()).hexdigest()[:16]


def _concat_models(a: Any, b: Any) -> Any:
    """Rows of ``a`` then rows of ``b`` as one SpeakerModels (same adapted parameters)."""
    from gmmspeaker.gmm.map import SpeakerModels

    if b is None or len(b) == 0:
        return a
    if a is None or len(a) == 0:
        return b
    if a.adapt != b.adapt:
        raise ModelError(f"cannot combine models adapting {a.adapt} and {b.adapt}")

    def cat(x: Any, y: Any) -> Any:
        return (
            None if x is None else np.concatenate([np.asarray(x), np.asarray(y).astype(np.asarray(x).dtype)])
        )

    return SpeakerModels(
        model_ids=[*a.model_ids, *b.model_ids],
        means=cat(a.means, b.means),
        counts=cat(a.counts, b.counts),
        weights=cat(a.weights, b.weights),
        variances=cat(a.variances, b.variances),
        relevance=a.relevance,
        ubm_fingerprint=a.ubm_fingerprint or b.ubm_fingerprint,
    )


@dataclass
class _UserModels:
    """Contents of ``user_models.h5``: the models and, per model, what it depends on."""

    models: Any | None = None
    audio: dict[str, list[str]] = field(default_factory=dict)
    deps: dict[str, dict[str, str]] = field(default_factory=dict)
    model_cohort: FloatArray | None = None  # (n_user, n_cohort) Z-side rows, or None


class Experiment:
    """A trained experiment (a recipe's workdir), used on audio files.

    Open one with :meth:`open`. Attributes are read-only views of the workdir's files.

    Attributes
    ----------
    workdir : Path
    recipe : dict
        The resolved recipe the run wrote (``recipe.json``).
    ubm : GaussianMixture
    models : SpeakerModels
        Every usable model: the recipe's (``models.h5``), with user models added or
        replacing recipe models of the same id; stale user models are left out.
    stale_user_models : dict of str to str
        Stale user model id -> why.
    user_audio : dict of str to list of str
        Audio each user model was enrolled from.
    """

    def __init__(self) -> None:  # use Experiment.open
        self.workdir = Path(".")
        self.recipe: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.ubm: Any = None
        self.recipe_models: Any = None
        self.models: Any = None
        self.stale_user_models: dict[str, str] = {}
        self.user_audio: dict[str, list[str]] = {}
        self._user = _UserModels()
        self._norm: dict[str, Any] | None = None
        self.duration: Any = None
        self._ctx: Any = None
        self._cohort_ctx: Any = None

    # -- opening -------------------------------------------------------------
    @classmethod
    def open(cls, workdir: PathLike) -> Experiment:
        """Open a workdir written by ``gmmspeaker run``.

        Raises
        ------
        ModelError
            The workdir lacks a file a trained system needs (naming it and the command
            that writes it).
        """
        from gmmspeaker.gmm.map import SpeakerModels
        from gmmspeaker.gmm.model import GaussianMixture

        wd = Path(workdir)
        if not wd.is_dir():
            raise ModelError(f"{wd}: no such experiment folder (run a recipe first: gmmspeaker run RECIPE)")
        exp = cls()
        exp.workdir = wd
        rfile = wd / RECIPE_FILE
        if not rfile.is_file():
            raise ModelError(
                f"{rfile}: not found; this workdir was trained by an older gmmspeaker or a run that "
                f"did not finish: run its recipe again (gmmspeaker run RECIPE --workdir {wd})"
            )
        try:
            exp.recipe = json.loads(rfile.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{rfile}: unreadable resolved recipe ({exc})") from None
        for name in ("ubm.h5", "models.h5"):
            if not (wd / name).is_file():
                raise ModelError(f"{wd / name}: not found; run the recipe through its enroll stage")
        exp.ubm = GaussianMixture.load(wd / "ubm.h5")
        exp.recipe_models = SpeakerModels.load(wd / "models.h5")
        res = wd / "results.json"
        if res.is_file():
            try:
                exp.results = json.loads(res.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ModelError(f"{res}: unreadable results ({exc})") from None
            if "short_enrolment" in exp.results:
                from gmmspeaker.scoring.duration import DurationThreshold

                try:
                    exp.duration = DurationThreshold.from_dict(exp.results["short_enrolment"])
                except ConfigError as exc:
                    raise ModelError(f"{res}: short_enrolment: {exc}") from None
        exp._load_norm()
        exp._load_user()
        exp._combine()
        return exp

    @property
    def normalization(self) -> str:
        """The recipe's ``scoring.normalization``."""
        return str(self.recipe["scoring"].get("normalization", "none"))

    def _scoring(self) -> dict[str, Any]:
        sc = self.recipe["scoring"]
        return {"method": sc.get("method", "top_c"), "top_c": int(sc.get("top_c", 5))}

    def _ubm_fp(self) -> str:
        from gmmspeaker.gmm.map import ubm_fingerprint

        return ubm_fingerprint(self.ubm)

    def _deps(self) -> dict[str, str]:
        """What a user model enrolled now depends on."""
        d = self.recipe["data"]
        m = self.recipe["map"]
        return {
            "ubm": self._ubm_fp(),
            "features": _features_hash(self.recipe["features"], bool(d.get("resample", False))),
            "map": json.dumps({"relevance": float(m["relevance"]), "adapt": sorted(m["adapt"])}),
            "norm": self._norm["signature"] if self._norm is not None else "none",
        }

    def _load_norm(self) -> None:
        import h5py

        from gmmspeaker.gmm.map import SpeakerModels

        method = self.normalization
        if method == "none":
            return
        path = self.workdir / NORM_COHORT_FILE
        if not path.is_file():
            raise ModelError(
                f"{path}: not found; the recipe normalises scores ({method}) and verification needs the "
                f"cohort statistics its score stage stores: run the recipe again"
            )
        try:
            with h5py.File(path, "r") as h5:
                n: dict[str, Any] = {
                    "method": str(h5.attrs["method"]),
                    "top_n": int(h5.attrs["top_n"]),
                    "signature": str(h5.attrs["signature"]),
                    "cohort_ids": [
                        x.decode() if isinstance(x, bytes) else str(x) for x in h5["cohort_ids"][()]
                    ],
                    "model_ids": [
                        x.decode() if isinstance(x, bytes) else str(x) for x in h5["model_ids"][()]
                    ],
                    "model_cohort": h5["model_cohort"][()] if "model_cohort" in h5 else None,
                    "cohort_cohort": h5["cohort_cohort"][()] if "cohort_cohort" in h5 else None,
                }
                for name in ("model_cohort", "cohort_cohort"):
                    if n[name] is not None and f"{name}_excluded" in h5:
                        n[name] = np.ma.MaskedArray(n[name], mask=h5[f"{name}_excluded"][()].astype(bool))
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read cohort statistics ({exc})") from None
        if n["method"] != method:
            raise ModelError(
                f"{path}: holds {n['method']} statistics but the recipe says {method}: run it again"
            )
        if n["signature"] != _norm_signature(method, n["cohort_ids"], self._ubm_fp(), self._scoring()):
            raise ModelError(
                f"{path}: cohort statistics of another UBM or scoring setting: run the recipe again"
            )
        if n["model_ids"] != self.recipe_models.model_ids:
            raise ModelError(f"{path}: cohort statistics of other models than {self.workdir / 'models.h5'}")
        n["cohort_models"] = (
            SpeakerModels.load(self.workdir / COHORT_MODELS_FILE) if method in _T_SIDE else None
        )
        self._norm = n

    def _load_user(self) -> None:
        import h5py

        from gmmspeaker.gmm.map import SpeakerModels

        path = self.workdir / USER_MODELS_FILE
        if not path.exists():
            return
        models = SpeakerModels.load(path)
        try:
            with h5py.File(path, "r") as h5:
                audio = json.loads(str(h5.attrs["audio"]))
                deps = json.loads(str(h5.attrs["deps"]))
                mc = h5["model_cohort"][()] if "model_cohort" in h5 else None
        except (OSError, KeyError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read user model records ({exc})") from None
        self._user = _UserModels(models=models, audio=audio, deps=deps, model_cohort=mc)
        self.user_audio = {k: list(v) for k, v in audio.items()}
        now = self._deps()
        names = {"ubm": "UBM", "features": "feature configuration", "map": "MAP settings", "norm": "cohort"}
        for mid in models.model_ids:
            changed = [names[k] for k, v in now.items() if deps.get(mid, {}).get(k) != v]
            if changed:
                self.stale_user_models[mid] = " and ".join(changed) + " changed since it was enrolled"

    def _combine(self) -> None:
        """Recipe models, with fresh user models added or replacing same-id recipe models."""
        user = self._user.models
        fresh = (
            []
            if user is None
            else [i for i, m in enumerate(user.model_ids) if m not in self.stale_user_models]
        )
        fresh_ids = {user.model_ids[i] for i in fresh} if user is not None else set()
        keep = [i for i, m in enumerate(self.recipe_models.model_ids) if m not in fresh_ids]
        base = self.recipe_models.subset(keep)
        added = user.subset(fresh) if fresh else None
        self.models = _concat_models(base, added)
        self._ctx = None
        if self._norm is not None and self._norm["model_cohort"] is not None:
            rows = self._norm["model_cohort"][keep]
            if fresh:
                rows = np.ma.concatenate([rows, np.asarray(self._user.model_cohort)[fresh]])
            self._model_cohort = rows
        else:
            self._model_cohort = None

    # -- features ----------------------------------------------------------------
    def features(self, path: PathLike) -> FloatArray:
        """Feature frames of one audio file, with the experiment's configuration.

        Returns
        -------
        ndarray, shape (n_frames, dim), float32

        Raises
        ------
        AudioError, DataError
            Unreadable or unusable audio, or no frames kept (the message names the file).
        """
        from gmmspeaker.audio import load_audio
        from gmmspeaker.features import FeatureConfig, extract

        cfg = FeatureConfig.from_dict(
            self.recipe["features"], source=f"{self.workdir / RECIPE_FILE}: features"
        )
        signal, _ = load_audio(
            path,
            sample_rate=cfg.sample_rate,
            resample_audio=bool(self.recipe["data"].get("resample", False)),
            min_samples=cfg.frame_length_samples,
        )
        frames = extract(signal, cfg, name=str(path)).frames
        if frames.shape[0] == 0:
            raise DataError(f"{path}: no feature frames left after voice activity detection")
        return np.ascontiguousarray(frames, dtype=np.float32)

    # -- enrol -------------------------------------------------------------------
    def enroll(self, model_id: str, paths: Sequence[PathLike]) -> EnrollResult:
        """MAP-adapt a model from audio files and add it to the user models (atomically).

        Parameters
        ----------
        model_id : str
            New or existing id; an existing user model is replaced, a recipe model of
            that id is shadowed (both reported in the result).
        paths : sequence of path-like
            Audio files, pooled.

        Raises
        ------
        DataError
            No files, or an id with whitespace.
        AudioError
            An unreadable file (named).
        """
        from gmmspeaker.gmm.map import SpeakerModels, map_adapt, ubm_fingerprint
        from gmmspeaker.gmm.stats import accumulate

        model_id = str(model_id)
        if not model_id or any(c.isspace() for c in model_id):
            raise DataError(f"model id {model_id!r} must be non-empty and without spaces")
        if not paths:
            raise DataError(f"model {model_id!r}: no audio files to enrol from")
        X = np.concatenate([self.features(p) for p in paths])
        adapt = tuple(self.recipe["map"]["adapt"])
        relevance = float(self.recipe["map"]["relevance"])
        stats = accumulate(X, self.ubm, second_order="variances" in adapt)
        new = SpeakerModels.from_adapted(
            [model_id],
            [map_adapt(stats, self.ubm, relevance=relevance, adapt=adapt)],
            relevance=relevance,
            ubm_fingerprint=ubm_fingerprint(self.ubm),
            dtype=np.asarray(self.recipe_models.means).dtype,
        )
        z_row = self._z_rows(new)
        audio = [str(Path(p).resolve()) for p in paths]
        with _user_lock(self.workdir):
            self._load_user_fresh()
            u = self._user
            replaced = None
            if u.models is not None and model_id in u.models.model_ids:
                replaced = "user"
            elif model_id in self.recipe_models.model_ids:
                replaced = "recipe"
            keep = [] if u.models is None else [i for i, m in enumerate(u.models.model_ids) if m != model_id]
            others = u.models.subset(keep) if keep else None
            models = _concat_models(others, new)
            mc = None
            if z_row is not None:
                old = (
                    np.asarray(u.model_cohort)[keep]
                    if keep and u.model_cohort is not None
                    else np.zeros((0, z_row.shape[1]))
                )
                mc = np.concatenate([old, z_row])
            audio_map = {m: u.audio[m] for m in models.model_ids if m in u.audio}
            audio_map[model_id] = audio
            deps = {m: u.deps[m] for m in models.model_ids if m in u.deps}
            deps[model_id] = self._deps()
            self._user = _UserModels(models=models, audio=audio_map, deps=deps, model_cohort=mc)
            path = self._save_user()
        self.user_audio = {k: list(v) for k, v in self._user.audio.items()}
        self.stale_user_models.pop(model_id, None)
        self._combine()
        if replaced == "user":
            logger.info("model %r re-enrolled: the previous user model of that id is replaced", model_id)
        elif replaced == "recipe":
            logger.info("model %r enrolled: it replaces the recipe's model of that id", model_id)
        seconds = self.speech_seconds(model_id)
        self._warn_short_enrolment(model_id, seconds)
        thr = self.default_threshold(model_id)[0] if self._has_threshold() else None
        return EnrollResult(model_id, len(paths), int(X.shape[0]), replaced, path, seconds, thr)

    # -- enrolment speech and the default threshold ------------------------------------
    def _frame_shift(self) -> float:
        from gmmspeaker.features import FeatureConfig

        return float(FeatureConfig.from_dict(self.recipe["features"]).frame_shift)

    def speech_seconds(self, model_id: str) -> float:
        """Enrolment speech of a model, in s: its frames (the sum of its zeroth-order statistics)."""
        row = self._check_model(model_id)
        return float(np.sum(self.models.counts[row])) * self._frame_shift()

    def _is_user_model(self, model_id: str) -> bool:
        u = self._user.models
        return u is not None and model_id in u.model_ids and model_id not in self.stale_user_models

    def _shortest_covered(self) -> float:
        """Shortest enrolment speech the run's evaluation covered, in s."""
        if self.duration is not None:
            return float(self.duration.shortest_seconds)
        return float(np.min(np.sum(self.recipe_models.counts, axis=1))) * self._frame_shift()

    def _warn_short_enrolment(self, model_id: str, seconds: float) -> None:
        covered = self._shortest_covered()
        if seconds < covered:
            logger.warning(
                "model %r: enrolled from %.2f s of speech, below the %.2f s the run's evaluation covered; "
                "its accept/reject decisions are less reliable: enrol it from more audio%s",
                model_id,
                seconds,
                covered,
                ""
                if self.duration is not None
                else " (or run the recipe again: this workdir's evaluation predates the thresholds "
                "for short enrolment)",
            )

    def _has_threshold(self) -> bool:
        return "eer_threshold" in self.results or (self.workdir / "scores.txt").is_file()

    def default_threshold(self, model_id: str) -> tuple[float, str]:
        """The decision threshold ``verify`` applies to a model's score by default, and what it is.

        The run's EER threshold for the recipe's models; for a user model, the EER
        threshold of models enrolled from as much speech as it was (measured by the run
        on sub-models of its own models, :mod:`gmmspeaker.scoring.duration`), which is
        the run's threshold at or above the run's median enrolment.
        """
        base = self.eer_threshold()
        if self.duration is None or not self._is_user_model(model_id):
            return base, "EER threshold of the experiment's trials on the score"
        seconds = self.speech_seconds(model_id)
        thr = float(self.duration.threshold(seconds))
        if seconds >= self.duration.reference_seconds:
            return thr, "EER threshold of the experiment's trials on the score"
        return thr, (
            f"EER threshold of the experiment's trials for models enrolled from {seconds:.2f} s of "
            f"speech (its models': {base:.4f} at {self.duration.reference_seconds:.1f} s) on the score"
        )

    def _load_user_fresh(self) -> None:
        """Reread the user models file (another process may have written it)."""
        self.stale_user_models = {}
        self._user = _UserModels()
        self._load_user()

    def _save_user(self) -> Path:
        import h5py

        u = self._user
        final = self.workdir / USER_MODELS_FILE
        quiet = logging.getLogger("gmmspeaker.gmm.speaker_models")
        level = quiet.level
        with atomic_path(final) as tmp:
            quiet.setLevel(max(level, logging.WARNING))  # it would log the temporary name
            try:
                u.models.save(tmp)
            finally:
                quiet.setLevel(level)
            with h5py.File(tmp, "a") as h5:
                h5.attrs["audio"] = json.dumps(u.audio, sort_keys=True)
                h5.attrs["deps"] = json.dumps(u.deps, sort_keys=True)
                if u.model_cohort is not None:
                    h5.create_dataset("model_cohort", data=np.asarray(u.model_cohort, dtype=np.float64))
        return final

    def _z_rows(self, models: Any) -> FloatArray | None:
        """Scores of ``models`` on the cohort utterances (Z-norm side), from the run's store."""
        if self._norm is None or self._norm["model_cohort"] is None:
            return None
        from gmmspeaker.gmm.batch import score_matrix
        from gmmspeaker.store import FeatureStore

        store = FeatureStore(self.workdir / "features")
        ids = self._norm["cohort_ids"]
        gone = [u for u in ids if u not in store]
        if gone:
            raise ModelError(
                f"{self.workdir / 'features'}: cohort utterance {gone[0]!r} has no features; run the recipe again"
            )
        sc = self._scoring()
        return score_matrix(store, ids, self.ubm, models, method=sc["method"], top_c=sc["top_c"])

    # -- scoring -------------------------------------------------------------------
    def _context(self) -> Any:
        from gmmspeaker.scoring.llr import ScoringContext

        if self._ctx is None:
            self._ctx = ScoringContext.build(self.ubm, self.models)
        return self._ctx

    def raw_scores(self, X: FloatArray, rows: IntArray | None = None) -> FloatArray:
        """Raw LLRs of models on frames ``X``.

        Parameters
        ----------
        X : ndarray, shape (n_frames, dim)
        rows : int array, shape (m,), optional
            Rows of :attr:`models` (default: every model, scored in one vectorised pass).

        Returns
        -------
        ndarray, shape (m,), float64
        """
        from gmmspeaker.scoring.llr import ScoringContext, score_prepared

        sc = self._scoring()
        if rows is None:
            ctx = self._context()
        else:  # a few models (verify): prepare only those, not all M x K x D parameters
            ctx = ScoringContext.build(self.ubm, self.models, model_index=rows)
        return score_prepared(X, ctx, method=sc["method"], top_c=sc["top_c"])

    def _cohort_test(self, X: FloatArray) -> FloatArray:
        from gmmspeaker.scoring.llr import ScoringContext, score_prepared

        assert self._norm is not None
        if self._cohort_ctx is None:
            self._cohort_ctx = ScoringContext.build(self.ubm, self._norm["cohort_models"])
        sc = self._scoring()
        return score_prepared(X, self._cohort_ctx, method=sc["method"], top_c=sc["top_c"])

    def _normalize(self, raw: float, row: int, X: FloatArray) -> float:
        if self._norm is None:
            return float(raw)
        from gmmspeaker.scoring.norm import normalize_scores

        method = self.normalization
        mc = self._model_cohort[row][None, :] if method in _Z_SIDE else None
        ct = self._cohort_test(X)[:, None] if method in _T_SIDE else None
        out = normalize_scores(
            np.array([raw]),
            method=method,
            model_cohort=mc,
            cohort_test=ct,
            cohort_cohort=self._norm["cohort_cohort"],
            model_idx=np.array([0]),
            test_idx=np.array([0]),
            top_n=self._norm["top_n"],
        )
        return float(out[0])

    def calibration(self) -> Any | None:
        """The run's :class:`~gmmspeaker.scoring.calibration.LinearCalibration`, or None."""
        from gmmspeaker.scoring.calibration import LinearCalibration

        c = self.results.get("calibration")
        return LinearCalibration.from_dict(c) if c else None

    def eer_threshold(self) -> float:
        """The EER threshold of the experiment's own trial scores (``scores.txt``)."""
        if "eer_threshold" in self.results:
            return float(self.results["eer_threshold"])
        from gmmspeaker.scoring.trials import read_scores

        _, s, keys = read_scores(self.workdir / "scores.txt")
        key = np.array([k is True for k in keys])
        known = np.array([k is not None for k in keys])
        if not known.any():
            raise ModelError(f"{self.workdir / 'scores.txt'}: no keyed trials to set an EER threshold")
        return eer_threshold(s[known & key], s[known & ~key])

    def _check_model(self, model_id: str) -> int:
        if model_id in self.stale_user_models:
            raise ModelError(
                f"model {model_id!r} in {self.workdir / USER_MODELS_FILE} is stale "
                f"({self.stale_user_models[model_id]}); re-enrol it: "
                f"gmmspeaker enroll {self.workdir} --model {model_id} AUDIO..."
            )
        if model_id not in self.models.model_ids:
            known = self.models.model_ids
            shown = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise ModelError(f"{self.workdir}: unknown model id {model_id!r} (enrolled: {shown})")
        return self.models.index(model_id)

    def verify(
        self,
        model_id: str,
        paths: Sequence[PathLike],
        *,
        threshold: float | None = None,
        p_target: float | None = None,
    ) -> list[VerifyResult]:
        """Score audio files against one model and decide.

        Parameters
        ----------
        model_id : str
        paths : sequence of path-like
        threshold : float, optional
            Accept when ``score >= threshold`` (``score`` as in :class:`VerifyResult`).
        p_target : float, optional
            Accept when the calibrated LLR reaches the Bayes threshold
            ``-logit(p_target)`` (needs a calibration: ``data.dev_trials``).
            Default (neither given): the EER threshold of the experiment's own trials,
            applied to ``score``.

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
        row = self._check_model(model_id)
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
            thr, source = self.default_threshold(model_id)
        shift = 0.0  # short user models: the calibration applies to the score moved by the duration offset
        if self._is_user_model(model_id):
            seconds = self.speech_seconds(model_id)
            self._warn_short_enrolment(model_id, seconds)
            if self.duration is not None:
                shift = float(self.duration.threshold(seconds)) - self.duration.reference_threshold
        from gmmspeaker.scoring.llr import ScoringContext, score_prepared

        ctx = ScoringContext.build(self.ubm, self.models, model_index=np.array([row]))
        sc = self._scoring()
        out = []
        for p in paths:
            X = self.features(p)
            if (
                self.duration is not None
                and X.shape[0] * self._frame_shift() < self.duration.test_seconds_min
            ):
                logger.warning(
                    "%s: %.2f s of speech, below the %.2f s of the shortest test the run's evaluation "
                    "covered; its decision is less reliable",
                    p,
                    X.shape[0] * self._frame_shift(),
                    self.duration.test_seconds_min,
                )
            raw = float(score_prepared(X, ctx, method=sc["method"], top_c=sc["top_c"])[0])
            score = self._normalize(raw, row, X)
            calibrated = float(cal(score - shift)) if cal is not None else None
            value = calibrated if p_target is not None else score
            out.append(
                VerifyResult(
                    audio=str(p),
                    model=model_id,
                    raw_llr=raw,
                    score=score,
                    calibrated_llr=calibrated,
                    threshold=float(thr),
                    threshold_source=source,
                    decision="accept" if value is not None and value >= thr else "reject",
                )
            )
        return out

    def identify(
        self, paths: Sequence[PathLike], *, top_n: int = 5, threshold: float | None = None
    ) -> list[IdentifyResult]:
        """Rank every enrolled model on each audio file by raw LLR.

        All models are scored in one vectorised pass per file (the UBM pass shared).
        Raw frame-averaged LLRs are comparable across models because every model is
        adapted from the same UBM; T-norm would not change the order.

        Parameters
        ----------
        paths : sequence of path-like
        top_n : int, default 5
            Models listed per file.
        threshold : float, optional
            Open-set rejection: the decision is ``"unknown"`` when the best raw LLR is
            below it.
        """
        if isinstance(top_n, bool) or int(top_n) != top_n or top_n < 1:
            raise ConfigError(f"top_n must be a positive integer, got {top_n!r}")
        out = []
        ids = self.models.model_ids
        for p in paths:
            s = self.raw_scores(self.features(p))
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
