"""MFCC front end: against librosa, scipy and a slow per-frame reference."""

from __future__ import annotations

from pathlib import Path

import librosa  # the front end's reference, in the test extra: missing means a broken test install, not a skip
import numpy as np
import pytest
import scipy.fft
import scipy.signal

from gmmspeaker.features import FeatureConfig, extract
from gmmspeaker.features.mfcc import dct_matrix, frame_window, lifter_weights, mel_filterbank

# Tolerance against librosa: float32 pipelines in a different operation order; the worst
# absolute difference must stay under 1e-4 of the largest |coefficient| (c0 is a few hundred).
LIBROSA_RTOL_OF_MAX = 1e-4


def _librosa_mfcc(y: np.ndarray, **kw: object) -> np.ndarray:
    return librosa.feature.mfcc(y=y, n_mfcc=20, **kw).T


def _assert_close_to_librosa(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    assert ours.dtype == np.float32
    tol = LIBROSA_RTOL_OF_MAX * float(np.abs(ref).max())
    np.testing.assert_allclose(ours, ref, rtol=0, atol=tol)


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("n_fft", "hop", "n_mels", "htk", "fmin", "fmax"),
    [(512, 128, 40, False, 0.0, None), (256, 80, 40, True, 20.0, 3800.0), (200, 80, 24, False, 50.0, 3500.0)],
)
def test_matches_librosa_on_fsdd(
    fsdd_dir: Path, n_fft: int, hop: int, n_mels: int, htk: bool, fmin: float, fmax: float | None
) -> None:
    import soundfile as sf

    y, sr = sf.read(fsdd_dir / "3_theo_7.wav", dtype="float32")
    cfg = FeatureConfig.librosa_like(
        sample_rate=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, htk=htk, fmin=fmin, fmax=fmax
    )
    ref = _librosa_mfcc(y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, htk=htk, fmin=fmin, fmax=fmax)
    _assert_close_to_librosa(extract(y, cfg, name="3_theo_7").frames, ref)


def test_matches_librosa_defaults_on_synthetic(rng: np.random.Generator) -> None:
    sr = 22050
    t = np.arange(int(1.3 * sr)) / sr
    y = (
        0.4 * scipy.signal.chirp(t, 100, t[-1], 6000) * np.hanning(t.size)
        + 0.02 * rng.standard_normal(t.size)
    ).astype(np.float32)
    ours = extract(y, FeatureConfig.librosa_like(sample_rate=sr)).frames
    _assert_close_to_librosa(ours, _librosa_mfcc(y, sr=sr))


def test_matches_librosa_without_mel_norm_and_short_window(rng: np.random.Generator) -> None:
    sr = 16000
    y = (0.1 * rng.standard_normal(sr // 2)).astype(np.float32)
    cfg = FeatureConfig.librosa_like(sample_rate=sr, n_fft=512, hop_length=160, n_mels=40, mel_norm="none")
    ref = _librosa_mfcc(y, sr=sr, n_fft=512, hop_length=160, n_mels=40, mel_norm=None)
    _assert_close_to_librosa(extract(y, cfg).frames, ref)


@pytest.mark.parametrize("scale", ["htk", "slaney"])
@pytest.mark.parametrize("norm", ["none", "slaney"])
def test_mel_filterbank_matches_librosa(scale: str, norm: str) -> None:
    ours = mel_filterbank(
        sample_rate=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=7600.0, scale=scale, norm=norm
    )
    ref = librosa.filters.mel(
        sr=16000,
        n_fft=512,
        n_mels=40,
        fmin=20.0,
        fmax=7600.0,
        htk=scale == "htk",
        norm=None if norm == "none" else "slaney",
    )
    np.testing.assert_allclose(ours, ref.T, rtol=1e-5, atol=1e-7)


def test_dct_matrix_matches_scipy(rng: np.random.Generator) -> None:
    x = rng.standard_normal((7, 40))
    ref = scipy.fft.dct(x, type=2, norm="ortho", axis=1)[:, :13]
    np.testing.assert_allclose(x @ dct_matrix(40, 13), ref, rtol=1e-5, atol=1e-5)


def test_windows_match_scipy() -> None:
    np.testing.assert_allclose(
        frame_window("hamming", 400), scipy.signal.windows.hamming(400, sym=True), atol=1e-6
    )
    np.testing.assert_allclose(frame_window("hann", 400), scipy.signal.get_window("hann", 400), atol=1e-6)
    povey = scipy.signal.windows.hann(400, sym=True) ** 0.85
    np.testing.assert_allclose(frame_window("povey", 400), povey, atol=1e-6)


def test_lifter_weights_htk_convention() -> None:
    w = lifter_weights(13, 22)
    assert w[0] == 1.0
    np.testing.assert_allclose(w, [1 + 11 * np.sin(np.pi * n / 22) for n in range(13)], rtol=1e-6)


def _naive_mfcc(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Slow float64 reference: a loop over frames, written from the definitions."""
    L, hop, nfft = cfg.frame_samples, cfg.hop_samples, cfg.fft_size
    p = cfg.preemphasis
    y = np.concatenate([[x[0] * (1 - p)], x[1:] - p * x[:-1]]).astype(np.float64)
    n = np.arange(L)
    win = 0.54 - 0.46 * np.cos(2 * np.pi * n / (L - 1))
    fb = np.asarray(
        mel_filterbank(
            sample_rate=cfg.sample_rate, n_fft=nfft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax_hz
        ),
        dtype=np.float64,
    )
    out = []
    for t in range(1 + (len(x) - L) // hop):
        frame = y[t * hop : t * hop + L].copy()
        if cfg.remove_dc:
            frame -= frame.mean()
        spec = np.abs(np.fft.rfft(frame * win, n=nfft)) ** 2
        logmel = np.log(np.maximum(spec @ fb, cfg.log_floor))
        c = scipy.fft.dct(logmel, type=2, norm="ortho")[: cfg.n_mfcc]
        c *= 1 + cfg.lifter / 2 * np.sin(np.pi * np.arange(cfg.n_mfcc) / cfg.lifter) if cfg.lifter else 1
        if cfg.energy == "log_energy":
            raw = x[t * hop : t * hop + L].astype(np.float64)
            c[0] = np.log(max(np.sum((raw - raw.mean()) ** 2), cfg.log_floor))
        out.append(c)
    return np.array(out)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"remove_dc": True, "lifter": 22}, {"energy": "log_energy", "sample_rate": 8000, "n_mels": 24}],
)
def test_matches_naive_reference(rng: np.random.Generator, overrides: dict) -> None:
    cfg = FeatureConfig(deltas=0, vad="none", normalize="none", **overrides)
    n = int(0.5 * cfg.sample_rate) + 37
    x = 0.2 * np.sin(2 * np.pi * 300 * np.arange(n) / cfg.sample_rate) + 0.05 * rng.standard_normal(n) + 0.01
    ours = extract(x.astype(np.float32), cfg).frames
    ref = _naive_mfcc(x.astype(np.float32).astype(np.float64), cfg)
    assert ours.shape == ref.shape == (1 + (n - cfg.frame_samples) // cfg.hop_samples, cfg.n_mfcc)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3 * np.abs(ref).max())


def test_frame_counts_and_minimum_length() -> None:
    cfg = FeatureConfig(vad="none", normalize="none")
    assert cfg.frame_length_samples == 400
    for n in (400, 559, 560, 16000):
        assert extract(np.full(n, 0.1, np.float32), cfg).n_total == 1 + (n - 400) // 160
    centred = FeatureConfig.librosa_like(sample_rate=16000, n_fft=512, hop_length=160)
    assert centred.frame_length_samples == 1
    assert extract(np.ones(1000, np.float32), centred).n_total == 1 + 1000 // 160


def test_dims_and_dtype(rng: np.random.Generator) -> None:
    x = (0.1 * rng.standard_normal(8000)).astype(np.float32)
    for deltas in (0, 1, 2):
        cfg = FeatureConfig(sample_rate=8000, n_mels=24, n_mfcc=13, deltas=deltas, vad="none")
        feats = extract(x, cfg)
        assert feats.frames.shape == (feats.n_total, cfg.dim) == (98, 13 * (1 + deltas))
        assert feats.frames.dtype == np.float32 and feats.frames.flags.c_contiguous
    # float64 input gives the same result as float32 input
    cfg = FeatureConfig(vad="none", normalize="none", deltas=0)
    np.testing.assert_allclose(extract(x.astype(np.float64), cfg).frames, extract(x, cfg).frames)
