"""Short enrolment, end to end: run a recipe, enrol user models from little speech through the
command line, verify them at the default threshold (issue #18, item 8)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gmmspeaker.cli import main
from gmmspeaker.scoring.duration import DurationThreshold
from tests.helpers import REPO

FRAME_SHIFT = 0.010  # configs/features-8k.yaml


def _verify(capsys, wd: Path, model: str, files: list[Path]) -> list[dict]:
    capsys.readouterr()
    assert main(["-q", "verify", str(wd), "--model", model, "--json", *map(str, files)]) == 0
    return [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]


def _enroll(capsys, wd: Path, model: str, files: list[Path]) -> float:
    """Enrol through the CLI; the speech seconds it reports (frames printed x frame shift)."""
    capsys.readouterr()
    assert main(["enroll", str(wd), "--model", model, *map(str, files)]) == 0
    out = capsys.readouterr().out
    frames = int(re.search(r"(\d+) frames", out).group(1))
    assert f"({frames * FRAME_SHIFT:.2f} s of speech" in out
    return frames * FRAME_SHIFT


def _rates(rows: list[dict], key: list[bool], thr: np.ndarray | float) -> tuple[float, float]:
    s = np.array([r["score"] for r in rows])
    k = np.array(key)
    t = np.broadcast_to(thr, s.shape)
    return float(np.mean(s[k] < t[k])), float(np.mean(s[~k] >= t[~k]))


@pytest.fixture(scope="module")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic experiment whose models are enrolled from 6 utterances each."""
    root = tmp_path_factory.mktemp("shortenrol")
    recipe = root / "tiny.yaml"
    recipe.write_text(
        f"""experiment: tiny
seed: 0
defaults: {REPO}/configs/features-8k.yaml
data:
  synthetic: {{n_speakers: 8, n_ubm_utterances: 3, n_enroll_utterances: 6, n_test_utterances: 4,
               duration: 1.0, sample_rate: 8000, seed: 5}}
ubm: {{components: 16, iterations: 3}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""
    )
    wd = root / "wd"
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    return wd


def test_short_models_get_the_threshold_of_their_duration(short_run, tmp_path, capsys, caplog):
    import shutil

    wd = tmp_path / "wd"
    shutil.copytree(short_run, wd)
    res = json.loads((wd / "results.json").read_text())
    dt = DurationThreshold.from_dict(json.loads((wd / "short_enrolment.json").read_text()))
    assert len(dt.level_seconds) >= 2 and dt.reference_threshold == res["eer_threshold"]
    corpus = wd / "corpus" / "wav"
    speakers = sorted(p.name for p in corpus.iterdir())
    tests = [corpus / s / f"utt{i:03d}.wav" for s in speakers for i in range(6, 10)]

    # recipe models: the run's threshold and the run's decisions (serving reproduces the run)
    run_scores = {}
    for ln in (wd / "scores.txt").read_text().splitlines():
        m, t, sc, _ = ln.split()
        run_scores[(m, t)] = float(sc)
    rows = _verify(capsys, wd, speakers[0], tests[:8])
    for r in rows:
        t = str(Path(r["audio"]).relative_to(wd / "corpus").with_suffix(""))
        assert r["threshold"] == res["eer_threshold"]
        assert r["score"] == pytest.approx(run_scores[(speakers[0], t)], abs=1e-4)
        want = "accept" if run_scores[(speakers[0], t)] >= res["eer_threshold"] else "reject"
        assert r["decision"] == want

    # one-file user models: the threshold of their enrolment speech, balanced errors
    all_rows, key, thr = [], [], []
    for s in speakers:
        secs = _enroll(capsys, wd, f"u_{s}", [corpus / s / "utt000.wav"])
        rows = _verify(capsys, wd, f"u_{s}", tests)
        assert [r["threshold"] for r in rows] == pytest.approx([float(dt.threshold(secs))] * len(rows))
        assert "enrolled from" in rows[0]["threshold_source"]
        all_rows += rows
        key += [f"/{s}/" in r["audio"] for r in rows]
        thr += [r["threshold"] for r in rows]
    miss, fa = _rates(all_rows, key, np.array(thr))
    miss0, fa0 = _rates(all_rows, key, res["eer_threshold"])
    assert miss0 > fa0 + 0.1  # the run's threshold rejects short models' own speakers
    assert abs(miss - fa) < abs(miss0 - fa0) and miss < miss0

    # warnings: enrolment speech below the shortest duration measured, a test below the shortest test
    sig, sr = sf.read(corpus / speakers[1] / "utt001.wav")
    short = tmp_path / "short.wav"
    sf.write(short, sig[: int(0.2 * sr)], sr)
    caplog.clear()
    secs = _enroll(capsys, wd, "tiny", [short])
    assert secs < dt.shortest_seconds
    assert any("below the" in r.getMessage() and "'tiny'" in r.getMessage() for r in caplog.records)
    caplog.clear()
    (row,) = _verify(capsys, wd, speakers[1], [short])
    assert secs < dt.test_seconds_min
    assert any("shortest test" in r.getMessage() and str(short) in r.getMessage() for r in caplog.records)
    caplog.clear()
    _enroll(capsys, wd, "long", [corpus / speakers[1] / f"utt{i:03d}.wav" for i in range(6)])
    assert not [r for r in caplog.records if "below the" in r.getMessage()]


@pytest.fixture(scope="module", params=["isv", "ivector"])
def short_run_other(request, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """A tiny ISV (S-norm) or i-vector (Z-norm) experiment: 6 enrolment utterances per model,
    background speakers as cohort and training list. (system, recipe, workdir)"""
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    system = request.param
    root = tmp_path_factory.mktemp(f"short_{system}")
    c = root / "corpus"
    generate_corpus(
        c,
        SyntheticCorpusConfig(
            n_speakers=6,
            n_ubm_utterances=4,
            n_enroll_utterances=6,
            n_test_utterances=4,
            background_speakers=6,
            duration=1.0,
            seed=7,
        ),
    )
    ubm = (c / "ubm.txt").read_text().split()
    (c / "cohort.txt").write_text("".join(f"{p}\n" for p in ubm))
    (c / "train.txt").write_text("".join(f"{p} {p.split('/')[1]}\n" for p in ubm))
    recipe = root / f"{system}.yaml"
    recipe.write_text(
        f"""experiment: {system}
seed: 0
system: {system}
defaults: {REPO}/configs/features-8k.yaml
data: {{root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt, cohort: cohort.txt, train: train.txt}}
ubm: {{components: 16, iterations: 3}}
ivector: {{rank: 8, iterations: 3, plda_iterations: 3, normalization: znorm, cohort_top_n: 10}}
isv: {{rank: 3, iterations: 3, normalization: snorm, cohort_top_n: 10}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""
    )
    wd = root / "wd"
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    return system, recipe, wd


def test_every_single_system_measures_short_enrolment(short_run_other, tmp_path, capsys):
    """ISV and i-vector runs have the ``short_enrolment`` stage too: the stage enrols its
    sub-models from the run's statistics / i-vectors (``enrol_store``), and they score
    (normalised, their enrolment utterances left out of their Z statistics) as the same
    model enrolled from the audio with ``gmmspeaker enroll`` does, so its thresholds hold
    for user models, which get the threshold of their enrolment speech."""
    from gmmspeaker.corpora.lists import Enrollment
    from gmmspeaker.recipe.config import load_recipe
    from gmmspeaker.recipe.stages import Run

    system, recipe, run_wd = short_run_other
    wd = tmp_path / "wd"
    shutil.copytree(run_wd, wd)
    res = json.loads((wd / "results.json").read_text())
    dt = DurationThreshold.from_dict(json.loads((wd / "short_enrolment.json").read_text()))
    assert len(dt.level_seconds) >= 2 and dt.reference_threshold == res["eer_threshold"]
    corpus = recipe.parent / "corpus" / "wav"
    speakers = sorted(
        {ln.split()[0] for ln in (recipe.parent / "corpus" / "enroll.txt").read_text().splitlines()}
    )
    tests = [corpus / s / f"utt{i:03d}.wav" for s in speakers for i in range(6, 10)]

    # the stage's enrolment path (stored statistics / i-vectors, cohort with own utterances
    # masked) against the CLI's (audio -> features -> model)
    run = Run(load_recipe(recipe), wd)
    sysobj = run.system(system)
    by_path = {Path(p).resolve(): u for u, p in run.paths.items()}
    utts = {u.utt_id: u for u in run.utterances}
    s0 = speakers[0]
    files = [corpus / s0 / f"utt{i:03d}.wav" for i in range(2)]
    enr = Enrollment("sub", tuple(utts[by_path[f.resolve()]] for f in files))
    models = sysobj.enrol_store(run.store(), [enr])
    test_ids = [by_path[t.resolve()] for t in tests]
    pairs = [("sub", u) for u in test_ids]
    T = run.tests(sysobj, test_ids)
    cohort = sysobj.load_cohort(sysobj.load_models())
    z = sysobj.z_rows(models, cohort)
    own = np.array([[c in {u.utt_id for u in enr.utterances} for c in cohort.cohort_ids]])
    cohort = cohort.with_models(["sub"], np.ma.MaskedArray(z, mask=own))
    stage_scores = sysobj.normalise(sysobj.score_trials(models, pairs, T), pairs, T, cohort)
    secs = _enroll(capsys, wd, "u_sub", files)
    rows = _verify(capsys, wd, "u_sub", tests)
    assert [r["score"] for r in rows] == pytest.approx(stage_scores.tolist(), abs=1e-4)
    assert [r["threshold"] for r in rows] == pytest.approx([float(dt.threshold(secs))] * len(rows))
    assert dt.threshold(secs) != res["eer_threshold"] and "enrolled from" in rows[0]["threshold_source"]
    # decisions at that threshold
    want = ["accept" if r["score"] >= r["threshold"] else "reject" for r in rows]
    assert [r["decision"] for r in rows] == want


FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@pytest.mark.corpus
@pytest.mark.slow
def test_fsdd_five_file_models_decide_in_balance(fsdd, fsdd_run, tmp_path, capsys):
    """Issue #18's criterion: six models from five files each (0_S_40 .. 4_S_40), verified at the
    default threshold on 0_S2_45 .. 9_S2_45 of all six speakers (pooled over the six models):
    miss and false-alarm rates both at most 25 % and within 10 points of each other.

    recipes/fsdd.yaml (ISV on a 32-Gaussian UBM) was chosen on development models from
    other files (its comments); these files were looked at once, to check it."""
    from gmmspeaker.scoring.metrics import eer_threshold

    wd = tmp_path / "fsdd"
    shutil.copytree(fsdd_run.workdir, wd)  # the session's run of recipes/fsdd.yaml; enrolling writes
    rec = fsdd / "recordings"
    tests = [rec / f"{d}_{s}_45.wav" for s in FSDD_SPEAKERS for d in range(10)]
    dt = DurationThreshold.from_dict(json.loads((wd / "short_enrolment.json").read_text()))
    rows, key = [], []
    for s in FSDD_SPEAKERS:
        secs = _enroll(capsys, wd, f"u_{s}", [rec / f"{d}_{s}_40.wav" for d in range(5)])
        r = _verify(capsys, wd, f"u_{s}", tests)
        # the default threshold: the short_enrolment stage's for this model's enrolment speech
        assert [x["threshold"] for x in r] == pytest.approx([float(dt.threshold(secs))] * len(r))
        rows += r
        key += [f"_{s}_" in x["audio"] for x in r]
    k = np.array(key)
    assert k.sum() == 60 and (~k).sum() == 300
    dec = np.array([x["decision"] == "accept" for x in rows])
    miss, fa = float(np.mean(~dec[k])), float(np.mean(dec[~k]))
    run_thr = json.loads((wd / "results.json").read_text())["eer_threshold"]
    miss0, fa0 = _rates(rows, key, run_thr)
    assert miss0 > fa0 + 0.25  # the run's threshold: most misses (the issue: 56 % / 10 % for theo)
    assert miss <= 0.25 and fa <= 0.25, (miss, fa)
    assert abs(miss - fa) <= 0.10, (miss, fa)
    # and not far from the best any one threshold does on these scores (the equal-error point)
    s = np.array([x["score"] for x in rows])
    t = eer_threshold(s[k], s[~k])
    eer = max(np.mean(s[k] < t), np.mean(s[~k] >= t))
    assert max(miss, fa) <= eer + 0.05, (miss, fa, eer)
