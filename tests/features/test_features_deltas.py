"""Deltas against a slow naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from gmmspeaker.errors import ConfigError
from gmmspeaker.features import add_deltas, delta


def _naive_delta(X: np.ndarray, N: int) -> np.ndarray:
    T = X.shape[0]
    denom = 2 * sum(n * n for n in range(1, N + 1))
    out = np.zeros_like(X, dtype=np.float64)
    for t in range(T):
        for n in range(1, N + 1):
            out[t] += n * (X[min(t + n, T - 1)] - X[max(t - n, 0)])
    return out / denom


@pytest.mark.parametrize("window", [1, 2, 3, 5])
@pytest.mark.parametrize("n_frames", [1, 2, 4, 57])
def test_delta_matches_naive(rng: np.random.Generator, window: int, n_frames: int) -> None:
    X = rng.standard_normal((n_frames, 6)).astype(np.float32)
    d = delta(X, window=window)
    assert d.dtype == np.float32
    np.testing.assert_allclose(d, _naive_delta(X.astype(np.float64), window), rtol=1e-5, atol=1e-5)


def test_delta_of_linear_ramp_is_slope_inside() -> None:
    X = (np.arange(30, dtype=np.float32) * 0.5)[:, None] * np.ones((1, 3), np.float32)
    np.testing.assert_allclose(delta(X, window=2)[2:-2], 0.5, rtol=1e-6)


def test_add_deltas_stacks(rng: np.random.Generator) -> None:
    X = rng.standard_normal((40, 5)).astype(np.float32)
    out = add_deltas(X, order=2, window=2)
    assert out.shape == (40, 15)
    np.testing.assert_array_equal(out[:, :5], X)
    d = _naive_delta(X.astype(np.float64), 2)
    np.testing.assert_allclose(out[:, 5:10], d, atol=1e-5)
    np.testing.assert_allclose(out[:, 10:], _naive_delta(d, 2), atol=1e-5)
    np.testing.assert_array_equal(add_deltas(X, order=0), X)


def test_delta_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="delta_window"):
        delta(np.zeros((3, 2)), window=0)
    with pytest.raises(ConfigError, match="deltas"):
        add_deltas(np.zeros((3, 2)), order=3)
