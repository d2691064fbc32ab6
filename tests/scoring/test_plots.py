"""Tests of gmmspeaker.scoring.plots (PNG output, lazy matplotlib import)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gmmspeaker.errors import DataError, GmmSpeakerError
from gmmspeaker.scoring import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

import matplotlib  # noqa: E402, F401  (in the [test] extra: missing is a failure, not a skip)


def _systems(rng):
    return {
        "good": (rng.normal(3.0, 1.0, 400), rng.normal(0.0, 1.0, 4000)),
        "poor": (rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 4000)),
        "separable": (np.array([5.0, 6.0]), np.array([0.0, 1.0, 2.0])),
    }


def _assert_png(path):
    data = path.read_bytes()
    assert len(data) > 5000
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"


def test_plot_det_writes_png(tmp_path, rng):
    out = plots.plot_det(_systems(rng), tmp_path / "sub" / "det.png", title="DET test")
    assert out == tmp_path / "sub" / "det.png"
    _assert_png(out)
    assert [p.name for p in out.parent.iterdir()] == ["det.png"]  # no temp file left


def test_plot_det_empirical_and_histogram(tmp_path, rng):
    tar, non = _systems(rng)["poor"]
    _assert_png(plots.plot_det({"x": (tar, non)}, tmp_path / "d.png", hull=False))
    _assert_png(plots.plot_score_histograms(tar, non, tmp_path / "h.png", title="scores"))


def test_plot_det_errors(tmp_path):
    with pytest.raises(DataError, match="no systems"):
        plots.plot_det({}, tmp_path / "x.png")
    with pytest.raises(DataError, match="'bad'.*NaN"):
        plots.plot_det({"bad": ([np.nan], [0.0])}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_missing_matplotlib_message(tmp_path, monkeypatch, rng):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(GmmSpeakerError, match=r"pip install gmmspeaker\[plot\]"):
        plots.plot_det(_systems(rng), tmp_path / "det.png")
