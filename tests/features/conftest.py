"""Fixtures of the feature tests (``rng`` comes from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

FSDD = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora" / "fsdd"


@pytest.fixture
def fsdd_dir() -> Path:
    """FSDD's recordings folder, or skip."""
    recordings = FSDD / "recordings"
    if not recordings.is_dir():
        pytest.skip(f"FSDD corpus absent ({recordings} not found)")
    return recordings
