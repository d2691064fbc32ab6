"""The stage-by-stage command line: features -> train-ubm -> enroll -> score -> evaluate -> info."""

from __future__ import annotations

import json

import numpy as np

from gmmspeaker.cli import main
from tests.helpers import REPO


def test_cli_chain(tmp_path, capsys):
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    c = tmp_path / "corpus"
    generate_corpus(
        c,
        SyntheticCorpusConfig(
            n_speakers=4, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=2, duration=1.0, seed=9
        ),
    )
    cfg = REPO / "configs" / "features-8k.yaml"
    st, ubm, models, scores = (
        tmp_path / "store",
        tmp_path / "ubm.h5",
        tmp_path / "models.h5",
        tmp_path / "scores.txt",
    )
    for lst in ("ubm.txt", "enroll.txt", "trials.txt"):
        assert (
            main(["-q", "features", str(c / lst), "--out", str(st), "--config", str(cfg), "--jobs", "2"]) == 0
        )
    out = capsys.readouterr().out
    assert "VAD kept" in out and "cached" in out
    assert (
        main(
            [
                "-q",
                "train-ubm",
                "--features",
                str(st),
                "--list",
                str(c / "ubm.txt"),
                "--out",
                str(ubm),
                "--components",
                "4",
                "--iterations",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "enroll",
                "--features",
                str(st),
                "--ubm",
                str(ubm),
                "--list",
                str(c / "enroll.txt"),
                "--out",
                str(models),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "-q",
                "score",
                "--features",
                str(st),
                "--ubm",
                str(ubm),
                "--models",
                str(models),
                "--trials",
                str(c / "trials.txt"),
                "--out",
                str(scores),
                "--method",
                "full",
            ]
        )
        == 0
    )
    lines = scores.read_text().splitlines()
    assert len(lines) == len((c / "trials.txt").read_text().splitlines())
    assert all(np.isfinite(float(ln.split()[2])) for ln in lines)
    capsys.readouterr()
    assert main(["-q", "evaluate", str(scores), "--out", str(tmp_path / "eval")]) == 0
    assert "EER" in capsys.readouterr().out
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["n_target"] == 8 and (tmp_path / "eval" / "det.png").stat().st_size > 1000
    for f in (ubm, models, st):
        assert main(["info", str(f)]) == 0
    out = capsys.readouterr().out
    assert "n_components" in out and "means: (4, 4, 60)" in out and "feature store" in out
