"""Shared fixtures: a seeded rng, the real corpus location, tiny audio writers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="session")
def fsdd_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One run of ``recipes/fsdd.yaml`` on the real FSDD corpus, shared by the session (or skip).

    The :class:`~gmmspeaker.recipe.runner.RunResult` of ``run_recipe(..., jobs=2)``; the
    command line then finds the workdir up to date. Tests only read its workdir: one that
    enrols, reruns or changes a file works on a copy
    (``shutil.copytree(fsdd_run.workdir, tmp_path / "fsdd")``). At the end of the session
    the workdir must be as the run left it (a test that wrote into it fails here).
    """
    if not (FSDD / "trials.txt").is_file():
        pytest.skip(f"real corpus not found at {FSDD} (../shared/corpora/fsdd beside the repo)")
    from gmmspeaker.cli import main
    from gmmspeaker.recipe.runner import run_recipe

    recipe = REPO / "recipes" / "fsdd.yaml"
    wd = tmp_path_factory.mktemp("fsdd-run") / "fsdd"
    res = run_recipe(recipe, workdir=wd, jobs=2)
    models = (wd / "isv_models.h5").stat().st_mtime_ns  # system: isv
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0  # as a user runs it: up to date
    assert (wd / "isv_models.h5").stat().st_mtime_ns == models
    before = _tree_state(wd)
    yield res
    after = _tree_state(wd)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test wrote into the shared FSDD workdir (copy it first): {changed[:5]}"
