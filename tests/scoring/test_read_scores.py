"""Tests of gmmspeaker.scoring.trials.read_scores: the scores files the stages read back."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import DataError
from gmmspeaker.scoring.trials import read_scores


def _reference(text: str):
    """Line by line, with Python's float: the independent parse."""
    pairs, vals, keys = [], [], []
    for line in text.splitlines():
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        pairs.append((f[0], f[1]))
        vals.append(float(f[2]))
        keys.append(None if len(f) == 3 else f[3] == "target")
    return pairs, vals, keys


def test_matches_a_line_by_line_parse(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["# model test score key", ""]
    for i in range(500):
        v = float(rng.normal(0.0, 10.0) * 10.0 ** rng.integers(-8, 8))
        key = ["", " target", " nontarget"][i % 3]
        fmt = [f"{v:.6f}", repr(v), f"{v:e}", "-inf", "inf", "nan"][i % 6]
        lines.append(f"m{i % 7}\ttests/u{i}  {fmt}{key}   ")
    text = "\n".join(lines) + "\n"
    (tmp_path / "s.txt").write_text(text)
    pairs, scores, keys = read_scores(tmp_path / "s.txt")
    ref_pairs, ref_vals, ref_keys = _reference(text)
    assert pairs == ref_pairs and keys == ref_keys
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, np.array(ref_vals))  # bit for bit, NaN in place


@pytest.mark.parametrize(
    "bad, message",
    [
        ("m1 u2", r"s\.txt:3: expected 'model_id test_id score \[target\|nontarget\]', got 'm1 u2'"),
        ("m1 u2 0.5 target extra", r"s\.txt:3: expected"),
        ("m1 u2 abc", r"s\.txt:3: score 'abc' is not a number"),
        ("m1 u2 0.5 yes", r"s\.txt:3: key must be target or nontarget, got 'yes'"),
    ],
)
def test_a_malformed_line_is_named(tmp_path, bad, message):
    (tmp_path / "s.txt").write_text(f"m0 u0 1.0 target\n# comment\n{bad}\nm0 u1 2.0 nontarget\n")
    with pytest.raises(DataError, match=message):
        read_scores(tmp_path / "s.txt")


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "e.txt").write_text("# only a comment\n\n")
    with pytest.raises(DataError, match=r"e\.txt: no scores"):
        read_scores(tmp_path / "e.txt")
    with pytest.raises(DataError, match=r"none\.txt: cannot read scores"):
        read_scores(tmp_path / "none.txt")
