"""Every path of an experiment's workdir, in one place.

A recipe run writes its outputs into one folder (``exp/<experiment>`` by default); the
serving code (:class:`~gmmspeaker.system.Experiment`, ``gmmspeaker enroll|verify|identify``)
reads them back. :class:`Workdir` names every file of it; no other module spells a
workdir file name.

One file-format convention: HDF5 files are written by :func:`gmmspeaker._io.write_h5`
(or the model classes' ``save``) with a ``format`` attribute their reader checks and the
package ``version``; JSON files are written atomically (:func:`gmmspeaker._io.atomic_write_json`);
score files are text, one trial per line (:mod:`gmmspeaker.scoring.trials`). Every file
is written under a temporary name and renamed, so a reader never sees half a file.

A recipe with several systems (a fusion) keeps each system's files apart by a suffix
(``scores.<system>.txt``, ``norm_cohort.<system>.h5``); ``scores.txt`` is always the
experiment's final scores (the fused ones in a fusion).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmmspeaker._typing import PathLike
from gmmspeaker.errors import ModelError

__all__ = ["Workdir"]


@dataclass(frozen=True)
class Workdir:
    """The files of one experiment folder.

    Parameters
    ----------
    path : Path
        The folder.
    systems : tuple of str
        The recipe's ``system:`` (decides the per-system suffixes of a fusion).
    """

    path: Path
    systems: tuple[str, ...] = ("gmm_ubm",)

    def __init__(self, path: PathLike, systems: Sequence[str] = ("gmm_ubm",)) -> None:
        object.__setattr__(self, "path", Path(path))
        object.__setattr__(self, "systems", tuple(systems))

    @property
    def fused(self) -> bool:
        """True when the recipe fuses several systems."""
        return len(self.systems) > 1

    def _per_system(self, stem: str, system: str | None, suffix: str) -> Path:
        if system is None or not self.fused:
            return self.path / f"{stem}{suffix}"
        return self.path / f"{stem}.{system}{suffix}"

    # -- run bookkeeping ---------------------------------------------------------------
    @property
    def recipe(self) -> Path:
        """``recipe.json``: the resolved recipe of the last run (:meth:`Recipe.to_dict`)."""
        return self.path / "recipe.json"

    @property
    def results(self) -> Path:
        """``results.json``: metrics, thresholds, calibration."""
        return self.path / "results.json"

    @property
    def stages(self) -> Path:
        """Folder of the stage records (``<stage>.json``: fingerprint, inputs, seconds)."""
        return self.path / "stages"

    def stage_record(self, stage: str) -> Path:
        return self.stages / f"{stage}.json"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"

    @property
    def run_log(self) -> Path:
        return self.path / "run.log"

    @property
    def corpus(self) -> Path:
        """Where ``data.synthetic`` generates its corpus."""
        return self.path / "corpus"

    @property
    def report(self) -> Path:
        """``report.html``: the self-contained report (:func:`~gmmspeaker.scoring.report.write_experiment_report`)."""
        return self.path / "report.html"

    @property
    def det_plot(self) -> Path:
        return self.path / "det.png"

    @property
    def score_hist(self) -> Path:
        """``score_hist.png``: the score histogram with the thresholds (evaluate stage)."""
        return self.path / "score_hist.png"

    # -- features and the GMM-UBM system --------------------------------------------------
    @property
    def features(self) -> Path:
        """The feature store folder."""
        return self.path / "features"

    @property
    def features_manifest(self) -> Path:
        return self.features / "manifest.json"

    @property
    def ubm(self) -> Path:
        return self.path / "ubm.h5"

    @property
    def ubm_checkpoint(self) -> Path:
        return self.path / "ubm.checkpoint.h5"

    @property
    def models(self) -> Path:
        """The recipe's MAP-adapted models (rewritten whenever the enroll stage runs)."""
        return self.path / "models.h5"

    @property
    def score_parts(self) -> Path:
        """Finished scoring blocks of an interrupted score stage."""
        return self.path / "score_parts"

    def norm_cohort(self, system: str = "gmm_ubm") -> Path:
        """Cohort statistics a system's normalisation needs at verification."""
        return self._per_system("norm_cohort", system, ".h5")

    def cohort_models(self, system: str = "gmm_ubm") -> Path:
        """The T-norm cohort models of a GMM-UBM system."""
        return self._per_system("cohort_models", system, ".h5")

    @property
    def short_enrolment(self) -> Path:
        """``short_enrolment.json``: the EER threshold against enrolment speech (short enrolment)."""
        return self.path / "short_enrolment.json"

    # -- user models (serving) ------------------------------------------------------------
    def user_models(self, system: str = "gmm_ubm") -> Path:
        """Models enrolled with ``gmmspeaker enroll`` (a run never rewrites them)."""
        return self._per_system("user_models", system, ".h5")

    @property
    def retired_user_models(self) -> Path:
        """Folder of user model files of an earlier ``system:`` (kept; their models are
        re-enrolled in the new system from their recorded audio)."""
        return self.path / "user_models.retired"

    @property
    def user_lock(self) -> Path:
        return self.path / ".user_models.lock"

    @property
    def tmp(self) -> Path:
        """Temporaries that workers read (T-matrix training: T and its Gram matrices), on the
        workdir's storage so that workers on other machines see them; removed after use."""
        return self.path / "tmp"

    # -- i-vector system ---------------------------------------------------------------------
    @property
    def ivector_stats(self) -> Path:
        return self.path / "ivector_stats.h5"

    @property
    def tv(self) -> Path:
        return self.path / "tv.h5"

    @property
    def tv_checkpoint(self) -> Path:
        return self.path / "tv.checkpoint.h5"

    @property
    def ivectors(self) -> Path:
        return self.path / "ivectors.h5"

    @property
    def backend(self) -> Path:
        return self.path / "backend.h5"

    @property
    def plda(self) -> Path:
        return self.path / "plda.h5"

    @property
    def ivector_models(self) -> Path:
        """Enrolled i-vector models: each model's back-end-transformed enrolment i-vectors."""
        return self.path / "ivector_models.h5"

    # -- scores and fusion ------------------------------------------------------------------
    def scores(self, system: str | None = None, kind: str = "scores") -> Path:
        """A score file.

        Parameters
        ----------
        system : str, optional
            None: the experiment's final scores (``<kind>.txt``, fused in a fusion);
            a system: its own scores (``<kind>.<system>.txt`` in a fusion).
        kind : {"scores", "dev_scores", "scores.raw", "scores.calibrated"}
        """
        return self._per_system(kind, system, ".txt")

    @property
    def fusion(self) -> Path:
        """``fusion.json``: how the systems' scores were fused."""
        return self.path / "fusion.json"

    # -- reading -------------------------------------------------------------------------------
    def read_json(self, path: Path, *, what: str) -> dict[str, Any]:
        """A JSON file of this workdir; ModelError naming it when missing or unreadable."""
        if not path.is_file():
            raise ModelError(f"{path}: {what} not found")
        try:
            out = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: unreadable {what} ({exc})") from None
        if not isinstance(out, dict):
            raise ModelError(f"{path}: {what} is not a JSON object")
        return out

    def stage_fingerprints(self) -> dict[str, dict[str, Any]]:
        """The stage records present: ``{stage: record}`` (unreadable records left out)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.stages.is_dir():
            return out
        for p in sorted(self.stages.glob("*.json")):
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(rec, dict):
                out[p.stem] = rec
        return out

    def stale_stages(self, only: Collection[str] | None = None) -> list[tuple[str, str]]:
        """Stages whose record names input fingerprints that are no longer the inputs' own.

        A stage run, then one of its inputs rerun alone (``--until-stage``), leaves the
        stage's outputs computed from the old input: ``[(stage, input)]`` lists each such
        pair. Records without input fingerprints (older runs) are not checked.

        Parameters
        ----------
        only : collection of str, optional
            Check these stages alone (the stages of the system served; records of stages an
            earlier recipe of the workdir ran, such as ``short_enrolment`` before a fusion,
            describe outputs nobody reads).
        """
        recs = self.stage_fingerprints()
        out = []
        for stage, rec in recs.items():
            if only is not None and stage not in only:  # a stage of another system: not served
                continue
            for inp, fp in (rec.get("inputs") or {}).items():
                if inp in recs and recs[inp].get("fingerprint") != fp:
                    out.append((stage, inp))
        return out
