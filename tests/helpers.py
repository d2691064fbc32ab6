"""Tiny audio makers for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_wav(path: Path, signal: np.ndarray, rate: int = 8000, subtype: str = "PCM_16") -> Path:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), signal, rate, subtype=subtype)
    return path


def speechlike(
    rng: np.random.Generator, seconds: float = 1.0, rate: int = 8000, f0: float = 120.0
) -> np.ndarray:
    """A harmonic tone with noise and an amplitude envelope: enough to pass VAD."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 12))
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t) ** 2) + 0.05 * rng.standard_normal(t.size)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


REPO = Path(__file__).resolve().parents[1]

TINY = """experiment: tiny
seed: 3
jobs: {jobs}
backend: {backend}
{extra}
defaults: {repo}/configs/features-8k.yaml
data:
  synthetic: {{n_speakers: 5, n_ubm_utterances: 3, n_enroll_utterances: 2, n_test_utterances: 2, duration: 1.0, seed: 1}}
ubm: {{components: {k}, iterations: 3, init: split}}
map: {{relevance: 16}}
scoring: {{method: top_c, top_c: 3}}
evaluation: {{p_target: [0.01], det_plot: false}}
"""


def tiny_recipe(
    tmp_path: Path,
    *,
    jobs: int = 1,
    k: int = 8,
    backend: str = "loky",
    extra: str = "",
    name: str = "tiny.yaml",
) -> Path:
    """A recipe on a tiny synthetic corpus (5 speakers, 1 s utterances): a few seconds end to end."""
    p = tmp_path / name
    p.write_text(TINY.format(jobs=jobs, k=k, backend=backend, extra=extra, repo=REPO))
    return p
