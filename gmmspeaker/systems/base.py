"""What every trained recognition system provides, and the normalisation all of them share.

A trained system (:class:`TrainedSystem`) is the part of an experiment that turns
enrolment audio into models and a test into a score: GMM-UBM
(:class:`~gmmspeaker.systems.gmm_ubm.GmmUbm`), i-vector / PLDA
(:class:`~gmmspeaker.systems.ivector.Ivector`) and the fusion of several
(:class:`~gmmspeaker.systems.fused.Fused`). The recipe's stages and the serving code
(:class:`~gmmspeaker.system.Experiment`, ``gmmspeaker enroll|verify|identify``) call the
same methods, so serving reproduces the evaluation by construction:

``enrol``
    models from enrolment frames (one model per id);
``score_trials`` / ``score_matrix``
    raw scores of (model, test) pairs, tests read from a feature store or given as frames;
``normalise``
    Z/T/ZT/S/AS-norm of raw scores with the system's :class:`NormCohort` (what the
    normalisation method needs of the cohort: :func:`cohort_sides` is the one table);
``threshold`` / ``calibrate``
    the decision threshold of a model and the calibration of the experiment's scores.

Adding a system is one subclass registered in :data:`gmmspeaker.systems.SYSTEMS` plus
the recipe stage-table rows that train it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from gmmspeaker.recipe.config import Recipe
    from gmmspeaker.workdir import Workdir

__all__ = ["TrainedSystem", "NormCohort", "Tests", "cohort_sides", "NORMALIZATIONS", "fingerprint"]

#: Score normalisation methods, and which cohort scores each needs: (Z side: models on cohort
#: utterances, T side: cohort models on tests, cohort models on cohort utterances).
NORMALIZATIONS: dict[str, tuple[bool, bool, bool]] = {
    "none": (False, False, False),
    "znorm": (True, False, False),
    "tnorm": (False, True, False),
    "ztnorm": (True, True, True),
    "snorm": (True, True, False),
    "asnorm": (True, True, False),
}

NORM_COHORT_FORMAT = "gmmspeaker-norm-cohort"


def cohort_sides(method: str) -> tuple[bool, bool, bool]:
    """``(z, t, zt)``: which cohort score matrices ``method`` needs (see :data:`NORMALIZATIONS`)."""
    try:
        return NORMALIZATIONS[method]
    except KeyError:
        raise DataError(
            f"unknown score normalisation {method!r} (known: {', '.join(NORMALIZATIONS)})"
        ) from None


def fingerprint(obj: Any) -> str:
    """Short stable hash of JSON-like data (arrays by their bytes)."""
    h = hashlib.sha1()

    def feed(x: Any) -> None:
        if isinstance(x, np.ndarray):
            h.update(str((x.dtype.str, x.shape)).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x):
                h.update(json.dumps(str(k)).encode())
                feed(x[k])
            h.update(b"}")
        else:
            h.update(json.dumps(x, default=str).encode())

    feed(obj)
    return h.hexdigest()[:16]


def same_file_key(path: PathLike) -> str:
    """What identifies an audio file across spellings of its path (symbolic links resolved)."""
    return os.path.realpath(path)


@dataclass
class Tests:
    """Test utterances to score.

    Attributes
    ----------
    ids : list of str
        Test ids, in the column order of score matrices.
    source : FeatureStore or dict
        Where their features are: a feature store (recipe runs) or ``{id: frames}``
        (audio given to verify/identify).
    paths : list of str or None
        Their audio files (to find a test that is also a cohort utterance).
    """

    ids: list[str]
    source: Any
    paths: list[str] | None = None


@dataclass
class NormCohort:
    """What a system's score normalisation needs of its cohort, as the run computed it.

    Attributes
    ----------
    method : str
        The normalisation (a key of :data:`NORMALIZATIONS`).
    top_n : int
        Adaptive S-norm cohort size per side.
    cohort_ids, cohort_paths : lists of str
        Cohort utterances (with features) and their audio files.
    model_ids : list of str
        Models of the rows of ``model_cohort``.
    model_cohort : masked array (n_models, n_cohort) or None
        Z side: each model on each cohort utterance; masked where a model was enrolled
        from that utterance.
    cohort_cohort : masked array (n_cohort, n_cohort) or None
        ZT-norm: cohort models on cohort utterances, self-trials masked.
    signature : str
        Fingerprint of what the statistics were computed from (system, cohort, models).
    """

    method: str
    top_n: int
    cohort_ids: list[str]
    cohort_paths: list[str]
    model_ids: list[str] = field(default_factory=list)
    model_cohort: Any = None
    cohort_cohort: Any = None
    signature: str = ""

    def save(self, path: PathLike) -> None:
        """Write to HDF5 atomically (masks as ``*_excluded`` datasets)."""
        arrays: dict[str, Any] = {
            "cohort_ids": list(self.cohort_ids),
            "cohort_paths": list(self.cohort_paths),
        }
        arrays["model_ids"] = list(self.model_ids) if self.model_ids else None
        for name in ("model_cohort", "cohort_cohort"):
            m = getattr(self, name)
            if m is not None:
                arrays[name] = np.ma.getdata(m).astype(np.float64)
                arrays[f"{name}_excluded"] = np.ma.getmaskarray(m)
        write_h5(
            path,
            NORM_COHORT_FORMAT,
            arrays,
            attrs={"method": self.method, "top_n": int(self.top_n), "signature": self.signature},
        )

    @classmethod
    def load(cls, path: PathLike) -> NormCohort:
        """Read :meth:`save` output; ModelError naming the file when missing or malformed."""
        arrays, attrs = read_h5(path, NORM_COHORT_FORMAT, ("cohort_ids",), what="cohort statistics file")
        out = cls(
            method=str(attrs["method"]),
            top_n=int(attrs["top_n"]),
            cohort_ids=list(arrays["cohort_ids"]),
            cohort_paths=list(arrays.get("cohort_paths", [])),
            model_ids=list(arrays.get("model_ids", [])),
            signature=str(attrs.get("signature", "")),
        )
        for name in ("model_cohort", "cohort_cohort"):
            if name in arrays:
                data = np.asarray(arrays[name], dtype=np.float64)
                mask = np.asarray(arrays.get(f"{name}_excluded", np.zeros(data.shape)), dtype=bool)
                setattr(out, name, np.ma.MaskedArray(data, mask=mask.reshape(data.shape)))
        return out

    def with_models(self, model_ids: Sequence[str], rows: Any) -> NormCohort:
        """A copy whose Z side holds ``rows`` (n, n_cohort) for ``model_ids``."""
        return replace(self, model_ids=list(model_ids), model_cohort=rows)


class TrainedSystem:
    """A recognition system of an experiment: enrol, score, normalise, threshold, calibrate.

    Subclasses set :attr:`name` (the recipe's ``system:`` value) and implement the
    model and scoring hooks; normalisation, thresholds and calibration are shared.

    Parameters
    ----------
    wd : Workdir
        The experiment's files.
    recipe : Recipe
        Its resolved recipe.
    """

    name: ClassVar[str] = ""
    #: The stage that writes this system's trial scores (the fusion and evaluation read them).
    score_stage: ClassVar[str] = ""
    #: The recipe stages that train it (besides features and ubm).
    stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, wd: Workdir, recipe: Recipe) -> None:
        self.wd = wd
        self.recipe = recipe
        self._results: dict[str, Any] | None = None
        self._ubm: Any = None

    @property
    def ubm(self) -> Any:
        """The experiment's UBM (``ubm.h5``), loaded on first use."""
        if self._ubm is None:
            from gmmspeaker.gmm.model import GaussianMixture

            if not self.wd.ubm.is_file():
                raise ModelError(f"{self.wd.ubm}: not found; run the recipe through its ubm stage")
            self._ubm = GaussianMixture.load(self.wd.ubm)
        return self._ubm

    #: The recipe section holding the system's ``normalization`` and ``cohort_top_n``.
    config_section: ClassVar[str] = ""
    #: What the run stores of an utterance for this system (:meth:`stored_source`), in messages.
    stored_what: ClassVar[str] = "features"

    # -- configuration ---------------------------------------------------------------
    @property
    def normalization(self) -> str:
        """This system's score normalisation method (its recipe section's ``normalization``)."""
        return str(getattr(self.recipe, self.config_section).normalization)

    @property
    def cohort_top_n(self) -> int:
        """Adaptive S-norm cohort size (its recipe section's ``cohort_top_n``)."""
        return int(getattr(self.recipe, self.config_section).cohort_top_n)

    def cohort_method(self) -> str:
        """The normalisation the system's cohort statistics are stored for.

        Its own method; in a fusion averaged without development trials, a system that
        does not normalise is Z-normed against the cohort (the fusion needs a common scale),
        so its Z statistics are kept too.
        """
        own = self.normalization
        r = self.recipe
        if own == "none" and len(r.system) > 1 and r.data.dev_trials is None and r.data.cohort is not None:
            return "znorm"
        return own

    # -- models --------------------------------------------------------------------------
    def recipe_models_file(self) -> tuple[Path, str]:
        """The file of the recipe's enrolled models, and the stage that writes it."""
        raise NotImplementedError

    def load_models(self) -> Any:
        """The recipe's enrolled models."""
        path, stage = self.recipe_models_file()
        if not path.is_file():
            raise ModelError(f"{path}: not found; run the recipe through its {stage} stage")
        return self.load_models_file(path)

    def enrol(self, model_ids: Sequence[str], frames: Sequence[Sequence[FloatArray]]) -> Any:
        """Models from enrolment frames: one per id, pooling its utterances' frames."""
        raise NotImplementedError

    def enrol_store(
        self,
        store: Any,
        enrollments: Sequence[Any],
        *,
        jobs: int = 1,
        progress: bool = False,
        desc: str = "enroll",
    ) -> Any:
        """Models of an enrolment list (:class:`~gmmspeaker.corpora.lists.Enrollment`) from the run's files.

        The recipe's enrolment stages and its ``short_enrolment`` stage call it: GMM-UBM
        reads the feature ``store``, ISV the run's statistics, i-vector the run's i-vectors.
        """
        raise NotImplementedError

    @staticmethod
    def model_ids(models: Any) -> list[str]:
        return list(models.model_ids)

    def subset(self, models: Any, rows: Sequence[int]) -> Any:
        return models.subset(np.asarray(rows, dtype=np.int64))

    def concat(self, a: Any, b: Any) -> Any:
        """Models ``a`` then models ``b`` (either may be None or empty)."""
        if b is None or len(b) == 0:
            return a
        if a is None or len(a) == 0:
            return b
        return self.join(a, b)

    def join(self, a: Any, b: Any) -> Any:
        """Two non-empty model sets as one (:meth:`concat` handles empty ones)."""
        return a.concat(b)

    def save_models(self, models: Any, path: PathLike) -> None:
        models.save(path)

    def load_models_file(self, path: PathLike) -> Any:
        raise NotImplementedError

    def model_signature(self, models: Any) -> str:
        raise NotImplementedError

    def dependencies(self) -> dict[str, str]:
        """What a model enrolled now depends on (a change makes a user model stale)."""
        raise NotImplementedError

    def stored_source(self) -> Any:
        """Where the run keeps its utterances in this system's form (feature store, i-vectors...)."""
        from gmmspeaker.store import FeatureStore

        return FeatureStore(self.stored_file())

    def stored_file(self) -> Path:
        """The file (or store) :meth:`stored_source` reads."""
        return self.wd.features

    def cohort_files(self) -> list[Path]:
        """Files the system's scoring stage leaves for normalising at verification."""
        return [] if self.cohort_method() == "none" else [self.wd.norm_cohort(self.name)]

    # -- scoring ---------------------------------------------------------------------------
    def represent(self, tests: Tests) -> Tests:
        """Tests in the form :meth:`score_matrix` takes (frames for GMM-UBM; i-vectors extracted once)."""
        return tests

    def score_matrix(self, models: Any, tests: Tests, *, jobs: int = 1, progress: bool = False) -> FloatArray:
        """Raw scores of every model on every test: (n_models, n_tests) float64."""
        raise NotImplementedError

    def score_trials(
        self,
        models: Any,
        trials: Sequence[tuple[str, str]],
        tests: Tests,
        *,
        jobs: int = 1,
        progress: bool = False,
        parts_dir: Path | None = None,
    ) -> FloatArray:
        """Raw scores of ``(model_id, test_id)`` pairs, (n_trials,) float64 (NaN: no features).

        The default scores the models the trials name against the tests they name, in one
        :meth:`score_matrix` (systems whose per-score cost is a small product, as PLDA and
        ISV scoring, lose little to the pairs no trial asks for), and picks the trials.
        """
        ids = self.model_ids(models)
        pos = {m: i for i, m in enumerate(ids)}
        for i, (m, _) in enumerate(trials):
            if m not in pos:
                raise DataError(f"trial {i + 1}: unknown model {m!r}")
        used = sorted({pos[m] for m, _ in trials})
        if len(used) < len(ids):  # only the models the trials name
            models = self.subset(models, used)
            pos = {ids[r]: i for i, r in enumerate(used)}
        named = {u for _, u in trials}
        if len(named) < len(tests.ids):  # only the tests the trials name
            keep = [j for j, u in enumerate(tests.ids) if u in named]
            tests = Tests(
                ids=[tests.ids[j] for j in keep],
                source=tests.source,
                paths=None if tests.paths is None else [tests.paths[j] for j in keep],
            )
        tpos = {u: j for j, u in enumerate(tests.ids)}
        S = self.score_matrix(models, tests, jobs=jobs, progress=progress)
        out = np.full(len(trials), np.nan)
        for i, (m, u) in enumerate(trials):
            if u in tpos:
                out[i] = S[pos[m], tpos[u]]
        return out

    def score_trials_with_cohort(
        self,
        models: Any,
        trials: Sequence[tuple[str, str]],
        tests: Tests,
        cohort: NormCohort | None,
        *,
        jobs: int = 1,
        progress: bool = False,
        parts_dir: Path | None = None,
    ) -> tuple[FloatArray, FloatArray | None]:
        """:meth:`score_trials`, and the raw T side of ``cohort`` when its method needs one.

        Returns the raw trial scores and, where a system can compute it from the same pass
        over the tests (GMM-UBM: one UBM pass per test for its trial and cohort models),
        the cohort models' raw scores on every test, (n_cohort, len(tests.ids)), for
        :meth:`normalise`; None leaves the T side to :meth:`normalise` (the default).
        """
        return self.score_trials(
            models, trials, tests, jobs=jobs, progress=progress, parts_dir=parts_dir
        ), None

    # -- normalisation --------------------------------------------------------------------
    def cohort_tests(self, cohort: NormCohort) -> Tests:
        """The cohort utterances as tests, from the run's files (:meth:`stored_source`).

        Raises
        ------
        ModelError
            A cohort utterance is missing from them (names the file and the utterance).
        """
        source = self.stored_source()
        gone = [u for u in cohort.cohort_ids if u not in source]
        if gone:
            raise ModelError(
                f"{self.stored_file()}: cohort utterance {gone[0]!r} has no {self.stored_what}; run the recipe again"
            )
        return Tests(ids=list(cohort.cohort_ids), source=source, paths=list(cohort.cohort_paths) or None)

    def cohort_models(self, cohort: NormCohort) -> Any:
        """One model per cohort utterance (T side)."""
        raise NotImplementedError

    def build_cohort(
        self,
        models: Any,
        enrolled: Mapping[str, Sequence[str]],
        cohort_ids: Sequence[str],
        cohort_paths: Sequence[str],
        *,
        jobs: int = 1,
        progress: bool = False,
    ) -> NormCohort:
        """Compute the cohort statistics of :meth:`cohort_method` for ``models``.

        ``enrolled`` maps each model id to its enrolment utterance ids (left out of its Z
        statistics). Called by the recipe's scoring stage; the result is saved for serving.
        """
        method = self.cohort_method()
        z, _, zt = cohort_sides(method)
        cohort = NormCohort(
            method=method,
            top_n=self.cohort_top_n,
            cohort_ids=list(cohort_ids),
            cohort_paths=[same_file_key(p) for p in cohort_paths],
        )
        if len(cohort.cohort_ids) < 2:
            raise DataError(
                f"score normalisation needs at least 2 cohort utterances with features, got {len(cohort.cohort_ids)}"
            )
        self.prepare_cohort(cohort, jobs=jobs, progress=progress)
        if z:
            rows = self.z_rows(models, cohort, jobs=jobs, progress=progress)
            own = np.array(
                [[c in set(enrolled.get(m, ())) for c in cohort.cohort_ids] for m in self.model_ids(models)]
            )
            cohort = cohort.with_models(
                self.model_ids(models), np.ma.MaskedArray(rows, mask=own.reshape(rows.shape))
            )
        if zt:
            cc = self.score_matrix(
                self.cohort_models(cohort), self.cohort_tests(cohort), jobs=jobs, progress=progress
            )
            cohort.cohort_cohort = np.ma.MaskedArray(cc, mask=np.eye(len(cohort.cohort_ids), dtype=bool))
        cohort.signature = self.cohort_signature(cohort, models)
        return cohort

    def prepare_cohort(self, cohort: NormCohort, *, jobs: int = 1, progress: bool = False) -> None:
        """Train/save what the T side needs (e.g. cohort models); default: nothing."""

    def z_rows(self, models: Any, cohort: NormCohort, *, jobs: int = 1, progress: bool = False) -> FloatArray:
        """Z side of ``models``: raw scores on the cohort utterances, (n_models, n_cohort)."""
        return self.score_matrix(models, self.cohort_tests(cohort), jobs=jobs, progress=progress)

    def cohort_signature(self, cohort: NormCohort, models: Any) -> str:
        """What the cohort statistics depend on: method, cohort, the system, the models."""
        return fingerprint(
            {
                "method": cohort.method,
                "top_n": cohort.top_n,
                "cohort": cohort.cohort_ids,
                "system": self.dependencies(),
                "models": self.model_signature(models) if cohort.model_cohort is not None else None,
            }
        )

    def load_cohort(self, models: Any) -> NormCohort | None:
        """The run's cohort statistics, checked against this system and ``models`` (None: not normalised).

        Raises
        ------
        ModelError
            Missing file, or statistics of another configuration or other models (the
            recipe was rerun only in part): names the file and says to run the recipe.
        """
        method = self.cohort_method()
        if method == "none":
            return None
        path = self.wd.norm_cohort(self.name)
        if not path.is_file():
            raise ModelError(
                f"{path}: not found; the {self.name} system normalises scores ({method}) and verification "
                f"needs the cohort statistics its scoring stage stores: run the recipe again"
            )
        cohort = NormCohort.load(path)
        if cohort.method != method:
            raise ModelError(
                f"{path}: holds {cohort.method} statistics but the recipe says {method}: run it again"
            )
        if cohort.signature != self.cohort_signature(cohort, models):
            raise ModelError(
                f"{path}: cohort statistics of other models or another configuration than the "
                f"workdir's (was the recipe run only in part?): run the recipe again"
            )
        return cohort

    def cohort_test(self, cohort: NormCohort, tests: Tests, *, jobs: int = 1, progress: bool = False) -> Any:
        """T side: cohort models on ``tests`` (n_cohort, n_tests), a cohort model's own utterance masked.

        A test is its cohort model's own utterance when the ids match (recipe trials) or
        the audio files are the same file (audio given to verify).
        """
        S = self.score_matrix(self.cohort_models(cohort), tests, jobs=jobs, progress=progress)
        return self.mask_own_tests(cohort, tests, S)

    @staticmethod
    def mask_own_tests(cohort: NormCohort, tests: Tests, S: FloatArray) -> Any:
        """T-side scores ``S`` (n_cohort, n_tests) masked where a test is the cohort model's
        own utterance (see :meth:`cohort_test`)."""
        ids = np.asarray(cohort.cohort_ids, dtype=object)
        mask = ids[:, None] == np.asarray(tests.ids, dtype=object)[None, :]
        if tests.paths is not None and cohort.cohort_paths:
            cp = np.asarray(cohort.cohort_paths, dtype=object)
            tp = np.asarray([same_file_key(p) for p in tests.paths], dtype=object)
            mask |= cp[:, None] == tp[None, :]
        return np.ma.MaskedArray(S, mask=mask.reshape(S.shape))

    def normalise(
        self,
        raw: FloatArray,
        trials: Sequence[tuple[str, str]],
        tests: Tests,
        cohort: NormCohort | None,
        *,
        method: str | None = None,
        jobs: int = 1,
        progress: bool = False,
        cohort_scores: FloatArray | None = None,
    ) -> FloatArray:
        """Normalise raw trial scores with the cohort (the recipe's score stage and verify alike).

        Parameters
        ----------
        raw : ndarray (n_trials,)
            Raw scores of ``trials`` (NaN: unscored, stays NaN).
        trials : sequence of (model_id, test_id)
        tests : Tests
            The trials' tests (T side computed on them).
        cohort : NormCohort or None
            The Z side must hold every model the trials name.
        method : str, optional
            Default: the cohort's method.
        cohort_scores : ndarray (n_cohort, len(tests.ids)), optional
            The T side's raw scores on ``tests`` when already computed
            (:meth:`score_trials_with_cohort`); default: :meth:`cohort_test` computes them.
        """
        from gmmspeaker.scoring.norm import normalize_scores

        raw = np.asarray(raw, dtype=np.float64)
        method = method or (cohort.method if cohort is not None else "none")
        if method == "none" or cohort is None:
            return raw
        z, t, zt = cohort_sides(method)
        out = np.full(raw.shape, np.nan)
        ok = np.isfinite(raw)
        if not ok.any():
            return out
        kept = [tr for tr, k in zip(trials, ok) if k]
        test_ids = sorted({u for _, u in kept})
        tpos = {u: j for j, u in enumerate(tests.ids)}
        missing = [u for u in test_ids if u not in tpos]
        if missing:
            raise DataError(f"normalisation: test {missing[0]!r} is not among the tests given")
        sub = Tests(
            ids=test_ids,
            source=tests.source,
            paths=[tests.paths[tpos[u]] for u in test_ids] if tests.paths is not None else None,
        )
        col = {u: j for j, u in enumerate(test_ids)}
        mpos = {m: i for i, m in enumerate(cohort.model_ids)}
        if z:
            unknown = [m for m, _ in kept if m not in mpos]
            if unknown:
                raise ModelError(f"model {unknown[0]!r} has no cohort statistics (Z side)")
        model_idx = np.array([mpos.get(m, 0) for m, _ in kept], dtype=np.int64)
        test_idx = np.array([col[u] for _, u in kept], dtype=np.int64)
        t_side = None
        if t and cohort_scores is not None:
            cs = np.asarray(cohort_scores, dtype=np.float64)
            if cs.shape != (len(cohort.cohort_ids), len(tests.ids)):
                raise DataError(
                    f"normalisation: cohort scores of shape {cs.shape}, expected "
                    f"({len(cohort.cohort_ids)}, {len(tests.ids)})"
                )
            t_side = self.mask_own_tests(cohort, sub, cs[:, [tpos[u] for u in test_ids]])
        elif t:
            t_side = self.cohort_test(cohort, sub, jobs=jobs, progress=progress)
        out[ok] = normalize_scores(
            raw[ok],
            method=method,
            model_cohort=cohort.model_cohort if z else None,
            cohort_test=t_side,
            cohort_cohort=cohort.cohort_cohort if zt else None,
            model_idx=model_idx,
            test_idx=test_idx,
            top_n=cohort.top_n,
        )
        return out

    # -- decisions -------------------------------------------------------------------------
    def results(self) -> dict[str, Any]:
        """The run's ``results.json`` ({} before the evaluate stage)."""
        if self._results is None:
            path = self.wd.results
            self._results = self.wd.read_json(path, what="results") if path.is_file() else {}
        return self._results

    def threshold(self, model_id: str | None = None, *, speech_seconds: float | None = None) -> float:
        """The default decision threshold on this system's scores for ``model_id``.

        The EER threshold of the experiment's own trials; for a model enrolled from
        ``speech_seconds`` of speech (given for user models only: the run's own models
        keep the run's threshold), the EER threshold the run measured for models enrolled
        from that much speech (:meth:`short_enrolment`), when it measured one.

        Raises
        ------
        ModelError
            The run was not evaluated (no threshold yet).
        """
        res = self.results()
        if "eer_threshold" not in res:
            raise ModelError(
                f"{self.wd.results}: no EER threshold; run the recipe through its evaluate stage"
            )
        base = float(res["eer_threshold"])
        dt = self.short_enrolment() if speech_seconds is not None else None
        if dt is None or speech_seconds is None:
            return base
        return float(dt.threshold(speech_seconds))

    def short_enrolment(self) -> Any:
        """The run's :class:`~gmmspeaker.scoring.duration.DurationThreshold`, or None.

        None when the run did not measure one (a fusion, or a workdir evaluated before
        gmmspeaker did) or measured it on other scores than ``results.json``'s threshold.
        """
        from gmmspeaker.scoring.duration import DurationThreshold

        path = self.wd.short_enrolment
        if not path.is_file():
            return None
        try:
            dt = DurationThreshold.from_dict(self.wd.read_json(path, what="short-enrolment thresholds"))
        except ConfigError as exc:
            raise ModelError(f"{path}: {exc}; run the recipe again") from None
        if not np.isclose(
            dt.reference_threshold, float(self.results().get("eer_threshold", np.nan)), rtol=0, atol=1e-9
        ):
            return None
        return dt

    def calibration(self) -> Any | None:
        """The run's :class:`~gmmspeaker.scoring.calibration.LinearCalibration` of the scores, or None."""
        from gmmspeaker.scoring.calibration import LinearCalibration

        c = self.results().get("calibration")
        return LinearCalibration.from_dict(c) if c else None

    def calibrate(self, scores: FloatArray) -> FloatArray | None:
        """Calibrated LLRs of scores (None without a calibration)."""
        cal = self.calibration()
        return None if cal is None else np.asarray(cal(np.asarray(scores, dtype=np.float64)))
