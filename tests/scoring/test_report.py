"""Tests of gmmspeaker.scoring.report: thresholds, the self-contained report.html, and the
evaluate stage writing it with the score histogram."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.errors import DataError
from gmmspeaker.scoring import report
from gmmspeaker.scoring.metrics import bayes_threshold, eer, eer_threshold
from tests.helpers import tiny_recipe

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _naive_eer_threshold(tar: np.ndarray, non: np.ndarray) -> float:
    """Reference: try every observed score in a Python loop."""
    best, best_gap = None, np.inf
    for t in sorted(set(tar.tolist()) | set(non.tolist())):
        gap = max(np.mean(tar < t), np.mean(non >= t))
        if gap < best_gap:
            best, best_gap = t, gap
    return float(best)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_eer_threshold_against_a_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    tar = np.round(rng.normal(2.0, 1.0, 150), 2)  # rounding makes ties
    non = np.round(rng.normal(0.0, 1.0, 900), 2)
    thr = eer_threshold(tar, non)
    assert thr == _naive_eer_threshold(tar, non)
    # at that threshold both error rates are near the (convex hull) EER
    assert abs(np.mean(tar < thr) - eer(tar, non)) < 0.02
    assert abs(np.mean(non >= thr) - eer(tar, non)) < 0.02


def test_eer_threshold_needs_both_classes() -> None:
    with pytest.raises(DataError, match="target and non-target"):
        eer_threshold([np.nan], [0.0, 1.0])


def test_bayes_threshold_mapped_to_raw_scores() -> None:
    rng = np.random.default_rng(4)
    tar, non = rng.normal(1, 1, 50), rng.normal(-1, 1, 500)
    cal = {"scale": 2.5, "offset": -0.7}
    th = report.decision_thresholds(tar, non, p_targets=(0.01, 0.5), calibration=cal, c_fa=2.0)
    assert th["EER threshold"] == eer_threshold(tar, non)
    for p in (0.01, 0.5):
        llr = cal["scale"] * th[f"Bayes threshold (P_tar={p:g})"] + cal["offset"]
        assert llr == pytest.approx(bayes_threshold(p, c_fa=2.0))
    assert set(report.decision_thresholds(tar, non, p_targets=(0.01,))) == {"EER threshold"}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs)["src"] or "")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    p.close()
    return p


def _embedded_pngs(page: _Collect) -> list[bytes]:
    out = []
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")  # nothing loaded from elsewhere
        out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
    return out


def test_render_report_escapes_and_embeds() -> None:
    res = {
        "eer": 0.0447,
        "min_dcf": {"0.01": 0.6383},
        "act_dcf": {"0.01": 1.0},
        "cllr": 0.481,
        "min_cllr": 0.1556,
        "n_target": 3,
        "n_nontarget": 7,
        "experiment": "x<y>",
        "config": {"note": "<script>alert(1)</script>"},
        "stage_seconds": {"features": 1.25, "ubm": 2.0},
    }
    text = report.render_report(res, images=[("DET", PNG_SIGNATURE + b"abc")])
    page = _parse(text)
    assert "script" not in page.tags and "<script>" not in text
    assert "<script>alert(1)</script>" in "".join(page.text)  # shown as text
    assert _embedded_pngs(page) == [PNG_SIGNATURE + b"abc"]
    assert "4.47 %" in text and "0.6383" in text and "3 / 7" in text and "3.2 s" in text
    no_pics = report.render_report(res)
    assert "<img" not in no_pics and "0.6383" in no_pics and "No plots" in no_pics


def test_evaluate_stage_writes_report_and_histogram(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from gmmspeaker.recipe.runner import run_recipe

    recipe = tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("det_plot: false", "det_plot: true"))
    wd = tmp_path / "exp"
    run_recipe(recipe, workdir=wd)
    res = json.loads((wd / "results.json").read_text())
    text = (wd / "report.html").read_text()
    page = _parse(text)
    # the run's numbers, formatted as the table prints them
    assert f"{100 * res['eer']:.2f} %" in text
    for p, v in res["min_dcf"].items():
        assert re.search(rf"minDCF \(P_tar={re.escape(p)}\)</td><td[^>]*>{v:.4f}<", text)
    assert f"{res['n_target']} / {res['n_nontarget']}" in text
    for stage, secs in res["stage_seconds"].items():
        assert f"<td>{stage}</td>" in text and f"{secs:.1f} s" in text
    assert f"{res['thresholds']['EER threshold']:.4g}" in text
    assert '"components": 8' in text  # the configuration
    # both pictures embedded byte for byte, and the page needs no other file
    pngs = _embedded_pngs(page)
    assert pngs == [(wd / "det.png").read_bytes(), (wd / "score_hist.png").read_bytes()]
    assert all(p.startswith(PNG_SIGNATURE) for p in pngs)
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    thr = res["thresholds"]["EER threshold"]
    scores = [ln.split() for ln in (wd / "scores.txt").read_text().splitlines()]
    tar = np.array([float(s[2]) for s in scores if s[3] == "target"])
    non = np.array([float(s[2]) for s in scores if s[3] == "nontarget"])
    assert thr == pytest.approx(_naive_eer_threshold(tar, non))


def test_report_without_matplotlib_keeps_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gmmspeaker.scoring import plots

    monkeypatch.setattr(plots, "plots_available", lambda: False)
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(2, 1, 20), rng.normal(0, 1, 80)])
    keys = [True] * 20 + [False] * 80
    th = report.write_score_histogram(tmp_path, scores, keys, p_targets=(0.01,))
    assert not (tmp_path / "score_hist.png").exists()
    assert th["EER threshold"] == eer_threshold(scores[:20], scores[20:])
    res = {"eer": 0.1234, "min_dcf": {"0.01": 0.5}, "n_target": 20, "n_nontarget": 80, "thresholds": th}
    out = report.write_experiment_report(tmp_path, res)
    text = out.read_text()
    assert "12.34 %" in text and "0.5000" in text and "<img" not in text


def test_calibrated_experiment_shows_the_bayes_threshold(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus
    from gmmspeaker.recipe.runner import run_recipe
    from tests.helpers import REPO

    corpus = tmp_path / "corpus"
    generate_corpus(
        corpus,
        SyntheticCorpusConfig(
            n_speakers=5, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=4, duration=1.0, seed=4
        ),
    )
    lines = (corpus / "trials.txt").read_text().splitlines()
    dev_tests = set(sorted({ln.split()[1] for ln in lines})[::2])
    (corpus / "dev.txt").write_text("".join(ln + "\n" for ln in lines if ln.split()[1] in dev_tests))
    (corpus / "eval.txt").write_text("".join(ln + "\n" for ln in lines if ln.split()[1] not in dev_tests))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"defaults: {REPO}/configs/features-8k.yaml\n"
        "data: {root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: eval.txt, dev_trials: dev.txt}\n"
        "ubm: {components: 8, iterations: 3}\nevaluation: {det_plot: true, p_target: [0.1]}\n"
    )
    res = run_recipe(recipe, workdir=tmp_path / "wd").results
    assert res is not None
    raw_thr = res["thresholds"]["Bayes threshold (P_tar=0.1)"]
    cal = res["calibration"]
    assert cal["scale"] * raw_thr + cal["offset"] == pytest.approx(bayes_threshold(0.1))
    text = (tmp_path / "wd" / "report.html").read_text()
    assert f'Bayes threshold (P_tar=0.1), on the raw LLR (GMM-UBM)</td><td class="v">{raw_thr:.4g}<' in text
    assert f"{res['calibrated']['cllr']:.4f}" in text
    assert (tmp_path / "wd" / "score_hist.png").read_bytes().startswith(PNG_SIGNATURE)


# -- a truthful report (issue 20, item 7) ---------------------------------------------------


@pytest.mark.parametrize(
    "kw, label",
    [
        ({}, "raw LLR (GMM-UBM)"),
        ({"normalization": "snorm"}, "S-normalised LLR (GMM-UBM)"),
        ({"normalization": "asnorm"}, "adaptive-S-normalised LLR (GMM-UBM)"),
        ({"system": ["ivector"]}, "raw PLDA LLR (i-vector)"),
        (
            {"system": ["ivector"], "ivector_scoring": "cosine", "ivector_normalization": "znorm"},
            "Z-normalised cosine score (i-vector)",
        ),
        ({"system": ["gmm_ubm", "ivector"], "normalization": "snorm"}, "fused score (gmm_ubm + ivector)"),
    ],
)
def test_score_label_says_what_the_scores_are(kw, label) -> None:
    assert report.score_label(**kw) == label


def test_normalised_run_labels_table_and_histogram_and_says_when_and_on_what(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S-norm: thresholds and histogram are on the S-normed scores and say so; data and time shown."""
    from datetime import datetime, timezone

    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus
    from gmmspeaker.recipe.runner import run_recipe
    from gmmspeaker.scoring import plots
    from tests.helpers import REPO

    pytest.importorskip("matplotlib")
    drawn = {}
    monkeypatch.setattr(
        plots, "plot_score_histograms", lambda tar, non, path, **kw: drawn.update(kw, tar=tar)
    )
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
        "ubm: {components: 4, iterations: 2}\nscoring: {method: full, normalization: snorm}\n"
        "evaluation: {det_plot: true}\n"
    )
    before = datetime.now(timezone.utc).replace(microsecond=0)
    wd = tmp_path / "wd"
    res = run_recipe(recipe, workdir=wd).results
    assert res is not None and res["score_label"] == "S-normalised LLR (GMM-UBM)"
    text = (wd / "report.html").read_text()
    page = "".join(_parse(text).text)
    # the threshold is the EER threshold of the S-normed scores (scores.txt), not of the raw ones
    lines = [ln.split() for ln in (wd / "scores.txt").read_text().splitlines()]
    tar = np.array([float(x[2]) for x in lines if x[3] == "target"])
    non = np.array([float(x[2]) for x in lines if x[3] == "nontarget"])
    thr = res["thresholds"]["EER threshold"]
    assert thr == pytest.approx(_naive_eer_threshold(tar, non))
    assert f'EER threshold, on the S-normalised LLR (GMM-UBM)</td><td class="v">{thr:.4g}<' in text
    assert "raw score" not in page
    assert drawn["xlabel"] == "S-normalised LLR (GMM-UBM)"
    np.testing.assert_array_equal(np.sort(drawn["tar"]), np.sort(tar))
    # which data, and when
    assert f"{(corpus / 'trials.txt').resolve()} ({len(lines)} lines, modified " in page
    n_ubm = len((corpus / "ubm.txt").read_text().split("\n")) - 1
    assert f"{(corpus / 'ubm.txt').resolve()} ({n_ubm} lines" in page
    assert str(recipe.resolve()) in page
    written = re.search(r"report written</td><td[^>]*>([^<]+) UTC<", text)
    assert written is not None
    when = datetime.strptime(written.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
    assert before <= when <= datetime.now(timezone.utc)
    # one features block, the resolved one (a concrete sample rate)
    config = re.search(r"<h2>Configuration</h2>\s*<pre>(.*?)</pre>", text, re.S)
    assert config is not None
    assert config.group(1).count('"features"') == 1 and "features (resolved)" not in text
    resolved = json.loads((wd / "features" / "manifest.json").read_text())["config"]
    assert f'"sample_rate": {resolved["sample_rate"]}' in config.group(1)


def test_actdcf_of_one_or_more_is_explained() -> None:
    base = {"eer": 0.1, "min_dcf": {"0.01": 0.6}, "n_target": 3, "n_nontarget": 7}
    high = report.render_report({**base, "act_dcf": {"0.01": 1.7, "0.001": 0.4}})
    note = re.search(r'<p class="note">(.*?)</p>', high, re.S)
    assert note is not None
    assert "P_tar=0.01" in note.group(1) and "P_tar=0.001" not in note.group(1)
    assert "not calibrated" in note.group(1) and "data.dev_trials" in note.group(1)
    assert "note" not in report.render_report({**base, "act_dcf": {"0.01": 0.99}}).split("</style>")[1]
    calibrated = {**base, "act_dcf": {"0.01": 1.0}, "calibrated": {"act_dcf": {"0.01": 0.7}, "cllr": 0.5}}
    assert "calibrated actDCF rows show" in report.render_report(calibrated)
