"""Packaging (issue 20, item 10): runtime dependencies, Windows imports, public exports, .gitignore."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

import gmmspeaker

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(gmmspeaker.__file__).resolve().parent

#: Imported by nothing in the package at all (librosa is the front end's reference in tests).
NEVER_IMPORTED = ("librosa",)
#: Test-only: imported inside functions that a user calls with it installed (interop), never at import.
TEST_ONLY = ("sklearn", "librosa")


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_no_module_imports_librosa():
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    assert len(files) > 30
    offenders = {str(p.relative_to(REPO)): sorted(_imported_roots(p) & set(NEVER_IMPORTED)) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_librosa_is_a_test_dependency_not_a_runtime_one():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = [d.split(">")[0].split("=")[0].strip().lower() for d in project["dependencies"]]
    test = [d.split(">")[0].split("=")[0].strip().lower() for d in project["optional-dependencies"]["test"]]
    assert "librosa" not in runtime and "scikit-learn" not in runtime
    assert "librosa" in test and "scikit-learn" in test
    # every runtime dependency is imported somewhere by the package (nothing installed for nothing)
    imported = set().union(*(_imported_roots(p) for p in PACKAGE_DIR.rglob("*.py")))
    names = {"pyyaml": "yaml", "scikit-learn": "sklearn"}
    assert {d for d in runtime if names.get(d, d) not in imported} == set()


_IMPORT_ALL = """
import importlib, pkgutil, sys
{prelude}
import gmmspeaker
names = [m.name for m in pkgutil.walk_packages(gmmspeaker.__path__, "gmmspeaker.")]
for name in names:
    importlib.import_module(name)
print(len(names))
print(" ".join(sorted(m for m in {watch!r} if m in sys.modules)))
"""


def _import_all(prelude: str = "", watch: tuple[str, ...] = TEST_ONLY) -> list[str]:
    """Import every module of the package in a fresh process: [module count, the ``watch``
    modules then loaded, space-separated]."""
    code = _IMPORT_ALL.format(prelude=prelude, watch=watch)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


@pytest.mark.slow
def test_every_module_imports_without_fcntl_and_without_test_only_packages():
    """As on Windows: ``fcntl`` does not exist (a None entry in sys.modules makes it unimportable)."""
    n, loaded = _import_all("sys.modules['fcntl'] = None")
    assert int(n) > 30
    assert loaded == ""  # neither sklearn nor librosa was imported by importing the package


def test_importing_the_package_loads_no_scipy_stats():
    """scipy.stats costs ~0.8 s to import, serial in every run's evaluate stage: the DET
    axes use scipy.special's probit, and nothing else in the package needs scipy.stats."""
    n, loaded = _import_all(watch=("scipy.stats",))
    assert int(n) > 30
    assert loaded == ""


def test_lock_works_without_fcntl(monkeypatch, tmp_path, caplog):
    """Without fcntl the lock uses msvcrt (a fake here, recording calls) or, with neither, does nothing."""
    from gmmspeaker import _lock

    calls = []
    held = {"by_other": False}

    def locking(fd, mode, n):
        calls.append((mode, n))
        if mode == fake.LK_NBLCK and held["by_other"]:
            raise OSError("locked")

    fake = types.SimpleNamespace(LK_NBLCK=2, LK_UNLCK=0, locking=locking)
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    assert _lock.locking_backend() == "msvcrt"
    with open(tmp_path / "f.lock", "a+") as fh:
        fh.write("123")
        _lock.lock(fh)
        assert fh.tell() == 3  # the file position is kept
        _lock.unlock(fh)
        assert calls == [(fake.LK_NBLCK, 1), (fake.LK_UNLCK, 1)]
        held["by_other"] = True
        with pytest.raises(BlockingIOError, match="locked by another process"):
            _lock.lock(fh, blocking=False)
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    assert _lock.locking_backend() == "none"
    monkeypatch.setattr(_lock, "_warned", [])
    with caplog.at_level("WARNING"), open(tmp_path / "g.lock", "a+") as fh:
        _lock.lock(fh)
        _lock.unlock(fh)
    assert "no file locking on this platform" in caplog.text


def test_posix_lock_excludes_a_second_holder(tmp_path):
    from gmmspeaker import _lock

    if _lock.locking_backend() != "fcntl":
        pytest.skip("POSIX only")
    path = tmp_path / "x.lock"
    with open(path, "a+") as a, open(path, "a+") as b:
        _lock.lock(a)
        with pytest.raises(BlockingIOError):
            _lock.lock(b, blocking=False)
        _lock.unlock(a)
        _lock.lock(b, blocking=False)
        _lock.unlock(b)


def test_experiment_and_ivector_classes_are_exported_lazily():
    code = (
        "import sys, gmmspeaker\n"
        "assert 'gmmspeaker.system' not in sys.modules and 'h5py' not in sys.modules\n"
        "from gmmspeaker import Experiment, TotalVariability, PLDA, Backend, UtteranceStats\n"
        "import gmmspeaker.system, gmmspeaker.ivector.tv, gmmspeaker.ivector.backend\n"
        "assert Experiment is gmmspeaker.system.Experiment\n"
        "assert TotalVariability is gmmspeaker.ivector.tv.TotalVariability\n"
        "assert PLDA is gmmspeaker.ivector.backend.PLDA and Backend is gmmspeaker.ivector.backend.Backend\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in gmmspeaker.__all__:  # every advertised name resolves
        assert getattr(gmmspeaker, name) is not None, name


def test_virtual_environments_are_git_ignored():
    for path in (".venv/bin/python", "venv/lib/x.py"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
        assert done.returncode == 0, f"{path} is not git-ignored"


def test_readme_set_up_matches_ci_and_its_links_resolve():
    """The README's set-up: a virtual environment first, the test command CI runs, links that exist."""
    import re

    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'python -m pip install -q -e ".[test]"' in ci and "python -m pytest -q" in ci
    assert 'python -m pip install -e ".[test]" && python -m pytest -q' in readme
    assert 'python -m pip install -e ".[plot]" && gmmspeaker run recipes/demo.yaml' in readme
    venv = readme.index("python3 -m venv .venv && . .venv/bin/activate")
    assert venv < readme.index('python -m pip install -e ".[plot]"')  # the environment comes first
    assert "python3-venv" in readme[:venv]
    links = re.findall(r"\]\(((?!https?:|#)[^)]+)\)", readme)
    assert links and all((REPO / link).is_file() for link in links), links


def test_no_test_module_imports_fcntl_at_its_top():
    """The suite collects on platforms without ``fcntl`` (Windows): a test module that needs
    a lock takes it through :mod:`gmmspeaker._lock` (or imports ``fcntl`` inside the test)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.parse(path.read_text(), str(path)).body:  # module level only
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] in ("fcntl", "msvcrt") for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
