"""TrainedSystem's shared scoring: trials picked from a score matrix of only the models and
tests they name; the T side of the normalisation given or computed gives the same scores."""

from __future__ import annotations

import numpy as np

from gmmspeaker.systems import base as system_base
from gmmspeaker.systems.base import NormCohort, TrainedSystem


class _Models:
    def __init__(self, ids):
        self.model_ids = list(ids)

    def __len__(self):
        return len(self.model_ids)

    def subset(self, rows):
        return _Models([self.model_ids[i] for i in rows])


def _score(m: str, u: str) -> float:
    return float(int(m[1:]) * 10 + int(u[1:]))  # any function of the pair


class _Stub(TrainedSystem):
    name = "stub"

    def __init__(self):
        super().__init__(None, None)  # type: ignore[arg-type]
        self.calls: list[tuple[list[str], list[str]]] = []

    def score_matrix(self, models, tests, *, jobs=1, progress=False):
        self.calls.append((list(models.model_ids), list(tests.ids)))
        return np.array([[_score(m, u) for u in tests.ids] for m in models.model_ids])

    def cohort_models(self, cohort):
        return _Models(cohort.cohort_ids)


def test_score_trials_scores_only_the_named_models_and_tests():
    sys_ = _Stub()
    models = _Models([f"m{i}" for i in range(6)])
    tests = system_base.Tests(
        ids=[f"t{j}" for j in range(5)], source=None, paths=[f"/a/t{j}.wav" for j in range(5)]
    )
    trials = [("m4", "t3"), ("m1", "t3"), ("m4", "t0")]
    got = sys_.score_trials(models, trials, tests)
    np.testing.assert_array_equal(got, [_score(m, u) for m, u in trials])
    assert sys_.calls == [(["m1", "m4"], ["t0", "t3"])]  # 4 scores, not 30


def test_normalise_with_given_t_side_equals_the_computed_one():
    sys_ = _Stub()
    cohort = NormCohort(
        method="tnorm", top_n=3, cohort_ids=["c1", "c2", "c3", "t2"], cohort_paths=["", "", "", "/a/t2.wav"]
    )
    tests = system_base.Tests(
        ids=["t0", "t2", "t4"], source=None, paths=["/a/t0.wav", "/a/t2.wav", "/a/t4.wav"]
    )
    trials = [("m1", "t2"), ("m2", "t0"), ("m3", "t4"), ("m1", "t0")]
    raw = np.array([1.0, np.nan, 3.0, 2.5])
    computed = sys_.normalise(raw, trials, tests, cohort)
    S = np.array([[_score(c, u) for u in tests.ids] for c in cohort.cohort_ids])
    given = sys_.normalise(raw, trials, tests, cohort, cohort_scores=S)
    np.testing.assert_array_equal(given, computed)
    assert np.isnan(given[1]) and np.isfinite(given[[0, 2, 3]]).all()
