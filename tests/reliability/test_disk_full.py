"""A full disk: one line naming the file and the space it needs, exit status 2, never a
traceback nor a crash of the interpreter; after space is freed the same command finishes
with the results of an uninterrupted run (issue 19, item 11).

A write to ``/dev/full`` fails with the kernel's ENOSPC at any chosen output (features
shard, UBM checkpoint, models, cohort models, scores, report, user models); where the
tests run as root, a small tmpfs fills up for real, at whatever output comes first.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gmmspeaker._io as gio
from gmmspeaker.cli import main
from tests.helpers import REPO

RECIPE = """experiment: full
seed: 3
jobs: 1
defaults: {repo}/configs/features-8k.yaml
data: {{root: {corpus}, ubm: ubm.txt, enroll: enroll.txt, trials: trials.txt, cohort: ubm.txt}}
ubm: {{components: 4, iterations: 3}}
scoring: {{method: full, normalization: snorm, cohort_top_n: 5}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""


#: tmpfs sizes: the run fills the disk at different outputs (features shard, models, ...)
SIZES_KB = (300, 990, 1020, 1050, 1100)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from gmmspeaker.corpora.synthetic import SyntheticCorpusConfig, generate_corpus

    tmp = tmp_path_factory.mktemp("full")
    corpus = tmp / "corpus"
    generate_corpus(
        corpus,
        SyntheticCorpusConfig(
            n_speakers=4, n_ubm_utterances=3, n_enroll_utterances=2, n_test_utterances=2, duration=1.0, seed=2
        ),
    )
    recipe = tmp / "full.yaml"
    recipe.write_text(RECIPE.format(repo=REPO, corpus=corpus))
    ref = tmp / "ref"
    assert main(["-q", "run", str(recipe), "--workdir", str(ref)]) == 0
    audio = sorted(corpus.rglob("*.wav"))[:2]
    assert main(["-q", "enroll", str(ref), "--model", "newcomer", *map(str, audio)]) == 0
    return recipe, ref, audio


def _outputs(wd: Path) -> dict[str, bytes]:
    return {n: (wd / n).read_bytes() for n in ("scores.txt", "scores.raw.txt")}


@pytest.fixture
def dev_full(monkeypatch):
    """Make writes of files whose name starts with a given prefix go to /dev/full."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    target: list[str] = []
    real = gio._mkstemp_like_open

    def mkstemp(path):
        fd, tmp = real(path)
        if target and path.name.startswith(target[0]):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(gio, "_mkstemp_like_open", mkstemp)
    return target


def _one_line(capsys, rc, name):
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "disk full" in err and name in err and "needs" in err and "free" in err, err


@pytest.mark.parametrize(
    "name", ["shard-", "ubm.checkpoint.h5", "models.h5", "cohort_models.h5", "scores.txt", "report.html"]
)
def test_disk_full_in_a_run_is_one_line_and_resumes(tmp_path, capsys, setup, dev_full, name):
    recipe, ref, _ = setup
    wd = tmp_path / "wd"
    dev_full.append(name)
    _one_line(capsys, main(["-q", "run", str(recipe), "--workdir", str(wd)]), name)
    assert not list(wd.rglob(".*.tmp")), list(wd.rglob(".*.tmp"))  # no temporary left behind
    dev_full.clear()  # space freed
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    assert _outputs(wd) == _outputs(ref)


def test_disk_full_enrolling_a_user(tmp_path, capsys, setup, dev_full):
    import shutil

    recipe, ref, audio = setup
    wd = tmp_path / "wd"
    shutil.copytree(ref, wd)
    (wd / "user_models.h5").unlink()
    dev_full.append("user_models.h5")
    _one_line(
        capsys, main(["-q", "enroll", str(wd), "--model", "newcomer", *map(str, audio)]), "user_models.h5"
    )
    assert not (wd / "user_models.h5").exists()
    dev_full.clear()
    assert main(["-q", "enroll", str(wd), "--model", "newcomer", *map(str, audio)]) == 0
    capsys.readouterr()
    outs = []
    for d in (ref, wd):
        assert main(["verify", str(d), "--model", "newcomer", str(audio[0])]) == 0
        outs.append(capsys.readouterr().out.replace(str(d), "WD"))
    assert outs[0] == outs[1] and "newcomer" in outs[0]


def test_too_little_free_space_is_found_before_writing(tmp_path, capsys, setup, monkeypatch):
    recipe, _, _ = setup
    monkeypatch.setattr(gio, "free_bytes", lambda folder: 1000)
    wd = tmp_path / "wd"
    rc = main(["-q", "run", str(recipe), "--workdir", str(wd)])
    err = capsys.readouterr().err
    assert rc == 2 and "1.0 KB are free" in err and str(wd) in err, err
    monkeypatch.undo()
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_real_full_tmpfs_never_crashes_and_resumes_byte_identical(tmp_path, setup):
    """Real ENOSPC on a small tmpfs, at several sizes (each fills at another output): exit
    status 2 with one line every time, never a segfault; after growing the tmpfs the run
    ends with the reference scores."""
    recipe, ref, _ = setup
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    seen = set()
    for size_kb in SIZES_KB:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)]).returncode:
            pytest.skip("cannot mount a tmpfs here")
        try:
            wd = mnt / "wd"
            proc = subprocess.run(
                [sys.executable, "-m", "gmmspeaker.cli", "-q", "run", str(recipe), "--workdir", str(wd)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            err = proc.stderr.strip()
            assert proc.returncode in (0, 2), (size_kb, proc.returncode, err[-3000:])
            if proc.returncode == 2:
                assert len(err.splitlines()) == 1 and "disk full" in err, err
                seen.add(re.search(r"error: (\S+): disk full", err).group(1).rsplit("/", 1)[-1][:8])
                subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
                proc = subprocess.run(
                    [sys.executable, "-m", "gmmspeaker.cli", "-q", "run", str(recipe), "--workdir", str(wd)],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                assert proc.returncode == 0, proc.stderr[-3000:]
            assert _outputs(wd) == _outputs(ref)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    assert len(seen) >= 2, seen  # the sizes hit different outputs
