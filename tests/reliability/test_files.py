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
