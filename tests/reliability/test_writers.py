"""Two writers on one feature store; temporaries of killed runs (issue 19, items 5 and 6)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from gmmspeaker.cli import main
from gmmspeaker.store import FeatureStore
from tests.helpers import REPO, speechlike, write_wav

SLOW_FEATURES = textwrap.dedent(
    """
    import sys, time
    import gmmspeaker.audio as audio
    import gmmspeaker.store as store
    original = audio.load_audio
    def slow(*args, **kwargs):  # called while the shard's temporary file is open
        time.sleep(0.4)
        return original(*args, **kwargs)
    audio.load_audio = slow
    store.extract_to_store.__kwdefaults__["shard_size"] = 2
    from gmmspeaker.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


def _list(tmp_path, n=8):
    rng = np.random.default_rng(0)
    for i in range(n):
        write_wav(tmp_path / "wav" / f"u{i}.wav", speechlike(rng, 0.5, f0=100 + 15 * i))
    lst = tmp_path / "ubm.txt"
    lst.write_text("".join(f"wav/u{i}.wav\n" for i in range(n)))
    cfg = tmp_path / "feats.yaml"
    cfg.write_text("sample_rate: 8000\nn_mels: 24\nn_mfcc: 13\ndeltas: 1\n")
    return lst, cfg


def test_second_writer_stops_with_one_line_and_first_keeps_its_work(tmp_path, capsys):
    lst, cfg = _list(tmp_path)
    store = tmp_path / "store"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SLOW_FEATURES,
            "-q",
            "features",
            str(lst),
            "--out",
            str(store),
            "--config",
            str(cfg),
        ],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        lock = store / ".lock"
        # the first writer is at work: it holds the lock (old code: has a temporary shard)
        while not ((lock.exists() and lock.read_text().strip()) or list(store.glob(".shard-*.tmp-*"))):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        rc = main(["-q", "features", str(lst), "--out", str(store), "--config", str(cfg)])
        err = capsys.readouterr().err.strip()
        assert rc == 2
        assert len(err.splitlines()) == 1 and f"pid {first.pid}" in err and str(store) in err, err
        out, errs = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, errs[-2000:]
    assert "Traceback" not in errs
    assert len(FeatureStore(store)) == 8
    # the lock is released: a third writer finds everything cached
    assert main(["-q", "features", str(lst), "--out", str(store), "--config", str(cfg)]) == 0
    assert "0 computed, 8 cached" in capsys.readouterr().out
