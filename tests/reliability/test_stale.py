"""The feature store never serves frames of a file that changed: swaps, ``touch -r``,
files replaced while they are read (issue 19, items 1 and 2)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil

import numpy as np

from gmmspeaker.audio import load_audio
from gmmspeaker.features import FeatureConfig, extract
from gmmspeaker.store import FeatureStore, content_hash, extract_to_store, source_signature
from tests.helpers import speechlike, write_wav

CFG = FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=1)


def _direct(path, cfg=CFG):
    x, _ = load_audio(path, sample_rate=cfg.sample_rate)
    return extract(x, cfg, name=str(path)).frames


def _two_files(tmp_path, rng):
    a = write_wav(tmp_path / "wav" / "a.wav", speechlike(rng, 0.8, f0=100))
    b = write_wav(tmp_path / "wav" / "b.wav", speechlike(rng, 0.8, f0=190))
    assert a.stat().st_size == b.stat().st_size and a.read_bytes() != b.read_bytes()
    stamp = (1_600_000_000, 1_600_000_000)  # one archive mtime, as an unpacked corpus has
    os.utime(a, stamp)
    os.utime(b, stamp)
    return [("spk1/a", a), ("spk2/b", b)], stamp


def test_swapped_equal_size_files_with_one_mtime_are_recomputed(tmp_path, rng):
    utts, stamp = _two_files(tmp_path, rng)
    store = tmp_path / "store"
    extract_to_store(utts, store, CFG)
    a, b = utts[0][1], utts[1][1]
    tmp = a.with_name("swap.wav")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)
    for p in (a, b):
        os.utime(p, stamp)
    rep = extract_to_store(utts, store, CFG)
    assert sorted(rep.computed) == ["spk1/a", "spk2/b"] and rep.cached == []
    st = FeatureStore(store)
    np.testing.assert_array_equal(st.get("spk1/a"), _direct(a))
    np.testing.assert_array_equal(st.get("spk2/b"), _direct(b))


def test_rewrite_then_touch_r_is_recomputed(tmp_path, rng):
    utts, stamp = _two_files(tmp_path, rng)
    store = tmp_path / "store"
    extract_to_store(utts, store, CFG)
    a = utts[0][1]
    size = a.stat().st_size
    write_wav(a, speechlike(rng, 0.8, f0=260))  # new content, same size
    os.utime(a, stamp)  # touch -r back to the old time
    assert a.stat().st_size == size and a.stat().st_mtime_ns == stamp[0] * 10**9
    rep = extract_to_store(utts, store, CFG)
    assert rep.computed == ["spk1/a"]
    np.testing.assert_array_equal(FeatureStore(store).get("spk1/a"), _direct(a))


def test_content_check_hashes_the_bytes(tmp_path, rng):
    utts, _ = _two_files(tmp_path, rng)
    store = tmp_path / "store"
    rep = extract_to_store(utts, store, CFG, content_check=True)
    assert len(rep.computed) == 2
    a = utts[0][1]
    entry = FeatureStore(store)._utts["spk1/a"]
    assert entry["content"] == hashlib.sha256(a.read_bytes()).hexdigest() == content_hash(a)
    # the same bytes under a new inode and ctime (a restored backup): metadata differ,
    # content is equal; the content check keeps the frames, the default check recomputes
    copy = a.with_name("copy.wav")
    shutil.copy2(a, copy)
    os.replace(copy, a)
    assert source_signature(a) != entry["signature"]
    rep = extract_to_store(utts, store, CFG, content_check=True)
    assert rep.computed == [] and sorted(rep.cached) == ["spk1/a", "spk2/b"]
    rep = extract_to_store(utts, store, CFG)
    assert rep.computed == [] and len(rep.cached) == 2  # signature refreshed by the content check
    shutil.copy2(a, copy)
    os.replace(copy, a)
    assert extract_to_store(utts, store, CFG).computed == ["spk1/a"]


def test_file_replaced_while_it_is_read_is_read_again(tmp_path, rng, monkeypatch):
    import gmmspeaker.audio

    utts, _ = _two_files(tmp_path, rng)
    a = utts[0][1]
    new = speechlike(rng, 0.8, f0=300)
    original = gmmspeaker.audio.load_audio
    calls = []

    def racing(path, *args, **kwargs):
        out = original(path, *args, **kwargs)
        calls.append(str(path))
        if str(path) == str(a) and len(calls) == 1:
            write_wav(tmp_path / "wav" / "new.wav", new)
            os.replace(tmp_path / "wav" / "new.wav", a)  # replaced after it was read
        return out

    monkeypatch.setattr(gmmspeaker.audio, "load_audio", racing)
    store = tmp_path / "store"
    extract_to_store(utts, store, CFG, jobs=1)
    monkeypatch.undo()
    st = FeatureStore(store)
    np.testing.assert_array_equal(st.get("spk1/a"), _direct(a))  # the new file's frames
    assert st._utts["spk1/a"]["signature"] == source_signature(a)
    assert extract_to_store(utts, store, CFG).computed == []


def test_run_recomputes_swapped_files_and_honours_content_check(tmp_path):
    """End to end: a recipe run after two equal-size test files of different speakers were
    swapped (one mtime) reruns the features stage and stores the swapped frames; with
    ``data.content_check`` a file copied over itself (same bytes) keeps them."""
    from gmmspeaker.cli import main
    from gmmspeaker.recipe.runner import run_recipe
    from tests.helpers import tiny_recipe

    recipe = tiny_recipe(tmp_path, k=4)
    wd = tmp_path / "wd"
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    import soundfile as sf

    wavs = sorted((wd / "corpus").rglob("*.wav"))
    b = wavs[0]
    a = next(p for p in wavs if p.parent.name != b.parent.name)
    n = min(sf.info(str(p)).frames for p in (a, b))
    for p in (a, b):  # cut to one length: equal sizes
        write_wav(p, sf.read(str(p), dtype="float32")[0][:n])
    assert a.stat().st_size == b.stat().st_size
    stamp = (1_600_000_000, 1_600_000_000)
    for p in (a, b):
        os.utime(p, stamp)
    assert run_recipe(recipe, workdir=wd, log_file=False).actions["features"] == "ran"
    tmp = a.with_name("swap.wav")
    os.replace(a, tmp)
    os.replace(b, a)
    os.replace(tmp, b)
    for p in (a, b):
        os.utime(p, stamp)
    res = run_recipe(recipe, workdir=wd, log_file=False)
    assert res.actions["features"] == "ran" and res.actions["score"] == "ran"
    st = FeatureStore(wd / "features")
    by_path = {e["source"]: u for u, e in st._utts.items()}
    np.testing.assert_array_equal(st.get(by_path[str(a)]), _direct(a, FeatureConfig.from_dict(st.config)))

    checked = tiny_recipe(tmp_path, k=4, extra="", name="checked.yaml")
    checked.write_text(checked.read_text().replace("data:\n", "data:\n  content_check: true\n"))
    assert run_recipe(checked, workdir=wd, log_file=False).actions["features"] == "ran"
    copy = a.with_name("copy.wav")
    shutil.copy2(a, copy)
    os.replace(copy, a)
    res = run_recipe(checked, workdir=wd, log_file=False)
    assert res.actions["features"] == "ran"  # the fingerprint saw new metadata ...
    record = json.loads((wd / "stages" / "features.json").read_text())
    assert record["computed"] == 0  # ... but the same bytes: no frame recomputed


def test_run_notices_its_store_rebuilt_with_another_configuration(tmp_path, capsys):
    """Issue 19 item 3: ``gmmspeaker features --out <workdir>/features --config other``
    rebuilds the run's store; the run then re-extracts instead of saying "up to date",
    and ``--from-stage score`` refuses to score the other configuration's features."""
    from gmmspeaker.cli import main
    from tests.helpers import tiny_recipe

    recipe = tiny_recipe(tmp_path, k=4)
    wd = tmp_path / "wd"
    assert main(["-q", "run", str(recipe), "--workdir", str(wd)]) == 0
    scores = (wd / "scores.txt").read_bytes()
    other = tmp_path / "other.yaml"
    other.write_text("sample_rate: 8000\nn_mels: 20\nn_mfcc: 10\ndeltas: 0\n")
    lst = wd / "corpus" / "ubm.txt"  # fewer files than the run uses, too
    assert main(["-q", "features", str(lst), "--out", str(wd / "features"), "--config", str(other)]) == 0
    capsys.readouterr()
    assert main(["-q", "run", str(recipe), "--workdir", str(wd), "--from-stage", "score"]) == 2
    err = capsys.readouterr().err
    assert "stage features is out of date" in err
    assert main(["run", str(recipe), "--workdir", str(wd)]) == 0
    assert re.search(r"^features +ran", capsys.readouterr().out, flags=re.M)
    assert (wd / "scores.txt").read_bytes() == scores
    record = json.loads((wd / "stages" / "features.json").read_text())
    assert FeatureStore(wd / "features").config_hash == record["config_hash"]
