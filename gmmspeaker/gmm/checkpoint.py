"""EM checkpoints: the state of a run and an HDF5 file holding the current and the best
run, written atomically after every iteration so that an interrupted fit resumes."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.gmm.params import MixtureParams

__all__ = ["EMRun", "Checkpoint"]

logger = logging.getLogger(__name__)


@dataclass
class EMRun:
    """State of one EM run (one of the n_init restarts)."""

    init_index: int
    params: MixtureParams
    phase: str  # "split" | "main"
    history: list[float] = field(default_factory=list)
    split_history: list[tuple[int, float]] = field(default_factory=list)
    level_iter: int = 0
    level_converged: bool = False
    converged: bool = False
    done: bool = False
    n_reseeded: int = 0
    last_reseeded: bool = False
    lower_bound: float = float("-inf")

    def meta(self) -> dict[str, Any]:
        return {
            "init_index": self.init_index,
            "phase": self.phase,
            "history": self.history,
            "split_history": [list(t) for t in self.split_history],
            "level_iter": self.level_iter,
            "level_converged": self.level_converged,
            "converged": self.converged,
            "done": self.done,
            "n_reseeded": self.n_reseeded,
            "last_reseeded": self.last_reseeded,
            "lower_bound": self.lower_bound if np.isfinite(self.lower_bound) else None,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any], params: MixtureParams) -> EMRun:
        lb = meta.get("lower_bound")
        return cls(
            init_index=int(meta["init_index"]),
            params=params,
            phase=str(meta["phase"]),
            history=[float(v) for v in meta["history"]],
            split_history=[(int(k), float(v)) for k, v in meta["split_history"]],
            level_iter=int(meta["level_iter"]),
            level_converged=bool(meta["level_converged"]),
            converged=bool(meta["converged"]),
            done=bool(meta["done"]),
            n_reseeded=int(meta["n_reseeded"]),
            last_reseeded=bool(meta["last_reseeded"]),
            lower_bound=float("-inf") if lb is None else float(lb),
        )


class Checkpoint:
    """HDF5 checkpoint: the current run and the best finished run, written atomically."""

    def __init__(self, path: PathLike, fingerprint: dict[str, Any], data_moments: FloatArray) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.moments = data_moments

    def load(self) -> tuple[EMRun | None, EMRun | None]:
        import h5py

        if not self.path.is_file():
            return None, None
        try:
            with h5py.File(self.path, "r") as h5:
                fp = json.loads(h5.attrs["fingerprint"])
                moments = h5["moments"][()]
                if (
                    fp != self.fingerprint
                    or moments.shape != self.moments.shape
                    or not np.allclose(moments, self.moments, rtol=1e-9, atol=1e-12)
                ):
                    logger.warning("%s: checkpoint is for other options or data; starting afresh", self.path)
                    return None, None
                runs = []
                for name in ("run", "best"):
                    if name not in h5:
                        runs.append(None)
                        continue
                    g = h5[name]
                    params = MixtureParams(
                        g["weights"][()], g["means"][()], g["covariances"][()], fp["covariance_type"]
                    )
                    runs.append(EMRun.from_meta(json.loads(g.attrs["meta"]), params))
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("%s: unreadable checkpoint (%s); starting afresh", self.path, exc)
            return None, None
        logger.info(
            "%s: resuming EM (run %d, %s phase)",
            self.path,
            runs[0].init_index if runs[0] else -1,
            runs[0].phase if runs[0] else "-",
        )
        return runs[0], runs[1]

    def save(self, run: EMRun, best: EMRun | None) -> None:

        with atomic_h5(self.path) as h5:
            h5.attrs["fingerprint"] = json.dumps(self.fingerprint)
            h5.create_dataset("moments", data=self.moments)
            for name, r in (("run", run), ("best", best)):
                if r is None:
                    continue
                g = h5.create_group(name)
                g.create_dataset("weights", data=r.params.weights)
                g.create_dataset("means", data=r.params.means)
                g.create_dataset("covariances", data=r.params.covariances)
                g.attrs["meta"] = json.dumps(r.meta())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
