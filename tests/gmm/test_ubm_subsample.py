"""UBM training on every n-th frame (``ubm.subsample``): the frames it streams, the rule that
lowers the step on small corpora, and that the model depends on the seed, not on the jobs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gmmspeaker.errors import ConvergenceWarning
from gmmspeaker.features import FeatureConfig
from gmmspeaker.gmm import GaussianMixture, batch
from gmmspeaker.gmm.batch import subsample_phases, train_ubm, ubm_subsample_step
from gmmspeaker.store import FeatureStore, extract_to_store
from tests.helpers import speechlike, write_wav


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> FeatureStore:
    tmp = tmp_path_factory.mktemp("subsample")
    rng = np.random.default_rng(0)
    utts = [
        (
            f"spk{i % 3}/u{i}",
            write_wav(tmp / "wav" / f"u{i}.wav", speechlike(rng, 0.4 + 0.05 * i, f0=90 + 9 * i)),
        )
        for i in range(12)
    ]
    extract_to_store(
        utts, tmp / "store", FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1), shard_size=5
    )
    return FeatureStore(tmp / "store")


@pytest.mark.parametrize(
    ("n_frames", "K", "subsample", "step"),
    [
        # the bundled recipes' UBM lists (frames after VAD / K): every frame
        (36_062, 64, 5, 1),  # demo.yaml: 563 frames per component
        (55_998, 64, 5, 1),  # fsdd.yaml with a 64-component UBM: 875
        (55_998, 128, 5, 1),  # fsdd.yaml with 128: 437
        (55_998, 32, 5, 3),  # fsdd.yaml's 32 Gaussians: 1,750 (the recipe sets subsample: 1)
        (55_780, 256, 5, 1),  # dspspeech20*.yaml: 218
        # bench_e2e's 5-hour corpus: ~900 k frames, 3,500 per component
        (900_000, 256, 5, 5),
        (900_000, 256, 1, 1),
        (3 * 500 * 256 + 499, 256, 5, 3),  # lowered: 3 x 500 x K frames allow a step of 3
        (2 * 500 * 256 - 1, 256, 5, 1),  # under 2 x 500 frames per component: every frame
    ],
)
def test_step_keeps_500_frames_per_component(n_frames, K, subsample, step):
    got = ubm_subsample_step(n_frames, K, subsample)
    assert got == step
    if got > 1:
        assert n_frames / got >= batch.SUBSAMPLE_FRAMES_PER_COMPONENT * K


def test_sources_stream_every_nth_frame_from_each_utterances_phase(store):
    ids = store.ids
    phases = subsample_phases(ids, 3, seed=4)
    assert len(set(phases)) > 1 and all(0 <= p < 3 for p in phases)
    want = np.concatenate([store.get(u)[p::3] for u, p in zip(ids, phases)])
    # the same frames whatever the parts and chunk sizes (chunks cut utterances mid-way)
    for n_parts, chunk in ((1, 7), (3, 50), (5, 1000)):
        srcs = store.sources(ids, n_parts=n_parts, chunk_frames=chunk, every=3, phases=phases)
        got = np.concatenate([c for s in srcs for c in s()])
        np.testing.assert_array_equal(got, want)
    assert subsample_phases(ids, 3, seed=4) == phases  # seeded
    assert subsample_phases(ids, 1, seed=4) == [0] * len(ids)


def _train(store, **kw):
    opts = dict(components=4, iterations=3, chunk_frames=64, n_parts=3, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return train_ubm(store, store.ids, **{**opts, **kw})


def _same(a: GaussianMixture, b: GaussianMixture) -> None:
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
    np.testing.assert_array_equal(a.weights_, b.weights_)


def test_subsample_one_is_the_training_on_every_frame(store, monkeypatch):
    """subsample=1 (and a step lowered to 1) streams exactly the sources of before."""
    ids = store.ids
    old = GaussianMixture(
        4, covariance_type="diag", init="split", max_iter=3, tol=0.0, chunk_size=64, random_state=1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        old.fit_stream(store.sources(ids, n_parts=3, chunk_frames=64, unit_frames=batch.UBM_UNIT_FRAMES))
    one = _train(store, subsample=1)
    _same(one, old)
    assert one.n_frames_ == sum(store.n_frames(u) for u in ids)
    # a corpus this small (~30 frames per component) trains on every frame whatever subsample says
    _same(_train(store, subsample=5), old)


def test_subsampled_training_uses_the_rule_s_frames_and_not_the_jobs(store, monkeypatch):
    ids = store.ids
    n = sum(store.n_frames(u) for u in ids)
    monkeypatch.setattr(batch, "SUBSAMPLE_FRAMES_PER_COMPONENT", 10)
    step = ubm_subsample_step(n, 4, 3)
    assert step == 3  # the corpus allows the full step at 10 frames per component
    g = _train(store, subsample=3)
    phases = subsample_phases(ids, 3, seed=1)
    assert g.n_frames_ == sum(len(range(p, store.n_frames(u), 3)) for u, p in zip(ids, phases))
    _same(_train(store, subsample=3, jobs=2), g)
    full = _train(store, subsample=1)
    assert not np.array_equal(g.means_, full.means_)
    # lowered when the floor asks for more frames per component than a step of 3 leaves
    monkeypatch.setattr(batch, "SUBSAMPLE_FRAMES_PER_COMPONENT", n // (2 * 4))
    assert ubm_subsample_step(n, 4, 3) == 2
    two = _train(store, subsample=3)
    ph2 = subsample_phases(ids, 2, seed=1)
    assert two.n_frames_ == sum(len(range(p, store.n_frames(u), 2)) for u, p in zip(ids, ph2))


class _Undeclared:
    """A store source without its ``n_frames`` attribute (the generic fit_stream path)."""

    def __init__(self, src):
        self.src = src

    def __call__(self):
        return self.src()


@pytest.mark.parametrize("every", [1, 3])
def test_store_sources_declare_the_frames_they_yield(store, every):
    ids = store.ids
    phases = subsample_phases(ids, every, seed=2)
    for src in store.sources(ids, n_parts=4, chunk_frames=37, every=every, phases=phases):
        assert src.n_frames == sum(c.shape[0] for c in src())


def test_declared_sources_keep_only_their_share_and_give_the_same_model(store, monkeypatch):
    """With declared frame counts the first pass keeps min(m, N) subsample rows in all (not m
    per source), and the split initialisation sees the very same sample: the same model."""
    from gmmspeaker.gmm import data as gmm_data

    kept: list[int] = []
    real = gmm_data.summarize_source

    def spy(source, index, m, seed):
        out = real(source, index, m, seed)
        kept.append(out.rows.shape[0])
        return out

    monkeypatch.setattr(gmm_data, "summarize_source", spy)
    srcs = store.sources(store.ids, n_parts=5, chunk_frames=64)
    n = sum(s.n_frames for s in srcs)

    def fit(sources):
        g = GaussianMixture(3, covariance_type="diag", init="split", max_iter=2, tol=0.0, random_state=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return g.fit_stream(sources)

    # the default subsample (10,000 frames at least) exceeds this store: make it a third of the data
    monkeypatch.setattr("gmmspeaker.gmm.em.INIT_SAMPLE_FRAMES", n // 3)
    monkeypatch.setattr("gmmspeaker.gmm.em.SPLIT_FRAMES_PER_COMPONENT", 1)
    declared = fit(srcs)
    kept_declared, kept[:] = sum(kept), []
    generic = fit([_Undeclared(s) for s in srcs])
    kept_generic = sum(kept)
    _same(declared, generic)
    m = n // 3
    assert m > 16 * 3
    assert kept_declared == m
    assert kept_generic == min(len(srcs) * m, n) > kept_declared


def test_a_source_yielding_other_frames_than_it_declares_is_named(store):
    from gmmspeaker.errors import DataError

    srcs = store.sources(store.ids, n_parts=3, chunk_frames=64)

    class Liar(_Undeclared):
        n_frames = srcs[1].n_frames + 1

    bad = [srcs[0], Liar(srcs[1]), srcs[2]]
    with pytest.raises(DataError, match=r"source 1 yielded \d+ frames but declares n_frames"):
        GaussianMixture(3, covariance_type="diag", max_iter=1).fit_stream(bad)


def test_cached_subsample_trains_the_same_model_and_leaves_no_file(store, monkeypatch, tmp_path):
    """cache_dir: the subsampled frames of each unit read once and saved, the passes read
    the copies: the same chunks, so the same model bit for bit (one job or two); the
    copies hold 1/step of the frames and are removed on return."""
    monkeypatch.setattr(batch, "SUBSAMPLE_FRAMES_PER_COMPONENT", 10)
    ref = _train(store, subsample=3)
    saved: list[int] = []
    real = batch._cache_sources

    def spy(sources, folder, chunk_frames, dim):
        out = real(sources, folder, chunk_frames, dim)
        saved.extend(np.load(p).shape[0] for p in sorted(folder.glob("unit-*.npy")))
        return out

    monkeypatch.setattr(batch, "_cache_sources", spy)
    for jobs in (1, 2):
        saved.clear()
        _same(_train(store, subsample=3, jobs=jobs, cache_dir=tmp_path / "cache"), ref)
        assert sum(saved) == ref.n_frames_ and len(saved) == 3  # one file per unit
        assert list((tmp_path / "cache").iterdir()) == []
    # every frame (a step of 1): nothing cached, the store streamed as before
    _same(_train(store, subsample=1, cache_dir=tmp_path / "c1"), _train(store, subsample=1))
    assert not (tmp_path / "c1").exists()


def test_cached_unit_sources_declare_their_frames(store, tmp_path):
    """The cached subsample's sources declare n_frames like the store's (so the first pass
    keeps only each unit's share of the initialisation sample)."""
    ids = store.ids
    srcs = store.sources(ids, n_parts=3, chunk_frames=40, every=3, phases=subsample_phases(ids, 3, seed=0))
    cached = batch._cache_sources(srcs, tmp_path, 40, store.dim)
    for s, c in zip(srcs, cached):
        assert c.n_frames == s.n_frames == sum(x.shape[0] for x in c())
