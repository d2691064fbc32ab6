"""ISV trial scoring through the system's one path (:class:`gmmspeaker.systems.Isv`): raw
scores from enrolled offsets, cohort normalisation, model files.

The system reads its statistics from a workdir; here a subclass hands it synthetic
statistics instead (``stats_of`` / ``cohort_tests``), so enrolment, scoring, cohort
statistics and normalisation are the system's own code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.corpora.lists import Enrollment, Utterance
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.gmm.model import GaussianMixture
from gmmspeaker.isv.models import ISVSpeakers, isv_fingerprint
from gmmspeaker.isv.score import enroll_offset, session_factors
from gmmspeaker.isv.train import ISVModel
from gmmspeaker.ivector.stats import UtteranceStats
from gmmspeaker.recipe.config import Recipe
from gmmspeaker.systems import Isv, NormCohort
from gmmspeaker.systems import Tests as Probes  # a "Test*" name would be collected by pytest
from gmmspeaker.workdir import Workdir


class _GivenStats(Isv):
    """The ISV system on statistics given in memory instead of a workdir's files."""

    def __init__(self, stats: UtteranceStats, model: ISVModel, normalization: str, tmp: Path) -> None:
        recipe = Recipe.from_dict(
            {
                "experiment": "t",
                "path": str(tmp / "r.yaml"),
                "system": ["isv"],
                "data": {"synthetic": {"n_speakers": 3}},
                "isv": {"normalization": normalization, "cohort_top_n": 200},
            }
        )
        super().__init__(Workdir(tmp, recipe.system), recipe)
        K, D = model.n_components, model.n_dims
        self._ubm = GaussianMixture.from_params(np.full(K, 1 / K), np.zeros((K, D)), np.ones((K, D)))
        self.set_model(model)
        self.given = stats

    def stats_of(self, tests: Probes) -> tuple[list[int], UtteranceStats | None]:
        have = [j for j, u in enumerate(tests.ids) if u in self.given.ids]
        return have, (self.given.subset([tests.ids[j] for j in have]) if have else None)

    def cohort_tests(self, cohort: NormCohort) -> Probes:
        return Probes(ids=list(cohort.cohort_ids), source=None)


def _score(system, trials, enrol, cohort=()):
    """(normalised, raw) scores of trials and the models, as the recipe's score stage gets them."""
    models = system.enrol_stats(enrol, system.given)
    tests = Probes(ids=list(system.given.ids), source=None)
    raw = system.score_trials(models, trials, tests)
    if system.normalization == "none":
        return raw, raw, models
    enrolled = {e.model_id: [u.utt_id for u in e.utterances] for e in enrol}
    c = system.build_cohort(models, enrolled, list(cohort), list(cohort))
    return system.normalise(raw, trials, tests, c), raw, models


def _setup(rng):
    K, D, R = 4, 3, 2
    ids = [f"u{i}" for i in range(10)]
    n = rng.dirichlet(np.full(K, 2.0), size=10) * 100
    f = rng.standard_normal((10, K * D)) * np.sqrt(np.repeat(n, D, axis=1))
    stats = UtteranceStats(ids, n, f)
    model = ISVModel(rng.standard_normal((R, K * D)) * 0.3, 8.0, K, D)
    utt = {u: Utterance(utt_id=u, path=Path(f"/x/{u}.wav"), speaker=None) for u in ids}
    enrol = [Enrollment("a", (utt["u0"], utt["u1"])), Enrollment("b", (utt["u2"],))]
    trials = [("a", "u3"), ("b", "u3"), ("a", "u4"), ("b", "u9")]
    return stats, model, enrol, trials, utt


def test_raw_and_znormed_trial_scores_equal_a_direct_computation(rng, tmp_path):
    stats, model, enrol, trials, _ = _setup(rng)
    x = session_factors(model, stats)
    fc = {u: stats.f[i] - np.repeat(stats.n[i], 3) * (x[i] @ model.U) for i, u in enumerate(stats.ids)}
    ntot = dict(zip(stats.ids, stats.n.sum(1)))
    off = {
        "a": enroll_offset(model, stats.n[:2], stats.f[:2]),
        "b": enroll_offset(model, stats.n[2:3], stats.f[2:3]),
    }
    direct = np.array([off[m] @ fc[u] / ntot[u] for m, u in trials])
    cohort = ["u5", "u6", "u7", "u8", "u1"]
    scores, raw, speakers = _score(_GivenStats(stats, model, "none", tmp_path), trials, enrol)
    np.testing.assert_allclose(raw, direct, rtol=1e-10)
    assert speakers.model_ids == ["a", "b"]
    z, raw2, _ = _score(_GivenStats(stats, model, "znorm", tmp_path), trials, enrol, cohort)
    np.testing.assert_array_equal(raw2, raw)
    for i, (m, _) in enumerate(trials):
        cs = [off[m] @ fc[c] / ntot[c] for c in cohort if not (m == "a" and c == "u1")]
        assert z[i] == pytest.approx((raw[i] - np.mean(cs)) / np.std(cs), rel=1e-9)
    # T-norm: each cohort recording enrolled alone is a cohort model
    tn, _, _ = _score(_GivenStats(stats, model, "tnorm", tmp_path), trials, enrol, cohort)
    for i, (_, u) in enumerate(trials):
        cs = [
            enroll_offset(model, stats.n[[int(c[1:])]], stats.f[[int(c[1:])]]) @ fc[u] / ntot[u]
            for c in cohort
        ]
        assert tn[i] == pytest.approx((raw[i] - np.mean(cs)) / np.std(cs), rel=1e-9)


def test_missing_test_is_nan_and_errors(rng, tmp_path):
    stats, model, enrol, trials, utt = _setup(rng)
    trials = [*trials, ("a", "gone")]
    system = _GivenStats(stats, model, "none", tmp_path)
    scores, raw, speakers = _score(system, trials, enrol)
    assert np.isnan(raw[-1]) and np.all(np.isfinite(raw[:-1]))
    with pytest.raises(DataError, match="unknown model 'c'"):
        _score(system, [("c", "u3")], enrol)
    with pytest.raises(DataError, match="cohort"):
        _score(_GivenStats(stats, model, "znorm", tmp_path), trials, enrol, ["u5"])
    # a model none of whose enrolment files has statistics: the error names them
    lost = [Utterance(utt_id=f"lost{i}", path=Path(f"/x/lost{i}.wav"), speaker=None) for i in range(2)]
    with pytest.raises(
        DataError, match=r"model 'c': none of its 2 enrolment files .*/x/lost0\.wav.*/x/lost1\.wav"
    ):
        system.enrol_stats([*enrol, Enrollment("c", tuple(lost))], stats)
    speakers.save(tmp_path / "m.h5")
    back = ISVSpeakers.load(tmp_path / "m.h5")
    assert back.model_ids == speakers.model_ids and back.isv_fingerprint == isv_fingerprint(model)
    np.testing.assert_array_equal(back.offsets, speakers.offsets)
    both = back.concat(back.subset([1]))
    assert both.model_ids == ["a", "b", "b"]
    other = ISVModel(model.U * 2, model.relevance, model.n_components, model.n_dims)
    with pytest.raises(ModelError, match="another ISV model"):
        from gmmspeaker.isv.models import score_matrix

        score_matrix(other, back, stats)
