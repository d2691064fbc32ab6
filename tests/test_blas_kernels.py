"""The numerical tests under every OpenBLAS kernel this CPU runs, with 1 and 2 BLAS threads.

OpenBLAS (as shipped in numpy's wheels) picks a kernel per CPU at load time; the float32
results depend on the kernel's summation order, so a suite that passes on one machine can
fail on another (issue 10). ``OPENBLAS_CORETYPE`` forces a kernel: this test runs the tests
marked ``numerics`` in a child process per (kernel, thread count), checks with threadpoolctl
inside the child that the kernel and the thread count really took effect, and fails if any
child fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: Kernels and the CPU flags (``/proc/cpuinfo``) each one needs.
KERNELS: dict[str, tuple[str, ...]] = {
    "Prescott": ("pni",),
    "Sandybridge": ("avx",),
    "Haswell": ("avx2", "fma"),
    "Zen": ("avx2", "fma"),
    "SkylakeX": ("avx512f",),
}
#: Names threadpoolctl may report for a forced kernel: OpenBLAS maps the pre-Core2 x86-64
#: core types (Katmai, Coppermine, Northwood, Prescott, Banias) onto one kernel table and
#: reports the first of those names.
#: Zen is served by the Haswell kernels in numpy's OpenBLAS builds (reported as Haswell).
ALIASES: dict[str, set[str]] = {
    "Prescott": {"prescott", "katmai", "coppermine", "northwood", "banias"},
    "Zen": {"zen", "haswell"},
}
#: The fast numerics subset run in every child (the whole ``numerics`` marker of these files).
SUBSET = ["tests/gmm/test_gmm_stats.py", "tests/gmm/test_gmm_em.py"]

#: Run in the child: report the BLAS the process really loaded, then run pytest in-process.
CHILD = """
import json, sys
import numpy  # noqa: F401  (loads OpenBLAS)
from threadpoolctl import threadpool_info
blas = [i for i in threadpool_info() if i.get("internal_api") == "openblas"]
print("BLAS-INFO " + json.dumps([{k: i.get(k) for k in ("architecture", "num_threads", "version")} for i in blas]))
sys.stdout.flush()
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _numpy_openblas() -> list[dict]:
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401

    return [i for i in threadpoolctl.threadpool_info() if i.get("internal_api") == "openblas"]


def _cases() -> list[tuple[str, int]]:
    flags = _cpu_flags()
    return [(k, n) for k, need in KERNELS.items() if all(f in flags for f in need) for n in (1, 2)]


def _probe(kernel: str) -> str:
    """The architecture OpenBLAS reports in a fresh process with ``OPENBLAS_CORETYPE=kernel``."""
    code = (
        "import numpy; from threadpoolctl import threadpool_info; "
        "print([i['architecture'] for i in threadpool_info() if i.get('internal_api') == 'openblas'])"
    )
    env = dict(os.environ, OPENBLAS_CORETYPE=kernel, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return out.stdout.strip().lower()


def test_numerics_pass_under_every_openblas_kernel():
    if not _numpy_openblas():
        pytest.skip("numpy is not linked to OpenBLAS (threadpoolctl finds no openblas library)")
    if not Path("/proc/cpuinfo").is_file():
        pytest.skip("no /proc/cpuinfo: cannot tell which OpenBLAS kernels this CPU supports")
    cases = _cases()
    assert any(k == "Prescott" for k, _ in cases), "every x86-64 CPU with SSE3 runs Prescott"
    # A kernel that resolves to the same kernel table as one listed before it (Zen -> Haswell)
    # is run once: probe each one's reported architecture first (a bare numpy import).
    seen: dict[str, str] = {}
    for kernel in dict.fromkeys(k for k, _ in cases):
        seen.setdefault(_probe(kernel), kernel)
    cases = [(k, n) for k, n in cases if k in seen.values()]
    # two children at a time (the CI machine has 2 cores), each with its own kernel and threads
    failures = []
    pending = list(cases)
    running: list[tuple[str, int, subprocess.Popen]] = []
    while pending or running:
        while pending and len(running) < 2:
            kernel, threads = pending.pop(0)
            env = dict(os.environ, OPENBLAS_CORETYPE=kernel, OPENBLAS_NUM_THREADS=str(threads))
            env.pop("OPENBLAS_VERBOSE", None)
            args = ["-q", "-m", "numerics", "-p", "no:cacheprovider", "-x", *SUBSET]
            proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            running.append((kernel, threads, proc))
        kernel, threads, proc = running.pop(0)
        out, err = proc.communicate(timeout=300)
        failures += _check_child(kernel, threads, proc.returncode, out, err)
    assert not failures, "numerics tests failed under some OpenBLAS kernels:\n" + "\n".join(failures)


def _check_child(kernel: str, threads: int, returncode: int, out: str, err: str) -> list[str]:
    """Failures of one child: the kernel or thread count did not take effect, or a test failed."""
    where = f"OPENBLAS_CORETYPE={kernel} OPENBLAS_NUM_THREADS={threads}"
    info_line = next((ln for ln in out.splitlines() if ln.startswith("BLAS-INFO ")), None)
    if info_line is None:
        return [f"--- {where}: the child printed no BLAS info:\n{err[-2000:]}"]
    info = json.loads(info_line.split(" ", 1)[1])
    names = {str(i["architecture"]).lower() for i in info}
    if not info or not names <= ALIASES.get(kernel, {kernel.lower()}):
        return [f"--- {where}: the forced kernel did not take effect in the child: {info}"]
    if {i["num_threads"] for i in info} != {threads}:
        return [f"--- {where}: the thread count did not take effect in the child: {info}"]
    if returncode != 0:
        tail = "\n".join(out.splitlines()[-25:])
        return [f"--- {where}: numerics tests failed:\n{tail}\n{err[-1000:]}"]
    return []
