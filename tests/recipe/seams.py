"""Helpers of the seam tests: tiny corpora and recipes, and "verify reproduces the run" checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gmmspeaker.cli import main
from tests.helpers import REPO


def tiny_corpus(root: Path, *, n_speakers: int = 4) -> Path:
    """A synthetic corpus with background speakers (the cohort), a training list and a cohort list.

    The cohort list also holds one test file of the trials (``wav/spk001/utt002.wav``), so
    a T-side self-trial occurs in the protocol.
    """
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    c = root / "corpus"
    if (c / "train.txt").exists():
        return c
    generate_corpus(
        c,
        SyntheticCorpusConfig(
            n_speakers=n_speakers,
            n_ubm_utterances=3,
            n_enroll_utterances=2,
            n_test_utterances=2,
            background_speakers=4,
            duration=1.0,
            seed=2,
        ),
    )
    ubm = (c / "ubm.txt").read_text().split()
    (c / "cohort.txt").write_text("".join(f"{p}\n" for p in [*ubm, "wav/spk001/utt002.wav"]))
    enrolled = [p for line in (c / "enroll.txt").read_text().splitlines() for p in line.split()[1:]]
    train = [*ubm, *enrolled]
    (c / "train.txt").write_text("".join(f"{p} {p.split('/')[1]}\n" for p in train))
    return c


def tiny_recipe(
    root: Path, *, name: str, system: str = "gmm_ubm", norm: str = "none", extra: str = ""
) -> Path:
    """A recipe on :func:`tiny_corpus` (8-component UBM, rank-6 i-vectors): seconds to run."""
    tiny_corpus(root)
    p = root / f"{name}.yaml"
    p.write_text(
        f"""experiment: {name}
seed: 0
jobs: 1
system: {system}
defaults: {REPO}/configs/features-8k.yaml
data: {{root: corpus, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt, cohort: cohort.txt,
        train: train.txt}}
ubm: {{components: 8, iterations: 3}}
scoring: {{method: top_c, top_c: 3, normalization: {norm}, cohort_top_n: 5}}
ivector: {{rank: 6, iterations: 3, plda_iterations: 3, normalization: {norm if system == "ivector" else "none"},
          cohort_top_n: 5}}
evaluation: {{p_target: [0.01], det_plot: false}}
{extra}
"""
    )
    return p


def read_scores(path: Path) -> dict[tuple[str, str], float]:
    out = {}
    for line in path.read_text().splitlines():
        f = line.split()
        out[(f[0], f[1])] = float(f[2])
    return out


def audio_of(wd: Path, test_id: str) -> Path:
    root = Path(json.loads((wd / "recipe.json").read_text())["data"]["root"])
    return root / f"{test_id}.wav"


def check_verify_reproduces_run(wd: Path, capsys: pytest.CaptureFixture[str], *, every: int = 1) -> int:
    """``gmmspeaker verify WD --model M --json TEST...`` on the run's own trials gives the run's
    scores (within 1e-4) and the decisions at the run's threshold. Returns the trials checked."""
    scores = read_scores(wd / "scores.txt")
    thr = json.loads((wd / "results.json").read_text())["eer_threshold"]
    by_model: dict[str, list[str]] = {}
    for m, t in sorted(scores)[::every]:
        by_model.setdefault(m, []).append(t)
    n = 0
    for m, tests in by_model.items():
        capsys.readouterr()
        assert (
            main(
                ["-q", "verify", str(wd), "--model", m, "--json", *map(str, (audio_of(wd, t) for t in tests))]
            )
            == 0
        )
        lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert len(lines) == len(tests)
        for t, r in zip(tests, lines):
            want = scores[(m, t)]
            assert r["score"] == pytest.approx(want, abs=1e-4), (m, t)
            assert r["threshold"] == pytest.approx(thr)
            if (
                abs(want - thr) > 1e-6
            ):  # the score file keeps 6 decimals: a trial *at* the threshold may go either way
                assert r["decision"] == ("accept" if want >= thr else "reject"), (m, t, want, thr)
            n += 1
    return n


def check_identify(wd: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    """``gmmspeaker identify WD --json`` on every enrolled speaker's first test file: a ranking of every model."""
    scores = read_scores(wd / "scores.txt")
    models = sorted({m for m, _ in scores})
    tests = sorted({t for _, t in scores})
    capsys.readouterr()
    args = [
        "-q",
        "identify",
        str(wd),
        "--json",
        "--top-n",
        str(len(models)),
        *map(str, (audio_of(wd, t) for t in tests)),
    ]
    assert main(args) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(out) == len(tests)
    for r, t in zip(out, tests):
        assert sorted(x["model"] for x in r["ranking"]) == models
        ranked = [x["score"] for x in r["ranking"]]
        assert ranked == sorted(ranked, reverse=True)
        # the score verify reports (normalised / fused), which reproduces the run's scores.txt
        for x in r["ranking"]:
            if (x["model"], t) in scores:
                assert x["score"] == pytest.approx(scores[(x["model"], t)], abs=1e-4), (x["model"], t)
    # and verify itself, for the best and the worst model of the first file
    for x in (out[0]["ranking"][0], out[0]["ranking"][-1]):
        capsys.readouterr()
        assert main(["-q", "verify", str(wd), "--model", x["model"], "--json", out[0]["audio"]]) == 0
        v = json.loads(capsys.readouterr().out.splitlines()[0])
        assert v["score"] == pytest.approx(x["score"], rel=1e-12, abs=1e-12), x["model"]
    return out
