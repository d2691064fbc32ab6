"""Energy VAD: bursts kept, silence dropped, empty utterances, FSDD kept fraction."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from gmmspeaker.errors import DataError, SkippedInputWarning
from gmmspeaker.features import FeatureConfig, energy_vad, extract, extract_many

SR = 16000


def _bursts(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Tone and noise bursts separated by near-silence (noise at about -80 dBFS)."""
    segments = [
        ("gap", 0.4),
        ("tone", 0.5),
        ("gap", 0.3),
        ("noise", 0.4),
        ("gap", 0.6),
        ("tone", 0.3),
        ("gap", 0.5),
    ]
    parts, bursts, t = [], [], 0.0
    for kind, dur in segments:
        n = int(dur * SR)
        if kind == "gap":
            parts.append(1e-4 * rng.standard_normal(n))
        elif kind == "tone":
            parts.append(0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / SR) + 1e-4 * rng.standard_normal(n))
            bursts.append((t, t + dur))
        else:
            parts.append(0.1 * rng.standard_normal(n))
            bursts.append((t, t + dur))
        t += dur
    return np.concatenate(parts).astype(np.float32), bursts


def test_vad_keeps_bursts_and_drops_silence(rng: np.random.Generator) -> None:
    x, bursts = _bursts(rng)
    cfg = FeatureConfig(vad="energy", normalize="none", deltas=0)
    feats = extract(x, cfg, name="bursts")
    # recompute the decision alone to know which frames were kept
    from gmmspeaker.features.mfcc import frame_energy
    from gmmspeaker.features.vad import frame_energy_db

    params = cfg.spectral_params()
    e = frame_energy_db(frame_energy(x, params), params.frame_length)
    keep = energy_vad(
        e,
        threshold_db=cfg.vad_threshold,
        reference=cfg.vad_reference,
        floor_db=cfg.vad_floor,
        context=cfg.vad_context,
        proportion=cfg.vad_proportion,
    )
    assert feats.n_kept == keep.sum() and feats.n_total == keep.size
    start = np.arange(keep.size) * cfg.frame_shift
    end = start + cfg.frame_length
    inside = np.zeros(keep.size, bool)
    touches = np.zeros(keep.size, bool)
    for a, b in bursts:
        inside |= (start >= a) & (end <= b)
        touches |= (end > a) & (start < b)
    margin = cfg.vad_context * cfg.frame_shift
    far = np.ones(keep.size, bool)
    for a, b in bursts:
        far &= (end <= a - margin) | (start >= b + margin)
    assert keep[inside].all(), "a frame inside a burst was dropped"
    assert not keep[far].any(), "a silence frame was kept"
    assert 0.4 < feats.kept_fraction < 0.6


def test_vad_none_keeps_everything(rng: np.random.Generator) -> None:
    x, _ = _bursts(rng)
    feats = extract(x, FeatureConfig(vad="none"))
    assert feats.n_kept == feats.n_total == feats.frames.shape[0]
    assert feats.kept_fraction == 1.0


def test_context_smoothing_fills_short_dips() -> None:
    e = np.full(21, -20.0)
    e[10] = -90.0  # one quiet frame in speech: kept by the context
    e[:3] = -90.0  # silence at the start
    keep = energy_vad(e, threshold_db=35, context=2, proportion=0.6)
    assert keep[10] and not keep[:2].any() and keep[4:].all()
    assert not energy_vad(e, threshold_db=35, context=0)[10]


def test_vad_empty_raises_naming_utterance() -> None:
    silent = np.zeros(SR, np.float32)
    with pytest.raises(DataError, match=r"spk1/utt7\.wav.*VAD kept none.*vad"):
        extract(silent, FeatureConfig(), name="spk1/utt7.wav")


def test_extract_many_skips_and_counts(rng: np.random.Generator) -> None:
    good = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    items = [("a", good), ("silent", np.zeros(SR, np.float32)), ("short", good[:100]), ("b", good)]
    with pytest.raises(DataError, match="silent"):
        list(extract_many(items, FeatureConfig()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = list(extract_many(items, FeatureConfig(), skip_bad=True))
    assert [name for name, _ in out] == ["a", "b"]
    msgs = [str(w.message) for w in caught if issubclass(w.category, SkippedInputWarning)]
    assert len(msgs) == 1 and "skipped 2 utterance(s)" in msgs[0] and "silent" in msgs[0]


@pytest.mark.corpus
def test_default_8k_vad_keeps_most_of_trimmed_fsdd(fsdd_dir: Path) -> None:
    import soundfile as sf
    import yaml

    repo = Path(__file__).resolve().parents[2]
    cfg = FeatureConfig.from_dict(
        yaml.safe_load((repo / "configs" / "features-8k.yaml").read_text())["features"],
        source="features-8k.yaml",
    )
    total = kept = 0
    for path in sorted(fsdd_dir.glob("*.wav"))[::10]:
        y, sr = sf.read(path, dtype="float32")
        assert sr == cfg.sample_rate
        f = extract(y, cfg, name=path.name)
        total += f.n_total
        kept += f.n_kept
    assert total > 0
    assert kept / total > 0.85, f"the default 8 kHz VAD kept only {kept / total:.1%} of FSDD frames"
