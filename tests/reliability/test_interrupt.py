"""SIGKILL in the middle of features, UBM training and scoring, then resume: the results
equal an uninterrupted run's, and no half-written file is trusted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gmmspeaker.cli import main
from tests.helpers import REPO, tiny_recipe

# Runs `gmmspeaker run` in a child process with one function wrapped so that the process
# SIGKILLs itself right after the N-th call of it returns (jobs=1: everything in-process).
KILLER = textwrap.dedent(
    """
    import os, signal, sys, importlib
    module, attr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    owner_path, _, name = attr.rpartition(".")
    owner = importlib.import_module(module)
    for part in filter(None, owner_path.split(".")):
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(owner, name, wrapped)
    import gmmspeaker.gmm.batch as stages
    stages.score_trials.__kwdefaults__["block_size"] = 2   # several scoring blocks
    import gmmspeaker.store as store
    store.extract_to_store.__kwdefaults__["shard_size"] = 10  # several feature shards
    from gmmspeaker.cli import main
    sys.exit(main(sys.argv[4:]))
    """
)


def _run(recipe: Path, wd: Path, module: str, attr: str, n: int) -> int:
    """Run the recipe in a child process, SIGKILLed after the n-th call of module.attr (n=0: never)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, module, attr, str(n), "-q", "run", str(recipe), "--workdir", str(wd)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-2000:]
    return proc.returncode


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    recipe = tiny_recipe(tmp, k=8)
    assert main(["-q", "run", str(recipe), "--workdir", str(tmp / "wd")]) == 0
    return (tmp / "wd" / "scores.txt").read_bytes(), json.loads((tmp / "wd" / "results.json").read_text())


@pytest.mark.parametrize(
    "stage, module, attr, n",
    [
        # right after the second shard is renamed into place: well within the default
        # manifest interval, before the parent process has even seen the shard
        ("features", "gmmspeaker.store", "_extract_shard", 2),
        ("ubm", "gmmspeaker.gmm.checkpoint", "Checkpoint.save", 4),
        ("score", "gmmspeaker.gmm.batch", "_save_part", 2),
    ],
)
def test_kill_and_resume(tmp_path, reference, stage, module, attr, n):
    recipe = tiny_recipe(tmp_path, k=8)
    wd = tmp_path / "wd"
    assert _run(recipe, wd, module, attr, n) == -signal.SIGKILL
    records = {p.stem for p in (wd / "stages").glob("*.json")} if (wd / "stages").exists() else set()
    order = ["features", "ubm", "enroll", "score", "evaluate"]
    assert records == set(order[: order.index(stage)]), (
        f"a stage record was written for an unfinished stage: {records}"
    )
    # what the killed run left behind is partial work, never a finished-looking output
    if stage == "ubm":
        assert not (wd / "ubm.h5").exists() and (wd / "ubm.checkpoint.h5").exists()
    if stage == "score":
        assert not (wd / "scores.txt").exists() and list((wd / "score_parts").glob("block-*.json"))
    assert _run(recipe, wd, module, attr, 0) == 0  # resume (same scoring blocks, no kill)
    log = (wd / "run.log").read_text()
    if stage == "features":
        assert "(20 cached)" in log  # the two shards finished before the kill are kept
    if stage == "ubm":
        assert "resum" in log.lower()
    if stage == "score":
        assert "reused from an interrupted run" in log
    scores, results = reference
    assert (wd / "scores.txt").read_bytes() == scores
    assert json.loads((wd / "results.json").read_text())["eer"] == results["eer"]


def test_ctrl_c_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import gmmspeaker.gmm.batch as stages

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "train_ubm", interrupted)
    recipe = tiny_recipe(tmp_path)
    assert main(["-q", "run", str(recipe), "--workdir", str(tmp_path / "wd")]) == 130
    err = capsys.readouterr().err
    assert "run the same command again to resume" in err and "Traceback" not in err
    assert (tmp_path / "wd" / "stages" / "features.json").exists()
