"""Shared fixtures: a seeded rng, the real corpus location, tiny audio writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FSDD = (REPO / ".." / "shared" / "corpora" / "fsdd").resolve()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def fsdd() -> Path:
    """The real FSDD corpus in ../shared, or skip."""
    if not (FSDD / "trials.txt").is_file():
        pytest.skip(f"real corpus not found at {FSDD} (../shared/corpora/fsdd beside the repo)")
    return FSDD
