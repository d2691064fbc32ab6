"""Fixtures for the GMM tests: small mixtures with known parameters."""

from __future__ import annotations

import numpy as np
import pytest


def draw_mixture(
    rng: np.random.Generator, n: int, K: int = 3, D: int = 4, sep: float = 8.0
) -> tuple[np.ndarray, dict]:
    """Frames from a well-separated diagonal mixture; returns (X, truth)."""
    means = rng.normal(0.0, sep, size=(K, D))
    var = rng.uniform(0.5, 2.0, size=(K, D))
    w = rng.dirichlet(np.full(K, 5.0))
    labels = rng.choice(K, size=n, p=w)
    X = means[labels] + rng.standard_normal((n, D)) * np.sqrt(var[labels])
    return X, {"weights": w, "means": means, "variances": var, "labels": labels}


@pytest.fixture
def mixture_data() -> tuple[np.ndarray, dict]:
    return draw_mixture(np.random.default_rng(7), 3000)
