"""What each recipe stage reads, writes and depends on (used by the runner)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from gmmspeaker import __version__
from gmmspeaker._io import atomic_write_json
from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.recipe import systems
from gmmspeaker.recipe.config import Recipe
from gmmspeaker.recipe.fingerprint import stable_hash

logger = logging.getLogger(__name__)


class Pipeline:
    """Lists, fingerprints and stage bodies of one recipe in one workdir."""

    def __init__(self, recipe: Recipe, workdir: Path, *, progress: bool = False) -> None:
        self.recipe = recipe
        self.wd = workdir
        self.progress = progress
        self._fp: dict[str, str] = {}
        self._scores: Any = None
        self._load_lists()

    # -- inputs ---------------------------------------------------------------
    def _load_lists(self) -> None:
        from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list

        data = self.recipe.data
        if data.synthetic is not None:
            from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

            try:
                cfg = SyntheticCorpusConfig.from_dict(data.synthetic)
            except ConfigError as exc:
                raise ConfigError(f"{self.recipe.path}: data.synthetic: {exc}") from None
            paths = generate_corpus(self.wd / "corpus", cfg, n_jobs=self.recipe.jobs)
            root = Path(paths["root"]) if "root" in paths else self.wd / "corpus"
            ubm, enroll, trials = Path(paths["ubm"]), Path(paths["enroll"]), Path(paths["trials"])
            cohort = None
            dev = None
        else:
            assert data.ubm is not None and data.enroll is not None and data.trials is not None
            root, ubm, enroll, trials, cohort = data.root, data.ubm, data.enroll, data.trials, data.cohort
        dev = data.dev_trials if data.synthetic is None else None
        self.ubm_list = read_ubm_list(ubm, root=root)
        self.enrollments = read_enroll_list(enroll, root=root)
        self.trials = read_trials(trials, root=root, models={e.model_id for e in self.enrollments})
        self.cohort = read_ubm_list(cohort, root=root) if cohort is not None else []
        self.dev_trials = (
            read_trials(dev, root=root, models={e.model_id for e in self.enrollments})
            if dev is not None
            else []
        )
        if self.dev_trials and any(t.target is None for t in self.dev_trials):
            raise DataError(f"{dev}: development trials need target/nontarget keys to train a calibration")
        self.train = systems.train_utterances(self.recipe, root, self.ubm_list)
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

    @property
    def store_dir(self) -> Path:
        return self.wd / "features"

    def _store(self) -> Any:
        from gmmspeaker.store import FeatureStore

        return FeatureStore(self.store_dir)

    def _ubm(self) -> Any:
        from gmmspeaker.gmm.model import GaussianMixture

        return GaussianMixture.load(self.wd / "ubm.h5")

    def _models(self) -> Any:
        from gmmspeaker.gmm.map import SpeakerModels

        return SpeakerModels.load(self.wd / "models.h5")

    # -- fingerprints -----------------------------------------------------------
    def fingerprint(self, stage: str) -> str:
        """Hash of the stage's configuration, its inputs, the previous stage's fingerprint and the version."""
        r = self.recipe
        prev = "".join(self._fp.get(s, "") for s in systems.upstream(r, stage))
        if stage in systems.IVECTOR_STAGES:
            body: Any = systems.fingerprint_body(self, stage)
        elif stage == "features":
            body = {
                "features": r.features,
                "resample": r.data.resample,
                "on_bad_audio": r.on_bad_audio,
                "files": self._source_signatures(),
            }
        elif stage == "ubm":
            body = {"ubm": r.section("ubm"), "seed": r.seed, "ids": sorted(u.utt_id for u in self.ubm_list)}
        elif stage == "enroll":
            body = {
                "map": r.section("map"),
                "models": [(e.model_id, [u.utt_id for u in e.utterances]) for e in self.enrollments],
            }
        elif stage == "score":
            body = {
                "scoring": r.section("scoring"),
                "trials": [(t.model_id, t.test.utt_id) for t in self.trials],
                "cohort": [u.utt_id for u in self.cohort],
                "dev": [(t.model_id, t.test.utt_id) for t in self.dev_trials],
            }
            if len(r.system) > 1:  # a fusion: scores.gmm_ubm.txt, and scores.txt is the fused file
                body["file"] = systems.score_file(r, "gmm_ubm")
        else:
            body = {
                "evaluation": r.section("evaluation"),
                "keys": [t.target for t in self.trials],
                "dev_keys": [t.target for t in self.dev_trials],
            }
        fp = stable_hash({"stage": stage, "prev": prev, "version": __version__, "body": body})
        self._fp[stage] = fp
        return fp

    def _source_signatures(self) -> list[Any]:
        """Per utterance (id, path, signature[, hash]): what says the audio is unchanged."""
        from gmmspeaker.store import content_hash, source_signature

        out: list[Any] = []
        for u in self.utterances:
            try:
                sig: Any = source_signature(u.path)
                if self.recipe.data.content_check:
                    sig = [*sig, content_hash(u.path)]
            except OSError:
                sig = None
            out.append((u.utt_id, str(u.path), sig))
        return out

    def outputs_exist(self, stage: str) -> bool:
        if stage in systems.IVECTOR_STAGES or stage == "score":
            return all((self.wd / n).exists() for n in systems.outputs(self, stage))
        names = {
            "features": ["features/manifest.json"],
            "ubm": ["ubm.h5"],
            "enroll": ["models.h5"],
            "score": ["scores.txt"]
            + (["norm_cohort.h5"] if self.recipe.scoring.normalization != "none" else []),
            "evaluate": ["results.json"],
        }[stage]
        return all((self.wd / n).exists() for n in names)

    # -- stage bodies -----------------------------------------------------------
    def run(self, stage: str) -> dict[str, Any]:
        if stage in systems.IVECTOR_STAGES:
            return systems.run_stage(self, stage)
        return getattr(self, f"_run_{stage}")()

    def _run_features(self) -> dict[str, Any]:
        from gmmspeaker.features import FeatureConfig
        from gmmspeaker.features.extract import resolve_sample_rate
        from gmmspeaker.store import extract_to_store

        r = self.recipe
        config = FeatureConfig.from_dict(r.features, source=f"{r.path}: features")
        config = resolve_sample_rate(
            config,
            [u.path for u in self.utterances],
            resample=r.data.resample,
            resample_flag="data.resample: true",
            config_flag=f"features: in {r.path}",
        )
        report = extract_to_store(
            [(u.utt_id, u.path) for u in self.utterances],
            self.store_dir,
            config,
            jobs=r.jobs,
            on_bad_audio=r.on_bad_audio,
            resample=r.data.resample,
            progress=self.progress,
            content_check=r.data.content_check,
        )
        store = self._store()
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
        }

    def _run_ubm(self) -> dict[str, Any]:
        from gmmspeaker.gmm.batch import train_ubm

        r = self.recipe
        u = r.ubm
        ckpt = self.wd / "ubm.checkpoint.h5"
        gmm = train_ubm(
            self._store(),
            [x.utt_id for x in self.ubm_list],
            components=u.components,
            iterations=u.iterations,
            init=u.init,
            variance_floor=u.variance_floor,
            tol=u.tol,
            n_init=u.n_init,
            dtype=u.dtype,
            chunk_frames=u.chunk_frames,
            max_frames=u.max_frames,
            n_parts=u.parts,
            seed=r.seed,
            jobs=r.jobs,
            checkpoint=ckpt,
            progress=self.progress,
        )
        gmm.save(self.wd / "ubm.h5")
        if ckpt.exists():
            ckpt.unlink()
        return {"history": [float(h) for h in getattr(gmm, "history_", [])]}

    def _run_enroll(self) -> dict[str, Any]:
        from gmmspeaker.gmm.batch import enroll_models

        r = self.recipe
        models = enroll_models(
            self._store(),
            self.enrollments,
            self._ubm(),
            relevance=r.map.relevance,
            adapt=r.map.adapt,
            jobs=r.jobs,
            progress=self.progress,
        )
        models.save(self.wd / "models.h5")
        return {"n_models": len(models.model_ids)}

    def _run_score(self) -> dict[str, Any]:
        from gmmspeaker.scoring.trials import write_scores

        parts = self.wd / "score_parts"
        marker = parts / "fingerprint"
        if parts.exists() and (not marker.exists() or marker.read_text() != self._fp["score"]):
            shutil.rmtree(parts)  # parts of another configuration: not reusable
        parts.mkdir(parents=True, exist_ok=True)
        marker.write_text(self._fp["score"])
        store, ubm, models = self._store(), self._ubm(), self._models()
        out = {
            k: self.wd / systems.score_file(self.recipe, "gmm_ubm", k)
            for k in ("scores", "dev_scores", "scores.raw")
        }
        scores = self._score(self.trials, store, ubm, models, parts, raw_path=out["scores.raw"])
        if self.dev_trials:
            write_scores(
                out["dev_scores"],
                self.dev_trials,
                self._score(self.dev_trials, store, ubm, models, None, raw_path=None),
            )
        write_scores(out["scores"], self.trials, scores)
        shutil.rmtree(parts)
        return {"n_trials": len(self.trials)}

    def _score(
        self,
        trials: list[Any],
        store: Any,
        ubm: Any,
        models: Any,
        parts: Path | None,
        raw_path: Path | None,
        enrollments: list[Any] | None = None,
    ) -> Any:
        from gmmspeaker.gmm.batch import normalize_trial_scores, score_trials
        from gmmspeaker.scoring.trials import write_scores

        r = self.recipe
        scores = score_trials(
            store,
            trials,
            ubm,
            models,
            method=r.scoring.method,
            top_c=r.scoring.top_c,
            jobs=r.jobs,
            parts_dir=parts,
            progress=self.progress,
        )
        if r.scoring.normalization != "none":
            if raw_path is not None:
                write_scores(raw_path, trials, scores)
            used: dict[str, Any] = {}
            scores = normalize_trial_scores(
                scores,
                trials,
                store,
                ubm,
                models,
                self.cohort,
                method=r.scoring.normalization,
                top_n=r.scoring.cohort_top_n,
                relevance=r.map.relevance,
                adapt=r.map.adapt,
                scoring_method=r.scoring.method,
                top_c=r.scoring.top_c,
                jobs=r.jobs,
                progress=self.progress,
                enrollments=self.enrollments if enrollments is None else enrollments,
                cohort_out=used,
            )
            if raw_path is not None:  # the main trials: keep what verification needs
                from gmmspeaker.gmm.map import ubm_fingerprint
                from gmmspeaker.system import save_norm_cohort

                save_norm_cohort(
                    self.wd,
                    method=r.scoring.normalization,
                    top_n=r.scoring.cohort_top_n,
                    cohort_ids=used["cohort_ids"],
                    model_ids=models.model_ids,
                    ubm_fp=ubm_fingerprint(ubm),
                    scoring={"method": r.scoring.method, "top_c": r.scoring.top_c},
                    model_cohort=used.get("model_cohort"),
                    cohort_cohort=used.get("cohort_cohort"),
                    cohort_models=used.get("cohort_models"),
                )
        return scores

    def _run_evaluate(self) -> dict[str, Any]:
        from gmmspeaker.scoring.trials import evaluate_scores, read_scores

        r = self.recipe
        _, scores, _ = read_scores(self.wd / "scores.txt")
        ev = r.evaluation
        from gmmspeaker.scoring.plots import plots_available

        det = self.wd / "det.png" if ev.det_plot and plots_available() else None
        res = evaluate_scores(
            scores,
            [t.target for t in self.trials],
            p_targets=ev.p_target,
            c_miss=ev.c_miss,
            c_fa=ev.c_fa,
            det_plot=det,
            name=r.experiment,
        )
        from gmmspeaker.scoring.metrics import eer_threshold

        key_all = [t.target for t in self.trials]
        tar = [s for s, k in zip(scores, key_all) if k is True]
        non = [s for s, k in zip(scores, key_all) if k is False]
        if tar and non:
            res["eer_threshold"] = eer_threshold(tar, non)
            if r.system == ("gmm_ubm",):
                res["short_enrolment"] = self._short_enrolment(res["eer_threshold"])
        if ev.identification:
            res["identification"] = self._identification()
        if self.dev_trials:
            import numpy as np

            from gmmspeaker.scoring.calibration import LinearCalibration
            from gmmspeaker.scoring.trials import write_scores

            _, dev, _ = read_scores(self.wd / "dev_scores.txt")
            key = np.array([t.target for t in self.dev_trials], dtype=bool)
            ok = np.isfinite(dev)
            cal = LinearCalibration.fit(dev[ok & key], dev[ok & ~key], p_target=ev.calibration_p_target)
            calibrated = cal(scores)
            write_scores(self.wd / "scores.calibrated.txt", self.trials, calibrated)
            cres = evaluate_scores(
                calibrated,
                [t.target for t in self.trials],
                p_targets=ev.p_target,
                c_miss=ev.c_miss,
                c_fa=ev.c_fa,
            )
            res["calibrated"] = {k: cres[k] for k in ("act_dcf", "cllr", "min_cllr")}
            res["calibration"] = cal.to_dict()
        from gmmspeaker.scoring.report import write_score_histogram

        res["thresholds"] = write_score_histogram(
            self.wd,
            scores,
            [t.target for t in self.trials],
            p_targets=ev.p_target,
            calibration=res.get("calibration"),
            c_miss=ev.c_miss,
            c_fa=ev.c_fa,
            plot=ev.det_plot,
        )
        feats = json.loads((self.wd / "stages" / "features.json").read_text())
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
        systems.add_results(self, res)
        atomic_write_json(self.wd / "results.json", res)
        return {}

    def _short_enrolment(self, reference_threshold: float) -> dict[str, Any]:
        """Thresholds for models enrolled from less speech than the run's (see scoring/duration.py).

        Sub-models are enrolled from random subsets of up to 64 models' enrolment
        utterances, on a grid of speech durations below the models' median, and scored
        and normalised on their model's trials exactly as the run scores its own.
        """
        import numpy as np

        from gmmspeaker.corpora.lists import Enrollment, Trial
        from gmmspeaker.features import FeatureConfig
        from gmmspeaker.gmm.batch import enroll_models
        from gmmspeaker.scoring.duration import DurationThreshold, draw_subsets, duration_grid

        r = self.recipe
        shift = FeatureConfig.from_dict(r.features).frame_shift
        store = self._store()
        secs = {u: store.n_frames(u) * shift for u in store.ids}
        enrol = [
            Enrollment(e.model_id, tuple(u for u in e.utterances if u.utt_id in secs))
            for e in self.enrollments
        ]
        enrol = [e for e in enrol if e.utterances]
        totals = np.array([sum(secs[u.utt_id] for u in e.utterances) for e in enrol])
        utt = np.array([secs[u.utt_id] for e in enrol for u in e.utterances])
        tests = [secs[t.test.utt_id] for t in self.trials if t.test.utt_id in secs]
        reference = float(np.median(totals))
        rng = np.random.default_rng([r.seed, 0x5E])
        picked = sorted(rng.permutation(len(enrol))[:64].tolist())
        levels = duration_grid(reference, 0.5 * float(np.median(utt)))  # the last: one utterance
        subsets = draw_subsets(
            [[secs[u.utt_id] for u in enrol[i].utterances] for i in picked], levels, draws=3, rng=rng
        )
        record = {
            "test_seconds_min": float(min(tests, default=0.0)),
            "enrol_seconds_min": float(totals.min()),
        }
        if not subsets:
            return DurationThreshold(
                reference_seconds=reference, reference_threshold=reference_threshold, **record
            ).to_dict()
        subs = [
            Enrollment(
                f"{enrol[picked[m]].model_id}@{k}.{j}", tuple(enrol[picked[m]].utterances[i] for i in idx)
            )
            for j, (m, k, idx) in enumerate(subsets)
        ]
        by_model: dict[str, list[Any]] = {}
        for t in self.trials:
            if t.target is not None:
                by_model.setdefault(t.model_id, []).append(t)
        trials, level = [], []
        for (m, k, _), e in zip(subsets, subs):
            for t in by_model.get(enrol[picked[m]].model_id, []):
                trials.append(Trial(model_id=e.model_id, test=t.test, target=t.target, line=t.line))
                level.append(k)
        ubm = self._ubm()
        models = enroll_models(
            store, subs, ubm, relevance=r.map.relevance, adapt=r.map.adapt, jobs=r.jobs, desc="short enrol"
        )
        scores = self._score(trials, store, ubm, models, None, None, enrollments=subs)
        fitted = DurationThreshold.fit(
            scores,
            [t.target for t in trials],
            level,
            [sum(secs[u.utt_id] for u in e.utterances) for e in subs],
            [k for _, k, _ in subsets],
            reference_seconds=reference,
            reference_threshold=reference_threshold,
            **record,
        )
        logger.info(
            "short enrolment: EER thresholds %s at %s s of enrolment speech (the run's: %.4f at %.1f s)",
            ", ".join(f"{v:.4f}" for v in fitted.level_thresholds),
            ", ".join(f"{v:.1f}" for v in fitted.level_seconds),
            reference_threshold,
            reference,
        )
        return fitted.to_dict()

    def _identification(self) -> dict[str, Any]:
        """Top-1 / top-5 accuracy over the trial list's test files whose speaker is enrolled.

        A test's speaker is the model of its target trial; every enrolled model is scored on
        it in one vectorised pass (raw LLR, as ``gmmspeaker identify`` ranks).
        """
        from gmmspeaker.gmm.batch import score_matrix
        from gmmspeaker.scoring.metrics import identification_accuracy

        models = self._models()
        row = {m: i for i, m in enumerate(models.model_ids)}
        store = self._store()
        truth = {
            t.test.utt_id: row[t.model_id] for t in self.trials if t.target is True and t.model_id in row
        }
        tests = sorted(u for u in truth if u in store)
        if not tests:
            return {"n_tests": 0}
        r = self.recipe
        s = score_matrix(
            store, tests, self._ubm(), models, method=r.scoring.method, top_c=r.scoring.top_c, jobs=r.jobs
        )
        acc = identification_accuracy(s, [truth[u] for u in tests], ks=(1, 5))
        return {**acc, "n_tests": len(tests), "n_models": len(models.model_ids)}

    def finalize(self, seconds: dict[str, float]) -> dict[str, Any]:
        path = self.wd / "results.json"
        res = json.loads(path.read_text())
        res["stage_seconds"] = {
            s: round(float(seconds.get(s, 0.0)), 3) for s in systems.needed_stages(self.recipe)
        }
        atomic_write_json(path, res)
        from gmmspeaker.scoring.report import write_experiment_report

        write_experiment_report(self.wd, res)
        return res
