"""Mel-frequency cepstral coefficients, computed with numpy and scipy.fft only.

The pipeline, for a 1-D signal ``x`` sampled at ``sample_rate`` Hz:

1. framing: frames of ``frame_length`` samples every ``hop_length`` samples, built as a
   strided view (no copy); with ``center=True`` the signal is first zero-padded by
   ``n_fft // 2`` samples on each side (librosa's convention), otherwise only whole frames
   are kept (Kaldi's ``snip_edges=true``);
2. pre-emphasis of the whole signal, ``y[n] = x[n] - p x[n-1]`` (``y[0] = (1 - p) x[0]``),
   then per frame: optional removal of the frame's mean, window (Hamming, Povey or periodic
   Hann); the frame energy used by the VAD is computed apart, on the raw frames;
3. ``|rfft|**power`` on ``n_fft`` points (frames zero-padded on the right);
4. a mel filterbank and a DCT-II (orthonormal), both as matrix products;
5. optional liftering (HTK/Kaldi convention: c0 is left unchanged).

librosa is never imported here (its import costs about a second). Everything runs in
float32; the filterbank, window and DCT matrices are cached per configuration.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
import scipy.fft

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError

__all__ = [
    "SpectralParams",
    "hz_to_mel",
    "mel_to_hz",
    "mel_filterbank",
    "dct_matrix",
    "lifter_weights",
    "frame_window",
    "frame_signal",
    "n_frames",
    "preemphasize",
    "frame_energy",
    "log_mel_spectrum",
    "cepstra",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- mel scale
def hz_to_mel(freq: FloatArray | float, *, scale: str = "htk") -> FloatArray:
    """Convert frequencies to mels.

    Parameters
    ----------
    freq : array_like of float
        Frequencies in Hz.
    scale : {"htk", "slaney"}
        ``"htk"``: ``2595 log10(1 + f / 700)``. ``"slaney"``: linear below 1 kHz
        (``3 f / 200``), logarithmic above (the Auditory Toolbox / librosa default).

    Returns
    -------
    ndarray of float64, same shape as ``freq``
        Mels.
    """
    f = np.asarray(freq, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    if scale == "slaney":
        f_sp = 200.0 / 3.0
        min_log_hz = 1000.0
        min_log_mel = min_log_hz / f_sp
        logstep = np.log(6.4) / 27.0
        linear = f / f_sp
        with np.errstate(divide="ignore"):
            logpart = min_log_mel + np.log(np.maximum(f, 1e-300) / min_log_hz) / logstep
        return np.where(f >= min_log_hz, logpart, linear)
    raise ConfigError(f"mel_scale: expected 'htk' or 'slaney', got {scale!r}")


def mel_to_hz(mels: FloatArray | float, *, scale: str = "htk") -> FloatArray:
    """Convert mels to frequencies in Hz; the inverse of :func:`hz_to_mel`.

    Parameters
    ----------
    mels : array_like of float
        Mels.
    scale : {"htk", "slaney"}
        Mel scale, see :func:`hz_to_mel`.

    Returns
    -------
    ndarray of float64, same shape as ``mels``
        Frequencies in Hz.
    """
    m = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if scale == "slaney":
        f_sp = 200.0 / 3.0
        min_log_hz = 1000.0
        min_log_mel = min_log_hz / f_sp
        logstep = np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)
    raise ConfigError(f"mel_scale: expected 'htk' or 'slaney', got {scale!r}")


@functools.lru_cache(maxsize=32)
def mel_filterbank(
    *,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    fmin: float,
    fmax: float,
    scale: str = "htk",
    norm: str = "none",
) -> FloatArray:
    """Triangular mel filterbank, ready to right-multiply a power spectrum.

    The triangles are linear in Hz between ``n_mels + 2`` points equally spaced on the
    mel scale (the construction of librosa.filters.mel). With ``norm="slaney"`` each
    triangle is scaled to unit area (``2 / (f[i+2] - f[i])``).

    Parameters
    ----------
    sample_rate : int
        Sampling rate in Hz.
    n_fft : int
        FFT size; the spectrum has ``n_fft // 2 + 1`` bins.
    n_mels : int
        Number of filters.
    fmin, fmax : float
        Lowest and highest edge frequencies in Hz.
    scale : {"htk", "slaney"}
        Mel scale.
    norm : {"none", "slaney"}
        Filter normalisation.

    Returns
    -------
    ndarray of float32, shape (n_fft // 2 + 1, n_mels)
        Filter weights (read-only; cached).
    """
    n_bins = n_fft // 2 + 1
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_bins)
    mel_points = np.linspace(hz_to_mel(fmin, scale=scale), hz_to_mel(fmax, scale=scale), n_mels + 2)
    hz_points = mel_to_hz(mel_points, scale=scale)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    elif norm != "none":
        raise ConfigError(f"mel_norm: expected 'none' or 'slaney', got {norm!r}")
    empty = np.flatnonzero(weights.max(axis=1) == 0.0)
    if empty.size:
        logger.warning(
            "mel filterbank: %d of %d filters are empty (n_mels=%d too many for n_fft=%d); "
            "use fewer mels or a larger n_fft",
            empty.size,
            n_mels,
            n_mels,
            n_fft,
        )
    out = np.ascontiguousarray(weights.T, dtype=np.float32)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=32)
def dct_matrix(n_in: int, n_out: int) -> FloatArray:
    """Orthonormal DCT-II basis, as ``scipy.fft.dct(x, type=2, norm="ortho")[:n_out]``.

    Parameters
    ----------
    n_in : int
        Input length (number of mel bands).
    n_out : int
        Number of coefficients kept (``n_out <= n_in``).

    Returns
    -------
    ndarray of float32, shape (n_in, n_out)
        ``log_mel @ D`` gives the cepstra (read-only; cached).
    """
    m = np.arange(n_in, dtype=np.float64)
    k = np.arange(n_out, dtype=np.float64)
    basis = np.cos(np.pi * (2.0 * m[:, None] + 1.0) * k[None, :] / (2.0 * n_in))
    basis *= np.sqrt(2.0 / n_in)
    basis[:, 0] = np.sqrt(1.0 / n_in)
    out = np.ascontiguousarray(basis, dtype=np.float32)
    out.setflags(write=False)
    return out


def lifter_weights(n_mfcc: int, lifter: int) -> FloatArray:
    """Sinusoidal lifter ``1 + (L / 2) sin(pi n / L)`` for ``n = 0 .. n_mfcc - 1``.

    This is the HTK / Kaldi convention, which leaves c0 unchanged. (librosa uses
    ``n = 1 .. n_mfcc``, i.e. its weights are shifted by one coefficient.)

    Parameters
    ----------
    n_mfcc : int
        Number of coefficients.
    lifter : int
        Lifter parameter ``L``; 0 means no liftering (all ones).

    Returns
    -------
    ndarray of float32, shape (n_mfcc,)
    """
    if lifter <= 0:
        return np.ones(n_mfcc, dtype=np.float32)
    n = np.arange(n_mfcc, dtype=np.float64)
    return (1.0 + 0.5 * lifter * np.sin(np.pi * n / lifter)).astype(np.float32)


@functools.lru_cache(maxsize=32)
def frame_window(kind: str, length: int) -> FloatArray:
    """Analysis window.

    Parameters
    ----------
    kind : {"hamming", "povey", "hann", "rectangular"}
        ``"hamming"``: symmetric, ``0.54 - 0.46 cos(2 pi n / (N - 1))`` (HTK, Kaldi).
        ``"povey"``: ``(0.5 - 0.5 cos(2 pi n / (N - 1))) ** 0.85`` (Kaldi's default).
        ``"hann"``: periodic, ``0.5 - 0.5 cos(2 pi n / N)`` (scipy ``get_window("hann")``,
        librosa's default). ``"rectangular"``: ones.
    length : int
        Window length ``N`` in samples.

    Returns
    -------
    ndarray of float32, shape (length,)
        The window (read-only; cached).
    """
    n = np.arange(length, dtype=np.float64)
    denom = max(length - 1, 1)
    if kind == "hamming":
        w = 0.54 - 0.46 * np.cos(2.0 * np.pi * n / denom)
    elif kind == "povey":
        w = (0.5 - 0.5 * np.cos(2.0 * np.pi * n / denom)) ** 0.85
    elif kind == "hann":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)
    elif kind == "rectangular":
        w = np.ones(length)
    else:
        raise ConfigError(f"window: expected 'hamming', 'povey', 'hann' or 'rectangular', got {kind!r}")
    out = w.astype(np.float32)
    out.setflags(write=False)
    return out


# --------------------------------------------------------------------------- framing
@dataclass(frozen=True, kw_only=True)
class SpectralParams:
    """Sample-domain parameters of the MFCC, derived from a FeatureConfig.

    Attributes
    ----------
    sample_rate : int
        Hz.
    frame_length : int
        Samples per analysis frame (window length).
    hop_length : int
        Samples between frame starts.
    n_fft : int
        FFT size (>= frame_length).
    window : str
        Window kind, see :func:`frame_window`.
    center : bool
        Zero-pad ``n_fft // 2`` samples on each side before framing (librosa) instead of
        keeping only whole frames (Kaldi ``snip_edges``).
    preemphasis : float
        Pre-emphasis coefficient (0 disables it).
    remove_dc : bool
        Subtract each (pre-emphasised) frame's mean before the window.
    power : float
        Exponent of the magnitude spectrum (2 = power, 1 = magnitude).
    n_mels : int
        Mel bands.
    fmin, fmax : float
        Filterbank edges in Hz.
    mel_scale, mel_norm : str
        See :func:`mel_filterbank`.
    log : {"ln", "db"}
        Natural log, or ``10 log10`` (librosa's ``power_to_db`` with ``ref=1``).
    log_floor : float
        Mel energies are floored at this value before the log (librosa's ``amin``).
    top_db : float or None
        With ``log="db"``, clip log-mel values to ``max - top_db`` over the utterance.
    n_mfcc : int
        Cepstral coefficients kept.
    lifter : int
        Lifter parameter (0 = none).
    """

    sample_rate: int
    frame_length: int
    hop_length: int
    n_fft: int
    window: str
    center: bool
    preemphasis: float
    remove_dc: bool
    power: float
    n_mels: int
    fmin: float
    fmax: float
    mel_scale: str
    mel_norm: str
    log: str
    log_floor: float
    top_db: float | None
    n_mfcc: int
    lifter: int


def n_frames(n_samples: int, params: SpectralParams) -> int:
    """Number of frames :func:`frame_signal` yields for ``n_samples`` samples (may be 0)."""
    if params.center:
        padded = n_samples + 2 * (params.n_fft // 2)
        if n_samples <= 0 or padded < params.n_fft:
            return 0
        return 1 + (padded - params.n_fft) // params.hop_length
    if n_samples < params.frame_length:
        return 0
    return 1 + (n_samples - params.frame_length) // params.hop_length


def frame_signal(signal: FloatArray, params: SpectralParams) -> FloatArray:
    """Cut a signal into overlapping frames (a strided view when ``center=False``).

    Parameters
    ----------
    signal : ndarray of float32, shape (n_samples,)
        The signal.
    params : SpectralParams
        Framing parameters.

    Returns
    -------
    ndarray of float32, shape (n_frames, frame_length)
        Read-only view of the frames; ``n_frames`` as :func:`n_frames` (may be 0).
    """
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if params.center:
        pad = params.n_fft // 2
        x = np.pad(x, (pad, pad))
        # librosa frames n_fft samples and centres a shorter window inside them.
        offset = (params.n_fft - params.frame_length) // 2
        x = x[offset:]
        n = n_frames(signal.shape[0], params)
    else:
        n = n_frames(x.shape[0], params)
    if n == 0:
        return np.zeros((0, params.frame_length), dtype=np.float32)
    stride = x.strides[0]
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, params.frame_length), strides=(params.hop_length * stride, stride), writeable=False
    )


def preemphasize(signal: FloatArray, coef: float) -> FloatArray:
    """Signal-level pre-emphasis ``y[n] = x[n] - coef x[n-1]``, ``y[0] = (1 - coef) x[0]``.

    Parameters
    ----------
    signal : ndarray of float, shape (n_samples,)
    coef : float
        Pre-emphasis coefficient (0 returns a float32 copy-free view when possible).

    Returns
    -------
    ndarray of float32, shape (n_samples,)
    """
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if coef == 0.0 or x.size == 0:
        return x
    c = np.float32(coef)
    y = np.empty_like(x)
    np.multiply(x[:-1], -c, out=y[1:])
    y[1:] += x[1:]
    y[0] = x[0] * (np.float32(1.0) - c)
    return y


def frame_energy(signal: FloatArray, params: SpectralParams) -> FloatArray:
    """Sum of squares of each frame of the raw signal after removing the frame's mean.

    Parameters
    ----------
    signal : ndarray of float, shape (n_samples,)
        The raw signal (no pre-emphasis).
    params : SpectralParams
        Framing parameters.

    Returns
    -------
    ndarray of float32, shape (n_frames,)
        Non-negative energies (samples squared, not normalised by the frame length).
    """
    x = np.ascontiguousarray(signal, dtype=np.float32)
    if x.size:
        # Remove the global offset first so the per-frame identity below does not cancel.
        x = x - np.float32(x.mean(dtype=np.float64))
    frames = frame_signal(x, params)
    L = np.float32(params.frame_length)
    s1 = frames @ np.ones(params.frame_length, dtype=np.float32)
    s2 = np.einsum("ij,ij->i", frames, frames)
    s2 -= s1 * s1 / L
    np.maximum(s2, np.float32(0.0), out=s2)
    return s2


def log_mel_spectrum(signal: FloatArray, params: SpectralParams, *, chunk: int = 256) -> FloatArray:
    """Log mel-band energies of every frame of a signal.

    Pre-emphasis is applied to the whole signal, then each frame is (optionally) made
    zero-mean, windowed, zero-padded to ``n_fft`` and transformed; the power spectrum goes
    through the mel filterbank by a matrix product. Frames are processed in chunks of
    ``chunk`` so that intermediate arrays stay in cache.

    Parameters
    ----------
    signal : ndarray of float, shape (n_samples,)
        The signal.
    params : SpectralParams
        Spectral parameters.
    chunk : int
        Frames per block (affects speed only).

    Returns
    -------
    ndarray of float32, shape (n_frames, n_mels)
        ``ln`` or dB of the floored mel energies (finite), ``n_frames`` as :func:`n_frames`.
    """
    y = preemphasize(signal, params.preemphasis)
    frames = frame_signal(y, params)
    n = frames.shape[0]
    L = params.frame_length
    fb = mel_filterbank(
        sample_rate=params.sample_rate,
        n_fft=params.n_fft,
        n_mels=params.n_mels,
        fmin=float(params.fmin),
        fmax=float(params.fmax),
        scale=params.mel_scale,
        norm=params.mel_norm,
    )
    win = frame_window(params.window, L)
    mel = np.empty((n, params.n_mels), dtype=np.float32)
    buf = np.zeros((min(chunk, max(n, 1)), params.n_fft), dtype=np.float32)
    inv_len = np.full(L, 1.0 / L, dtype=np.float32)
    half_power = np.float32(params.power / 2.0)
    for a in range(0, n, chunk):  # blocks of frames; each block is vectorised
        b = min(a + chunk, n)
        block = buf[: b - a]
        head = block[:, :L]
        if params.remove_dc:
            np.subtract(frames[a:b], (frames[a:b] @ inv_len)[:, None], out=head)
            head *= win
        else:
            np.multiply(frames[a:b], win, out=head)
        spec = scipy.fft.rfft(block, axis=1)
        sq = spec.view(np.float32)
        np.square(sq, out=sq)
        power = np.add(sq[:, 0::2], sq[:, 1::2])
        if half_power != 1.0:
            np.power(power, half_power, out=power)
        np.matmul(power, fb, out=mel[a:b])
    np.maximum(mel, np.float32(params.log_floor), out=mel)
    np.log(mel, out=mel)
    if params.log == "db":
        mel *= np.float32(10.0 / np.log(10.0))
        if params.top_db is not None and mel.size:
            np.maximum(mel, mel.max() - np.float32(params.top_db), out=mel)
    return mel


def cepstra(log_mel: FloatArray, params: SpectralParams) -> FloatArray:
    """DCT-II (orthonormal) of log mel energies, truncated and liftered.

    Parameters
    ----------
    log_mel : ndarray of float32, shape (n_frames, n_mels)
        Output of :func:`log_mel_spectrum`.
    params : SpectralParams
        ``n_mfcc`` and ``lifter``.

    Returns
    -------
    ndarray of float32, shape (n_frames, n_mfcc)
        Cepstral coefficients, c0 first.
    """
    out = log_mel @ dct_matrix(params.n_mels, params.n_mfcc)
    if params.lifter > 0:
        out *= lifter_weights(params.n_mfcc, params.lifter)
    return out
