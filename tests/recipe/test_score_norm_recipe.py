"""Score normalisation from a recipe's cohort list, checked against a slow per-pair reference."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.errors import SkippedInputWarning
from gmmspeaker.recipe.runner import run_recipe
from tests.helpers import REPO


def _scores(path: Path) -> np.ndarray:
    return np.array([float(line.split()[2]) for line in path.read_text().splitlines()])


@pytest.mark.parametrize(
    ("method", "scoring"),
    [("znorm", "full"), ("tnorm", "full"), ("snorm", "full"), ("snorm", "top_c"), ("tnorm", "linear")],
)
def test_recipe_normalisation_matches_reference(tmp_path, method, scoring):
    """Trial scores and their T side come from one UBM pass per test (pooled top-C, or
    per utterance); the reference scores every pair on its own."""
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
        f"ubm: {{components: 4, iterations: 2}}\n"
        f"scoring: {{method: {scoring}, top_c: 2, normalization: {method}}}\n"
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
    how = {"method": scoring, "top_c": 2}
    for t, s in zip(trials, raw):
        ref_raw = score_utterance(store.get(t.test.utt_id), ubm, models, [models.index(t.model_id)], **how)[0]
        assert abs(s - ref_raw) < 1e-4
    ref = []
    for t, s in zip(trials, raw):
        if method in ("znorm", "snorm"):
            z = np.array(
                [
                    score_utterance(store.get(c), ubm, models, [models.index(t.model_id)], **how)[0]
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
                tt.append(score_utterance(x, ubm, cm, [0], **how)[0])
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


# --------------------------------------------------------------------------- issue 11.3 / 11.4


def _corpus(tmp_path: Path) -> Path:
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    corpus = tmp_path / "corpus"
    generate_corpus(
        corpus,
        SyntheticCorpusConfig(
            n_speakers=4, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=2, duration=1.0, seed=2
        ),
    )
    return corpus


def _recipe(
    tmp_path: Path, method: str, *, trials: str = "trials.txt", extra: str = "", top_n: int = 200
) -> Path:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"defaults: {REPO}/configs/features-8k.yaml\n{extra}"
        f"data: {{root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: {trials}, cohort: cohort.txt}}\n"
        "ubm: {components: 4, iterations: 2}\n"
        f"scoring: {{method: full, normalization: {method}, cohort_top_n: {top_n}}}\n"
        "evaluation: {det_plot: false}\n"
    )
    return recipe


def _direct(corpus: Path, wd: Path, method: str, top_n: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(raw, normalised) scores of every trial computed pair by pair, self-trials left out."""
    import statistics

    from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list
    from gmmspeaker.gmm.map import SpeakerModels, map_adapt
    from gmmspeaker.gmm.model import GaussianMixture
    from gmmspeaker.gmm.stats import accumulate
    from gmmspeaker.scoring.llr import score_utterance
    from gmmspeaker.store import FeatureStore

    store, ubm = FeatureStore(wd / "features"), GaussianMixture.load(wd / "ubm.h5")
    models = SpeakerModels.load(wd / "models.h5")
    cohort = [u.utt_id for u in read_ubm_list(corpus / "cohort.txt", root=corpus)]
    enrolled = {e.model_id: {u.utt_id for u in e.utterances} for e in read_enroll_list(corpus / "enroll.txt")}
    trials = read_trials(corpus / "trials.txt")
    cmodel = {
        c: SpeakerModels.from_adapted(
            ["c"], [map_adapt(accumulate(store.get(c), ubm), ubm, relevance=16.0)], relevance=16.0
        )
        for c in cohort
    }

    @functools.cache  # each pair still scored on its own, just once
    def llr(mid: str, utt: str) -> float:
        return float(score_utterance(store.get(utt), ubm, models, [models.index(mid)], method="full")[0])

    @functools.cache
    def cllr(c: str, utt: str) -> float:
        return float(score_utterance(store.get(utt), ubm, cmodel[c], [0], method="full")[0])

    def ms(vals: list[float], n: int | None = None) -> tuple[float, float]:
        vals = sorted(vals, reverse=True)[:n] if n else vals
        return statistics.fmean(vals), max(statistics.pstdev(vals), 1e-6)

    raw, out = [], []
    for t in trials:
        m, x = t.model_id, t.test.utt_id
        s = llr(m, x)
        raw.append(s)
        zm, zs = ms([llr(m, c) for c in cohort if c not in enrolled[m]], top_n)
        tm, ts = ms([cllr(c, x) for c in cohort if c != x], top_n)
        if method == "ztnorm":
            zc = []
            for c in cohort:
                if c == x:
                    continue
                cm, cs = ms([cllr(c, c2) for c2 in cohort if c2 != c])  # no self-trial
                zc.append((cllr(c, x) - cm) / cs)
            m2, s2 = ms(zc)
            out.append(((s - zm) / zs - m2) / s2)
        else:  # asnorm
            out.append(0.5 * ((s - zm) / zs + (s - tm) / ts))
    return np.array(raw), np.array(out)


@pytest.mark.parametrize("method, top_n", [("ztnorm", None), ("asnorm", 5)])
def test_recipe_ztnorm_and_asnorm_leave_out_self_trials(tmp_path, method, top_n):
    """Issue 11.4: the cohort holds the UBM files plus one enrolment and one test file of
    each speaker, so self-trials exist on both sides; the recipe must match a direct
    computation that leaves every one of them out."""
    corpus = _corpus(tmp_path)
    lines = (corpus / "ubm.txt").read_text().splitlines()
    lines += [ln.split()[1] for ln in (corpus / "enroll.txt").read_text().splitlines()]
    lines += sorted({ln.split()[1] for ln in (corpus / "trials.txt").read_text().splitlines()})[::2]
    (corpus / "cohort.txt").write_text("\n".join(lines) + "\n")
    wd = tmp_path / "wd"
    run_recipe(_recipe(tmp_path, method, top_n=top_n or 200), workdir=wd)
    raw, want = _direct(corpus, wd, method, top_n)
    np.testing.assert_allclose(_scores(wd / "scores.raw.txt"), raw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_scores(wd / "scores.txt"), want, rtol=1e-4, atol=1e-4)


def test_skipped_test_audio_does_not_break_normalisation(tmp_path):
    """Issue 11.3: with on_bad_audio: skip, every normalisation completes; the trials of the
    skipped test file stay NaN and are counted, the others equal a run without them."""
    corpus = _corpus(tmp_path)
    (corpus / "cohort.txt").write_text((corpus / "ubm.txt").read_text())
    bad = "wav/spk001/utt003.wav"
    lines = (corpus / "trials.txt").read_text().splitlines()
    (corpus / "clean.txt").write_text("".join(ln + "\n" for ln in lines if ln.split()[1] != bad))
    n_bad = sum(ln.split()[1] == bad for ln in lines)
    assert 0 < n_bad < len(lines)
    (corpus / bad).write_bytes(b"not audio any more")
    keep = np.array([ln.split()[1] != bad for ln in lines])
    for i, method in enumerate(["znorm", "tnorm", "ztnorm", "snorm", "asnorm"]):
        # features run once (the warning), then only the score and evaluate stages rerun
        with pytest.warns(SkippedInputWarning, match="utt003.wav") if i == 0 else contextlib.nullcontext():
            res = run_recipe(
                _recipe(tmp_path, method, extra="on_bad_audio: skip\n", top_n=5), workdir=tmp_path / "bad"
            ).results
        assert res is not None and res["n_unscored"] == n_bad and res["n_skipped_audio"] == 1
        got = _scores(tmp_path / "bad" / "scores.txt")
        assert np.isnan(got[~keep]).all() and np.isfinite(got[keep]).all()
        run_recipe(_recipe(tmp_path, method, trials="clean.txt", top_n=5), workdir=tmp_path / "clean")
        np.testing.assert_allclose(
            got[keep], _scores(tmp_path / "clean" / "scores.txt"), rtol=1e-9, atol=1e-9
        )


def test_cohort_enrolment_shows_a_progress_bar(tmp_path, monkeypatch):
    """Issue 14.5: enrolling the T-norm cohort models shows a bar (only with progress on)."""
    import tqdm.auto

    from tests.test_store import RecordingBar

    corpus = _corpus(tmp_path)
    (corpus / "cohort.txt").write_text((corpus / "ubm.txt").read_text())
    n_cohort = len((corpus / "ubm.txt").read_text().split())
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    RecordingBar.made = []
    run_recipe(_recipe(tmp_path, "tnorm"), workdir=tmp_path / "wd", progress=True)
    bars = [b for b in RecordingBar.made if b.desc == "cohort enroll"]
    assert len(bars) == 1 and bars[0].total == n_cohort and sum(bars[0].updates) == n_cohort
    RecordingBar.made = []
    run_recipe(_recipe(tmp_path, "znorm"), workdir=tmp_path / "wd")  # progress off
    assert RecordingBar.made == []
