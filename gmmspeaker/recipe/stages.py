"""The recipe's stages: one table of what each stage reads, writes, depends on and runs.

Each :class:`Stage` row names the systems it belongs to, its input stages (whose
fingerprints enter its own), its outputs (files of the :class:`~gmmspeaker.workdir.Workdir`
that must exist for it to count as done), what else its fingerprint covers, and the
function that runs it. The runner, ``--from-stage/--until-stage``, ``--dry-run`` and the
output checks all read :data:`TABLE`. The stage bodies call the library: the feature
store, :mod:`gmmspeaker.gmm.batch`, and the trained systems of :mod:`gmmspeaker.systems`
(the same objects ``gmmspeaker enroll|verify|identify`` serve).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker import __version__
from gmmspeaker._io import atomic_write_json, atomic_write_text
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.recipe.config import STAGES, Recipe
from gmmspeaker.recipe.fingerprint import stable_hash
from gmmspeaker.systems import SYSTEMS, GmmUbm, Isv, Ivector, Tests, TrainedSystem, build, leaves
from gmmspeaker.workdir import Workdir

__all__ = ["Stage", "TABLE", "Run", "needed_stages", "stage"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------
# The run: lists and fingerprints of one recipe in one workdir
# ---------------------------------------------------------------------------


class Run:
    """The lists, fingerprints and systems of one recipe in one workdir (what stage bodies use)."""

    def __init__(self, recipe: Recipe, workdir: Path, *, progress: bool = False) -> None:
        self.recipe = recipe
        self.wd = Workdir(workdir, recipe.system)
        self.progress = progress
        self.fp: dict[str, str] = {}
        self._load_lists()

    def _load_lists(self) -> None:
        from gmmspeaker.corpora.lists import (
            Utterance,
            read_enroll_list,
            read_train_list,
            read_trials,
            read_ubm_list,
        )

        data = self.recipe.data
        if data.synthetic is not None:
            from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

            try:
                cfg = SyntheticCorpusConfig.from_dict(data.synthetic)
            except ConfigError as exc:
                raise ConfigError(f"{self.recipe.path}: data.synthetic: {exc}") from None
            paths = generate_corpus(self.wd.corpus, cfg, n_jobs=self.recipe.jobs)
            root = Path(paths["root"]) if "root" in paths else self.wd.corpus
            ubm, enroll, trials = Path(paths["ubm"]), Path(paths["enroll"]), Path(paths["trials"])
            cohort = dev = None
        else:
            assert data.ubm is not None and data.enroll is not None and data.trials is not None
            root, ubm, enroll, trials, cohort, dev = (
                data.root,
                data.ubm,
                data.enroll,
                data.trials,
                data.cohort,
                data.dev_trials,
            )
        self.ubm_list = read_ubm_list(ubm, root=root)
        self.enrollments = read_enroll_list(enroll, root=root)
        models = {e.model_id for e in self.enrollments}
        self.trials = read_trials(trials, root=root, models=models)
        self.cohort = read_ubm_list(cohort, root=root) if cohort is not None else []
        self.dev_trials = read_trials(dev, root=root, models=models) if dev is not None else []
        if self.dev_trials and any(t.target is None for t in self.dev_trials):
            raise DataError(f"{dev}: development trials need target/nontarget keys to train a calibration")
        self.train: list[Any] = []
        if "ivector" in self.recipe.system or "isv" in self.recipe.system:
            if data.train is not None:
                self.train = read_train_list(data.train, root=root)
            else:  # synthetic corpus: the speaker is the folder (wav/<speaker>/...)
                self.train = [
                    Utterance(utt_id=u.utt_id, path=u.path, speaker=u.path.parent.name) for u in self.ubm_list
                ]
        utts: dict[str, Any] = {}
        for u in [
            *self.ubm_list,
            *(x for e in self.enrollments for x in e.utterances),
            *(t.test for t in self.trials),
            *self.cohort,
            *(t.test for t in self.dev_trials),
            *self.train,
        ]:
            prev = utts.setdefault(u.utt_id, u)
            if prev.path != u.path:
                raise DataError(f"utterance id {u.utt_id!r} names two files: {prev.path} and {u.path}")
        self.utterances = [utts[k] for k in sorted(utts)]
        self.paths = {k: str(u.path) for k, u in utts.items()}

    # -- helpers of the stage bodies ------------------------------------------------------
    def store(self) -> Any:
        from gmmspeaker.store import FeatureStore

        return FeatureStore(self.wd.features)

    def system(self, name: str) -> TrainedSystem:
        return next(s for s in leaves(self.wd, self.recipe) if s.name == name)

    def tests(self, system: TrainedSystem, ids: Sequence[str]) -> Tests:
        """Test utterances as the run holds them for ``system`` (features or i-vectors)."""
        return Tests(ids=list(ids), source=system.stored_source(), paths=[self.paths[u] for u in ids])

    def cohort_ids(self, have: Any) -> list[str]:
        return [u.utt_id for u in dict.fromkeys(self.cohort) if u.utt_id in have]

    def fingerprint(self, name: str) -> str:
        """Hash of the stage's configuration, its inputs' fingerprints and the package version."""
        st = stage(name)
        prev = "".join(self.fp.get(s, "") for s in st.inputs(self.recipe))
        fp = stable_hash({"stage": name, "prev": prev, "version": __version__, "body": st.body(self)})
        self.fp[name] = fp
        return fp

    def input_fingerprints(self, name: str) -> dict[str, str]:
        return {s: self.fp[s] for s in stage(name).inputs(self.recipe) if s in self.fp}

    def run(self, name: str) -> dict[str, Any]:
        """Run a stage (its table row's function); returns extras for its record."""
        return stage(name).run(self)

    def outputs_exist(self, name: str) -> bool:
        if not all(p.exists() for p in stage(name).outputs(self.wd, self.recipe)):
            return False
        return name != "features" or self._store_ok()

    def _store_ok(self) -> bool:
        """Whether the feature store still holds what the features stage recorded.

        Another extraction into the run's store (``gmmspeaker features --out
        <workdir>/features`` with another configuration or list) rebuilds it; the store
        says so (:meth:`~gmmspeaker.store.FeatureStore.problem`) and the stage reruns.
        """
        try:
            rec = json.loads(self.wd.stage_record("features").read_text())
        except (OSError, ValueError):
            rec = {}
        try:
            problem = self.store().problem(
                config_hash=rec.get("config_hash"), ids=[u.utt_id for u in self.utterances]
            )
        except DataError as exc:
            problem = str(exc)
        if problem is not None:
            logger.warning("stage features: %s", problem)
        return problem is None

    def finalize(self, seconds: dict[str, float]) -> dict[str, Any]:
        res = json.loads(self.wd.results.read_text())
        res["stage_seconds"] = {s: round(float(seconds.get(s, 0.0)), 3) for s in needed_stages(self.recipe)}
        atomic_write_json(self.wd.results, res)
        from gmmspeaker.scoring.report import write_experiment_report

        write_experiment_report(self.wd.path, res, recipe=self.recipe.to_dict())
        return res


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """One stage of a recipe.

    Attributes
    ----------
    name : str
    systems : tuple of str
        The systems it belongs to: ``("*",)`` every recipe, ``("fusion",)`` a recipe of
        several systems, else any of the named systems.
    inputs : callable (Recipe) -> tuple of str
        Stages whose outputs it reads (their fingerprints chain into its own).
    outputs : callable (Workdir, Recipe) -> list of Path
        Files that must exist for the stage to count as done.
    body : callable (Run) -> JSON-like
        What else decides its outputs (configuration, lists), hashed into its fingerprint.
    run : callable (Run) -> dict
        Runs it; returns extras for its stage record.
    alone : bool
        Needed only when the recipe has one system, one of ``systems`` (not in a fusion).
    """

    name: str
    systems: tuple[str, ...]
    inputs: Callable[[Recipe], tuple[str, ...]]
    outputs: Callable[[Workdir, Recipe], list[Path]]
    body: Callable[[Run], Any]
    run: Callable[[Run], dict[str, Any]]
    alone: bool = False

    def needed(self, recipe: Recipe) -> bool:
        if self.systems == ("*",):
            return True
        if self.systems == ("fusion",):
            return len(recipe.system) > 1
        if self.alone:
            return len(recipe.system) == 1 and recipe.system[0] in self.systems
        return any(s in recipe.system for s in self.systems)


def _final_scores_stage(recipe: Recipe) -> tuple[str, ...]:
    """The stage whose scores the experiment evaluates: the fusion, or the one system's scoring stage."""
    if len(recipe.system) > 1:
        return ("fusion",)
    return (SYSTEMS[recipe.system[0]].score_stage,)


def _system_score_stages(recipe: Recipe) -> tuple[str, ...]:
    return tuple(SYSTEMS[s].score_stage for s in recipe.system)


def _trial_sig(trials: Sequence[Any]) -> list[Any]:
    return [(t.model_id, t.test.utt_id, t.target) for t in trials]


def _stats_ids(run: Run) -> list[str]:
    ids = {u.utt_id for u in run.train}
    ids.update(u.utt_id for e in run.enrollments for u in e.utterances)
    ids.update(t.test.utt_id for t in [*run.trials, *run.dev_trials])
    ids.update(u.utt_id for u in run.cohort)
    return sorted(ids)


def _norm_outputs(wd: Workdir, recipe: Recipe, system: type[TrainedSystem]) -> list[Path]:
    """The cohort files a system's scoring stage leaves for verification."""
    return system(wd, recipe).cohort_files()


# -- bodies (what a stage's fingerprint covers besides its inputs) ---------------------


def _body_features(run: Run) -> Any:
    from gmmspeaker.store import content_hash, source_signature

    r = run.recipe
    sig: list[Any] = []
    for u in run.utterances:  # what says the audio is unchanged
        try:
            s: Any = source_signature(u.path)
            if r.data.content_check:
                s = [*s, content_hash(u.path)]
        except OSError:
            s = None
        sig.append((u.utt_id, str(u.path), s))
    body = {"features": r.features, "resample": r.data.resample, "on_bad_audio": r.on_bad_audio, "files": sig}
    if r.data.channel not in (None, "mix"):  # averaged channels: the fingerprint of before
        body["channel"] = r.data.channel
    return body


def _body_score(run: Run) -> Any:
    r = run.recipe
    body = {
        "scoring": r.section("scoring"),
        "trials": [(t.model_id, t.test.utt_id) for t in run.trials],
        "cohort": [u.utt_id for u in run.cohort],
        "dev": [(t.model_id, t.test.utt_id) for t in run.dev_trials],
        "cohort_method": GmmUbm(run.wd, r).cohort_method(),
    }
    if len(r.system) > 1:
        body["file"] = run.wd.scores("gmm_ubm").name
    return body


def _body_backend(run: Run) -> Any:
    r = run.recipe
    iv = r.section("ivector")
    keys = ("lda_dim", "wccn", "length_norm", "scoring", "plda_iterations", "normalization", "cohort_top_n")
    return {
        "ivector": {k: iv[k] for k in keys},
        "train": [(u.utt_id, u.speaker) for u in run.train],
        "models": [(e.model_id, [u.utt_id for u in e.utterances]) for e in run.enrollments],
        "trials": _trial_sig(run.trials),
        "dev": _trial_sig(run.dev_trials),
        "cohort": [u.utt_id for u in run.cohort],
        "files": [run.wd.scores("ivector").name, run.wd.scores("ivector", "dev_scores").name],
        "cohort_method": Ivector(run.wd, r).cohort_method(),
    }


def _body_evaluate(run: Run) -> Any:
    r = run.recipe
    return {
        "evaluation": r.section("evaluation"),
        "keys": [t.target for t in run.trials],
        "dev_keys": [t.target for t in run.dev_trials],
    }


# -- run functions ---------------------------------------------------------------------


def _run_features(run: Run) -> dict[str, Any]:
    from gmmspeaker.features import FeatureConfig
    from gmmspeaker.features.extract import resolve_sample_rate
    from gmmspeaker.store import extract_to_store

    r = run.recipe
    config = FeatureConfig.from_dict(r.features, source=f"{r.path}: features")
    config = resolve_sample_rate(
        config,
        [u.path for u in run.utterances],
        resample=r.data.resample,
        resample_flag="data.resample: true",
        config_flag=f"features: in {r.path}",
    )
    report = extract_to_store(
        [(u.utt_id, u.path) for u in run.utterances],
        run.wd.features,
        config,
        jobs=r.jobs,
        on_bad_audio=r.on_bad_audio,
        resample=r.data.resample,
        progress=run.progress,
        content_check=r.data.content_check,
        channel=r.data.channel,
    )
    store = run.store()
    kept = sum(store.n_frames(u) for u in store.ids)
    total = sum(store.n_total(u) for u in store.ids)
    logger.info(
        "features: %d utterances, VAD kept %.1f %% of %d frames",
        len(store),
        100 * kept / max(total, 1),
        total,
    )
    return {
        "computed": len(report.computed),
        "cached": len(report.cached),
        "skipped": report.skipped,
        "vad_kept_fraction": kept / max(total, 1),
        "config_hash": store.config_hash,
    }


def _run_ubm(run: Run) -> dict[str, Any]:
    from gmmspeaker.gmm import batch

    r, u = run.recipe, run.recipe.ubm
    ckpt = run.wd.ubm_checkpoint
    gmm = batch.train_ubm(
        run.store(),
        [x.utt_id for x in run.ubm_list],
        components=u.components,
        iterations=u.iterations,
        init=u.init,
        variance_floor=u.variance_floor,
        tol=u.tol,
        n_init=u.n_init,
        dtype=u.dtype,
        chunk_frames=u.chunk_frames,
        max_frames=u.max_frames,
        subsample=u.subsample,
        n_parts=u.parts,
        seed=r.seed,
        jobs=r.jobs,
        checkpoint=ckpt,
        progress=run.progress,
        cache_dir=run.wd.tmp,  # the subsampled frames, read once from the store
    )
    gmm.save(run.wd.ubm)
    if ckpt.exists():
        ckpt.unlink()
    return {"history": [float(h) for h in getattr(gmm, "history_", [])]}


def _model_seconds(run: Run) -> dict[str, float]:
    """Seconds of speech (frames kept by VAD x frame shift) each enrolled model was trained on."""
    from gmmspeaker.features import FeatureConfig

    shift = FeatureConfig.from_dict(run.recipe.features).frame_shift
    store = run.store()
    return {
        e.model_id: round(shift * sum(store.n_frames(u.utt_id) for u in e.utterances if u.utt_id in store), 3)
        for e in run.enrollments
    }


def _run_enroll(run: Run) -> dict[str, Any]:
    gmm = GmmUbm(run.wd, run.recipe)
    models = gmm.enrol_store(run.store(), run.enrollments, jobs=run.recipe.jobs, progress=run.progress)
    models.save(run.wd.models)
    return {"n_models": len(models.model_ids), "speech_seconds": _model_seconds(run)}


def _score_system(
    run: Run, system: TrainedSystem, models: Any, parts: Path | None = None, **score_kw: Any
) -> dict[str, Any]:
    """Score the trial lists with a system, normalise, write its score files and cohort statistics."""
    from gmmspeaker.scoring.trials import write_scores

    r, wd = run.recipe, run.wd
    jobs, progress = r.jobs, run.progress
    cohort = None
    if system.cohort_method() != "none":
        tests_all = run.tests(system, [])
        have = tests_all.source
        enrolled = {e.model_id: [u.utt_id for u in e.utterances] for e in run.enrollments}
        ids = run.cohort_ids(have)
        cohort = system.build_cohort(
            models, enrolled, ids, [run.paths[u] for u in ids], jobs=jobs, progress=progress
        )
        cohort.save(wd.norm_cohort(system.name))
    own = system.normalization
    for kind, trials, pdir in (("scores", run.trials, parts), ("dev_scores", run.dev_trials, None)):
        if not trials:
            continue
        pairs = [(t.model_id, t.test.utt_id) for t in trials]
        tests = run.tests(system, sorted({u for _, u in pairs}))
        # one pass over the tests for the trials and the T side of the normalisation
        raw, t_side = system.score_trials_with_cohort(
            models,
            pairs,
            tests,
            cohort if own != "none" else None,
            jobs=jobs,
            progress=progress,
            parts_dir=pdir,
        )
        scores = raw
        if own != "none":
            if kind == "scores":
                write_scores(wd.scores(system.name, "scores.raw"), trials, raw)
            scores = system.normalise(
                raw, pairs, tests, cohort, method=own, jobs=jobs, progress=progress, cohort_scores=t_side
            )
        write_scores(wd.scores(system.name, kind), trials, scores)
    return {"n_trials": len(run.trials)}


def _run_score(run: Run) -> dict[str, Any]:
    parts = run.wd.score_parts
    marker = parts / "fingerprint"
    if parts.exists() and (not marker.exists() or marker.read_text() != run.fp["score"]):
        shutil.rmtree(parts)  # parts of another configuration: not reusable
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, run.fp["score"])
    gmm = GmmUbm(run.wd, run.recipe)
    out = _score_system(run, gmm, gmm.load_models(), parts)
    shutil.rmtree(parts)
    return out


def _available(run: Run, ids: Sequence[str]) -> list[str]:
    store = run.store()
    have = [u for u in ids if u in store]
    if len(have) < len(ids):
        logger.warning(
            "i-vector statistics: %d of %d utterances have no features", len(ids) - len(have), len(ids)
        )
    return have


def _run_statistics(run: Run) -> dict[str, Any]:
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.ivector.stats import write_stats

    ids = _available(run, _stats_ids(run))
    ubm = GaussianMixture.load(run.wd.ubm)
    # written batch by batch: memory does not grow with the number of utterances
    write_stats(
        run.wd.features, ids, ubm, run.wd.ivector_stats, n_jobs=run.recipe.jobs, progress=run.progress
    )
    return {"n_utterances": len(ids)}


def _run_tv(run: Run) -> dict[str, Any]:
    from gmmspeaker.ivector.stats import stats_ids
    from gmmspeaker.ivector.tv import train_tv

    r = run.recipe
    train = sorted({u.utt_id for u in run.train} & set(stats_ids(run.wd.ivector_stats)))
    if len(train) < 2:
        raise DataError(f"the i-vector training list has {len(train)} utterance(s) with features; need more")
    iv = r.ivector
    ckpt = run.wd.tv_checkpoint
    # statistics streamed from the file (workers read their batches); T and its Gram
    # matrices for process workers go under the workdir (shared storage on a cluster)
    tv = train_tv(
        run.wd.ivector_stats,
        utterances=train,
        tmp_dir=run.wd.tmp,
        rank=iv.rank,
        iterations=iv.iterations,
        min_divergence=iv.min_divergence,
        rng=np.random.default_rng(np.random.SeedSequence([r.seed, 2])),
        n_jobs=r.jobs,
        batch_size=iv.batch_size,
        checkpoint=ckpt,
        progress=run.progress,
        # the batch GEMMs in float32 (factorisations, accumulators, M-step and T float64):
        # 20 % less CPU at R = 64; T moves by ~2e-5 relative, EER / minDCF unchanged
        # (docs/benchmarks.md, bench_e2e)
        dtype="float32",
    )
    tv.save(run.wd.tv)
    if ckpt.exists():
        ckpt.unlink()
    return {"n_train": len(train), "rank": tv.rank}


def _run_extract(run: Run) -> dict[str, Any]:
    from gmmspeaker.ivector.stats import stats_ids
    from gmmspeaker.ivector.trials import save_ivectors
    from gmmspeaker.ivector.tv import TotalVariability, extract_ivectors

    tv = TotalVariability.load(run.wd.tv)
    # batch by batch from the file
    vectors = extract_ivectors(tv, run.wd.ivector_stats, batch_size=run.recipe.ivector.batch_size)
    ids = stats_ids(run.wd.ivector_stats)
    save_ivectors(run.wd.ivectors, ids, vectors)
    return {"n_ivectors": len(ids)}


def _run_backend(run: Run) -> dict[str, Any]:
    from gmmspeaker.ivector.backend import PLDA, Backend

    iv = run.recipe.ivector
    system = Ivector(run.wd, run.recipe)
    ivectors = system.ivectors()
    train = [u for u in run.train if u.utt_id in ivectors]
    X = np.vstack([ivectors[u.utt_id] for u in train])
    labels = [str(u.speaker) for u in train]
    backend = Backend.fit(X, labels, lda_dim=iv.lda_dim, wccn=iv.wccn, length_norm=iv.length_norm)
    plda = (
        PLDA.fit(backend.transform(X), labels, iterations=iv.plda_iterations)
        if iv.scoring == "plda"
        else None
    )
    backend.save(run.wd.backend)
    if plda is not None:
        plda.save(run.wd.plda)
    elif run.wd.plda.exists():
        run.wd.plda.unlink()
    system.set_parts(backend=backend, plda=plda)
    models = system.enrol_ivectors(run.enrollments, ivectors)
    models.save(run.wd.ivector_models)
    out: dict[str, Any] = _score_system(run, system, models)
    out.update(dim=backend.dim, speech_seconds=_model_seconds(run))
    if plda is not None:
        out["plda_loglik"] = [float(h) for h in plda.history]
    return out


def _run_isv_train(run: Run) -> dict[str, Any]:
    from gmmspeaker.isv.train import train_isv
    from gmmspeaker.ivector.stats import stats_ids

    r = run.recipe
    have = set(stats_ids(run.wd.ivector_stats))
    speakers = {u.utt_id: str(u.speaker) for u in run.train if u.utt_id in have}
    if len(set(speakers.values())) < 2:
        raise DataError(
            f"the ISV training list has {len(speakers)} utterance(s) with features from fewer than 2 speakers"
        )
    c = r.isv
    ckpt = run.wd.isv_checkpoint
    # statistics streamed from the file batch by batch (a batch is a set of whole speakers)
    model = train_isv(
        run.wd.ivector_stats,
        speakers,
        rank=c.rank,
        relevance=c.relevance,
        iterations=c.iterations,
        min_divergence=c.min_divergence,
        rng=np.random.default_rng(np.random.SeedSequence([r.seed, 3])),
        n_jobs=r.jobs,
        batch_size=c.batch_size,
        checkpoint=ckpt,
        progress=run.progress,
        tmp_dir=run.wd.tmp,
    )
    model.save(run.wd.isv)
    if ckpt.exists():
        ckpt.unlink()
    return {
        "n_train": len(speakers),
        "n_speakers": len(set(speakers.values())),
        "rank": model.rank,
        "elbo": list(model.log_likelihood),
    }


def _run_isv_enroll(run: Run) -> dict[str, Any]:
    system = Isv(run.wd, run.recipe)
    models = system.enrol_store(run.store(), run.enrollments, jobs=run.recipe.jobs, progress=run.progress)
    models.save(run.wd.isv_models)
    return {"n_models": len(models), "speech_seconds": _model_seconds(run)}


def _run_isv_score(run: Run) -> dict[str, Any]:
    system = Isv(run.wd, run.recipe)
    return _score_system(run, system, system.load_models())


def _body_isv_score(run: Run) -> Any:
    r = run.recipe
    return {
        "isv": {k: r.section("isv")[k] for k in ("normalization", "cohort_top_n")},
        "trials": _trial_sig(run.trials),
        "dev": _trial_sig(run.dev_trials),
        "cohort": [u.utt_id for u in run.cohort],
        "files": [run.wd.scores("isv").name, run.wd.scores("isv", "dev_scores").name],
        "cohort_method": Isv(run.wd, r).cohort_method(),
    }


def _run_fusion(run: Run) -> dict[str, Any]:
    from gmmspeaker.scoring.fusion import LinearFusion
    from gmmspeaker.scoring.trials import read_scores, write_scores
    from gmmspeaker.systems import Fused

    r, wd = run.recipe, run.wd
    fused = build(wd, r)
    assert isinstance(fused, Fused)
    names = [s.name for s in fused.systems]
    record: dict[str, Any] = {"systems": names}
    if run.dev_trials:
        D = np.column_stack([read_scores(wd.scores(s, "dev_scores"))[1] for s in names])
        key = np.array([bool(t.target) for t in run.dev_trials])
        ok = np.all(np.isfinite(D), axis=1)
        fusion = LinearFusion.fit(D[ok], key[ok], p_target=r.fusion.p_target)
        record.update(method="logistic_regression", **fusion.to_dict())
        write_scores(wd.scores(None, "dev_scores"), run.dev_trials, fusion.apply(D))
    else:
        record.update(method="equal_weight", normalization={}, standardize={})
        for s in fused.systems:
            if s.normalization != "none":
                record["normalization"][s.name] = s.normalization
            elif s.cohort_method() == "znorm":
                record["normalization"][s.name] = "znorm"
            else:
                _, sc, _ = read_scores(wd.scores(s.name))
                ok = np.isfinite(sc)
                mu, sd = float(sc[ok].mean()), float(sc[ok].std())
                record["normalization"][s.name] = "standardized"
                record["standardize"][s.name] = [mu, sd if sd > 0 else 1.0]
    pairs = [(t.model_id, t.test.utt_id) for t in run.trials]
    scored, tests, cohorts = [], [], []
    for s in fused.systems:
        _, score, _ = read_scores(wd.scores(s.name))
        raw = read_scores(wd.scores(s.name, "scores.raw"))[1] if s.normalization != "none" else score
        scored.append((raw, score))
        tests.append(run.tests(s, sorted({u for _, u in pairs})))
        models = s.load_models()
        cohorts.append(s.load_cohort(models))
    columns = fused.columns(scored, pairs, tests, cohorts, record=record)
    write_scores(wd.scores(None), run.trials, fused.combine(columns, record))
    atomic_write_json(wd.fusion, record)
    return record


def _identification(run: Run) -> dict[str, Any]:
    """Top-1 / top-5 accuracy over the trial list's test files whose speaker is enrolled.

    Every enrolled model is scored on each such test with the experiment's system, as
    ``gmmspeaker identify`` ranks them.
    """
    from gmmspeaker.scoring.metrics import identification_accuracy
    from gmmspeaker.system import Experiment

    exp = Experiment.load(run.wd.path, run.recipe, check_stale=False, user_models=False)
    ids = exp.model_ids
    row = {m: i for i, m in enumerate(ids)}
    truth = {t.test.utt_id: row[t.model_id] for t in run.trials if t.target is True and t.model_id in row}
    store = run.store()
    tests = sorted(u for u in truth if u in store)
    if not tests:
        return {"n_tests": 0}
    s = exp.score_matrix(lambda system: run.tests(system, tests))
    acc = identification_accuracy(s, [truth[u] for u in tests], ks=(1, 5))
    return {**acc, "n_tests": len(tests), "n_models": len(ids)}


def _run_evaluate(run: Run) -> dict[str, Any]:
    from gmmspeaker.scoring.metrics import eer_threshold
    from gmmspeaker.scoring.plots import plots_available
    from gmmspeaker.scoring.trials import evaluate_scores, read_scores, write_scores

    r, wd = run.recipe, run.wd
    ev = r.evaluation
    _, scores, _ = read_scores(wd.scores(None))
    keys = [t.target for t in run.trials]
    metric_kw = dict(p_targets=ev.p_target, c_miss=ev.c_miss, c_fa=ev.c_fa)
    det = wd.det_plot if ev.det_plot and plots_available() else None
    res = evaluate_scores(scores, keys, det_plot=det, name=r.experiment, **metric_kw)
    tar = [s for s, k in zip(scores, keys) if k is True]
    non = [s for s, k in zip(scores, keys) if k is False]
    if tar and non:
        res["eer_threshold"] = eer_threshold(tar, non)
    if ev.identification:
        res["identification"] = _identification(run)
    if run.dev_trials:
        from gmmspeaker.scoring.calibration import LinearCalibration

        _, dev, _ = read_scores(wd.scores(None, "dev_scores"))
        key = np.array([t.target for t in run.dev_trials], dtype=bool)
        ok = np.isfinite(dev)
        cal = LinearCalibration.fit(dev[ok & key], dev[ok & ~key], p_target=ev.calibration_p_target)
        calibrated = cal(scores)
        write_scores(wd.scores(None, "scores.calibrated"), run.trials, calibrated)
        cres = evaluate_scores(calibrated, keys, **metric_kw)
        res["calibrated"] = {k: cres[k] for k in ("act_dcf", "cllr", "min_cllr")}
        res["calibration"] = cal.to_dict()
    from gmmspeaker.scoring.report import score_label, write_score_histogram

    res["score_label"] = score_label(
        system=r.system,
        normalization=r.scoring.normalization,
        ivector_scoring=r.ivector.scoring,
        ivector_normalization=r.ivector.normalization,
        isv_normalization=r.isv.normalization,
    )
    res["thresholds"] = write_score_histogram(
        wd.path,
        scores,
        keys,
        p_targets=ev.p_target,
        calibration=res.get("calibration"),
        c_miss=ev.c_miss,
        c_fa=ev.c_fa,
        plot=ev.det_plot,
        score_label=res["score_label"],
    )
    feats = json.loads(wd.stage_record("features").read_text())
    res["skipped_audio"] = sorted(feats.get("skipped", {}))
    res["n_skipped_audio"] = len(res["skipped_audio"])
    res["vad_kept_fraction"] = feats.get("vad_kept_fraction")
    res["experiment"] = r.experiment
    res["config"] = {
        "features": r.features,
        "ubm": r.section("ubm"),
        "map": r.section("map"),
        "scoring": r.section("scoring"),
        "seed": r.seed,
    }
    res["system"] = list(r.system)
    if "ivector" in r.system:
        res["config"]["ivector"] = r.section("ivector")
    if "isv" in r.system:
        res["config"]["isv"] = r.section("isv")
    if len(r.system) > 1:
        per: dict[str, Any] = {}
        names = ("eer", "min_dcf", "act_dcf", "cllr", "min_cllr")
        for s in r.system:
            _, sc, _ = read_scores(wd.scores(s))
            m = evaluate_scores(sc, keys, **metric_kw)
            per[s] = {k: m[k] for k in names if k in m}
        per["fusion"] = {k: res[k] for k in names if k in res}
        res["systems"] = per
        res["fusion"] = json.loads(wd.fusion.read_text())
    atomic_write_json(wd.results, res)
    return {}


def _run_short_enrolment(run: Run) -> dict[str, Any]:
    """The EER threshold of models enrolled from less speech than the run's (:mod:`gmmspeaker.scoring.duration`).

    Sub-models are enrolled from stratified random subsets of up to 64 models' enrolment
    utterances on a grid of speech durations below the models' median (down to one
    utterance), scored and normalised on their model's trials as the score stage scores
    the run's own (the run's cohort statistics and cohort models, the sub-model's
    enrolment utterances left out of its Z statistics), and the equal-error threshold of
    each duration is fitted against log duration. Any single system (GMM-UBM, i-vector,
    ISV) runs it through its :meth:`~gmmspeaker.systems.base.TrainedSystem.enrol_store`,
    ``score_trials`` and ``normalise``, the methods its own stages and serving call; a
    fusion does not (its user models keep the run's threshold).
    """
    from gmmspeaker.corpora.lists import Enrollment
    from gmmspeaker.scoring.duration import DurationThreshold, draw_subsets, duration_grid
    from gmmspeaker.scoring.metrics import eer_threshold
    from gmmspeaker.scoring.trials import read_scores

    r, wd = run.recipe, run.wd
    system = run.system(r.system[0])
    store = run.store()
    secs = _utterance_seconds(run)
    enrol = [
        Enrollment(e.model_id, tuple(u for u in e.utterances if u.utt_id in secs)) for e in run.enrollments
    ]
    enrol = [e for e in enrol if e.utterances]
    totals = np.array([sum(secs[u.utt_id] for u in e.utterances) for e in enrol])
    utt = np.array([secs[u.utt_id] for e in enrol for u in e.utterances])
    _, scores, _ = read_scores(wd.scores(None))
    keys = np.array([t.target is True for t in run.trials])
    keyed = np.array([t.target is not None for t in run.trials]) & np.isfinite(scores)
    reference = float(np.median(totals))
    record: dict[str, Any] = {
        "reference_seconds": reference,
        "reference_threshold": eer_threshold(scores[keyed & keys], scores[keyed & ~keys]),
        "test_seconds_min": float(
            min((secs[t.test.utt_id] for t in run.trials if t.test.utt_id in secs), default=0.0)
        ),
        "enrol_seconds_min": float(totals.min()),
    }
    rng = np.random.default_rng([r.seed, 0x5E])
    picked = sorted(rng.permutation(len(enrol))[:64].tolist())
    levels = duration_grid(reference, 0.5 * float(np.median(utt)))  # the last: one utterance
    subsets = draw_subsets(
        [[secs[u.utt_id] for u in enrol[i].utterances] for i in picked], levels, draws=3, rng=rng
    )
    if not subsets:
        fitted = DurationThreshold(**record)
    else:
        subs = [
            Enrollment(
                f"{enrol[picked[m]].model_id}@{k}.{j}", tuple(enrol[picked[m]].utterances[i] for i in idx)
            )
            for j, (m, k, idx) in enumerate(subsets)
        ]
        by_model: dict[str, list[Any]] = {}
        for t in run.trials:
            if t.target is not None:
                by_model.setdefault(t.model_id, []).append(t)
        pairs, key, level = [], [], []
        for (m, k, _), e in zip(subsets, subs):
            for t in by_model.get(enrol[picked[m]].model_id, []):
                pairs.append((e.model_id, t.test.utt_id))
                key.append(bool(t.target))
                level.append(k)
        models = system.enrol_store(store, subs, jobs=r.jobs, progress=run.progress, desc="short enrol")
        tests = run.tests(system, sorted({u for _, u in pairs}))
        sub_scores = system.score_trials(models, pairs, tests, jobs=r.jobs, progress=run.progress)
        if system.normalization != "none":
            cohort = system.load_cohort(system.load_models())
            assert cohort is not None
            if cohort.model_cohort is not None:
                z = system.z_rows(models, cohort, jobs=r.jobs, progress=run.progress)
                own = np.array(
                    [[c in {u.utt_id for u in e.utterances} for c in cohort.cohort_ids] for e in subs]
                ).reshape(z.shape)
                cohort = cohort.with_models([e.model_id for e in subs], np.ma.MaskedArray(z, mask=own))
            sub_scores = system.normalise(
                sub_scores,
                pairs,
                tests,
                cohort,
                method=system.normalization,
                jobs=r.jobs,
                progress=run.progress,
            )
        fitted = DurationThreshold.fit(
            sub_scores,
            key,
            level,
            [sum(secs[u.utt_id] for u in e.utterances) for e in subs],
            [k for _, k, _ in subsets],
            **record,
        )
        logger.info(
            "short enrolment: EER thresholds %s at %s s of enrolment speech (the run's: %.4f at %.1f s)",
            ", ".join(f"{v:.4f}" for v in fitted.level_thresholds),
            ", ".join(f"{v:.1f}" for v in fitted.level_seconds),
            fitted.reference_threshold,
            reference,
        )
    atomic_write_json(wd.short_enrolment, fitted.to_dict())
    return {"levels": len(fitted.level_seconds)}


def _utterance_seconds(run: Run) -> dict[str, float]:
    """Speech seconds (frames kept by VAD x frame shift) of every utterance with features."""
    from gmmspeaker.features import FeatureConfig

    shift = FeatureConfig.from_dict(run.recipe.features).frame_shift
    store = run.store()
    return {u: shift * store.n_frames(u) for u in store.ids}


def _const(*names: str) -> Callable[[Recipe], tuple[str, ...]]:
    return lambda recipe: names


#: The stages, in run order.
TABLE: tuple[Stage, ...] = (
    Stage(
        "features",
        ("*",),
        _const(),
        lambda wd, r: [wd.features_manifest],
        _body_features,
        _run_features,
    ),
    Stage(
        "ubm",
        ("*",),
        _const("features"),
        lambda wd, r: [wd.ubm],
        lambda run: {
            "ubm": run.recipe.section("ubm"),
            "seed": run.recipe.seed,
            "ids": sorted(u.utt_id for u in run.ubm_list),
        },
        _run_ubm,
    ),
    Stage(
        "enroll",
        ("gmm_ubm",),
        _const("ubm"),
        lambda wd, r: [wd.models],
        lambda run: {
            "map": run.recipe.section("map"),
            "models": [(e.model_id, [u.utt_id for u in e.utterances]) for e in run.enrollments],
        },
        _run_enroll,
    ),
    Stage(
        "score",
        ("gmm_ubm",),
        _const("enroll"),
        lambda wd, r: [wd.scores("gmm_ubm"), *_norm_outputs(wd, r, GmmUbm)],
        _body_score,
        _run_score,
    ),
    Stage(
        "statistics",
        ("ivector", "isv"),
        _const("ubm"),
        lambda wd, r: [wd.ivector_stats],
        lambda run: {"ids": _stats_ids(run)},
        _run_statistics,
    ),
    Stage(
        "tv",
        ("ivector",),
        _const("statistics"),
        lambda wd, r: [wd.tv],
        lambda run: {
            "ivector": {
                k: run.recipe.section("ivector")[k] for k in ("rank", "iterations", "min_divergence")
            },
            "seed": run.recipe.seed,
            "train": sorted(u.utt_id for u in run.train),
        },
        _run_tv,
    ),
    Stage(
        "extract",
        ("ivector",),
        _const("tv"),
        lambda wd, r: [wd.ivectors],
        lambda run: {"ids": _stats_ids(run)},
        _run_extract,
    ),
    Stage(
        "backend",
        ("ivector",),
        _const("extract"),
        lambda wd, r: [wd.backend, wd.ivector_models, wd.scores("ivector"), *_norm_outputs(wd, r, Ivector)],
        _body_backend,
        _run_backend,
    ),
    Stage(
        "isv_train",
        ("isv",),
        _const("statistics"),
        lambda wd, r: [wd.isv],
        lambda run: {
            "isv": {
                k: run.recipe.section("isv")[k]
                for k in ("rank", "relevance", "iterations", "min_divergence", "batch_size")
            },
            "seed": run.recipe.seed,
            "train": sorted((u.utt_id, str(u.speaker)) for u in run.train),
        },
        _run_isv_train,
    ),
    Stage(
        "isv_enroll",
        ("isv",),
        _const("isv_train"),
        lambda wd, r: [wd.isv_models],
        lambda run: {"models": [(e.model_id, [u.utt_id for u in e.utterances]) for e in run.enrollments]},
        _run_isv_enroll,
    ),
    Stage(
        "isv_score",
        ("isv",),
        _const("isv_enroll"),
        lambda wd, r: [wd.scores("isv"), *_norm_outputs(wd, r, Isv)],
        _body_isv_score,
        _run_isv_score,
    ),
    Stage(
        "fusion",
        ("fusion",),
        _system_score_stages,
        lambda wd, r: [wd.scores(None), wd.fusion],
        lambda run: {
            "fusion": run.recipe.section("fusion"),
            "system": list(run.recipe.system),
            "normalization": {s.name: s.normalization for s in leaves(run.wd, run.recipe)},
            "trials": _trial_sig(run.trials),
            "dev": _trial_sig(run.dev_trials),
            "cohort": [u.utt_id for u in run.cohort],
        },
        _run_fusion,
    ),
    Stage(
        "evaluate",
        ("*",),
        _final_scores_stage,
        lambda wd, r: [wd.results],
        _body_evaluate,
        _run_evaluate,
    ),
    Stage(
        "short_enrolment",
        ("gmm_ubm", "ivector", "isv"),
        _final_scores_stage,
        lambda wd, r: [wd.short_enrolment],
        lambda run: {"seed": run.recipe.seed, "trials": _trial_sig(run.trials)},
        _run_short_enrolment,
        alone=True,
    ),
)

_BY_NAME = {s.name: s for s in TABLE}
if tuple(_BY_NAME) != STAGES:  # recipe.config.STAGES (the CLI's choices) lists the same stages
    raise RuntimeError(f"stage table {tuple(_BY_NAME)} and recipe.config.STAGES {STAGES} disagree")


def stage(name: str) -> Stage:
    """The table row of a stage."""
    return _BY_NAME[name]


def needed_stages(recipe: Recipe) -> tuple[str, ...]:
    """The stages a recipe runs, in table order."""
    return tuple(s.name for s in TABLE if s.needed(recipe))
