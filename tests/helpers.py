"""Tiny audio makers for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_wav(path: Path, signal: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), signal, rate, subtype=subtype)
    return path


def speechlike(rng: np.random.Generator, seconds: float = 1.0, rate: int = 8000, f0: float = 120.0) -> np.ndarray:
    """A harmonic tone with noise and an amplitude envelope: enough to pass VAD."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2) + 0.05 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)
