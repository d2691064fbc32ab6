"""Normalisations: statistics, naive references, degenerate utterances."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from gmmspeaker.features import FeatureConfig, cmn, cmvn, extract, feature_warping, normalize, sliding_cmn
from gmmspeaker.features.normalize import NORMALIZATIONS


def test_cmvn_statistics(rng: np.random.Generator) -> None:
    X = (rng.standard_normal((500, 8)) * [1, 2, 5, 10, 0.1, 3, 7, 1] + 40).astype(np.float32)
    Y = cmvn(X)
    assert Y.dtype == np.float32
    np.testing.assert_allclose(Y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(Y.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(cmn(X).mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(cmn(X).std(axis=0), X.std(axis=0), rtol=1e-4)


def _naive_sliding_cmn(X: np.ndarray, window: int) -> np.ndarray:
    n = X.shape[0]
    out = np.empty_like(X, dtype=np.float64)
    for t in range(n):
        if n <= window:
            lo, hi = 0, n
        else:
            lo = min(max(t - window // 2, 0), n - window)
            hi = lo + window
        out[t] = X[t] - X[lo:hi].mean(axis=0)
    return out


@pytest.mark.parametrize(("n", "window"), [(1, 5), (3, 5), (50, 7), (50, 8), (300, 101), (40, 301)])
def test_sliding_cmn_matches_naive(rng: np.random.Generator, n: int, window: int) -> None:
    X = (rng.standard_normal((n, 4)) + 3).astype(np.float32)
    np.testing.assert_allclose(
        sliding_cmn(X, window=window), _naive_sliding_cmn(X.astype(np.float64), window), atol=1e-5
    )


def _naive_warp(X: np.ndarray, window: int) -> np.ndarray:
    n = X.shape[0]
    w = min(window, n)
    out = np.empty_like(X, dtype=np.float64)
    for t in range(n):
        lo = min(max(t - window // 2, 0), n - w)
        for d in range(X.shape[1]):
            win = X[lo : lo + w, d]
            tol = 1e-5 * np.abs(X).max()
            below = np.sum(win < X[t, d] - tol)
            equal = np.sum(np.abs(win - X[t, d]) <= tol)
            out[t, d] = scipy.stats.norm.ppf((below + (equal - 1) / 2 + 0.5) / w)
    return out


def test_warping_matches_naive(rng: np.random.Generator) -> None:
    X = rng.standard_normal((60, 3)).astype(np.float32)
    X[:, 2] = np.round(X[:, 2])  # ties
    X[::2, 1] = X[1::2, 1] + 1e-7  # near-ties (below the resolution) count as ties
    np.testing.assert_allclose(feature_warping(X, window=21), _naive_warp(X, 21), atol=1e-5)


def test_warping_output_is_standard_normal(rng: np.random.Generator) -> None:
    X = (rng.gamma(2.0, 3.0, size=(3000, 4)) * [1, 10, 0.1, 5]).astype(np.float32)
    Y = feature_warping(X, window=301)
    for d in range(Y.shape[1]):
        assert abs(Y[:, d].mean()) < 0.05
        assert abs(Y[:, d].std() - 1) < 0.05
        assert scipy.stats.kstest(Y[:, d], "norm").pvalue > 1e-3
    # a window covering the whole utterance gives exactly the normal quantiles of the ranks
    Z = feature_warping(X[:200, :1], window=1000)
    np.testing.assert_allclose(
        np.sort(Z[:, 0]), scipy.stats.norm.ppf((np.arange(200) + 0.5) / 200), atol=1e-5
    )


@pytest.mark.parametrize("method", NORMALIZATIONS)
@pytest.mark.parametrize("n_frames", [1, 2])
@pytest.mark.parametrize("vad", ["energy", "none"])
def test_tiny_utterances_are_finite(rng: np.random.Generator, method: str, n_frames: int, vad: str) -> None:
    cfg = FeatureConfig(normalize=method, vad=vad, norm_window=5)
    n = cfg.frame_samples + (n_frames - 1) * cfg.hop_samples
    x = (0.1 * rng.standard_normal(n)).astype(np.float32)
    feats = extract(x, cfg, name="tiny")
    assert feats.n_total == n_frames
    assert feats.frames.shape == (feats.n_kept, cfg.dim) and feats.n_kept >= 1
    assert np.isfinite(feats.frames).all()


@pytest.mark.parametrize("method", NORMALIZATIONS)
def test_constant_input_is_finite(method: str) -> None:
    cfg = FeatureConfig(normalize=method, vad="none", norm_window=11)
    for value in (0.0, 0.25):
        feats = extract(np.full(8000, value, np.float32), cfg, name="constant")
        assert np.isfinite(feats.frames).all()
        if method != "none":  # rounding noise is not blown up to unit scale
            np.testing.assert_allclose(feats.frames, 0, atol=1e-2)


@pytest.mark.parametrize("method", NORMALIZATIONS)
def test_normalize_empty_and_constant_columns(method: str) -> None:
    assert normalize(np.zeros((0, 3), np.float32), method).shape == (0, 3)
    X = np.ones((5, 3), np.float32)
    assert np.isfinite(normalize(X, method, window=3)).all()
