"""One EM driver for the subspace models: the total-variability matrix T and the ISV subspace U.

:func:`gmmspeaker.ivector.tv.train_tv` and :func:`gmmspeaker.isv.train.train_isv` differ in
their maths (the caller's ``step``: E-step over batches, M-step, minimum divergence) and
share everything around it, which lives here once:

- the iterations, with a progress bar and one log line each (through the caller's logger);
- the checkpoint, written after every iteration and resumed from. It is keyed on the
  training data (a fingerprint of the statistics and the UBM) and the settings, never on
  the package version: after an upgrade, a checkpoint of the same data and settings
  resumes; one of other data or settings is ignored with a warning, as is an unreadable
  one. A resumed run returns what an uninterrupted one would;
- the temporary folder through which process workers (loky) memory-map the parameters,
  and the shutdown of the loky workers on return (a process that trains and exits would
  otherwise wait for their idle timeout: issue #22).

The driver has no convergence test of its own: both trainings run the iterations asked
for (as Kaldi's and SIDEKIT's do) and return the objective trace, which EM never lowers.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._blas import blas_limit
from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import ModelError

__all__ = [
    "Checkpoint",
    "run_em",
    "n_cores",
    "one_blas_thread",
    "backend_name",
    "release_loky_workers",
    "share_with_workers",
    "shared",
]

Params = dict[str, np.ndarray]


def n_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def one_blas_thread() -> Any:
    """A context in which the BLAS libraries use one thread (and their previous number after),
    through the process's one threadpoolctl controller (:func:`gmmspeaker._blas.blas_limit`)."""
    return blas_limit(1)


def backend_name() -> str:
    """Class name of the active joblib backend (``LokyBackend``, ``DaskDistributedBackend`` ...)."""
    from joblib.parallel import get_active_backend

    return type(get_active_backend()[0]).__name__


def release_loky_workers() -> None:
    """Shut down the worker processes joblib's loky backend keeps for reuse.

    loky keeps its workers alive for 300 s after a call, for the next one. A process
    started by :mod:`multiprocessing` joins all its live children when its target returns,
    *before* the interpreter's exit hooks that would stop loky run, so such a process
    (a benchmark's or a server's child) hung for those 300 s after training. Training
    holds the workers for all its iterations and releases them when it returns.
    """
    from joblib.externals.loky import get_reusable_executor

    # reuse=True returns the running executor as it is (no resize, no new workers)
    get_reusable_executor(reuse=True).shutdown(wait=True)


def share_with_workers(tmpdir: str | None, arrays: Mapping[str, np.ndarray | None]) -> dict[str, Any]:
    """What process workers are given for each array of an iteration (the model and its Gram matrices).

    With a folder (loky workers): the path of a ``.npy`` file written there once, which the
    workers memory-map (joblib would otherwise hash and copy the array for every batch).
    Without one (in-process, or Dask, which scatters each array once per call): the array.
    """
    if tmpdir is None:
        return dict(arrays)
    out: dict[str, Any] = {}
    for name, a in arrays.items():
        if a is None:
            out[name] = None
            continue
        out[name] = os.path.join(tmpdir, f"{name}.npy")
        np.save(out[name], a)
    return out


def shared(ref: Any) -> Any:
    """In a worker: the array :func:`share_with_workers` gave (a path is memory-mapped)."""
    return np.load(ref, mmap_mode="r") if isinstance(ref, str) else ref


@dataclass(frozen=True)
class Checkpoint:
    """Where and how a training checkpoints.

    Attributes
    ----------
    path : Path
        The HDF5 file, rewritten (atomically) after every iteration.
    format : str
        Its format tag (one per model kind).
    key : str
        The training data and settings; a file with another key is not resumed from.
    shapes : mapping of str to tuple of int
        The parameters saved, and their shapes.
    """

    path: Path
    format: str
    key: str
    shapes: Mapping[str, tuple[int, ...]]

    def load(self, log: logging.Logger) -> tuple[Params, int, list[float]] | None:
        """(parameters, iterations done, objective trace), or None (absent, unreadable, other key)."""
        if not self.path.is_file():
            return None
        try:
            arrays, attrs = read_h5(self.path, self.format, tuple(self.shapes))
        except ModelError as exc:
            log.warning("%s: unreadable checkpoint (%s); starting afresh", self.path, exc)
            return None
        if str(attrs.get("key", "")) != self.key:
            log.warning("%s: checkpoint is for other options or data; starting afresh", self.path)
            return None
        params = {k: np.asarray(arrays[k], dtype=np.float64).reshape(s) for k, s in self.shapes.items()}
        trace = [float(x) for x in np.atleast_1d(attrs.get("log_likelihood", []))]
        return params, int(attrs["iteration"]), trace

    def save(self, params: Params, iteration: int, trace: list[float]) -> None:
        write_h5(
            self.path,
            self.format,
            {k: params[k] for k in self.shapes},
            {
                "key": self.key,
                "iteration": int(iteration),
                "log_likelihood": np.asarray(trace, dtype=np.float64),
            },
        )


def run_em(
    step: Callable[[Params, str | None], tuple[Params, float]],
    init: Callable[[], Params],
    *,
    iterations: int,
    checkpoint: Checkpoint | None,
    n_jobs: int,
    tmp_dir: PathLike | None,
    log: logging.Logger,
    tag: str,
    name: str,
    what: str,
    objective: str,
    n_units: float,
    unit: str,
    progress: bool = False,
) -> tuple[Params, list[float]]:
    """Run ``iterations`` EM iterations of ``step`` from ``init()`` or a checkpoint.

    Parameters
    ----------
    step : callable
        ``step(params, tmpdir) -> (new params, objective)``: one iteration; ``tmpdir`` is
        the folder for files the process workers read (None: in-process or Dask).
    init : callable
        The starting parameters (not called when resuming).
    iterations : int
        Iterations in all, those of a resumed checkpoint included.
    checkpoint : Checkpoint or None
    n_jobs : int
        The caller's joblib workers (decides the temporary folder and the loky shutdown).
    tmp_dir : path-like or None
        Where the temporary folder goes (default: the system's).
    log : logging.Logger
        The caller's logger (its messages keep their module's name).
    tag : str
        Short model name for the temporary folder (``gmmspeaker-<tag>-...``).
    name, what, objective, n_units, unit
        For messages: ``"<name> EM iteration i/n: <objective> <value / n_units> per <unit>"``
        and ``"resuming <what> training after iteration i"``; ``name`` (without its
        hyphen) is the progress bar's label.

    Returns
    -------
    (params, trace)
        The final parameters and the objective after each iteration's E-step.
    """
    start, trace, params = 0, [], None
    if checkpoint is not None:
        state = checkpoint.load(log)
        if state is not None:
            params, start, trace = state
            log.info("%s: resuming %s training after iteration %d", checkpoint.path, what, start)
    if params is None:
        params = init()
    its: Any = range(start, iterations)
    if progress:
        from tqdm.auto import tqdm

        its = tqdm(its, total=max(0, iterations - start), desc=name.replace("-", " "), unit="it")
    backend = backend_name() if n_jobs != 1 else ""
    tmpdir = None
    if n_jobs != 1 and not backend.startswith("Dask"):
        if tmp_dir is not None:
            Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        tmpdir = tempfile.mkdtemp(prefix=f"gmmspeaker-{tag}-", dir=None if tmp_dir is None else str(tmp_dir))
    try:
        for it in its:
            params, value = step(params, tmpdir)
            trace.append(value)
            log.info(
                "%s EM iteration %d/%d: %s %.6g per %s",
                name,
                it + 1,
                iterations,
                objective,
                value / n_units,
                unit,
            )
            if checkpoint is not None:
                checkpoint.save(params, it + 1, trace)
    finally:
        if backend == "LokyBackend":
            release_loky_workers()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    return params, trace
