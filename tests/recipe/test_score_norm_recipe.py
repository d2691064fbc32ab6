"""Score normalisation from a recipe's cohort list, checked against a slow per-pair reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.recipe.runner import run_recipe
from tests.helpers import REPO


def _scores(path: Path) -> np.ndarray:
    return np.array([float(line.split()[2]) for line in path.read_text().splitlines()])


@pytest.mark.parametrize("method", ["znorm", "tnorm", "snorm"])
def test_recipe_normalisation_matches_reference(tmp_path, method):
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(
        corpus,
        SyntheticCorpusConfig(
            n_speakers=4, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=2, duration=1.0, seed=2
        ),
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"defaults: {REPO}/configs/features-8k.yaml\n"
        "data: {root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt, cohort: ubm.txt}\n"
        f"ubm: {{components: 4, iterations: 2}}\nscoring: {{method: full, normalization: {method}}}\n"
        "evaluation: {det_plot: false}\n"
    )
    wd = tmp_path / "wd"
    run_recipe(recipe, workdir=wd)
    raw, normed = _scores(wd / "scores.raw.txt"), _scores(wd / "scores.txt")
    assert raw.shape == normed.shape and not np.allclose(raw, normed)

    # slow reference: every score computed pair by pair with score_utterance
    from gmmspeaker.corpora.lists import read_trials, read_ubm_list
    from gmmspeaker.gmm.map import SpeakerModels, map_adapt
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.gmm.stats import accumulate
    from gmmspeaker.scoring.llr import score_utterance
    from gmmspeaker.store import FeatureStore

    store, ubm = FeatureStore(wd / "features"), GaussianMixture.load(wd / "ubm.h5")
    models = SpeakerModels.load(wd / "models.h5")
    cohort = [u.utt_id for u in read_ubm_list(corpus / "ubm.txt")]
    trials = read_trials(corpus / "trials.txt")
    ref = []
    for t, s in zip(trials, raw):
        if method in ("znorm", "snorm"):
            z = np.array(
                [
                    score_utterance(store.get(c), ubm, models, [models.index(t.model_id)], method="full")[0]
                    for c in cohort
                ]
            )
            zn = (s - z.mean()) / z.std()
        if method in ("tnorm", "snorm"):
            x = store.get(t.test.utt_id)
            tt = []
            for c in cohort:
                cm = SpeakerModels.from_adapted(
                    ["c"], [map_adapt(accumulate(store.get(c), ubm), ubm, relevance=16.0)], relevance=16.0
                )
                tt.append(score_utterance(x, ubm, cm, [0], method="full")[0])
            tt = np.array(tt)
            tn = (s - tt.mean()) / tt.std()
        ref.append({"znorm": lambda: zn, "tnorm": lambda: tn, "snorm": lambda: 0.5 * (zn + tn)}[method]())
    np.testing.assert_allclose(normed, np.array(ref), rtol=1e-4, atol=1e-4)


def test_recipe_calibration_on_dev_trials(tmp_path):
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(
        corpus,
        SyntheticCorpusConfig(
            n_speakers=6, n_ubm_utterances=4, n_enroll_utterances=3, n_test_utterances=6, duration=1.0, seed=4
        ),
    )
    lines = (corpus / "trials.txt").read_text().splitlines()
    tests = sorted({ln.split()[1] for ln in lines})
    dev_tests = set(tests[::2])
    (corpus / "dev.txt").write_text("".join(ln + "\n" for ln in lines if ln.split()[1] in dev_tests))
    (corpus / "eval.txt").write_text("".join(ln + "\n" for ln in lines if ln.split()[1] not in dev_tests))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"defaults: {REPO}/configs/features-8k.yaml\n"
        "data: {root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: eval.txt, dev_trials: dev.txt}\n"
        "ubm: {components: 8, iterations: 3}\nevaluation: {det_plot: false, p_target: [0.1]}\n"
    )
    res = run_recipe(recipe, workdir=tmp_path / "wd").results
    assert res is not None and "calibrated" in res and set(res["calibration"]) >= {"scale", "offset"}
    # raw average LLRs are badly calibrated; the dev-trained calibration fixes most of it
    assert res["calibrated"]["cllr"] < res["cllr"]
    assert res["calibrated"]["act_dcf"]["0.1"] <= res["act_dcf"]["0.1"]
    assert (tmp_path / "wd" / "scores.calibrated.txt").exists()
