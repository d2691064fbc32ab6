from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from gmmspeaker.errors import DataError, SkippedInputWarning
from gmmspeaker.features import FeatureConfig, extract
from gmmspeaker.store import FeatureStore, extract_to_store
from tests.helpers import speechlike, write_wav

CFG = FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1)


def _corpus(tmp_path, n=6, seconds=0.6, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (f"spk/u{i}", write_wav(tmp_path / "wav" / f"u{i}.wav", speechlike(rng, seconds, f0=100 + 10 * i)))
        for i in range(n)
    ]


def test_extract_matches_direct_features_and_caches(tmp_path):
    utts = _corpus(tmp_path)
    store_dir = tmp_path / "store"
    rep = extract_to_store(utts[:4], store_dir, CFG, jobs=2, shard_size=2)
    assert sorted(rep.computed) == sorted(u for u, _ in utts[:4]) and rep.cached == []
    st = FeatureStore(store_dir)
    assert st.ids == sorted(u for u, _ in utts[:4])
    from gmmspeaker.audio import load_audio

    x, _ = load_audio(utts[1][1], sample_rate=8000)
    direct = extract(x, CFG, name="u1").frames
    got = st.get("spk/u1")
    assert got.dtype == np.float32 and got.shape == direct.shape
    np.testing.assert_array_equal(got, direct)
    assert len(list(store_dir.glob("shard-*.h5"))) == 2

    # second run computes nothing; a longer list computes only the new files
    rep2 = extract_to_store(utts[:4], store_dir, CFG, jobs=1)
    assert rep2.computed == [] and len(rep2.cached) == 4
    rep3 = extract_to_store(utts, store_dir, CFG, jobs=1)
    assert sorted(rep3.computed) == ["spk/u4", "spk/u5"] and len(rep3.cached) == 4
    assert len(FeatureStore(store_dir)) == 6


def test_changed_config_or_audio_recomputes(tmp_path, rng):
    utts = _corpus(tmp_path, n=3)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG)
    rep = extract_to_store(utts, store_dir, FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=2))
    assert len(rep.computed) == 3
    assert FeatureStore(store_dir).get("spk/u0").shape[1] == 39
    write_wav(utts[0][1], speechlike(rng, 0.9))
    rep = extract_to_store(utts, store_dir, FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=2))
    assert rep.computed == ["spk/u0"]


def test_bad_audio_reported_after_good_work_is_kept(tmp_path):
    utts = _corpus(tmp_path, n=3)
    bad = tmp_path / "wav" / "bad.wav"
    bad.write_text("not audio")
    silent = write_wav(tmp_path / "wav" / "silent.wav", np.zeros(4000, np.float32))
    items = utts + [("bad", bad), ("silent", silent)]
    with pytest.raises(DataError, match="2 of 5 audio files") as info:
        extract_to_store(items, tmp_path / "store", CFG)
    assert "bad.wav" in str(info.value) and "silent.wav" in str(info.value)
    assert len(FeatureStore(tmp_path / "store")) == 3  # the good ones are stored
    with pytest.warns(SkippedInputWarning, match="bad.wav"):
        rep = extract_to_store(items, tmp_path / "store", CFG, on_bad_audio="skip")
    assert set(rep.skipped) == {"bad", "silent"} and len(rep.cached) == 3


def test_duplicate_ids_and_empty_list(tmp_path):
    utts = _corpus(tmp_path, n=2)
    with pytest.raises(DataError, match="duplicate utterance id"):
        extract_to_store([utts[0], utts[0]], tmp_path / "s", CFG)
    with pytest.raises(DataError, match="empty"):
        extract_to_store([], tmp_path / "s", CFG)


def test_streaming_bounded_memory_and_order(tmp_path):
    utts = _corpus(tmp_path, n=8, seconds=1.0)
    extract_to_store(utts, tmp_path / "store", CFG, shard_size=3)
    st = FeatureStore(tmp_path / "store")
    ids = st.ids
    full = np.concatenate([st.get(u) for u in ids])
    chunk = 37
    chunks = list(st.iter_chunks(ids, chunk_frames=chunk))
    assert all(c.shape[0] == chunk for c in chunks[:-1]) and 0 < chunks[-1].shape[0] <= chunk
    np.testing.assert_array_equal(np.concatenate(chunks), full)
    # the parallel sources cover the same frames in the same order, whatever n_parts
    for n_parts in (1, 3):
        got = np.concatenate(
            [c for src in st.sources(ids, n_parts=n_parts, chunk_frames=chunk) for c in src()]
        )
        np.testing.assert_array_equal(got, full)
    # streaming allocates O(chunk), not O(store)
    tracemalloc.start()
    for _ in st.iter_chunks(ids, chunk_frames=chunk):
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < full.nbytes


def test_corrupt_shard_and_manifest_are_clear_errors(tmp_path):
    utts = _corpus(tmp_path, n=2)
    extract_to_store(utts, tmp_path / "store", CFG)
    shard = next((tmp_path / "store").glob("shard-*.h5"))
    shard.write_bytes(b"garbage" * 100)
    st = FeatureStore(tmp_path / "store")
    with pytest.raises(DataError, match=shard.name):
        st.get("spk/u0")
    with pytest.raises(DataError, match=shard.name):
        list(st.iter_chunks())
    (tmp_path / "store" / "manifest.json").write_text("{broken")
    with pytest.raises(DataError, match="manifest"):
        FeatureStore(tmp_path / "store")


def test_orphan_and_temporary_shards_are_not_trusted(tmp_path):
    utts = _corpus(tmp_path, n=2)
    store_dir = tmp_path / "store"
    extract_to_store(utts[:1], store_dir, CFG)
    (store_dir / "shard-deadbeef.h5").write_bytes(b"half written")
    (store_dir / ".shard-x.h5.tmp-123").write_bytes(b"partial")
    extract_to_store(utts, store_dir, CFG)
    assert not (store_dir / "shard-deadbeef.h5").exists()
    assert not list(store_dir.glob(".shard-*"))
    manifest = json.loads((store_dir / "manifest.json").read_text())
    assert set(manifest["utterances"]) == {"spk/u0", "spk/u1"}


def test_older_store_format_is_rebuilt_not_misread(tmp_path):
    utts = _corpus(tmp_path, n=2)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG)
    manifest = json.loads((store_dir / "manifest.json").read_text())
    manifest["version"] = 1
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="format 1.*re-run feature extraction"):
        FeatureStore(store_dir)
    rep = extract_to_store(utts, store_dir, CFG)
    assert len(rep.computed) == 2 and FeatureStore(store_dir).get("spk/u0").shape[0] > 0


def test_known_bad_files_are_not_retried_until_they_change(tmp_path, rng):
    utts = _corpus(tmp_path, n=2)
    bad = tmp_path / "wav" / "bad.wav"
    bad.write_text("not audio")
    items = utts + [("bad", bad)]
    with pytest.warns(SkippedInputWarning, match="bad.wav"):
        extract_to_store(items, tmp_path / "store", CFG, on_bad_audio="skip")
    with pytest.warns(SkippedInputWarning, match="1 unusable"):  # still reported...
        rep = extract_to_store(items, tmp_path / "store", CFG, on_bad_audio="skip")
    assert rep.computed == [] and set(rep.skipped) == {"bad"}  # ...but not recomputed
    write_wav(bad, speechlike(rng, 0.6))  # fixed: now extracted
    rep = extract_to_store(items, tmp_path / "store", CFG, on_bad_audio="skip")
    assert rep.computed == ["bad"] and rep.skipped == {}


@pytest.mark.parametrize("on_bad_audio", ["skip", "error"])
def test_file_turned_bad_loses_its_stale_features(tmp_path, on_bad_audio):
    """Issue 11.1: a file reported unusable must not keep serving its old frames."""
    utts = _corpus(tmp_path, n=3)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG)
    utts[1][1].write_bytes(b"these bytes are not audio at all")
    if on_bad_audio == "skip":
        with pytest.warns(SkippedInputWarning, match="u1.wav"):
            rep = extract_to_store(utts, store_dir, CFG, on_bad_audio="skip")
        assert set(rep.skipped) == {"spk/u1"}
    else:
        with pytest.raises(DataError, match="u1.wav"):
            extract_to_store(utts, store_dir, CFG)
    st = FeatureStore(store_dir)
    assert st.ids == ["spk/u0", "spk/u2"] and "spk/u1" not in st
    with pytest.raises(DataError, match="spk/u1"):
        st.get("spk/u1")


def test_rewritten_shard_never_serves_another_utterances_frames(tmp_path, rng):
    """Issue 11.1: shard names used to hash the id list, so rewriting the same ids reused the
    old name and an old entry could point at another utterance's rows in the new shard."""
    from gmmspeaker.audio import load_audio

    utts = _corpus(tmp_path, n=2)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG, shard_size=2)
    # both files change; u0 is now unusable, u1 is new (different length) audio
    utts[0][1].write_bytes(b"not audio")
    write_wav(utts[1][1], speechlike(rng, 0.9, f0=170))
    with pytest.warns(SkippedInputWarning):
        extract_to_store(utts, store_dir, CFG, shard_size=2, on_bad_audio="skip")
    st = FeatureStore(store_dir)
    assert st.ids == ["spk/u1"]
    x, _ = load_audio(utts[1][1], sample_rate=8000)
    np.testing.assert_array_equal(st.get("spk/u1"), extract(x, CFG, name="u1").frames)
    # a second write of the same id list gets a new shard name, never the old one
    before = {p.name for p in store_dir.glob("shard-*.h5")}
    write_wav(utts[1][1], speechlike(rng, 0.7, f0=150))
    extract_to_store(utts[1:], store_dir, CFG, shard_size=2)
    after = {p.name for p in store_dir.glob("shard-*.h5")}
    assert before.isdisjoint(after)


def test_shards_the_manifest_missed_are_adopted_if_their_sources_are_unchanged(tmp_path, rng):
    """Issue 11.2: a run killed before its manifest write must not lose finished shards."""
    utts = _corpus(tmp_path, n=6)
    store_dir = tmp_path / "store"
    extract_to_store(utts[:2], store_dir, CFG)
    early = (store_dir / "manifest.json").read_bytes()
    extract_to_store(utts, store_dir, CFG, jobs=2, shard_size=2)
    want = FeatureStore(store_dir).get_many([u for u, _ in utts])
    # as if the second run had been killed after its shards were renamed into place but
    # before the manifest recorded them; meanwhile one source file changed
    (store_dir / "manifest.json").write_bytes(early)
    write_wav(utts[5][1], speechlike(rng, 0.8, f0=210))
    rep = extract_to_store(utts, store_dir, CFG)
    assert rep.computed == ["spk/u5"] and sorted(rep.cached) == sorted(u for u, _ in utts[:5])
    st = FeatureStore(store_dir)
    for u, _ in utts[:5]:
        np.testing.assert_array_equal(st.get(u), want[u])
    assert st.get("spk/u5").shape != want["spk/u5"].shape  # the changed file was recomputed
    # a shard made with another feature config is never adopted
    other = FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=2)
    rep = extract_to_store(utts, store_dir, other)
    assert len(rep.computed) == 6


class RecordingBar:
    """Stands in for tqdm: records the bar's name, total and every update."""

    made: list[RecordingBar] = []

    def __init__(self, iterable=None, *, total=None, desc=None, unit=None, **kw):
        self.iterable, self.total, self.desc, self.updates = iterable, total, desc, []
        RecordingBar.made.append(self)

    def __iter__(self):
        for x in self.iterable:
            self.updates.append(1)
            yield x

    def update(self, n=1):
        self.updates.append(n)

    def close(self):
        pass


@pytest.mark.parametrize("jobs", [1, 2])
def test_features_progress_moves_per_utterance(tmp_path, monkeypatch, jobs):
    """Issue 14.5: the bar moves per utterance (it used to jump once per shard)."""
    import tqdm.auto

    RecordingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    utts = _corpus(tmp_path, n=5)
    (tmp_path / "wav" / "bad.wav").write_text("not audio")
    with pytest.warns(SkippedInputWarning):
        extract_to_store(
            utts + [("bad", tmp_path / "wav" / "bad.wav")],
            tmp_path / "store",
            CFG,
            jobs=jobs,
            shard_size=3,
            on_bad_audio="skip",
            progress=True,
        )
    (bar,) = RecordingBar.made
    assert (bar.desc, bar.total) == ("features", 6) and bar.updates == [1] * 6
    RecordingBar.made = []
    extract_to_store(utts, tmp_path / "store2", CFG, jobs=jobs)  # progress off: no bar
    assert RecordingBar.made == []


def test_known_bad_file_drops_an_entry_left_by_an_older_run(tmp_path):
    """A store written before issue 11.1 was fixed may hold both a skip record and the old
    entry of a file that went bad; the next extraction must drop the entry."""
    utts = _corpus(tmp_path, n=2)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG)
    old_entry = json.loads((store_dir / "manifest.json").read_text())["utterances"]["spk/u1"]
    utts[1][1].write_bytes(b"not audio")
    with pytest.warns(SkippedInputWarning):
        extract_to_store(utts, store_dir, CFG, on_bad_audio="skip")
    manifest = json.loads((store_dir / "manifest.json").read_text())
    manifest["utterances"]["spk/u1"] = old_entry  # what the older code left behind
    (store_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(SkippedInputWarning, match="1 unusable"):
        rep = extract_to_store(utts, store_dir, CFG, on_bad_audio="skip")
    assert rep.computed == [] and FeatureStore(store_dir).ids == ["spk/u0"]


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage"])
def test_missing_or_corrupt_shard_is_recomputed(tmp_path, damage):
    """Issue 19 item 4: re-extraction repairs a store whose shard is gone or unreadable."""
    utts = _corpus(tmp_path, n=4)
    store_dir = tmp_path / "store"
    extract_to_store(utts, store_dir, CFG, shard_size=2)
    st = FeatureStore(store_dir)
    before = st.get_many(st.ids)
    shard = store_dir / st._entry("spk/u1")["shard"]
    lost = sorted(u for u in st.ids if st._entry(u)["shard"] == shard.name)
    if damage == "delete":
        shard.unlink()
    elif damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:1000])
    else:
        shard.write_bytes(b"not hdf5" * 100)
    with pytest.raises(DataError, match="re-run feature extraction"):
        FeatureStore(store_dir).get("spk/u1")
    rep = extract_to_store(utts, store_dir, CFG, shard_size=2)
    assert sorted(rep.computed) == lost and len(rep.cached) == 4 - len(lost)
    after = FeatureStore(store_dir).get_many(st.ids)
    for u in st.ids:
        np.testing.assert_array_equal(after[u], before[u])
    assert not shard.exists()


def test_multichannel_audio_is_averaged_with_a_warning_naming_the_file(tmp_path, caplog):
    """A stereo file in a recipe's lists is mixed down to mono (as ``load_audio`` does), and the
    extraction says so, naming the file: two speakers on two channels would be mixed silently."""
    import soundfile as sf

    utts = _corpus(tmp_path, n=2)
    rng = np.random.default_rng(5)
    left, right = speechlike(rng, 0.6, f0=120), speechlike(rng, 0.6, f0=210)
    stereo = tmp_path / "wav" / "call.wav"
    sf.write(str(stereo), np.stack([left, right], axis=1), 8000, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="gmmspeaker.store"):
        extract_to_store([*utts, ("spk/call", stereo)], tmp_path / "store", CFG)
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(msgs) == 1 and str(stereo) in msgs[0] and "2 channels" in msgs[0], msgs
    assert not any(str(p) in msgs[0] for _, p in utts)  # the mono files are not named
    # the stored frames are those of the mean of the channels
    mix = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    want = extract(mix, CFG).frames
    np.testing.assert_allclose(FeatureStore(tmp_path / "store").get("spk/call"), want, rtol=1e-5, atol=1e-5)
    caplog.clear()
    with caplog.at_level("WARNING", logger="gmmspeaker.store"):  # cached: said once, when computed
        extract_to_store([*utts, ("spk/call", stereo)], tmp_path / "store", CFG)
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_a_chosen_channel_is_stored_and_changing_it_rebuilds_the_store(tmp_path, caplog):
    """``channel=1`` stores the features of the right channel alone (no warning), ``"mix"``
    the mean without a warning, and a store made with one channel is never served for
    another: changing it recomputes every utterance. A file without that channel is bad
    audio, named in the error."""
    import soundfile as sf

    rng = np.random.default_rng(11)
    left, right = speechlike(rng, 0.6, f0=120), speechlike(rng, 0.6, f0=230)
    stereo = write_wav(tmp_path / "wav" / "call.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    store = tmp_path / "store"
    with caplog.at_level("WARNING", logger="gmmspeaker.store"):
        assert extract_to_store([("call", stereo)], store, CFG, channel=1).computed == ["call"]
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    np.testing.assert_allclose(
        FeatureStore(store).get("call"), extract(right, CFG).frames, rtol=1e-5, atol=1e-5
    )
    assert extract_to_store([("call", stereo)], store, CFG, channel=1).cached == ["call"]
    # another channel: recomputed, never the right channel's frames served again
    assert extract_to_store([("call", stereo)], store, CFG, channel=0).computed == ["call"]
    np.testing.assert_allclose(
        FeatureStore(store).get("call"), extract(left, CFG).frames, rtol=1e-5, atol=1e-5
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="gmmspeaker.store"):
        assert extract_to_store([("call", stereo)], store, CFG, channel="mix").computed == ["call"]
    assert not [r for r in caplog.records if "channels" in r.getMessage()]
    mix = ((left.astype(np.float64) + right) / 2).astype(np.float32)
    np.testing.assert_allclose(
        FeatureStore(store).get("call"), extract(mix, CFG).frames, rtol=1e-5, atol=1e-5
    )
    # "mix" and the default average alike: the store stays valid between them
    assert extract_to_store([("call", stereo)], store, CFG).cached == ["call"]
    mono = write_wav(tmp_path / "wav" / "mono.wav", left)
    assert sf.info(str(mono)).channels == 1
    with pytest.raises(DataError, match=r"mono\.wav.*channel 1 does not exist"):
        extract_to_store([("mono", mono)], tmp_path / "store2", CFG, channel=1)
