"""A deterministic synthetic speaker corpus (source-filter speech).

Each speaker is a small set of voice parameters drawn from a seed: mean pitch
(80-250 Hz, log-uniform), vocal-tract length factor (0.8-1.2, scales every
formant), personal vowel formant offsets and vowel preferences, glottal open
quotient and extra spectral tilt, jitter, shimmer, breathiness, speaking rate and
intonation range. An utterance is a random sequence of vowels (voiced: a jittered,
shimmering Rosenberg glottal pulse train through a cascade of formant
resonators), fricatives (filtered noise) and pauses, with a declining,
wiggling pitch contour, formant transitions between segments, a random level and
white noise at ``snr_db``.

Layout written by :func:`generate_corpus`::

    out_dir/wav/spk000/utt000.wav    target (model) speakers, 16-bit PCM
    out_dir/wav/bkg000/utt000.wav    background-only speakers (if any)
    out_dir/ubm.txt enroll.txt trials.txt speakers.tsv corpus.json

Randomness: speaker ``k`` draws its voice from ``SeedSequence(seed,
spawn_key=(kind, k))`` and its utterance ``u`` from ``SeedSequence(seed,
spawn_key=(kind, k, 1, u))``, so adding speakers or utterances does not change
the existing ones. Per speaker, utterances ``0 .. n_enroll-1`` are enrollment,
the next ``n_test`` are test, the rest background.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from joblib import Parallel, delayed
from scipy import fft as sp_fft

from gmmspeaker._io import atomic_write_bytes, atomic_write_text, make_temp_dir
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.corpora.lists import (
    write_enroll_list,
    write_trials,
    write_ubm_list,
)
from gmmspeaker.errors import ConfigError, DataError

__all__ = [
    "SyntheticCorpusConfig",
    "SpeakerVoice",
    "apply_session",
    "corpus_digest",
    "generate_corpus",
    "sample_voice",
    "synthesize_utterance",
]

logger = logging.getLogger(__name__)

#: Bump when the synthesis changes, so stored corpora are regenerated.
GENERATOR_VERSION = 1

_KIND_TARGET = 0
_KIND_BACKGROUND = 1
_KIND_TRIALS = 2

# Adult male vowel formants F1-F3 in Hz (Peterson & Barney 1952 averages); F4 added.
_VOWELS = np.array(
    [
        [270, 2290, 3010, 3500],  # i
        [390, 1990, 2550, 3500],  # I
        [530, 1840, 2480, 3500],  # E
        [660, 1720, 2410, 3500],  # ae
        [640, 1190, 2390, 3500],  # V
        [730, 1090, 2440, 3500],  # A
        [570, 840, 2410, 3500],  # O
        [440, 1020, 2240, 3500],  # U
        [300, 870, 2240, 3500],  # u
        [490, 1350, 1690, 3500],  # 3r
    ],
    dtype=np.float64,
)
_VOWEL_BW = np.array([60.0, 90.0, 140.0, 200.0])
_FRICATIVE = np.array([1500.0, 2500.0, 3300.0, 3900.0])
_FRICATIVE_BW = np.array([300.0, 400.0, 500.0, 600.0])
_SCHWA = np.array([500.0, 1500.0, 2500.0, 3500.0])
_BLOCK_S = 0.010  # formant update interval (s)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True, kw_only=True)
class SyntheticCorpusConfig:
    """What :func:`generate_corpus` writes.

    Attributes
    ----------
    n_speakers : int, default 20
        Target speakers (one model each), at least 2.
    n_ubm_utterances : int, default 10
        Background utterances per speaker: per target speaker when
        ``background_speakers == 0`` (UBM from the model speakers, other
        utterances, like FSDD), else per background speaker only (speaker-disjoint).
    n_enroll_utterances, n_test_utterances : int, default 5
        Enrollment / test utterances per target speaker.
    background_speakers : int, default 0
        Extra speakers that appear only in ``ubm.txt``; when > 0 the target
        speakers contribute nothing to it.
    duration : float, default 2.0
        Mean utterance duration in seconds.
    duration_jitter : float, default 0.2
        Durations are uniform in ``duration * (1 +- duration_jitter)``.
    sample_rate : int, default 8000
        Hz.
    snr_db : float or None, default 30.0
        White-noise signal-to-noise ratio in dB; ``None`` for no noise.
    n_nontarget_per_test : int or None, default None
        Nontarget models tried per test utterance (chosen at random); ``None``
        tries every model.
    seed : int, default 0
        Seed of everything.
    session_effect : float, default 0.0
        Strength of a per-recording session (channel) effect, 0 for none (the corpus is then
        byte-identical to one generated before this key existed). Each recording passes
        through its own random channel and gets its own coloured background noise
        (:func:`apply_session`), drawn from a separate random stream, so the speech is
        unchanged. At 1.0: spectral tilt, two peaking filters of N(0, 6 dB) gain, a
        low-pass between 0.2 and 0.5 times the sample rate, coloured noise at 20-30 dB SNR.
        How large that is against the speakers: see :func:`apply_session`.
    """

    n_speakers: int = 20
    n_ubm_utterances: int = 10
    n_enroll_utterances: int = 5
    n_test_utterances: int = 5
    background_speakers: int = 0
    duration: float = 2.0
    duration_jitter: float = 0.2
    sample_rate: int = 8000
    snr_db: float | None = 30.0
    n_nontarget_per_test: int | None = None
    seed: int = 0
    session_effect: float = 0.0

    def __post_init__(self) -> None:
        def check_int(name: str, low: int) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"synthetic corpus: {name} must be an integer >= {low}, got {value!r}")

        check_int("n_speakers", 2)
        check_int("n_ubm_utterances", 1)
        check_int("n_enroll_utterances", 1)
        check_int("n_test_utterances", 1)
        check_int("background_speakers", 0)
        check_int("sample_rate", 4000)
        check_int("seed", 0)
        if self.sample_rate > 96000:
            raise ConfigError(f"synthetic corpus: sample_rate must be <= 96000 Hz, got {self.sample_rate}")
        for name in ("duration", "duration_jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"synthetic corpus: {name} must be a finite number, got {value!r}")
        if not 0.0 <= self.duration_jitter < 0.9:
            raise ConfigError(
                f"synthetic corpus: duration_jitter must be in [0, 0.9), got {self.duration_jitter}"
            )
        if self.duration * (1.0 - self.duration_jitter) < 0.3:
            raise ConfigError(
                f"synthetic corpus: duration {self.duration} s with jitter {self.duration_jitter} "
                "allows utterances shorter than 0.3 s"
            )
        if self.snr_db is not None and (
            isinstance(self.snr_db, bool)
            or not isinstance(self.snr_db, (int, float))
            or not math.isfinite(self.snr_db)
        ):
            raise ConfigError(
                f"synthetic corpus: snr_db must be a finite number or None, got {self.snr_db!r}"
            )
        se = self.session_effect
        if (
            isinstance(se, bool)
            or not isinstance(se, (int, float))
            or not (math.isfinite(se) and 0 <= se <= 3)
        ):
            raise ConfigError(f"synthetic corpus: session_effect must be a number in [0, 3], got {se!r}")
        k = self.n_nontarget_per_test
        if k is not None and (
            isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_speakers - 1
        ):
            raise ConfigError(
                f"synthetic corpus: n_nontarget_per_test must be None or in [1, {self.n_speakers - 1}], got {k!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every field (``session_effect`` only when non-zero, so
        the stamps of corpora generated before it existed stay current)."""
        d = asdict(self)
        if not d["session_effect"]:
            del d["session_effect"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntheticCorpusConfig:
        """Build from a dict; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"synthetic corpus: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)


# --------------------------------------------------------------------------- voices


@dataclass(frozen=True, kw_only=True)
class SpeakerVoice:
    """Voice parameters of one synthetic speaker.

    Attributes
    ----------
    f0 : float
        Mean pitch in Hz (80-250).
    vtl : float
        Formant scale factor (0.8-1.2; 1 = average adult male).
    formant_offsets : ndarray, shape (10, 4), float64
        Multiplicative per-vowel, per-formant personal offsets (around 1).
    vowel_probs : ndarray, shape (10,), float64
        How often the speaker uses each vowel (sums to 1).
    bandwidth_scale : float
        Formant bandwidth factor.
    open_quotient : float
        Glottal open quotient (0.4-0.75); larger is softer, more tilted.
    tilt : float
        Extra one-pole low-pass coefficient of the glottal source (0-0.7).
    jitter, shimmer : float
        Relative cycle-to-cycle standard deviation of period and amplitude.
    breathiness : float
        Aspiration noise level relative to the voiced source.
    rate : float
        Segment duration factor (larger is slower).
    intonation : float
        Relative standard deviation of per-vowel pitch accents.
    """

    f0: float
    vtl: float
    formant_offsets: FloatArray
    vowel_probs: FloatArray
    bandwidth_scale: float
    open_quotient: float
    tilt: float
    jitter: float
    shimmer: float
    breathiness: float
    rate: float
    intonation: float


def sample_voice(rng: np.random.Generator) -> SpeakerVoice:
    """Draw the voice of one speaker.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    SpeakerVoice
    """
    return SpeakerVoice(
        f0=float(np.exp(rng.uniform(np.log(80.0), np.log(250.0)))),
        vtl=float(rng.uniform(0.8, 1.2)),
        formant_offsets=1.0 + 0.04 * rng.standard_normal((len(_VOWELS), 4)),
        vowel_probs=rng.dirichlet(np.full(len(_VOWELS), 1.5)),
        bandwidth_scale=float(rng.uniform(0.8, 1.4)),
        open_quotient=float(rng.uniform(0.4, 0.75)),
        tilt=float(rng.uniform(0.0, 0.7)),
        jitter=float(rng.uniform(0.003, 0.02)),
        shimmer=float(rng.uniform(0.02, 0.10)),
        breathiness=float(rng.uniform(0.01, 0.12)),
        rate=float(rng.uniform(0.8, 1.25)),
        intonation=float(rng.uniform(0.03, 0.10)),
    )


# --------------------------------------------------------------------------- synthesis


def _smooth(x: FloatArray, width: int) -> FloatArray:
    """Triangular moving average of about ``width`` samples along axis 0.

    Two passes of a box filter (cumulative sums: O(n)); same length, edges padded.
    """
    half = width // 2
    if half < 1:
        return x
    out = x
    for _ in range(2):
        padded = np.pad(out, [(half, half)] + [(0, 0)] * (x.ndim - 1), mode="edge")
        c = np.cumsum(padded, axis=0)
        c = np.concatenate([np.zeros((1,) + c.shape[1:]), c], axis=0)
        out = (c[2 * half + 1 :] - c[: -2 * half - 1]) / (2 * half + 1)
    return out


def _segments(
    voice: SpeakerVoice, rng: np.random.Generator, n: int, sr: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Random segment sequence covering ``n`` samples.

    Returns per-segment lengths (samples), type (0 pause, 1 vowel, 2 fricative),
    formant targets (n_seg, 4) in Hz, bandwidths (n_seg, 4) in Hz and levels.
    """
    kinds: list[int] = []
    lengths: list[int] = []
    vowels: list[int] = []
    total = 0

    def add(kind: int, seconds: float) -> None:
        nonlocal total
        length = max(1, int(round(seconds * voice.rate * sr)))
        kinds.append(kind)
        lengths.append(length)
        vowels.append(int(rng.choice(len(_VOWELS), p=voice.vowel_probs)) if kind == 1 else -1)
        total += length

    add(0, rng.uniform(0.04, 0.12))
    while total < n:
        if rng.random() < 0.35:
            add(2, rng.uniform(0.05, 0.12))
        add(1, rng.uniform(0.08, 0.22))
        if rng.random() < 0.15:
            add(0, rng.uniform(0.05, 0.18))
    kind = np.array(kinds)
    vowel = np.array(vowels)
    formants = np.tile(_SCHWA, (len(kinds), 1))
    bandwidth = np.tile(_VOWEL_BW, (len(kinds), 1))
    is_v = kind == 1
    formants[is_v] = _VOWELS[vowel[is_v]] * voice.formant_offsets[vowel[is_v]]
    is_f = kind == 2
    formants[is_f] = _FRICATIVE * rng.uniform(0.9, 1.1, size=(int(is_f.sum()), 1))
    bandwidth[is_f] = _FRICATIVE_BW
    formants = formants * voice.vtl * (1.0 + 0.02 * rng.standard_normal(formants.shape))
    bandwidth = bandwidth * voice.bandwidth_scale
    level = np.where(kind == 0, 0.0, 10.0 ** (rng.normal(0.0, 2.0, size=len(kinds)) / 20.0))
    level[is_f] *= rng.uniform(0.15, 0.4)
    return np.array(lengths), kind.astype(np.float64), formants, bandwidth, level


def _glottal(phase: FloatArray, open_quotient: float) -> FloatArray:
    """Rosenberg glottal flow for phase in cycles (fractional part used)."""
    frac = phase - np.floor(phase)
    tp = 0.65 * open_quotient
    tn = 0.35 * open_quotient
    rising = 0.5 * (1.0 - np.cos(np.pi * frac / tp))
    falling = np.cos(0.5 * np.pi * (frac - tp) / tn)
    return np.where(frac < tp, rising, np.where(frac < tp + tn, falling, 0.0))


def _block_filter(x: FloatArray, a1: FloatArray, a2: FloatArray, *, block: int, tail: int) -> FloatArray:
    """Time-varying all-pole filtering of ``x`` by overlap-add in the frequency domain.

    Block ``b`` of the input (``block`` samples) is filtered, with its ringing
    (``tail`` samples), by the cascade of resonators ``1 / (1 + a1 z^-1 + a2 z^-2)``
    of that block, scaled to unit gain at DC; the filtered blocks are summed. Every
    input sample thus goes through the filter of its own block (source-time-variant
    filtering), with one batched FFT instead of a loop over blocks.

    Parameters
    ----------
    x : ndarray, shape (n,)
        Excitation.
    a1, a2 : ndarray, shape (n_blocks, n_resonators)
        Resonator coefficients per block, ``n_blocks = ceil(n / block)``.
    block, tail : int
        Block length and length of the kept impulse-response tail, in samples.

    Returns
    -------
    ndarray, shape (n,), float64
    """
    n = x.shape[0]
    n_blocks = a1.shape[0]
    nfft = 1 << int(np.ceil(np.log2(block + tail)))
    frames = np.zeros((n_blocks, nfft))
    padded = np.zeros(n_blocks * block)
    padded[:n] = x
    frames[:, :block] = padded.reshape(n_blocks, block)
    # denominator polynomial of the cascade per block, then A(e^{jw}) by one batched FFT
    n_res = a1.shape[1]
    poly = np.zeros((n_blocks, 2 * n_res + 1))
    poly[:, 0] = 1.0
    for i in range(n_res):  # a handful of resonators, vectorised over blocks
        prev = poly.copy()
        poly[:, 1:] += a1[:, i : i + 1] * prev[:, :-1]
        poly[:, 2:] += a2[:, i : i + 1] * prev[:, :-2]
    gain = np.prod(1.0 + a1 + a2, axis=1)  # unit gain at DC
    response = gain[:, None] / sp_fft.rfft(poly, n=nfft, axis=1)
    y = sp_fft.irfft(sp_fft.rfft(frames, axis=1) * response, n=nfft, axis=1)
    out = np.zeros(n_blocks * block + nfft)
    # overlap-add: block b starts at b * block; add in ceil(nfft / block) strided passes
    for lag in range(0, nfft, block):
        width = min(block, nfft - lag)
        out_view = out[lag : lag + n_blocks * block].reshape(n_blocks, block)
        out_view[:, :width] += y[:, lag : lag + width]
    return out[:n]


def synthesize_utterance(
    voice: SpeakerVoice,
    rng: np.random.Generator,
    *,
    duration: float,
    sample_rate: int,
    snr_db: float | None,
) -> FloatArray:
    """Synthesize one utterance of ``voice``.

    Parameters
    ----------
    voice : SpeakerVoice
        The speaker.
    rng : numpy.random.Generator
        Randomness of this utterance (segments, pitch contour, noise).
    duration : float
        Length in seconds.
    sample_rate : int
        Hz.
    snr_db : float or None
        White-noise SNR in dB, ``None`` for none.

    Returns
    -------
    ndarray, shape (round(duration * sample_rate),), float64
        Samples with peak <= 0.9 and RMS over active speech around 0.05 (-26 dBFS).
    """
    sr = sample_rate
    n = int(round(duration * sr))
    lengths, kind, formants, bandwidth, level = _segments(voice, rng, n, sr)
    seg = np.repeat(np.arange(len(lengths)), lengths)[:n]
    t = np.arange(n) / sr

    # amplitude envelopes with 10 ms onsets/offsets
    ramp = max(1, int(0.010 * sr))
    env_v = _smooth(np.where(kind[seg] == 1, level[seg], 0.0), ramp)
    env_f = _smooth(np.where(kind[seg] == 2, level[seg], 0.0), ramp)

    # pitch: session shift, declination, slow wiggle, per-vowel accents
    accents = rng.normal(0.0, voice.intonation, size=len(lengths))
    log_f0 = (
        np.log(voice.f0)
        + rng.normal(0.0, 0.04)
        - rng.uniform(0.05, 0.15) * (t / max(duration, 1e-9) - 0.5)
        + 0.03 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
        + _smooth(accents[seg], max(1, int(0.05 * sr)))
    )
    f0 = np.exp(log_f0)

    # jittered phase: per-cycle period perturbation, then per-cycle shimmer
    phase0 = np.cumsum(f0) / sr
    n_cycles = int(phase0[-1] * 1.5) + 8
    jit = 1.0 + voice.jitter * rng.standard_normal(n_cycles)
    phase = np.cumsum(f0 * jit[np.minimum(phase0.astype(np.int64), n_cycles - 1)]) / sr
    shim = 1.0 + voice.shimmer * rng.standard_normal(n_cycles)
    cycle = np.minimum(phase.astype(np.int64), n_cycles - 1)
    pulse = _glottal(phase, voice.open_quotient)
    flow = pulse * shim[cycle]
    source = np.diff(flow, prepend=0.0)  # lip radiation: derivative of the flow
    if voice.tilt > 0:
        from scipy.signal import lfilter  # lazily: scipy.signal imports scipy.stats (~0.8 s)

        source = lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], source)
    source = source / (np.sqrt(np.mean(source**2)) + 1e-12)
    noise = rng.standard_normal(n)
    aspiration = voice.breathiness * noise * (0.5 + 0.5 * pulse)
    fric = np.diff(rng.standard_normal(n + 1))  # tilted up: fricative noise
    excitation = (source + aspiration) * env_v + fric * env_f

    # formant tracks per 10 ms block, with coarticulation smoothing
    block = max(1, int(round(_BLOCK_S * sr)))
    n_blocks = -(-n // block)
    centre = np.minimum(np.arange(n_blocks) * block + block // 2, n - 1)
    fb = _smooth(formants[seg[centre]], 5)
    bb = _smooth(bandwidth[seg[centre]], 5)
    # cascade of resonators; resonators above 0.45 sr are off
    r = np.exp(-np.pi * bb / sr)
    a1 = np.where(fb < 0.45 * sr, -2.0 * r * np.cos(2.0 * np.pi * fb / sr), 0.0)
    a2 = np.where(fb < 0.45 * sr, r * r, 0.0)
    out = _block_filter(excitation, a1, a2, block=block, tail=int(np.ceil(0.05 * sr)))

    active = (env_v + env_f) > 0.05
    rms = np.sqrt(np.mean(out[active] ** 2)) if active.any() else np.sqrt(np.mean(out**2))
    out *= 0.05 * 10.0 ** (rng.normal(0.0, 1.5) / 20.0) / (rms + 1e-12)
    if snr_db is not None:
        signal_rms = np.sqrt(np.mean(out**2))
        out += rng.standard_normal(n) * signal_rms * 10.0 ** (-snr_db / 20.0)
    peak = np.max(np.abs(out))
    if peak > 0.9:  # no clipping: scale loud utterances down
        out *= 0.9 / peak
    return out


# --------------------------------------------------------------------------- corpus


def apply_session(x: FloatArray, rng: np.random.Generator, strength: float, sample_rate: int) -> FloatArray:
    """One recording's session: a random channel (tilt, two peaks, band limit), then coloured noise.

    ``strength`` scales every draw (0 returns ``x`` unchanged): spectral tilt by the FIR
    ``[1, a]`` with ``a ~ U(-0.5, 0.5) * strength`` (clipped to +-0.9), two peaking biquads
    (RBJ cookbook, Q = 1.5) at log-uniform centres in [200 Hz, 0.4 sr] with gains
    ``N(0, (6 dB * strength)^2)``, a 4th-order Butterworth low-pass at
    ``0.5 sr * exp(-U(0, 0.9) * min(strength, 1))`` (from 1.0 and at 16 kHz: 3.2-8 kHz,
    telephone-like to full band), and white noise through a one-pole filter (pole ``U(-0.9, 0.9)``:
    high- to low-pass) at an SNR of ``U(30 - 10 * min(strength, 2), 30)`` dB. The
    features' CMN removes most of a pure channel; the band limit (which changes the shape
    of the spectrum, not only its mean) and the noise floor in pauses are what survive it.

    Size, on the corpus of ``recipes/synthetic-session.yaml`` (16 kHz, MFCC+CMN, 256-component
    UBM) with ``session_effect`` 0 and 2.0: the relevance-MAP supervector offsets
    (``f / (n + 16)``, whitened) of the 100 background speakers x 10 recordings have a
    within-speaker / between-speaker variance ratio (traces) of 4.0 without and 5.5 with
    the effect -- the within-speaker spread (mostly the recordings' own phonetic content) stays
    at 40.6 / 40.5 while the between-speaker spread of speaker means falls from 10.1 to 7.4, as
    channel and noise mask part of the voice -- and the GMM-UBM EER rises from 6.9 % to 12.0 %.
    At 1.0 (no noise below 20 dB SNR) GMM-UBM lost nothing measurable (6.5 % on a smaller
    corpus); an earlier version with noise down to 0 dB SNR raised every system's EER
    (GMM-UBM 7.2 -> 15.8 %, i-vector 6.3 -> 10.4 %) and ISV removed little of it: lost speech
    information rather than a removable session offset.
    """
    if strength <= 0:
        return x
    from scipy.signal import butter, lfilter

    sr = sample_rate
    a = float(np.clip(rng.uniform(-0.5, 0.5) * strength, -0.9, 0.9))
    y = lfilter([1.0, a], [1.0], x)
    for _ in range(2):
        fc = np.exp(rng.uniform(np.log(200.0), np.log(0.4 * sr)))
        A = 10.0 ** (rng.normal(0.0, 6.0 * strength) / 40.0)
        w0 = 2.0 * np.pi * fc / sr
        alpha = np.sin(w0) / (2.0 * 1.5)
        b = np.array([1.0 + alpha * A, -2.0 * np.cos(w0), 1.0 - alpha * A])
        den = np.array([1.0 + alpha / A, -2.0 * np.cos(w0), 1.0 - alpha / A])
        y = lfilter(b / den[0], den / den[0], y)
    cutoff = 0.5 * np.exp(-rng.uniform(0.0, 0.9) * min(strength, 1.0))  # fraction of sr
    if cutoff < 0.45:
        bb, ab = butter(4, 2.0 * cutoff)
        y = lfilter(bb, ab, y)
    pole = rng.uniform(-0.9, 0.9)
    noise = lfilter([1.0], [1.0, -pole], rng.standard_normal(y.size))
    snr = rng.uniform(30.0 - 10.0 * min(strength, 2.0), 30.0)
    rms = np.sqrt(np.mean(y**2))
    y = y + noise * rms * 10.0 ** (-snr / 20.0) / (np.sqrt(np.mean(noise**2)) + 1e-12)
    peak = np.max(np.abs(y))
    if peak > 0.9:
        y *= 0.9 / peak
    return y


def _session_rng(seed: int, kind: int, speaker: int, utt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, speaker, 2, utt)))


def _voice_rng(seed: int, kind: int, speaker: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, speaker)))


def _utt_rng(seed: int, kind: int, speaker: int, utt: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, speaker, 1, utt)))


def _name(prefix: str, index: int, count: int) -> str:
    return f"{prefix}{index:0{max(3, len(str(count - 1)))}d}"


def _stamp(config: SyntheticCorpusConfig) -> dict[str, Any]:
    return {
        "generator": "gmmspeaker.corpora.synthetic",
        "version": GENERATOR_VERSION,
        "config": config.to_dict(),
    }


def _outputs(root: Path) -> dict[str, Path]:
    return {
        "ubm": root / "ubm.txt",
        "enroll": root / "enroll.txt",
        "trials": root / "trials.txt",
        "speakers": root / "speakers.tsv",
        "config": root / "corpus.json",
    }


def _is_current(root: Path, config: SyntheticCorpusConfig) -> bool:
    stamp = root / "corpus.json"
    if not stamp.is_file():
        return False
    try:
        stored = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stored == _stamp(config) and all(p.is_file() for p in _outputs(root).values())


def _write_wav(path: Path, x: FloatArray, sr: int) -> None:
    pcm = np.round(x * 32768.0).clip(-32768, 32767).astype(np.int16)
    buf = io.BytesIO()  # libsndfile says only "System error" on a full disk: write the bytes here
    sf.write(buf, pcm, sr, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buf.getbuffer(), fsync=False)


def _write_speaker(
    root: Path,
    cfg: SyntheticCorpusConfig,
    prefix: str,
    kind: int,
    k: int,
    count: int,
    n_utts: int,
    width: int,
) -> tuple[str, list[str]]:
    """Synthesize and write one speaker's files; return its speakers.tsv row and paths."""
    spk = _name(prefix, k, count)
    voice = sample_voice(_voice_rng(cfg.seed, kind, k))
    (root / "wav" / spk).mkdir(parents=True)
    paths: list[str] = []
    for u in range(n_utts):
        rng = _utt_rng(cfg.seed, kind, k, u)
        dur = cfg.duration * (1.0 + cfg.duration_jitter * rng.uniform(-1.0, 1.0))
        x = synthesize_utterance(voice, rng, duration=dur, sample_rate=cfg.sample_rate, snr_db=cfg.snr_db)
        if cfg.session_effect:
            x = apply_session(x, _session_rng(cfg.seed, kind, k, u), cfg.session_effect, cfg.sample_rate)
        rel = f"wav/{spk}/{_name('utt', u, width)}.wav"
        _write_wav(root / rel, x, cfg.sample_rate)
        paths.append(rel)
    role = "target" if kind == _KIND_TARGET else "background"
    row = (
        f"{spk}\t{role}\t{voice.f0:.2f}\t{voice.vtl:.4f}\t{voice.open_quotient:.4f}\t"
        f"{voice.tilt:.4f}\t{voice.jitter:.4f}\t{voice.shimmer:.4f}\t{voice.breathiness:.4f}\t"
        f"{voice.rate:.4f}\t{n_utts}\n"
    )
    return row, paths


def _write_corpus(root: Path, config: SyntheticCorpusConfig, n_jobs: int) -> None:
    cfg = config
    n_eval = cfg.n_enroll_utterances + cfg.n_test_utterances
    per_target = n_eval + (cfg.n_ubm_utterances if cfg.background_speakers == 0 else 0)
    jobs = [("spk", _KIND_TARGET, k, cfg.n_speakers, per_target) for k in range(cfg.n_speakers)]
    jobs += [
        ("bkg", _KIND_BACKGROUND, k, cfg.background_speakers, cfg.n_ubm_utterances)
        for k in range(cfg.background_speakers)
    ]
    width = max(per_target, cfg.n_ubm_utterances)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_write_speaker)(root, cfg, prefix, kind, k, count, n_utts, width)
        for prefix, kind, k, count, n_utts in jobs
    )

    ubm: list[str] = []
    enroll: dict[str, list[str]] = {}
    tests: list[tuple[str, str]] = []
    rows: list[str] = []
    for (prefix, kind, k, count, _), (row, paths) in zip(jobs, results):
        spk = _name(prefix, k, count)
        rows.append(row)
        for u, rel in enumerate(paths):
            if kind == _KIND_BACKGROUND or u >= n_eval:
                ubm.append(rel)
            elif u < cfg.n_enroll_utterances:
                enroll.setdefault(spk, []).append(rel)
            else:
                tests.append((spk, rel))

    models = sorted(enroll)
    if cfg.n_nontarget_per_test is None:
        pairs = {(m, test) for spk, test in tests for m in models}
    else:
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_KIND_TRIALS,)))
        pairs = set()
        for spk, test in tests:
            others = [m for m in models if m != spk]
            chosen = rng.choice(len(others), size=cfg.n_nontarget_per_test, replace=False)
            pairs.add((spk, test))
            pairs.update((others[i], test) for i in chosen)
    speaker_of = dict((test, spk) for spk, test in tests)
    write_ubm_list(root / "ubm.txt", sorted(ubm))
    write_enroll_list(root / "enroll.txt", {m: enroll[m] for m in models})
    write_trials(root / "trials.txt", ((m, test, speaker_of[test] == m) for m, test in sorted(pairs)))
    atomic_write_text(
        root / "speakers.tsv",
        "speaker\trole\tf0_hz\tvtl\topen_quotient\ttilt\tjitter\tshimmer\tbreathiness\trate\tutterances\n"
        + "".join(rows),
    )
    # written last: its presence marks a complete corpus
    atomic_write_text(root / "corpus.json", json.dumps(_stamp(cfg), indent=2, sort_keys=True) + "\n")


def generate_corpus(out_dir: PathLike, config: SyntheticCorpusConfig, *, n_jobs: int = 1) -> dict[str, Path]:
    """Write the synthetic corpus, unless ``out_dir`` already holds it.

    Parameters
    ----------
    out_dir : path-like
        Corpus folder. If it holds ``corpus.json`` for the same config and
        generator version (and the lists), nothing is done. Otherwise the corpus is
        built in a temporary sibling folder and renamed into place; a previous
        corpus there is replaced. A non-empty folder that is not a corpus is
        never touched.
    config : SyntheticCorpusConfig
        What to generate.
    n_jobs : int, default 1
        joblib workers (one speaker per task). The files do not depend on it.

    Returns
    -------
    dict of str to Path
        ``{"ubm", "enroll", "trials", "speakers", "config"}`` -> files; list paths
        are relative to ``out_dir`` (the corpus root).

    Raises
    ------
    DataError
        ``out_dir`` exists, is not empty and is not a synthetic corpus.
    """
    root = Path(out_dir)
    if _is_current(root, config):
        logger.info("%s: synthetic corpus up to date, not regenerated", root)
        return _outputs(root)
    if root.exists():
        if not root.is_dir():
            raise DataError(f"{root}: exists and is not a directory; cannot write a corpus there")
        if any(root.iterdir()) and not (root / "corpus.json").is_file():
            raise DataError(
                f"{root}: folder is not empty and holds no corpus.json; refusing to replace it "
                "with a synthetic corpus (choose another folder)"
            )
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(root.parent, f".{root.name}.tmp-")  # the umask's mode, not 0o700
    try:
        logger.info("%s: generating synthetic corpus (%s)", root, config)
        _write_corpus(tmp, config, n_jobs)
        if root.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, trash / "old")
            os.replace(tmp, root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _outputs(root)


def corpus_digest(root: PathLike) -> str:
    """SHA-256 over every file of a corpus folder (relative names and bytes).

    Parameters
    ----------
    root : path-like
        Corpus folder.

    Returns
    -------
    str
        Hex digest; equal digests mean byte-identical corpora.
    """
    base = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        h.update(path.relative_to(base).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()
