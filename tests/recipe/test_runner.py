"""The recipe runner end to end on a tiny synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.cli import main
from gmmspeaker.errors import ConfigError, DataError, GmmSpeakerError
from gmmspeaker.recipe.runner import run_recipe
from tests.helpers import tiny_recipe as tiny
from tests.recipe.checks import check_metrics_against_scores

REPO = Path(__file__).resolve().parents[2]


def test_run_skip_and_partial_rerun(tmp_path):
    wd = tmp_path / "wd"
    r1 = run_recipe(tiny(tmp_path), workdir=wd)
    ran = ("features", "ubm", "enroll", "score", "evaluate", "short_enrolment")
    assert r1.actions == {s: "ran" for s in ran}
    res = json.loads((wd / "results.json").read_text())
    for key in ("eer", "min_dcf", "cllr", "n_target", "n_nontarget", "stage_seconds"):
        assert key in res
    assert "0.01" in res["min_dcf"]
    check_metrics_against_scores(wd, res)
    assert res["eer"] < 0.3  # five clearly different synthetic voices: far better than chance (0.5)
    assert res["n_target"] == 10 and res["n_nontarget"] == 40
    assert set(res["stage_seconds"]) == set(ran)
    assert (wd / "run.log").read_text().count("done in") == 6
    scores1 = (wd / "scores.txt").read_text()

    r2 = run_recipe(tiny(tmp_path), workdir=wd)
    assert set(r2.actions.values()) == {"skipped"}

    # a UBM change redoes ubm and everything after it, not the features
    r3 = run_recipe(tiny(tmp_path, k=4), workdir=wd)
    assert r3.actions["features"] == "skipped"
    assert all(r3.actions[s] == "ran" for s in ("ubm", "enroll", "score", "evaluate"))
    assert (wd / "scores.txt").read_text() != scores1

    # outputs deleted -> that stage reruns (and only what depends on a changed output)
    (wd / "results.json").unlink()
    r4 = run_recipe(tiny(tmp_path, k=4), workdir=wd)
    assert r4.actions["evaluate"] == "ran" and r4.actions["score"] == "skipped"


def test_force_from_stage_until_stage_and_dry_run(tmp_path):
    wd = tmp_path / "wd"
    r = run_recipe(tiny(tmp_path), workdir=wd, dry_run=True)
    assert set(r.actions.values()) == {"would run"} and not (wd / "ubm.h5").exists()
    run_recipe(tiny(tmp_path), workdir=wd, until_stage="ubm")
    assert (wd / "ubm.h5").exists() and not (wd / "models.h5").exists()
    r = run_recipe(tiny(tmp_path), workdir=wd, dry_run=True)
    assert r.actions["ubm"] == "skipped" and r.actions["enroll"] == "would run"
    assert r.reasons["enroll"] == "never run"
    run_recipe(tiny(tmp_path), workdir=wd)
    r = run_recipe(tiny(tmp_path), workdir=wd, from_stage="score")
    assert r.actions["ubm"] == "skipped" and r.actions["score"] == "ran" and r.actions["evaluate"] == "ran"
    r = run_recipe(tiny(tmp_path), workdir=wd, force=True)
    assert set(r.actions.values()) == {"ran"}


def test_lock_keeps_two_runs_apart(tmp_path):
    from gmmspeaker import _lock

    if _lock.locking_backend() == "none":
        pytest.skip("no file locking on this platform")
    wd = tmp_path / "wd"
    wd.mkdir()
    with open(wd / ".lock", "a+") as fh:
        _lock.lock(fh, blocking=False)
        fh.write("4242")
        fh.flush()
        with pytest.raises(GmmSpeakerError, match="another run"):
            run_recipe(tiny(tmp_path), workdir=wd)
    assert not (wd / "features").exists()


def test_results_do_not_depend_on_jobs(tmp_path):
    run_recipe(tiny(tmp_path, jobs=1), workdir=tmp_path / "j1")
    run_recipe(tiny(tmp_path, jobs=2, name="t2.yaml"), workdir=tmp_path / "j2")
    assert (tmp_path / "j1" / "scores.txt").read_bytes() == (tmp_path / "j2" / "scores.txt").read_bytes()


def test_same_seed_gives_byte_identical_scores(tmp_path):
    run_recipe(tiny(tmp_path), workdir=tmp_path / "a")
    run_recipe(tiny(tmp_path), workdir=tmp_path / "b")
    assert (tmp_path / "a" / "scores.txt").read_bytes() == (tmp_path / "b" / "scores.txt").read_bytes()


def _score_values(wd: Path) -> np.ndarray:
    return np.array([float(line.split()[2]) for line in (wd / "scores.txt").read_text().splitlines()])


@pytest.mark.slow
def test_dask_backend_on_a_local_cluster(tmp_path):
    import distributed  # noqa: F401  (in the [test] extra: missing is a failure, not a skip)
    import joblib

    run_recipe(tiny(tmp_path, jobs=2), workdir=tmp_path / "loky")
    run_recipe(
        tiny(tmp_path, jobs=2, backend="dask", extra="scheduler: local", name="d.yaml"),
        workdir=tmp_path / "dask",
    )
    np.testing.assert_allclose(_score_values(tmp_path / "loky"), _score_values(tmp_path / "dask"), atol=1e-5)
    # issue 11.9: jobs: -1 starts as many workers as the machine offers (it used to start one)
    run_recipe(
        tiny(tmp_path, jobs=-1, backend="dask", extra="scheduler: local", name="d1.yaml"),
        workdir=tmp_path / "dask-all",
    )
    log = (tmp_path / "dask-all" / "run.log").read_text()
    assert f"processes={joblib.cpu_count()} " in log, log
    np.testing.assert_allclose(
        _score_values(tmp_path / "dask"), _score_values(tmp_path / "dask-all"), atol=1e-5
    )


@pytest.mark.slow
def test_dask_jobs_minus_one_counts_the_clusters_workers(tmp_path):
    """Issue 11.9: with a running cluster, jobs: -1 is every worker of it, counted from the client."""
    import distributed  # noqa: F401  (in the [test] extra: missing is a failure, not a skip)
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=3, threads_per_worker=1, host="127.0.0.1", dashboard_address=None, processes=True
    ) as cluster:
        recipe = tiny(
            tmp_path, jobs=-1, backend="dask", extra=f"scheduler: {cluster.scheduler_address}", name="r.yaml"
        )
        run_recipe(recipe, workdir=tmp_path / "wd")
    log = (tmp_path / "wd" / "run.log").read_text()
    assert "dask backend: 3 workers" in log and "processes=3 " in log, log
    assert np.isfinite(_score_values(tmp_path / "wd")).all()


def test_jobs_minus_one_follows_cpu_affinity(tmp_path):
    """Issue 11.9: -1 means the CPUs this process may use, not os.cpu_count()."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs a machine with 2+ usable CPUs and sched_setaffinity to restrict them")
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from gmmspeaker.recipe.runner import resolve_jobs;"
        "print(resolve_jobs(-1), resolve_jobs(3), os.cpu_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout.split()
    assert out[:2] == ["1", "3"] and int(out[2]) >= 2


def test_unknown_model_in_trials_fails_before_any_work(tmp_path):
    corpus = tmp_path / "corpus"
    from tests.helpers import speechlike, write_wav

    rng = np.random.default_rng(0)
    for i in range(3):
        write_wav(corpus / f"a{i}.wav", speechlike(rng, 0.5))
    (corpus / "ubm.txt").write_text("a0.wav\na1.wav\n")
    (corpus / "enroll.txt").write_text("alice a0.wav\n")
    (corpus / "trials.txt").write_text("alice a2.wav target\nbob a2.wav nontarget\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data: {root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt}\nfeatures: {sample_rate: 8000}\n"
    )
    with pytest.raises(DataError, match=r"trials.txt:2.*bob"):
        run_recipe(recipe, workdir=tmp_path / "wd")
    assert not (tmp_path / "wd" / "features").exists()


def test_cli_run_prints_table_and_errors_are_one_line(tmp_path, capsys):
    assert main(["-q", "run", str(tiny(tmp_path)), "--workdir", str(tmp_path / "wd")]) == 0
    out = capsys.readouterr().out
    assert "EER" in out and "minDCF (P_tar=0.01)" in out and "evaluate" in out
    assert main(["-q", "run", str(tiny(tmp_path)), "--workdir", str(tmp_path / "wd")]) == 0
    assert "up to date" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\nubm: {components: [1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "broken YAML" in err[0]


@pytest.mark.slow
def test_fsdd_recipe_end_to_end(fsdd_run, fsdd):
    """``run_recipe(recipes/fsdd.yaml, jobs=2)`` (the session's shared run, tests/conftest.py):
    ISV, whose linear scores (the first-order approximation) rank the trials as the exact
    frame log-likelihood ratio of the same session-compensated models does."""
    from gmmspeaker.corpora.lists import read_trials
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.isv.models import ISVSpeakers
    from gmmspeaker.isv.score import full_llr, session_factors
    from gmmspeaker.isv.train import ISVModel
    from gmmspeaker.ivector.stats import UtteranceStats
    from gmmspeaker.scoring.metrics import eer
    from gmmspeaker.scoring.trials import read_scores
    from gmmspeaker.store import FeatureStore

    res = fsdd_run
    r = res.results
    assert r is not None and r["n_target"] == 900 and r["n_nontarget"] == 4500
    assert r["system"] == ["isv"]
    assert r["eer"] < 0.059, f"EER {r['eer']:.4f} not below the plain GMM-UBM's 5.9 %"
    assert r["vad_kept_fraction"] > 0.8
    wd = res.workdir
    trials = read_trials(fsdd / "trials.txt")[::3]  # 1800 trials, 300 target
    ubm = GaussianMixture.load(wd / "ubm.h5")
    isv = ISVModel.load(wd / "isv.h5")
    speakers = ISVSpeakers.load(wd / "isv_models.h5")
    stats = UtteranceStats.load(wd / "ivector_stats.h5")
    row = {u: i for i, u in enumerate(stats.ids)}
    tests = sorted({t.test.utt_id for t in trials})
    idx = [row[u] for u in tests]
    x = session_factors(isv, UtteranceStats(tests, stats.n[idx], stats.f[idx], stats.ubm_fingerprint))
    col = {u: j for j, u in enumerate(tests)}
    model = {m: i for i, m in enumerate(speakers.model_ids)}
    store = FeatureStore(wd / "features")
    full = np.array(
        [
            full_llr(
                ubm,
                speakers.offsets[model[t.model_id]],
                x[col[t.test.utt_id]] @ isv.U,
                store.get(t.test.utt_id),
            )
            for t in trials
        ]
    )
    ids, sc, _ = read_scores(wd / "scores.txt")  # in trial-list order
    assert ids[::3] == [(t.model_id, t.test.utt_id) for t in trials]
    linear = sc[::3]
    key = np.array([t.target for t in trials])
    assert np.corrcoef(full, linear)[0, 1] > 0.9
    assert abs(eer(full[key], full[~key]) - eer(linear[key], linear[~key])) < 0.01


@pytest.mark.slow
def test_demo_recipe_end_to_end(tmp_path):
    """The embedded default: synthetic corpus, every stage, an EER that shows the system works."""
    res = run_recipe(REPO / "recipes" / "demo.yaml", workdir=tmp_path / "demo")
    r = res.results
    assert r is not None and r["n_target"] > 100 and r["n_nontarget"] > 1000
    assert r["eer"] < 0.10, f"demo EER {r['eer']:.3f}"
    assert (tmp_path / "demo" / "det.png").stat().st_size > 1000
    again = run_recipe(REPO / "recipes" / "demo.yaml", workdir=tmp_path / "demo")
    assert set(again.actions.values()) == {"skipped"}


@pytest.mark.parametrize("flag", ["from_stage", "until_stage"])
def test_a_stage_range_outside_the_recipe_is_an_error(tmp_path, flag):
    """``--until-stage fusion`` on a GMM-UBM recipe ran up to the table position of ``fusion``
    and stopped before ``evaluate``, saying nothing; a stage the recipe does not run is an error."""
    wd = tmp_path / "wd"
    with pytest.raises(
        ConfigError, match=r"--(from|until)-stage tv: not a stage of this recipe.*features, ubm"
    ):
        run_recipe(tiny(tmp_path), workdir=wd, **{flag: "tv"})
    assert not wd.exists()


def test_changing_ubm_subsample_retrains_the_ubm(tmp_path):
    """ubm.subsample is part of the UBM stage's fingerprint (even where the corpus is too
    small for it to change the frames)."""
    wd = tmp_path / "wd"
    base = tiny(tmp_path)
    run_recipe(base, workdir=wd, until_stage="ubm")
    same = tmp_path / "same.yaml"
    same.write_text(f"defaults: {base.name}\nubm: {{subsample: 5}}\n")  # the default
    assert run_recipe(same, workdir=wd, dry_run=True).actions["ubm"] == "skipped"
    other = tmp_path / "other.yaml"
    other.write_text(f"defaults: {base.name}\nubm: {{subsample: 2}}\n")
    r = run_recipe(other, workdir=wd, dry_run=True)
    assert r.actions["ubm"] == "would run" and r.reasons["ubm"] == "inputs or configuration changed"
    assert r.actions["features"] == "skipped"
