"""``data.channel``: a recipe over multi-channel audio uses the channel it names."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError, DataError
from gmmspeaker.recipe.config import load_recipe
from gmmspeaker.recipe.runner import run_recipe
from tests.helpers import tiny_recipe, write_wav


def _scores(path):
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return {(r[0], r[1]): float(r[2]) for r in rows}


def _with_channel(tmp_path, channel):
    p = tiny_recipe(tmp_path, k=4, name=f"ch{channel}.yaml")
    p.write_text(p.read_text().replace("data:\n", f"data:\n  channel: {channel}\n"))
    return p


def test_recipe_uses_the_named_channel_end_to_end(tmp_path):
    """Run on mono audio; make every file stereo (left = the original, right = another
    signal): with ``channel: 0`` the features are recomputed and every score equals the
    mono run's; ``channel: 1`` recomputes them again and the scores change; a channel the
    files lack stops the run naming a file."""
    import soundfile as sf

    wd = tmp_path / "wd"
    mono = tiny_recipe(tmp_path, k=4)
    assert run_recipe(mono, workdir=wd, log_file=False).actions["features"] == "ran"
    want = _scores(wd / "scores.txt")
    rng = np.random.default_rng(0)
    for wav in sorted((wd / "corpus").rglob("*.wav")):
        x, rate = sf.read(str(wav), dtype="float32")
        other = np.roll(x, x.size // 3)[::-1] + 0.01 * rng.standard_normal(x.size).astype(np.float32)
        write_wav(wav, np.stack([x, other], axis=1), rate, subtype="FLOAT")

    res = run_recipe(_with_channel(tmp_path, 0), workdir=wd, log_file=False)
    assert res.actions["features"] == "ran" and res.actions["score"] == "ran"
    got = _scores(wd / "scores.txt")
    assert got.keys() == want.keys()
    # PCM_16 mono vs float stereo of the same samples: equal up to float32 rounding of MFCCs
    np.testing.assert_allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-4, atol=1e-4)

    res = run_recipe(_with_channel(tmp_path, 1), workdir=wd, log_file=False)
    assert res.actions["features"] == "ran"
    other = _scores(wd / "scores.txt")
    assert max(abs(other[k] - want[k]) for k in want) > 0.1

    with pytest.raises(DataError, match=r"\.wav.*channel 2 does not exist"):
        run_recipe(_with_channel(tmp_path, 2), workdir=wd, log_file=False)


@pytest.mark.parametrize("bad", ["-1", "left", "1.5", "true"])
def test_a_bad_channel_is_a_config_error_naming_the_key(tmp_path, bad):
    with pytest.raises(ConfigError, match=r"data\.channel.*channel number"):
        load_recipe(_with_channel(tmp_path, bad))


def test_channel_round_trips(tmp_path):
    from gmmspeaker.recipe.config import Recipe

    for ch in (1, "mix"):
        r = load_recipe(_with_channel(tmp_path, ch))
        assert r.data.channel == ch
        assert Recipe.from_dict(r.to_dict()) == r
