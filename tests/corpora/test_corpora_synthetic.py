"""Tests of gmmspeaker.corpora.synthetic (deterministic synthetic speaker corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import lfilter

from gmmspeaker.corpora.lists import read_enroll_list, read_trials, read_ubm_list
from gmmspeaker.corpora.synthetic import (
    SyntheticCorpusConfig,
    _block_filter,
    _utt_rng,
    _voice_rng,
    apply_session,
    corpus_digest,
    generate_corpus,
    sample_voice,
    synthesize_utterance,
)
from gmmspeaker.errors import ConfigError, DataError

SMALL = dict(
    n_speakers=4, n_ubm_utterances=2, n_enroll_utterances=2, n_test_utterances=2, duration=0.5, seed=0
)


def small(**kw: object) -> SyntheticCorpusConfig:
    return SyntheticCorpusConfig(**{**SMALL, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "c"
    generate_corpus(root, small())
    return root


# --------------------------------------------------------------------------- config


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = SyntheticCorpusConfig(n_speakers=7, snr_db=None, seed=3)
    assert SyntheticCorpusConfig.from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match="unknown key.*n_speaker\\b"):
        SyntheticCorpusConfig.from_dict({"n_speaker": 3})
    with pytest.raises(TypeError):
        SyntheticCorpusConfig(20)  # type: ignore[misc]  # keyword-only


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"n_speakers": 1}, "n_speakers"),
        ({"n_speakers": True}, "n_speakers"),
        ({"n_enroll_utterances": 0}, "n_enroll_utterances"),
        ({"background_speakers": -1}, "background_speakers"),
        ({"duration": 0.2}, "shorter than 0.3 s"),
        ({"duration": float("nan")}, "duration"),
        ({"duration_jitter": 0.95}, "duration_jitter"),
        ({"snr_db": float("inf")}, "snr_db"),
        ({"n_nontarget_per_test": 20}, "n_nontarget_per_test"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation(kw: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        SyntheticCorpusConfig(**kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- corpus


def test_corpus_layout_and_lists(corpus: Path) -> None:
    ubm = read_ubm_list(corpus / "ubm.txt")
    enroll = read_enroll_list(corpus / "enroll.txt")
    trials = read_trials(corpus / "trials.txt", models=[m.model_id for m in enroll])
    assert [m.model_id for m in enroll] == ["spk000", "spk001", "spk002", "spk003"]
    assert all(len(m.utterances) == 2 for m in enroll)
    assert len(ubm) == 4 * 2
    assert len(trials) == 4 * (4 * 2)  # every test utterance against every model
    assert all(t.target == (t.test.utt_id.split("/")[1] == t.model_id) for t in trials)
    used = [u.utt_id for u in ubm] + [u.utt_id for m in enroll for u in m.utterances]
    used += sorted({t.test.utt_id for t in trials})
    assert len(set(used)) == len(used) == 4 * 6  # disjoint roles, all files used
    x, sr = sf.read(str(ubm[0].path), dtype="int16")
    info = sf.info(str(ubm[0].path))
    assert sr == 8000 and info.subtype == "PCM_16" and info.channels == 1
    assert 0.4 * sr <= len(x) <= 0.6 * sr
    assert 0 < np.abs(x).max() < 32767
    rows = (corpus / "speakers.tsv").read_text().splitlines()
    assert rows[0].startswith("speaker\trole\tf0_hz") and len(rows) == 5
    assert not list(corpus.parent.glob(".c.*"))  # no temporary folders left


def test_byte_identical_per_seed_and_different_across_seeds(corpus: Path, tmp_path: Path) -> None:
    generate_corpus(tmp_path / "again", small())
    assert corpus_digest(tmp_path / "again") == corpus_digest(corpus)
    generate_corpus(tmp_path / "seed1", small(seed=1))
    assert corpus_digest(tmp_path / "seed1") != corpus_digest(corpus)
    a = (corpus / "wav" / "spk000" / "utt000.wav").read_bytes()
    b = (tmp_path / "seed1" / "wav" / "spk000" / "utt000.wav").read_bytes()
    assert a != b


def test_adding_speakers_keeps_existing_ones(corpus: Path, tmp_path: Path) -> None:
    generate_corpus(tmp_path / "more", small(n_speakers=5))
    for spk in ("spk000", "spk003"):
        for utt in ("utt000", "utt005"):
            rel = f"wav/{spk}/{utt}.wav"
            assert (tmp_path / "more" / rel).read_bytes() == (corpus / rel).read_bytes()


def test_idempotent_and_regenerated_on_change(tmp_path: Path) -> None:
    root = tmp_path / "c"
    cfg = small(n_speakers=2, n_ubm_utterances=1, n_enroll_utterances=1, n_test_utterances=1)
    paths = generate_corpus(root, cfg)
    assert json.loads(paths["config"].read_text())["config"] == cfg.to_dict()
    wav = root / "wav" / "spk000" / "utt000.wav"
    stamp = wav.stat().st_mtime_ns, wav.stat().st_ino
    assert generate_corpus(root, cfg) == paths
    assert (wav.stat().st_mtime_ns, wav.stat().st_ino) == stamp  # untouched
    cfg2 = small(n_speakers=3, n_ubm_utterances=1, n_enroll_utterances=1, n_test_utterances=1)
    generate_corpus(root, cfg2)
    assert json.loads(paths["config"].read_text())["config"]["n_speakers"] == 3
    assert len(read_enroll_list(root / "enroll.txt")) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary or old folders
    # generation is atomic, so a folder without corpus.json is not ours: left alone
    paths["config"].unlink()
    with pytest.raises(DataError, match="holds no corpus.json"):
        generate_corpus(root, cfg2)


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to replace"):
        generate_corpus(tmp_path / "mine", small())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_background_speakers_and_nontarget_sampling(tmp_path: Path) -> None:
    cfg = small(n_speakers=5, background_speakers=2, n_ubm_utterances=3, n_nontarget_per_test=2)
    generate_corpus(tmp_path / "c", cfg)
    ubm = read_ubm_list(tmp_path / "c" / "ubm.txt")
    assert len(ubm) == 2 * 3
    assert {u.utt_id.split("/")[1] for u in ubm} == {"bkg000", "bkg001"}
    trials = read_trials(tmp_path / "c" / "trials.txt")
    per_test: dict[str, list[bool | None]] = {}
    for t in trials:
        per_test.setdefault(t.test.utt_id, []).append(t.target)
    assert len(per_test) == 5 * 2
    assert all(sorted(v) == [False, False, True] for v in per_test.values())
    # evaluation files do not depend on where the background comes from
    generate_corpus(tmp_path / "d", small(n_speakers=5))
    rel = "wav/spk004/utt003.wav"
    assert (tmp_path / "c" / rel).read_bytes() == (tmp_path / "d" / rel).read_bytes()


# --------------------------------------------------------------------------- synthesis


def test_block_filter_matches_lfilter_for_constant_coefficients() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1000)
    sr, block = 8000, 80
    f = np.array([500.0, 1500.0, 2500.0])
    bw = np.array([60.0, 90.0, 140.0])
    r = np.exp(-np.pi * bw / sr)
    a1, a2 = -2 * r * np.cos(2 * np.pi * f / sr), r * r
    n_blocks = -(-len(x) // block)
    y = _block_filter(x, np.tile(a1, (n_blocks, 1)), np.tile(a2, (n_blocks, 1)), block=block, tail=800)
    a = np.array([1.0])
    for i in range(3):
        a = np.convolve(a, [1.0, a1[i], a2[i]])
    ref = lfilter([np.prod(1 + a1 + a2)], a, x)
    np.testing.assert_allclose(y, ref, atol=1e-6 * np.abs(ref).max())


def test_utterance_shape_level_and_noise() -> None:
    voice = sample_voice(np.random.default_rng(0))
    x = synthesize_utterance(voice, np.random.default_rng(1), duration=0.7, sample_rate=16000, snr_db=None)
    assert x.shape == (11200,) and x.dtype == np.float64
    assert np.all(np.isfinite(x)) and np.abs(x).max() <= 0.9
    y = synthesize_utterance(voice, np.random.default_rng(1), duration=0.7, sample_rate=16000, snr_db=10.0)
    # same randomness up to the noise: y = c * x + noise, noise 10 dB below the signal
    c = (y @ x) / (x @ x)
    noise = y - c * x
    snr = 10 * np.log10(np.mean((c * x) ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.5)


def _f0_estimate(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch (60-300 Hz) of the louder half of 40 ms frames."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 320)[::160]
    energy = (frames**2).mean(1)
    frames = frames[energy > np.median(energy)]
    frames = frames - frames.mean(1, keepdims=True)
    ac = np.fft.irfft(np.abs(np.fft.rfft(frames, 1024)) ** 2)[:, :400]
    lo, hi = sr // 300, sr // 60
    return float(np.median(sr / (lo + np.argmax(ac[:, lo:hi], axis=1))))


def _mean_log_spectrum(x: np.ndarray) -> np.ndarray:
    frames = np.lib.stride_tricks.sliding_window_view(x, 256)[::128]
    energy = (frames**2).mean(1)
    frames = frames[energy > np.percentile(energy, 40)] * np.hanning(256)
    return np.log(np.mean(np.abs(np.fft.rfft(frames)) ** 2, axis=0) + 1e-10)


def test_speakers_differ_like_voices() -> None:
    sr, n_spk, n_utt = 8000, 8, 3
    voices = [sample_voice(_voice_rng(0, 0, k)) for k in range(n_spk)]
    f0s = np.array([v.f0 for v in voices])
    assert f0s.min() >= 80 and f0s.max() <= 250 and all(0.8 <= v.vtl <= 1.2 for v in voices)
    est, feats, labels = [], [], []
    for k, v in enumerate(voices):
        utts = [
            synthesize_utterance(v, _utt_rng(0, 0, k, u), duration=2.0, sample_rate=sr, snr_db=None)
            for u in range(n_utt)
        ]
        est.append(np.median([_f0_estimate(x, sr) for x in utts]))
        feats += [_mean_log_spectrum(x) for x in utts]
        labels += [k] * n_utt
    # the pitch heard is the speaker's pitch (intonation and session shifts allowed)
    np.testing.assert_allclose(est, f0s, rtol=0.2)
    # long-term spectra: utterances of one speaker are closer than those of two speakers
    F, y = np.array(feats), np.array(labels)
    d = ((F[:, None] - F[None]) ** 2).sum(-1)
    same = (y[:, None] == y[None]) & ~np.eye(len(y), dtype=bool)
    diff = y[:, None] != y[None]
    assert d[same].mean() < 0.7 * d[diff].mean()
    np.fill_diagonal(d, np.inf)
    nearest_same = y[np.argmin(d, axis=1)] == y
    assert nearest_same.mean() >= 0.35  # chance: 2/23


# --------------------------------------------------------------------------- session effect


def test_session_effect_off_by_default_and_validated() -> None:
    assert "session_effect" not in small().to_dict()  # stamps of existing corpora stay current
    assert small(session_effect=1.0).to_dict()["session_effect"] == 1.0
    assert SyntheticCorpusConfig.from_dict(small(session_effect=0.5).to_dict()) == small(session_effect=0.5)
    for bad in (-0.1, 4.0, float("nan"), True, "1"):
        with pytest.raises(ConfigError, match="session_effect"):
            small(session_effect=bad)


def test_session_effect_changes_the_channel_per_recording_not_the_speech() -> None:
    sr = 16000
    x = synthesize_utterance(
        sample_voice(_voice_rng(0, 0, 0)), _utt_rng(0, 0, 0, 0), duration=1.0, sample_rate=sr, snr_db=None
    )
    assert apply_session(x, np.random.default_rng(0), 0.0, sr) is x

    def log_spectrum(y: np.ndarray) -> np.ndarray:
        frames = y[: len(y) // 512 * 512].reshape(-1, 512) * np.hanning(512)
        return np.log(np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0) + 1e-12)

    ys = [apply_session(x, np.random.default_rng(s), 1.0, sr) for s in range(4)]
    for y in ys:
        assert y.shape == x.shape and np.max(np.abs(y)) <= 0.9 + 1e-12
        assert np.corrcoef(x, y)[0, 1] > 0.5  # the same speech
    # per-recording channels: the long-term spectra of two sessions of one utterance differ by
    # several dB somewhere in the band; a weaker effect changes them less
    diff = [np.max(np.abs(log_spectrum(ys[0]) - log_spectrum(y))) for y in ys[1:]]
    assert min(diff) > np.log(10**0.3)  # > 3 dB
    weak = [apply_session(x, np.random.default_rng(s), 0.2, sr) for s in (0, 1)]
    assert np.max(np.abs(log_spectrum(weak[0]) - log_spectrum(weak[1]))) < diff[0]


def test_session_effect_corpus_keeps_the_speech_streams(corpus: Path, tmp_path: Path) -> None:
    cfg = small(n_speakers=2, session_effect=1.0)
    generate_corpus(tmp_path / "s", cfg)
    assert json.loads((tmp_path / "s" / "corpus.json").read_text())["config"]["session_effect"] == 1.0
    a, _ = sf.read(corpus / "wav" / "spk000" / "utt000.wav")
    b, _ = sf.read(tmp_path / "s" / "wav" / "spk000" / "utt000.wav")
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.corrcoef(a, b)[0, 1] > 0.5
