"""Using a trained experiment: enrol from audio, verify, identify (gmmspeaker.system)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.errors import AudioError, ModelError
from gmmspeaker.scoring.metrics import eer_threshold, identification_accuracy
from gmmspeaker.system import Experiment
from tests.helpers import REPO

RECIPE_MODELS = ("spk000", "spk001", "spk002", "spk003")  # spk004 and spk005 stay out: the new speakers


def build_experiment(root: Path, *, normalization: str = "snorm", ubm_iterations: int = 4) -> Path:
    """A synthetic corpus of 6 speakers, a recipe enrolling 4 of them, and its trained workdir.

    The recipe has a cohort (``scoring.normalization``), development trials (a
    calibration) and the identification evaluation. Returns the workdir (``root/wd``).
    """
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus
    from gmmspeaker.recipe.runner import run_recipe

    c = root / "corpus"
    if not (c / "trials.txt").exists():
        generate_corpus(
            c,
            SyntheticCorpusConfig(
                n_speakers=6,
                n_ubm_utterances=4,
                n_enroll_utterances=4,
                n_test_utterances=3,
                duration=2.0,
                seed=3,
            ),
        )
        keep = set(RECIPE_MODELS)
        enroll = [ln for ln in (c / "enroll.txt").read_text().splitlines() if ln.split()[0] in keep]
        (c / "enroll4.txt").write_text("".join(f"{ln}\n" for ln in enroll))
        trials = [
            ln
            for ln in (c / "trials.txt").read_text().splitlines()
            if ln.split()[0] in keep and ln.split()[1].split("/")[1] in keep
        ]
        (c / "trials4.txt").write_text("".join(f"{ln}\n" for ln in trials))
    recipe = root / f"r-{normalization}-{ubm_iterations}.yaml"
    recipe.write_text(
        f"""experiment: small
seed: 0
defaults: {REPO}/configs/features-8k.yaml
data: {{root: corpus, ubm: ubm.txt, enroll: enroll4.txt, trials: trials4.txt, dev_trials: trials4.txt,
        cohort: ubm.txt}}
ubm: {{components: 32, iterations: {ubm_iterations}}}
scoring: {{normalization: {normalization}}}
evaluation: {{p_target: [0.01], det_plot: false, identification: true}}
"""
    )
    wd = root / "wd"
    run_recipe(recipe, workdir=wd, log_file=False)
    return wd


def wav(wd: Path, speaker: str, utt: int) -> Path:
    """A corpus file of the experiment in ``wd`` (or a copy of it)."""
    root = Path(json.loads((wd / "recipe.json").read_text())["data"]["root"])
    return root / "wav" / speaker / f"utt{utt:03d}.wav"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_experiment(tmp_path_factory.mktemp("system"))


@pytest.fixture
def workdir(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained workdir (tests that enrol write into it)."""
    dst = tmp_path / "wd"
    shutil.copytree(trained, dst)
    return dst


def _read(path: Path) -> dict[tuple[str, str], tuple[float, str]]:
    out = {}
    for ln in path.read_text().splitlines():
        m, t, s, k = ln.split()
        out[(m, t)] = (float(s), k)
    return out


# --------------------------------------------------------------------------- pure functions


def test_eer_threshold_matches_brute_force(rng):
    tar = rng.normal(1.0, 1.0, 70)
    non = rng.normal(-1.0, 1.0, 300)
    best, best_t = np.inf, None
    for t in sorted(set(tar) | set(non)):  # slow reference: every observed score
        cost = max(np.mean(tar < t), np.mean(non >= t))
        if cost < best:
            best, best_t = cost, t
    assert eer_threshold(tar, non) == best_t
    # NaN scores are left out
    assert eer_threshold(np.append(tar, np.nan), non) == best_t


def test_identification_accuracy_matches_loop(rng):
    s = rng.normal(size=(7, 40))
    true = rng.integers(0, 7, 40)
    s[true[:20], np.arange(20)] += 3.0  # half of the tests clearly right
    ref = {}
    for k in (1, 3):
        hits = [true[j] in np.argsort(-s[:, j])[:k] for j in range(40)]
        ref[f"top{k}"] = float(np.mean(hits))
    assert identification_accuracy(s, true, ks=(1, 3)) == ref


# --------------------------------------------------------------------------- the run's outputs


def test_run_keeps_resolved_recipe_and_cohort(trained):
    from gmmspeaker.recipe.config import load_recipe

    saved = json.loads((trained / "recipe.json").read_text())
    again = load_recipe(saved["path"]).to_dict()
    assert saved == json.loads(json.dumps(again, default=str))
    assert saved["features"]["sample_rate"] == 8000 and saved["scoring"]["normalization"] == "snorm"
    for name in ("norm_cohort.h5", "cohort_models.h5"):
        assert (trained / name).is_file()


def test_verify_reproduces_the_runs_scores(trained):
    """Fresh features + stored cohort statistics give the run's raw, normalised and calibrated scores."""
    exp = Experiment.open(trained)
    raw = _read(trained / "scores.raw.txt")
    norm = _read(trained / "scores.txt")
    cal = json.loads((trained / "results.json").read_text())["calibration"]
    pairs = sorted(norm)[::5]
    assert len(pairs) >= 6
    for model, test in pairs:
        (r,) = exp.verify(model, [trained.parent / "corpus" / f"{test}.wav"])
        assert r.raw_llr == pytest.approx(raw[(model, test)][0], abs=2e-6)
        assert r.score == pytest.approx(norm[(model, test)][0], abs=2e-6)
        assert r.calibrated_llr == pytest.approx(cal["scale"] * r.score + cal["offset"], rel=1e-12)
    # the default threshold is the EER threshold of scores.txt
    s = np.array([v for v, _ in norm.values()])
    key = np.array([k == "target" for _, k in norm.values()])
    assert exp.eer_threshold() == pytest.approx(eer_threshold(s[key], s[~key]), abs=1e-6)


def test_identification_evaluation_matches_identify(trained):
    """results.json's top-1 / top-5 equal what identify() finds on the same test files."""
    res = json.loads((trained / "results.json").read_text())["identification"]
    norm = _read(trained / "scores.txt")
    truth = {t: m for (m, t), (_, k) in norm.items() if k == "target"}
    exp = Experiment.open(trained)
    tests = sorted(truth)
    found = exp.identify([trained.parent / "corpus" / f"{t}.wav" for t in tests], top_n=5)
    top1 = np.mean([f.ranking[0][0] == truth[t] for f, t in zip(found, tests)])
    top5 = np.mean([truth[t] in [m for m, _ in f.ranking] for f, t in zip(found, tests)])
    assert res["n_tests"] == len(tests) == 12
    assert res["top1"] == pytest.approx(top1) and res["top5"] == pytest.approx(top5)
    assert res["top1"] > 0.5


# --------------------------------------------------------------------------- enrol, verify, identify


def test_enroll_verify_identify_two_new_speakers(workdir):
    exp = Experiment.open(workdir)
    a = exp.enroll("alice", [wav(workdir, "spk004", i) for i in range(4)])
    b = exp.enroll("bob", [wav(workdir, "spk005", i) for i in range(4)])
    assert (a.replaced, b.replaced) == (None, None) and a.n_files == 4 and a.n_frames > 100
    exp = Experiment.open(workdir)  # from the file, as another process would
    assert exp.models.model_ids == [*RECIPE_MODELS, "alice", "bob"]
    target, nontarget = wav(workdir, "spk004", 4), wav(workdir, "spk005", 4)
    ra, rb = exp.verify("alice", [target, nontarget])
    # a user model's default threshold follows its enrolment speech (tests/test_short_enrolment.py)
    thr = exp.threshold("alice")
    assert (ra.decision, rb.decision) == ("accept", "reject")
    assert ra.score >= thr > rb.score and ra.threshold == thr == a.threshold
    # an explicit threshold and the Bayes threshold on calibrated scores
    (hi,) = exp.verify("alice", [target], threshold=ra.score + 1e-3)
    assert hi.decision == "reject" and "given" in hi.threshold_source
    (bayes,) = exp.verify("alice", [target], p_target=0.5)
    cal, moved = exp.calibration(), ra.score - (thr - exp.eer_threshold())  # the duration offset
    # (ra was scored beside another file: float32 pooling moves the score by ~1e-8)
    assert bayes.calibrated_llr == pytest.approx(cal.scale * moved + cal.offset, abs=1e-6)
    assert bayes.threshold == 0.0 and bayes.decision == ("accept" if bayes.calibrated_llr >= 0 else "reject")
    ida, idb = exp.identify([target, nontarget], top_n=3)
    assert (ida.decision, idb.decision) == ("alice", "bob")
    assert [s for _, s in ida.ranking] == sorted((s for _, s in ida.ranking), reverse=True)
    assert len(ida.ranking) == 3
    # the ranking is of the score verify reports and decides on (S-normed here), not the raw LLR
    assert ida.ranking[0][1] == pytest.approx(ra.score, abs=1e-6)
    assert abs(ra.score - ra.raw_llr) > 1e-3
    (unk,) = exp.identify([target], threshold=ida.ranking[0][1] + 0.01)
    assert unk.decision == "unknown"
    # re-enrolling needs replace=True, says so and replaces the model
    with pytest.raises(ModelError, match="'alice' already exists .*--replace"):
        exp.enroll("alice", [wav(workdir, "spk004", i) for i in range(2)])
    again = exp.enroll("alice", [wav(workdir, "spk004", i) for i in range(2)], replace=True)
    assert again.replaced == "user" and Experiment.open(workdir).models.model_ids.count("alice") == 1


def test_enrolment_reproduces_the_enroll_stage(workdir):
    """A user model from spk000's enrolment files equals the run's spk000 model: same scores, same Z row."""
    exp = Experiment.open(workdir)
    files = [wav(workdir, "spk000", i) for i in range(4)]
    exp.enroll("again0", files)
    test = wav(workdir, "spk001", 5)
    (orig,) = exp.verify("spk000", [test])
    (copy,) = exp.verify("again0", [test])
    assert copy.raw_llr == pytest.approx(orig.raw_llr, abs=1e-5)
    assert copy.score == pytest.approx(orig.score, abs=1e-4)
    # enrolling under a recipe id replaces that model for verify/identify
    r = exp.enroll("spk001", [wav(workdir, "spk004", i) for i in range(4)], replace=True)
    assert r.replaced == "recipe"
    (who,) = exp.identify([wav(workdir, "spk004", 4)])
    assert who.decision == "spk001"


def test_user_models_follow_a_rerun(workdir):
    """An unchanged rerun keeps user models; a UBM change re-enrols them from their audio, saying so."""
    from gmmspeaker.gmm.map import SpeakerModels, ubm_fingerprint
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.recipe.runner import run_recipe

    exp = Experiment.open(workdir)
    exp.enroll("alice", [wav(workdir, "spk004", i) for i in range(4)])
    (before,) = exp.verify("alice", [wav(workdir, "spk004", 4)])
    recipe = Path(json.loads((workdir / "recipe.json").read_text())["path"])
    res = run_recipe(recipe, workdir=workdir, log_file=False)
    assert res.refreshed == [] and set(res.actions.values()) == {"skipped"}
    (same,) = Experiment.open(workdir).verify("alice", [wav(workdir, "spk004", 4)])
    assert same.score == before.score
    changed = recipe.with_name("r-changed.yaml")
    changed.write_text(recipe.read_text().replace("iterations: 4", "iterations: 5"))
    res = run_recipe(changed, workdir=workdir, log_file=False)
    assert res.actions["ubm"] == "ran" and res.refreshed == ["alice"]
    user = SpeakerModels.load(workdir / "user_models.h5")
    assert user.ubm_fingerprint == ubm_fingerprint(GaussianMixture.load(workdir / "ubm.h5"))
    (after,) = Experiment.open(workdir).verify("alice", [wav(workdir, "spk004", 4)])
    assert after.raw_llr != before.raw_llr and after.decision == "accept"


def test_stale_user_model_without_audio_is_refused(workdir, tmp_path, caplog):
    from gmmspeaker.recipe.runner import run_recipe

    src = [wav(workdir, "spk004", i) for i in range(2)]
    moved = [tmp_path / f"a{i}.wav" for i in range(2)]
    for s, d in zip(src, moved):
        shutil.copy(s, d)
    Experiment.open(workdir).enroll("alice", moved)
    for d in moved:
        d.unlink()
    recipe = Path(json.loads((workdir / "recipe.json").read_text())["path"])
    changed = recipe.with_name("r-stale.yaml")
    changed.write_text(recipe.read_text().replace("iterations: 4", "iterations: 3"))
    with caplog.at_level("WARNING"):
        res = run_recipe(changed, workdir=workdir, log_file=False)
    assert res.refreshed == []
    assert any("alice" in r.getMessage() and "stale" in r.getMessage() for r in caplog.records)
    exp = Experiment.open(workdir)
    assert "alice" in exp.stale_user_models and "alice" not in exp.models.model_ids
    with pytest.raises(ModelError, match="alice.*stale.*UBM"):
        exp.verify("alice", [wav(workdir, "spk004", 4)])


def test_errors_name_the_model_and_the_file(trained, tmp_path):
    exp = Experiment.open(trained)
    with pytest.raises(ModelError, match="unknown model id 'nobody'"):
        exp.verify("nobody", [wav(trained, "spk000", 4)])
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"this is not audio")
    with pytest.raises(AudioError, match="broken.wav"):
        exp.verify("spk000", [bad])
    with pytest.raises(AudioError, match="missing.wav"):
        exp.enroll("x", [tmp_path / "missing.wav"])
    exp.results.pop("calibration")
    with pytest.raises(ModelError, match="no calibration"):
        exp.verify("spk000", [wav(trained, "spk000", 4)], p_target=0.01)
    with pytest.raises(ModelError, match="recipe.json"):
        Experiment.open(tmp_path)


def test_verify_reproduces_ztnorm_scores(tmp_path):
    """ZT-norm needs all three stored cohort pieces (Z rows, cohort models, cohort-vs-cohort)."""
    wd = build_experiment(tmp_path, normalization="ztnorm")
    exp = Experiment.open(wd)
    norm = _read(wd / "scores.txt")
    raw = _read(wd / "scores.raw.txt")
    for model, test in sorted(norm)[::9]:
        (r,) = exp.verify(model, [wd.parent / "corpus" / f"{test}.wav"])
        assert r.raw_llr == pytest.approx(raw[(model, test)][0], abs=2e-6)
        assert r.score == pytest.approx(norm[(model, test)][0], abs=2e-6)
        assert r.score != pytest.approx(r.raw_llr, abs=1e-3)


def test_models_record_their_enrolment_speech(workdir):
    """The seam for short-enrolment decisions: every model's speech seconds, and a threshold per model."""
    from gmmspeaker.corpora.lists import read_enroll_list
    from gmmspeaker.features import FeatureConfig
    from gmmspeaker.store import FeatureStore

    exp = Experiment.open(workdir)
    shift = FeatureConfig.from_dict(exp.recipe.features).frame_shift
    store = FeatureStore(workdir / "features")
    root = exp.recipe.data.root
    for e in read_enroll_list(root / "enroll4.txt", root=root):
        want = shift * sum(store.n_frames(u.utt_id) for u in e.utterances)
        assert exp.speech_seconds(e.model_id) == pytest.approx(want, abs=1e-3)
    r = exp.enroll("alice", [wav(workdir, "spk004", 0)])
    assert r.speech_seconds == pytest.approx(r.n_frames * shift, abs=1e-3)
    assert Experiment.open(workdir).speech_seconds("alice") == pytest.approx(r.speech_seconds)
    assert exp.speech_seconds("nobody") is None
    # a user model's threshold is the system's for its enrolment speech; a run model keeps the run's
    assert exp.threshold("alice") == exp.system.threshold("alice", speech_seconds=r.speech_seconds)
    # the run's own models keep the run's threshold; a user model's follows its enrolment
    # speech (the run's short-enrolment thresholds, tests/test_short_enrolment.py)
    assert exp.threshold("spk000") == pytest.approx(exp.results["eer_threshold"])
    dt = exp.system.short_enrolment()
    assert dt is not None
    assert exp.threshold("alice") == pytest.approx(float(dt.threshold(r.speech_seconds)), abs=1e-12)
