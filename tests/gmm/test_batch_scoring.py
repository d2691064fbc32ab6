"""Store-level scoring (gmmspeaker.gmm.batch): trials and the cohort's T side from one UBM
pass per test, against the separate passes; resumed from saved blocks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.corpora.lists import Enrollment, Trial, Utterance
from gmmspeaker.errors import ConvergenceWarning, DataError
from gmmspeaker.features import FeatureConfig
from gmmspeaker.gmm import batch
from gmmspeaker.store import FeatureStore, extract_to_store
from tests.helpers import speechlike, write_wav


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(1)
    utts = [
        (f"s{i % 4}/u{i}", write_wav(tmp / "wav" / f"u{i}.wav", speechlike(rng, 0.5, f0=95 + 12 * (i % 4))))
        for i in range(20)
    ]
    extract_to_store(utts, tmp / "store", FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1))
    store = FeatureStore(tmp / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ubm = batch.train_ubm(store, store.ids[:12], components=8, iterations=2, seed=0)

    def enrol(ids, prefix):
        es = [
            Enrollment(model_id=f"{prefix}{u}", utterances=(Utterance(utt_id=u, path=Path(u)),)) for u in ids
        ]
        return batch.enroll_models(store, es, ubm)

    models = enrol(store.ids[:4], "m:")
    cohort = enrol(store.ids[4:10], "c:")
    tests = store.ids[10:]
    trials = [
        Trial(model_id=m, test=Utterance(utt_id=u, path=Path(u)), target=None, line=i + 1)
        for i, (m, u) in enumerate((m, u) for u in tests for m in models.model_ids[: 1 + len(u) % 3])
    ]
    return store, ubm, models, cohort, tests, trials


def test_one_pass_equals_the_trial_and_cohort_passes(world, tmp_path):
    store, ubm, models, cohort, tests, trials = world
    ids = [*tests, "not/in-store"]  # a test without features: NaN cohort column
    scores, cs = batch.score_trials_with_cohort(store, trials, ubm, models, cohort, ids, top_c=3)
    # fewer than one block of tests: the same utterances, chunks and pools as the separate
    # passes, hence the same products
    np.testing.assert_array_equal(scores, batch.score_trials(store, trials, ubm, models, top_c=3))
    assert cs.shape == (len(cohort), len(ids)) and np.isnan(cs[:, -1]).all()
    np.testing.assert_array_equal(cs[:, :-1], batch.score_matrix(store, tests, ubm, cohort, top_c=3))
    # several blocks, two workers: each test still scored once against every cohort model
    s2, c2 = batch.score_trials_with_cohort(
        store, trials, ubm, models, cohort, ids, top_c=3, block_size=3, jobs=2
    )
    np.testing.assert_allclose(s2, scores, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c2, cs, rtol=1e-6, atol=1e-6)  # other pools: float32 rounding only
    # the models shared with the workers through files under tmp_dir: the same numbers, no file left
    s3, c3 = batch.score_trials_with_cohort(
        store, trials, ubm, models, cohort, ids, top_c=3, block_size=3, jobs=2, tmp_dir=tmp_path / "tmp"
    )
    np.testing.assert_array_equal(s3, s2)
    np.testing.assert_array_equal(c3, c2)
    assert list((tmp_path / "tmp").iterdir()) == []
    with pytest.raises(DataError, match="not among test_ids"):
        batch.score_trials_with_cohort(store, trials, ubm, models, cohort, tests[:2])


def test_one_pass_resumes_from_saved_blocks(world, tmp_path, monkeypatch):
    store, ubm, models, cohort, tests, trials = world
    parts = tmp_path / "parts"
    parts.mkdir()
    kw = dict(top_c=3, block_size=3, parts_dir=parts)
    first = batch.score_trials_with_cohort(store, trials, ubm, models, cohort, tests, **kw)
    assert len(list(parts.glob("block-*.json"))) == -(-len(tests) // 3)

    def no_scoring(*a, **k):
        raise AssertionError("a saved block was scored again")

    monkeypatch.setattr(batch, "_score_block", no_scoring)
    again = batch.score_trials_with_cohort(store, trials, ubm, models, cohort, tests, **kw)
    np.testing.assert_array_equal(again[0], first[0])
    np.testing.assert_array_equal(again[1], first[1])
    # blocks saved for other cohort models (or without any) are not reused
    with pytest.raises(AssertionError, match="scored again"):
        batch.score_trials_with_cohort(store, trials, ubm, models, cohort.subset(np.arange(3)), tests, **kw)
    with pytest.raises(AssertionError, match="scored again"):
        batch.score_trials(store, trials, ubm, models, top_c=3, block_size=3, parts_dir=parts)
