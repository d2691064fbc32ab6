"""The i-vector system: i-vectors from the UBM's statistics and a T matrix, a back end, PLDA or cosine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.systems.base import NormCohort, Tests, TrainedSystem, fingerprint

__all__ = ["Ivector", "IvectorModels"]

IVECTOR_MODELS_FORMAT = "gmmspeaker-ivector-models"


@dataclass
class IvectorModels:
    """Enrolled i-vector models: each model's back-end-transformed enrolment i-vectors.

    Attributes
    ----------
    model_ids : list of str
    vectors : list of ndarray (n_i, dim) float64
        Model i's enrolment i-vectors (PLDA scores them as a multi-enrolment model).
    """

    model_ids: list[str]
    vectors: list[FloatArray]

    def __len__(self) -> int:
        return len(self.model_ids)

    def subset(self, rows: Sequence[int]) -> IvectorModels:
        rows = [int(i) for i in np.asarray(rows).reshape(-1)]
        return IvectorModels([self.model_ids[i] for i in rows], [self.vectors[i] for i in rows])

    def index(self, model_id: str) -> int:
        return self.model_ids.index(model_id)

    def save(self, path: PathLike) -> None:
        owner = np.concatenate([np.full(len(v), i, dtype=np.int64) for i, v in enumerate(self.vectors)])
        write_h5(
            path,
            IVECTOR_MODELS_FORMAT,
            {"model_ids": list(self.model_ids), "vectors": np.vstack(self.vectors), "owner": owner},
        )

    @classmethod
    def load(cls, path: PathLike) -> IvectorModels:
        arrays, _ = read_h5(
            path, IVECTOR_MODELS_FORMAT, ("model_ids", "vectors", "owner"), what="i-vector models file"
        )
        V, owner = np.asarray(arrays["vectors"], dtype=np.float64), np.asarray(arrays["owner"])
        ids = list(arrays["model_ids"])
        return cls(ids, [V[owner == i] for i in range(len(ids))])


def _file_bytes(path: Any) -> Any:
    return np.frombuffer(path.read_bytes(), dtype=np.uint8) if path.is_file() else None


class Ivector(TrainedSystem):
    """i-vector / PLDA (or cosine): ``ubm.h5``, ``tv.h5``, ``backend.h5``, ``plda.h5``, ``ivector_models.h5``."""

    name = "ivector"
    score_stage = "backend"
    stages = ("statistics", "tv", "extract", "backend")
    config_section = "ivector"
    stored_what = "i-vector"

    def __init__(self, wd: Any, recipe: Any) -> None:
        super().__init__(wd, recipe)
        self._parts: dict[str, Any] = {}
        self._ivectors: dict[str, FloatArray] | None = None

    def _part(self, name: str) -> Any:
        if name not in self._parts:
            from gmmspeaker.gmm.model import GaussianMixture
            from gmmspeaker.ivector.backend import PLDA, Backend
            from gmmspeaker.ivector.tv import TotalVariability

            path, loader = {
                "ubm": (self.wd.ubm, GaussianMixture.load),
                "tv": (self.wd.tv, TotalVariability.load),
                "backend": (self.wd.backend, Backend.load),
                "plda": (self.wd.plda, PLDA.load),
            }[name]
            if not path.is_file():
                raise ModelError(f"{path}: not found; run the recipe through its i-vector stages")
            self._parts[name] = loader(path)
        return self._parts[name]

    @property
    def plda(self) -> Any:
        return self._part("plda") if self.recipe.ivector.scoring == "plda" else None

    def ivectors(self) -> dict[str, FloatArray]:
        """The run's raw i-vectors by utterance id (``ivectors.h5``)."""
        if self._ivectors is None:
            from gmmspeaker.ivector.trials import load_ivectors

            self._ivectors = load_ivectors(self.wd.ivectors)
        return self._ivectors

    def stored_source(self) -> dict[str, FloatArray]:
        return self.ivectors()

    def stored_file(self) -> Path:
        return self.wd.ivectors

    def set_parts(self, *, ivectors: dict[str, FloatArray] | None = None, **parts: Any) -> None:
        """Use in-memory parts (``backend``, ``plda``, ``ubm``, ``tv``) and raw i-vectors instead of the files."""
        self._parts.update({k: v for k, v in parts.items() if v is not None})
        if ivectors is not None:
            self._ivectors = dict(ivectors)

    # -- representations ----------------------------------------------------------------
    def extract(self, X: FloatArray) -> FloatArray:
        """Raw i-vector (R,) of one utterance's frames: Baum-Welch statistics, then the T matrix."""
        from gmmspeaker.ivector.stats import compute_stats
        from gmmspeaker.ivector.tv import extract_ivectors

        stats = compute_stats([("x", X)], self._part("ubm"))
        return extract_ivectors(self._part("tv"), stats, batch_size=self.recipe.ivector.batch_size)[0]

    def represent(self, tests: Tests) -> Tests:
        """Tests given as frames (2-D) become raw i-vectors (extracted once); i-vectors stay."""
        if not any(np.ndim(tests.source[u]) == 2 for u in tests.ids if u in tests.source):
            return tests
        src = {u: (self.extract(x) if np.ndim(x) == 2 else np.asarray(x)) for u, x in tests.source.items()}
        return Tests(ids=list(tests.ids), source=src, paths=tests.paths)

    def transform(self, V: FloatArray) -> FloatArray:
        return self._part("backend").transform(np.atleast_2d(V))

    # -- models -----------------------------------------------------------------------------
    def recipe_models_file(self) -> tuple[Path, str]:
        return self.wd.ivector_models, "backend"

    def load_models_file(self, path: PathLike) -> IvectorModels:
        return IvectorModels.load(path)

    def enrol(self, model_ids: Sequence[str], frames: Sequence[Sequence[FloatArray]]) -> IvectorModels:
        """One i-vector per enrolment utterance, back-end transformed."""
        return IvectorModels(
            list(model_ids), [self.transform(np.vstack([self.extract(X) for X in fs])) for fs in frames]
        )

    def enrol_ivectors(self, enrollments: Sequence[Any], ivectors: dict[str, FloatArray]) -> IvectorModels:
        """Models of an enrolment list from the run's i-vectors."""
        vecs = []
        for e in enrollments:
            rows = [ivectors[u.utt_id] for u in e.utterances if u.utt_id in ivectors]
            if not rows:
                raise DataError(
                    f"model {e.model_id!r}: none of its {len(e.utterances)} enrollment files has an i-vector "
                    f"(skipped as unusable audio: {', '.join(str(u.path) for u in e.utterances[:3])}"
                    f"{', ...' if len(e.utterances) > 3 else ''}); fix them or leave the model out of the list"
                )
            vecs.append(self.transform(np.vstack(rows)))
        return IvectorModels([e.model_id for e in enrollments], vecs)

    def enrol_store(
        self,
        store: Any,
        enrollments: Sequence[Any],
        *,
        jobs: int = 1,
        progress: bool = False,
        desc: str = "enroll",
    ) -> IvectorModels:
        """Models of an enrolment list from the run's i-vectors (``ivectors.h5``)."""
        return self.enrol_ivectors(enrollments, self.ivectors())

    def join(self, a: Any, b: Any) -> Any:
        return IvectorModels([*a.model_ids, *b.model_ids], [*a.vectors, *b.vectors])

    def model_signature(self, models: Any) -> str:
        return fingerprint([list(models.model_ids), [np.asarray(v) for v in models.vectors]])

    def dependencies(self) -> dict[str, str]:
        from gmmspeaker.gmm.map import ubm_fingerprint

        return {
            "ubm": ubm_fingerprint(self._part("ubm")),
            "tv": fingerprint(np.asarray(self._part("tv").T)),
            "backend": fingerprint([_file_bytes(self.wd.backend), _file_bytes(self.wd.plda)]),
            "ivector": json.dumps(self.recipe.section("ivector"), sort_keys=True),
        }

    # -- scoring -------------------------------------------------------------------------------
    def score_matrix(self, models: Any, tests: Tests, *, jobs: int = 1, progress: bool = False) -> FloatArray:
        from gmmspeaker.ivector.backend import cosine_scores

        have = [j for j, u in enumerate(tests.ids) if u in tests.source]
        out = np.full((len(models), len(tests.ids)), np.nan)
        if not have or len(models) == 0:
            return out
        T = self.transform(np.vstack([np.asarray(tests.source[tests.ids[j]]) for j in have]))
        plda = self.plda
        S = plda.score(models.vectors, T) if plda is not None else cosine_scores(models.vectors, T)
        out[:, have] = S
        return out

    # -- normalisation ---------------------------------------------------------------------------
    def cohort_models(self, cohort: NormCohort) -> IvectorModels:
        iv = self.ivectors()
        C = self.transform(np.vstack([iv[u] for u in cohort.cohort_ids]))
        return IvectorModels([f"cohort:{u}" for u in cohort.cohort_ids], [c[None, :] for c in C])
