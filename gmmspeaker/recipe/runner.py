"""Run a recipe: stage order, fingerprints and caching, locking, parallel backends.

Every stage has a fingerprint: a hash of its configuration section, the fingerprints of
its inputs and the package version. It is stored in ``<workdir>/stages/<stage>.json``,
written *last*, after the stage's outputs are complete. A stage whose fingerprint is
unchanged and whose outputs exist is skipped; ``force``, ``from_stage`` and ``until_stage``
override. A lock file keeps two runs out of one workdir.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gmmspeaker import __version__
from gmmspeaker._io import (
    atomic_write_json,
    file_lock,
    is_disk_full,
    open_append_nofollow,
    remove_stale_temporaries,
)
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import ConfigError, GmmSpeakerError
from gmmspeaker.recipe.config import STAGES, Recipe, load_recipe
from gmmspeaker.workdir import Workdir

__all__ = ["run_recipe", "RunResult", "workdir_for", "resolve_jobs"]

logger = logging.getLogger(__name__)


def workdir_for(recipe: Recipe, workdir: PathLike | None = None) -> Path:
    """``workdir`` if given, else ``exp/<experiment>`` under the current directory."""
    return Path(workdir) if workdir is not None else Path("exp") / recipe.experiment


@dataclass
class RunResult:
    """What a run did: per stage 'ran' / 'skipped' / 'would run' and the results (if evaluated)."""

    workdir: Path
    actions: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    results: dict[str, Any] | None = None
    refreshed: list[str] = field(default_factory=list)


def _lock(workdir: Path) -> contextlib.AbstractContextManager[None]:
    """The workdir's lock (``<workdir>/.lock``, never through a symbolic link): one run at a time."""
    return file_lock(
        Workdir(workdir).lock,
        busy=f"{workdir}: another run (pid {{pid}}) is using this workdir; wait for it or use --workdir",
    )


class _RunLog(logging.StreamHandler):  # type: ignore[type-arg]
    """``run.log``: a line that cannot be written (disk full) is lost, without a traceback;
    the run goes on and stops, with one line, at its next output that does not fit."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if exc is not None and is_disk_full(exc):
            return
        super().handleError(record)


def _check_utf8_path(wd: Path) -> None:
    """A workdir whose name is not valid UTF-8 is refused up front.

    Its paths end up in UTF-8 files (logs, recipe.json, HDF5 attributes) and in libraries
    that encode names strictly (soundfile): they failed half-way, with tracebacks.
    """
    try:
        str(wd.absolute()).encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(
            f"workdir {os.fsencode(wd)!r}: the name is not valid UTF-8; choose a UTF-8 folder name"
        ) from None


def _clean_temporaries(workdir: Path) -> None:
    """Remove what killed runs left (holding the workdir lock: no other run is writing).

    ``<workdir>/tmp/`` (every run temporary, see :func:`gmmspeaker._io.make_temp_dir`),
    a half-generated synthetic corpus, and atomic-write temporaries whose process is gone
    (those of a live ``enroll`` are kept).
    """
    remove_stale_temporaries(workdir, patterns=(".corpus.tmp-*", ".corpus.old-*"))
    for sub in ("stages",):
        if (workdir / sub).is_dir():
            remove_stale_temporaries(workdir / sub)


def resolve_jobs(jobs: int, client: Any | None = None) -> int:
    """The number of workers ``jobs`` stands for: itself if positive, else what is really there.

    Parameters
    ----------
    jobs : int
        A positive number of workers, or -1 for all of them.
    client : dask.distributed.Client, optional
        With a Dask client, -1 means every worker thread of its cluster (counted from the
        client); without one, the CPUs this process may use (``joblib.cpu_count()``,
        which follows CPU affinity and container CPU quotas, unlike ``os.cpu_count()``).

    Returns
    -------
    int
        At least 1.
    """
    if jobs != -1:
        return int(jobs)
    if client is not None:
        n = sum(int(v) for v in client.nthreads().values())
        if n < 1:
            logger.warning("the Dask cluster has no workers yet; planning for 1")
        return max(1, n)
    import joblib

    return max(1, int(joblib.cpu_count()))


@contextlib.contextmanager
def _parallel(recipe: Recipe, jobs: int) -> Iterator[int]:
    """Route every joblib ``Parallel`` inside to the recipe's backend; yield the number of workers."""
    import joblib

    if recipe.backend != "dask":
        n = resolve_jobs(jobs)
        logger.info("%s backend: %d workers", recipe.backend, n)
        with joblib.parallel_config(backend=recipe.backend, n_jobs=n):
            yield n
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            f"{recipe.path}: backend: dask needs dask.distributed (pip install 'gmmspeaker[dask]')"
        ) from None
    with contextlib.ExitStack() as stack:
        if recipe.scheduler == "local":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=resolve_jobs(jobs),
                    threads_per_worker=1,
                    host="127.0.0.1",
                    dashboard_address=None,
                    processes=True,
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(recipe.scheduler, timeout="20s"))
            except OSError as exc:
                raise GmmSpeakerError(
                    f"{recipe.path}: cannot reach the Dask scheduler {recipe.scheduler} ({exc})"
                ) from None
        n = resolve_jobs(jobs, client)
        logger.info("dask backend: %d workers (%s)", n, client)
        with joblib.parallel_config(backend="dask", n_jobs=n):
            yield n


def _record(workdir: Path, stage: str) -> dict[str, Any] | None:
    try:
        return json.loads(Workdir(workdir).stage_record(stage).read_text())
    except (OSError, ValueError):
        return None


def _write_record(
    workdir: Path,
    stage: str,
    fingerprint: str,
    seconds: float,
    extra: dict[str, Any] | None = None,
    inputs: dict[str, str] | None = None,
) -> None:
    atomic_write_json(
        Workdir(workdir).stage_record(stage),
        {
            "fingerprint": fingerprint,
            "inputs": inputs or {},
            "seconds": seconds,
            "version": __version__,
            **(extra or {}),
        },
    )


def run_recipe(
    recipe_path: PathLike,
    *,
    workdir: PathLike | None = None,
    jobs: int | None = None,
    force: bool = False,
    from_stage: str | None = None,
    until_stage: str | None = None,
    dry_run: bool = False,
    progress: bool = False,
    log_file: bool = True,
) -> RunResult:
    """Run every stage of a recipe that is out of date.

    Parameters
    ----------
    recipe_path : path-like
        The recipe YAML.
    workdir : path-like, optional
        Outputs folder (default ``exp/<experiment>``).
    jobs : int, optional
        Overrides the recipe's ``jobs``.
    force : bool
        Rerun every selected stage.
    from_stage, until_stage : str, optional
        Run only stages in this range; ``from_stage`` and the stages after it are rerun
        even if up to date (as Kaldi's ``--stage``).
    dry_run : bool
        Say what would run and why, run nothing.
    progress : bool
        Progress bars on long stages.
    log_file : bool
        Also log to ``<workdir>/run.log``.
    """
    from gmmspeaker.recipe.stages import Run, needed_stages

    for name, value in (("from_stage", from_stage), ("until_stage", until_stage)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"--{name.replace('_', '-')} must be one of {', '.join(STAGES)}, got {value!r}")
    recipe = load_recipe(recipe_path, overrides={"jobs": jobs} if jobs is not None else None)
    needed = needed_stages(recipe)
    for name, value in (("from_stage", from_stage), ("until_stage", until_stage)):
        if value is not None and value not in needed:  # it would silently stop/start elsewhere
            raise ConfigError(
                f"{recipe_path}: --{name.replace('_', '-')} {value}: not a stage of this recipe "
                f"(system {'+'.join(recipe.system)}); its stages: {', '.join(needed)}"
            )
    wd = workdir_for(recipe, workdir)
    _check_utf8_path(wd)
    lo = STAGES.index(from_stage) if from_stage else 0
    hi = STAGES.index(until_stage) if until_stage else len(STAGES) - 1
    if lo > hi:
        raise ConfigError(f"--from-stage {from_stage} comes after --until-stage {until_stage}")
    result = RunResult(workdir=wd)
    if dry_run and not wd.exists():
        for i, s in enumerate(STAGES):
            if lo <= i <= hi and s in needed_stages(recipe):
                result.actions[s] = "would run"
                result.reasons[s] = "no previous run"
        return result
    wd.mkdir(parents=True, exist_ok=True)
    handler: logging.Handler | None = None
    if log_file and not dry_run:
        # not FileHandler: it follows a symbolic link planted at run.log, and its strict
        # encoding raised on the paths of a workdir whose name is not valid UTF-8
        handler = _RunLog(open_append_nofollow(Workdir(wd).run_log))
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.INFO)
        pkg_logger = logging.getLogger("gmmspeaker")
        pkg_logger.addHandler(handler)
        if pkg_logger.getEffectiveLevel() > logging.INFO:
            pkg_logger.setLevel(logging.INFO)
    try:
        with contextlib.ExitStack() as stack:
            if not dry_run:
                stack.enter_context(_lock(wd))
                _clean_temporaries(wd)
                n_jobs = stack.enter_context(_parallel(recipe, recipe.jobs))
            # stages get -1 resolved to the real workers; recipe.json keeps what the user wrote
            run_as = recipe if dry_run else dataclasses.replace(recipe, jobs=n_jobs)
            pipe = Run(run_as, wd, progress=progress)
            for i, stage in enumerate(STAGES):
                if stage not in needed_stages(recipe):
                    continue
                fp = pipe.fingerprint(stage)
                rec = _record(wd, stage)
                selected = lo <= i <= hi
                outputs_ok = pipe.outputs_exist(stage)
                if not selected:
                    if rec is None or rec.get("fingerprint") != fp or not outputs_ok:
                        if i > hi:
                            break
                        raise GmmSpeakerError(
                            f"stage {stage} is out of date or missing in {wd} and --from-stage {from_stage} skips it; "
                            f"run from an earlier stage"
                        )
                    result.actions[stage] = "skipped"
                    continue
                if force:
                    reason = "--force"
                elif from_stage is not None:
                    reason = f"--from-stage {from_stage}"
                elif rec is None:
                    reason = "never run"
                elif not outputs_ok:
                    reason = "outputs missing"
                elif rec.get("fingerprint") != fp:
                    reason = "inputs or configuration changed"
                else:
                    reason = ""
                if not reason:
                    result.actions[stage] = "skipped"
                    result.seconds[stage] = float(rec.get("seconds", 0.0)) if rec else 0.0
                    logger.info("stage %-8s up to date, skipped", stage)
                    continue
                if dry_run:
                    result.actions[stage] = "would run"
                    result.reasons[stage] = reason
                    continue
                logger.info("stage %-8s running: %s", stage, reason)
                t0 = time.perf_counter()
                extra = pipe.run(stage)
                dt = time.perf_counter() - t0
                _write_record(wd, stage, fp, dt, extra, pipe.input_fingerprints(stage))
                result.actions[stage] = "ran"
                result.reasons[stage] = reason
                result.seconds[stage] = dt
                logger.info("stage %-8s done in %.1f s", stage, dt)
            if not dry_run and hi == len(STAGES) - 1:
                result.results = pipe.finalize(result.seconds)
            if not dry_run and hi >= STAGES.index("enroll"):
                # what `gmmspeaker enroll/verify/identify EXPDIR` read; user models follow the run
                from gmmspeaker.system import refresh_user_models

                atomic_write_json(pipe.wd.recipe, recipe.to_dict())
                try:
                    result.refreshed = refresh_user_models(wd)
                except GmmSpeakerError as exc:
                    logger.warning("user models in %s not checked: %s", wd, exc)
    except KeyboardInterrupt:
        logger.error("interrupted: completed work is kept; run the same command again to resume")
        raise
    finally:
        if handler is not None:
            logging.getLogger("gmmspeaker").removeHandler(handler)
            handler.close()
            handler.stream.close()
    return result
