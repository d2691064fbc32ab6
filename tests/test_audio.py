from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from gmmspeaker.audio import load_audio, read_audio, resample
from gmmspeaker.errors import AudioError
from tests.helpers import speechlike, write_wav


def test_pcm16_scaled_to_float(tmp_path, rng):
    x = speechlike(rng)
    p = write_wav(tmp_path / "a.wav", x)
    y, rate = load_audio(p, sample_rate=8000)
    assert rate == 8000 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1 / 32768 + 1e-6)
    raw, _ = sf.read(p, dtype="int16")
    np.testing.assert_allclose(y, raw / 32768.0, atol=1e-7)


@pytest.mark.parametrize(("suffix", "subtype"), [(".wav", "PCM_16"), (".flac", "PCM_16"), (".wav", "PCM_24")])
def test_samples_are_libsndfiles_float32_bit_for_bit(tmp_path, rng, suffix, subtype):
    """16-bit PCM is read as int16 and scaled by 2**-15: the very float32 numbers libsndfile
    gives (every int16 value, both extremes included), whole files, segments and channels;
    other subtypes read as float32 by libsndfile."""
    ints = np.concatenate([np.arange(-32768, 32768, dtype=np.int16), rng.integers(-32768, 32768, 6000)])
    x = np.stack([ints, ints[::-1]], axis=1).astype(np.int16)
    p = tmp_path / f"a{suffix}"
    sf.write(p, x, 16000, subtype=subtype)
    ref, _ = sf.read(p, dtype="float32", always_2d=True)
    y, rate, n_channels = read_audio(p, channel=1)
    assert (rate, n_channels) == (16000, 2) and y.dtype == np.float32
    np.testing.assert_array_equal(y, ref[:, 1])
    seg, _ = load_audio(p, start=0.5, end=1.25, channel=0)
    np.testing.assert_array_equal(seg, ref[8000:20000, 0])
    mix, _ = load_audio(p)
    np.testing.assert_array_equal(mix, ref.mean(axis=1, dtype=np.float64).astype(np.float32))


def test_multichannel_mixed_down(tmp_path, rng):
    x = rng.uniform(-0.5, 0.5, size=(800, 3)).astype(np.float32)
    p = write_wav(tmp_path / "three.wav", x, subtype="FLOAT")
    y, _ = load_audio(p)
    np.testing.assert_allclose(y, x.mean(axis=1), atol=1e-6)


def test_flac_readable(tmp_path, rng):
    x = speechlike(rng)
    p = write_wav(tmp_path / "a.flac", x)
    y, _ = load_audio(p)
    assert y.shape == x.shape


def test_resampling_preserves_a_tone(tmp_path):
    rate = 16000
    t = np.arange(rate) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    p = write_wav(tmp_path / "tone.wav", x, rate=rate, subtype="FLOAT")
    y, r = load_audio(p, sample_rate=8000, resample_audio=True)
    assert r == 8000 and y.shape == (8000,)
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    assert abs(np.argmax(spec) * 8000 / y.size - 440) < 2
    # independent check: scipy's FFT resampler agrees away from the edges
    from scipy.signal import resample as fft_resample

    ref = fft_resample(x.astype(np.float64), 8000)
    np.testing.assert_allclose(y[500:-500], ref[500:-500], atol=2e-3)
    # same rate: the samples themselves come back, as float32 (no filtering, no shift)
    same = resample(x.astype(np.float64), rate, rate)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, x)
    # a round trip through a lower rate keeps a band-limited tone (away from the edges)
    back = resample(resample(x, rate, 8000), 8000, rate)
    assert back.shape == x.shape
    np.testing.assert_allclose(back[1000:-1000], x[1000:-1000], atol=2e-3)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda d, rng: d / "missing.wav", "not found"),
        (lambda d, rng: (d / "dir.wav").mkdir() or d / "dir.wav", "directory"),
        (
            lambda d, rng: (d / "text.wav").write_text("hello, not audio") and d / "text.wav",
            "not a readable audio",
        ),
        (
            lambda d, rng: (d / "zero.wav").write_bytes(b"") or d / "zero.wav",
            r"empty file \(0 bytes\), not audio",
        ),
        (lambda d, rng: write_wav(d / "empty.wav", np.zeros(0, np.float32)), "empty"),
        (lambda d, rng: write_wav(d / "silent.wav", np.zeros(4000, np.float32)), "silent"),
        (
            lambda d, rng: write_wav(
                d / "nan.wav", np.where(np.arange(4000) == 7, np.nan, 0.1).astype(np.float32), subtype="FLOAT"
            ),
            "NaN",
        ),
        (
            lambda d, rng: write_wav(
                d / "inf.wav", np.where(np.arange(4000) == 7, np.inf, 0.1).astype(np.float32), subtype="FLOAT"
            ),
            "infinite",
        ),
        (lambda d, rng: write_wav(d / "rate.wav", speechlike(rng), rate=16000), "16000 Hz"),
        (lambda d, rng: write_wav(d / "short.wav", speechlike(rng)[:50]), "too short"),
    ],
)
def test_bad_audio_named(tmp_path, rng, make, match):
    path = make(tmp_path, rng)
    with pytest.raises(AudioError, match=match) as info:
        load_audio(path, sample_rate=8000, min_samples=200)
    assert str(path) in str(info.value)


def test_truncated_header(tmp_path, rng):
    p = write_wav(tmp_path / "good.wav", speechlike(rng))
    bad = tmp_path / "trunc.wav"
    bad.write_bytes(p.read_bytes()[:30])
    with pytest.raises(AudioError, match="trunc.wav"):
        load_audio(bad)
