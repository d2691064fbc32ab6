"""Files a run creates: never through a symbolic link, with the umask's permissions
(issue 19, items 6, 7 and 8)."""

from __future__ import annotations

import os
import stat

import pytest

from gmmspeaker._io import atomic_path, atomic_write_text
from gmmspeaker.cli import main
from tests.helpers import tiny_recipe


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_writes_respect_the_umask(tmp_path):
    for mask in (0o022, 0o027, 0o077):
        old = os.umask(mask)
        try:
            t = atomic_write_text(tmp_path / f"a{mask}.txt", "x")
            with atomic_path(tmp_path / f"b{mask}.h5") as tmp:
                tmp.write_bytes(b"y")
            plain = tmp_path / f"c{mask}.txt"
            plain.write_text("z")
        finally:
            os.umask(old)
        assert _mode(t) == _mode(tmp_path / f"b{mask}.h5") == _mode(plain) == 0o666 & ~mask


def test_run_outputs_are_readable_by_others_under_umask_022(tmp_path, umask_022):
    wd = tmp_path / "wd"
    assert main(["-q", "run", str(tiny_recipe(tmp_path, k=4)), "--workdir", str(wd)]) == 0
    outputs = [
        wd / n for n in ("results.json", "scores.txt", "ubm.h5", "models.h5", "recipe.json", "report.html")
    ]
    outputs += list((wd / "stages").glob("*.json")) + list(wd.glob("*.png"))
    for p in outputs:
        assert _mode(p) == 0o644, (p, oct(_mode(p)))
    assert _mode(wd / "corpus") == 0o755


@pytest.mark.parametrize("name", [".lock", "run.log"])
def test_run_never_follows_a_symlink_it_would_write(tmp_path, capsys, name):
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / name).symlink_to(target)
    rc = main(["-q", "run", str(tiny_recipe(tmp_path, k=4)), "--workdir", str(wd)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "symbolic link" in err and name in err, err
    assert target.read_text() == "keep me\n"


def test_next_run_removes_what_a_killed_run_left(tmp_path):
    """Leftovers of kill -9 under the workdir (a half-generated corpus, run temporaries,
    atomic-write temporaries of dead processes) go at the start of the next run; those of
    a live process stay."""
    import subprocess
    import sys

    from gmmspeaker._io import make_temp_dir
    from tests.helpers import REPO
    from tests.reliability.test_interrupt import KILLER

    recipe = tiny_recipe(tmp_path, k=4)
    wd = tmp_path / "wd"
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, "gmmspeaker.corpora.synthetic", "_write_corpus", "1"]
        + ["-q", "run", str(recipe), "--workdir", str(wd)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert list(wd.glob(".corpus.tmp-*"))  # what kill -9 leaves
    tv = make_temp_dir(wd / "tmp", "gmmspeaker-tv-")
    (tv / "part-0.npy").write_bytes(b"x" * 1000)
    dead = wd / ".results.json.abc123.999999999.tmp"
    dead.write_text("{}")
    live = wd / f".user_models.h5.abc123.{os.getpid()}.tmp"
    live.write_text("")
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    assert not list(wd.glob(".corpus.*")) and not dead.exists() and not tv.exists()
    assert live.exists()
