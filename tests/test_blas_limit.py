"""gmmspeaker._blas: the cached threadpoolctl controller limits every BLAS library loaded."""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
from threadpoolctl import threadpool_info
from gmmspeaker._blas import blas_limit, blas_threads  # before numpy or scipy is imported

def counts():
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

print(blas_threads())                  # numpy's BLAS is found although it was not loaded
import numpy
with blas_limit(1):
    print(counts(), blas_threads())
import scipy.linalg                    # loads scipy's own BLAS after the first controller
print(len(counts()))
with blas_limit(1):
    print(counts(), blas_threads())
print(counts())
from gmmspeaker.gmm.kernel import run_blocks
print(list(run_blocks(lambda a, b: counts(), [(0, 1), (1, 2)], 2)))
"""


def test_limit_reaches_every_blas_library_in_a_fresh_process():
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout.splitlines()
    assert out[0] == "2"
    assert out[1] == "[1] 1"
    n = int(out[2])
    assert n >= 1
    assert out[3] == f"{[1] * n} 1"  # scipy's library too, where the wheel has its own
    assert out[4] == str([2] * n)  # restored
    assert out[5] == str([[1] * n, [1] * n])  # the E-step's threads run with one BLAS thread each
