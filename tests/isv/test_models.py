"""ISV trial scoring: raw scores from enrolled offsets, cohort normalisation, model files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.corpora.lists import Enrollment, Trial, Utterance
from gmmspeaker.errors import DataError, ModelError
from gmmspeaker.isv.models import ISVSpeakers, isv_fingerprint, score_isv_trials
from gmmspeaker.isv.score import enroll_offset, session_factors
from gmmspeaker.isv.train import ISVModel
from gmmspeaker.ivector.stats import UtteranceStats


def _setup(rng):
    K, D, R = 4, 3, 2
    ids = [f"u{i}" for i in range(10)]
    n = rng.dirichlet(np.full(K, 2.0), size=10) * 100
    f = rng.standard_normal((10, K * D)) * np.sqrt(np.repeat(n, D, axis=1))
    stats = UtteranceStats(ids, n, f)
    model = ISVModel(rng.standard_normal((R, K * D)) * 0.3, 8.0, K, D)
    utt = {u: Utterance(utt_id=u, path=Path(f"/x/{u}.wav"), speaker=None) for u in ids}
    enrol = [Enrollment("a", (utt["u0"], utt["u1"])), Enrollment("b", (utt["u2"],))]
    trials = [
        Trial(m, utt[t], m == "a", i + 1)
        for i, (m, t) in enumerate([("a", "u3"), ("b", "u3"), ("a", "u4"), ("b", "u9")])
    ]
    return stats, model, enrol, trials, utt


def test_raw_and_znormed_trial_scores_equal_a_direct_computation(rng):
    stats, model, enrol, trials, _ = _setup(rng)
    x = session_factors(model, stats)
    fc = {u: stats.f[i] - np.repeat(stats.n[i], 3) * (x[i] @ model.U) for i, u in enumerate(stats.ids)}
    ntot = dict(zip(stats.ids, stats.n.sum(1)))
    off = {
        "a": enroll_offset(model, stats.n[:2], stats.f[:2]),
        "b": enroll_offset(model, stats.n[2:3], stats.f[2:3]),
    }
    direct = np.array([off[t.model_id] @ fc[t.test.utt_id] / ntot[t.test.utt_id] for t in trials])
    cohort = ["u5", "u6", "u7", "u8", "u1"]
    scores, raw, speakers = score_isv_trials(trials, enrol, stats, model)
    np.testing.assert_allclose(raw, direct, rtol=1e-10)
    assert speakers.model_ids == ["a", "b"]
    z, raw2, _ = score_isv_trials(trials, enrol, stats, model, cohort=cohort, normalization="znorm")
    np.testing.assert_array_equal(raw2, raw)
    for i, t in enumerate(trials):
        cs = [off[t.model_id] @ fc[c] / ntot[c] for c in cohort if not (t.model_id == "a" and c == "u1")]
        assert z[i] == pytest.approx((raw[i] - np.mean(cs)) / np.std(cs), rel=1e-9)
    # T-norm: each cohort recording enrolled alone is a cohort model
    tn, _, _ = score_isv_trials(trials, enrol, stats, model, cohort=cohort, normalization="tnorm")
    for i, t in enumerate(trials):
        u = t.test.utt_id
        cs = [
            enroll_offset(model, stats.n[[int(c[1:])]], stats.f[[int(c[1:])]]) @ fc[u] / ntot[u]
            for c in cohort
        ]
        assert tn[i] == pytest.approx((raw[i] - np.mean(cs)) / np.std(cs), rel=1e-9)


def test_missing_test_is_nan_and_errors(rng, tmp_path):
    stats, model, enrol, trials, utt = _setup(rng)
    trials = [*trials, Trial("a", Utterance(utt_id="gone", path=Path("/x/gone.wav"), speaker=None), False, 5)]
    scores, raw, speakers = score_isv_trials(trials, enrol, stats, model)
    assert np.isnan(raw[-1]) and np.all(np.isfinite(raw[:-1]))
    with pytest.raises(DataError, match="unknown model 'c'"):
        score_isv_trials([Trial("c", utt["u3"], False, 1)], enrol, stats, model)
    with pytest.raises(DataError, match="cohort"):
        score_isv_trials(trials, enrol, stats, model, cohort=["u5"], normalization="znorm")
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
