"""One configuration, one function: a signal in, a (frames x dims) feature matrix out.

Order of operations: MFCC on every frame -> deltas (over the contiguous frames) -> VAD
selection -> normalisation over the kept frames (CMN/CMVN statistics come from speech only).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray
from gmmspeaker.errors import ConfigError, DataError, SkippedInputWarning
from gmmspeaker.features.deltas import add_deltas
from gmmspeaker.features.mfcc import (
    SpectralParams,
    cepstra,
    frame_energy,
    log_mel_spectrum,
    n_frames,
)
from gmmspeaker.features.normalize import NORMALIZATIONS, normalize
from gmmspeaker.features.vad import energy_vad, frame_energy_db

__all__ = ["FeatureConfig", "Features", "extract", "extract_many"]

logger = logging.getLogger(__name__)

_CHOICES: dict[str, tuple[Any, ...]] = {
    "window": ("hamming", "povey", "hann", "rectangular"),
    "mel_scale": ("htk", "slaney"),
    "mel_norm": ("none", "slaney"),
    "log": ("ln", "db"),
    "energy": ("c0", "log_energy", "none"),
    "deltas": (0, 1, 2),
    "vad": ("energy", "none"),
    "normalize": NORMALIZATIONS,
}


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Feature extraction settings; validated on construction.

    Defaults are Kaldi-like MFCCs for 16 kHz audio (``configs/features-16k.yaml``,
    ``configs/features-8k.yaml`` hold tuned defaults). :meth:`librosa_like` gives the
    settings under which :func:`extract` reproduces ``librosa.feature.mfcc``.

    Attributes
    ----------
    sample_rate : int
        Hz; the signal must already be at this rate.
    frame_length, frame_shift : float
        Window length and hop, in seconds (rounded to whole samples).
    n_fft : int or None
        FFT size; None = the next power of two >= the frame length in samples.
    window : {"hamming", "povey", "hann", "rectangular"}
        Analysis window (Hamming and Povey symmetric, Hann periodic).
    center : bool
        False: only whole frames (Kaldi ``snip_edges``), ``1 + (n - L) // hop`` frames.
        True: zero-pad ``n_fft // 2`` each side first (librosa), ``1 + n // hop`` frames.
    preemphasis : float
        Pre-emphasis coefficient in [0, 1).
    remove_dc : bool
        Subtract each pre-emphasised frame's mean before the window (Kaldi's
        ``remove_dc_offset``; pre-emphasis 0.97 already divides a DC offset by 33, so it is
        off by default). The frame energy of the VAD and of ``energy="log_energy"`` is always
        computed on mean-removed raw frames.
    power : float
        Exponent of the magnitude spectrum (2 = power spectrum).
    n_mels : int
        Mel bands.
    fmin, fmax : float, float or None
        Filterbank edges in Hz; ``fmax`` None = Nyquist, negative = Nyquist + fmax (Kaldi).
    mel_scale : {"htk", "slaney"}
    mel_norm : {"none", "slaney"}
        ``"slaney"`` scales each triangle to unit area (librosa's default).
    log : {"ln", "db"}
        Natural log, or ``10 log10`` (librosa ``power_to_db``).
    log_floor : float
        Floor of the mel energies (and frame energy) before the log.
    top_db : float or None
        With ``log="db"``: clip to ``max - top_db`` over the utterance (librosa: 80).
    n_mfcc : int
        Cepstral coefficients (c0 included), ``<= n_mels``.
    lifter : int
        Sinusoidal lifter parameter, HTK/Kaldi convention (0 = none).
    energy : {"c0", "log_energy", "none"}
        Keep c0, replace it by the frame log energy (Kaldi ``--use-energy``), or drop it
        (``"none"``: cepstra c1 .. c(n_mfcc-1) only, ``n_mfcc - 1`` static dimensions).
    deltas : {0, 1, 2}
        Append deltas (1) or deltas and delta-deltas (2).
    delta_window : int
        Regression half-width in frames.
    vad : {"energy", "none"}
        Energy VAD (see :mod:`gmmspeaker.features.vad`) or keep every frame.
    vad_threshold : float
        dB below the utterance's loud level (the ``vad_reference`` percentile of its
        frame energies) under which a frame is non-speech.
    vad_reference : float
        Percentile (0-100) of frame energies defining the loud level.
    vad_floor : float
        Absolute floor of the threshold in dBFS (digital silence is never speech).
    vad_context : int
        Half-width in frames of the smoothing window.
    vad_proportion : float
        Fraction of the smoothing window that must be speech to keep a frame.
    normalize : {"none", "cmn", "cmvn", "sliding_cmn", "warp"}
        Normalisation over the kept frames.
    norm_window : int
        Window in frames for ``sliding_cmn`` and ``warp`` (301 = 3 s at 10 ms).
    """

    sample_rate: int = 16000
    frame_length: float = 0.025
    frame_shift: float = 0.010
    n_fft: int | None = None
    window: str = "hamming"
    center: bool = False
    preemphasis: float = 0.97
    remove_dc: bool = False
    power: float = 2.0
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float | None = None
    mel_scale: str = "htk"
    mel_norm: str = "none"
    log: str = "ln"
    log_floor: float = 1e-10
    top_db: float | None = None
    n_mfcc: int = 20
    lifter: int = 0
    energy: str = "c0"
    deltas: int = 2
    delta_window: int = 2
    vad: str = "energy"
    vad_threshold: float = 35.0
    vad_reference: float = 95.0
    vad_floor: float = -80.0
    vad_context: int = 2
    vad_proportion: float = 0.6
    normalize: str = "cmvn"
    norm_window: int = 301

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _check_type(f.name, getattr(self, f.name), f.type, source="FeatureConfig")
            object.__setattr__(self, f.name, value)  # ints given for floats become floats
        problem = self._problem()
        if problem is not None:
            key, message = problem
            raise ConfigError(f"FeatureConfig: key {key!r}: {message}")

    def _problem(self) -> tuple[str, str] | None:
        """First invalid value as ``(key, message)``, or None."""
        for key, choices in _CHOICES.items():
            if getattr(self, key) not in choices:
                return key, f"expected one of {list(choices)}, got {getattr(self, key)!r}"
        positive = (
            "sample_rate",
            "frame_length",
            "frame_shift",
            "n_mels",
            "n_mfcc",
            "power",
            "log_floor",
            "delta_window",
            "norm_window",
        )
        for key in positive:
            if not getattr(self, key) > 0:
                return key, f"expected a value > 0, got {getattr(self, key)!r}"
        for key in (
            "frame_length",
            "frame_shift",
            "vad_threshold",
            "vad_reference",
            "vad_floor",
            "preemphasis",
            "fmin",
            "power",
            "log_floor",
            "vad_proportion",
        ):
            if not math.isfinite(getattr(self, key)):
                return key, f"expected a finite number, got {getattr(self, key)!r}"
        if self.frame_samples < 2:
            return "frame_length", f"{self.frame_length} s is under 2 samples at {self.sample_rate} Hz"
        if self.hop_samples < 1:
            return "frame_shift", f"{self.frame_shift} s is under 1 sample at {self.sample_rate} Hz"
        if self.n_fft is not None and self.n_fft < self.frame_samples:
            return "n_fft", f"{self.n_fft} is smaller than the frame ({self.frame_samples} samples)"
        if not 0.0 <= self.preemphasis < 1.0:
            return "preemphasis", f"expected a value in [0, 1), got {self.preemphasis!r}"
        nyquist = self.sample_rate / 2.0
        if not 0.0 <= self.fmin < nyquist:
            return "fmin", f"expected 0 <= fmin < {nyquist} (Nyquist), got {self.fmin!r}"
        if not self.fmin < self.fmax_hz <= nyquist:
            return "fmax", (f"expected fmin ({self.fmin}) < fmax <= {nyquist} (Nyquist), got {self.fmax!r}")
        if self.n_mfcc > self.n_mels:
            return "n_mfcc", f"{self.n_mfcc} exceeds n_mels ({self.n_mels})"
        if self.energy == "none" and self.n_mfcc < 2:
            return "n_mfcc", f"energy 'none' drops c0 and needs n_mfcc >= 2, got {self.n_mfcc}"
        if self.lifter < 0:
            return "lifter", f"expected an int >= 0, got {self.lifter!r}"
        if self.top_db is not None and not self.top_db >= 0:
            return "top_db", f"expected null or a value >= 0, got {self.top_db!r}"
        if not 0.0 <= self.vad_reference <= 100.0:
            return "vad_reference", f"expected a percentile in [0, 100], got {self.vad_reference!r}"
        if self.vad_threshold < 0:
            return "vad_threshold", f"expected dB >= 0, got {self.vad_threshold!r}"
        if self.vad_context < 0:
            return "vad_context", f"expected an int >= 0, got {self.vad_context!r}"
        if not 0.0 < self.vad_proportion <= 1.0:
            return "vad_proportion", f"expected a value in (0, 1], got {self.vad_proportion!r}"
        return None

    # ------------------------------------------------------------------ (de)serialisation
    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str = "<config>") -> FeatureConfig:
        """Build from a plain mapping (a YAML ``features:`` section).

        Parameters
        ----------
        mapping : Mapping[str, Any]
            Keys are field names; missing keys take the defaults.
        source : str
            Where the mapping comes from (file name), for error messages.

        Returns
        -------
        FeatureConfig

        Raises
        ------
        ConfigError
            Unknown key, wrong type or out-of-range value; the message names ``source`` and
            the key.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{source}: features must be a mapping, got {type(mapping).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in mapping if k not in fields)
        if unknown:
            raise ConfigError(f"{source}: unknown feature key(s) {unknown}; valid keys: {sorted(fields)}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            values[key] = _check_type(key, value, fields[key].type, source=source)
        try:
            return cls(**values)
        except ConfigError as exc:
            msg = str(exc)
            prefix = "FeatureConfig: "
            raise ConfigError(f"{source}: {msg[len(prefix) :] if msg.startswith(prefix) else msg}") from None

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict, in declaration order (stable, for
        cache fingerprints; ``from_dict(to_dict())`` round-trips)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def librosa_like(
        cls,
        *,
        sample_rate: int = 22050,
        n_mfcc: int = 20,
        n_fft: int = 2048,
        hop_length: int = 512,
        n_mels: int = 128,
        fmin: float = 0.0,
        fmax: float | None = None,
        htk: bool = False,
        mel_norm: str = "slaney",
        top_db: float | None = 80.0,
        lifter: int = 0,
    ) -> FeatureConfig:
        """Settings under which :func:`extract` reproduces ``librosa.feature.mfcc`` with the
        same keyword arguments (``center=True``, ``pad_mode="constant"``, periodic Hann,
        ``power_to_db(ref=1, amin=1e-10)``, orthonormal DCT-II); no VAD, no deltas, no
        normalisation. (librosa's lifter counts from 1, this one from 0: they differ when
        ``lifter > 0``.)"""
        return cls(
            sample_rate=sample_rate,
            frame_length=n_fft / sample_rate,
            frame_shift=hop_length / sample_rate,
            n_fft=n_fft,
            window="hann",
            center=True,
            preemphasis=0.0,
            remove_dc=False,
            power=2.0,
            n_mels=n_mels,
            fmin=float(fmin),
            fmax=None if fmax is None else float(fmax),
            mel_scale="htk" if htk else "slaney",
            mel_norm=mel_norm,
            log="db",
            log_floor=1e-10,
            top_db=top_db,
            n_mfcc=n_mfcc,
            lifter=lifter,
            energy="c0",
            deltas=0,
            vad="none",
            normalize="none",
        )

    # ------------------------------------------------------------------ derived values
    @property
    def frame_samples(self) -> int:
        """Window length in samples."""
        return int(round(self.frame_length * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        """Frame shift in samples."""
        return int(round(self.frame_shift * self.sample_rate))

    @property
    def fft_size(self) -> int:
        """FFT size actually used."""
        if self.n_fft is not None:
            return self.n_fft
        return 1 << max(0, (self.frame_samples - 1).bit_length())

    @property
    def fmax_hz(self) -> float:
        """Upper filterbank edge in Hz."""
        nyquist = self.sample_rate / 2.0
        if self.fmax is None:
            return nyquist
        return nyquist + self.fmax if self.fmax <= 0 else float(self.fmax)

    @property
    def dim(self) -> int:
        """Output feature dimension: ``n_mfcc * (1 + deltas)`` (``n_mfcc - 1`` with ``energy="none"``)."""
        return (self.n_mfcc - (self.energy == "none")) * (1 + self.deltas)

    @property
    def frame_length_samples(self) -> int:
        """Minimum number of samples that yields one frame."""
        return 1 if self.center else self.frame_samples

    def spectral_params(self) -> SpectralParams:
        """The sample-domain parameters used by :mod:`gmmspeaker.features.mfcc`."""
        return SpectralParams(
            sample_rate=self.sample_rate,
            frame_length=self.frame_samples,
            hop_length=self.hop_samples,
            n_fft=self.fft_size,
            window=self.window,
            center=self.center,
            preemphasis=self.preemphasis,
            remove_dc=self.remove_dc,
            power=self.power,
            n_mels=self.n_mels,
            fmin=self.fmin,
            fmax=self.fmax_hz,
            mel_scale=self.mel_scale,
            mel_norm=self.mel_norm,
            log=self.log,
            log_floor=self.log_floor,
            top_db=self.top_db,
            n_mfcc=self.n_mfcc,
            lifter=self.lifter,
        )


def _check_type(key: str, value: Any, annotation: Any, *, source: str) -> Any:
    """Check ``value`` against a field annotation (given as a string under
    ``from __future__ import annotations``); ints are accepted for floats and converted."""
    ann = str(annotation).replace(" ", "")
    optional = ann.endswith("|None")
    base = ann[: -len("|None")] if optional else ann
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: key {key!r}: expected {base}, got null")
    ok: bool
    if base == "bool":
        ok = isinstance(value, (bool, np.bool_))
        value = bool(value) if ok else value
    elif base == "int":
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        value = int(value) if ok else value
    elif base == "float":
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
            value, (bool, np.bool_)
        )
        value = float(value) if ok else value
    elif base == "str":
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field has one of the types above
        ok = True
    if not ok:
        raise ConfigError(
            f"{source}: key {key!r}: expected {base}{' or null' if optional else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


@dataclass(frozen=True)
class Features:
    """Features of one utterance.

    Attributes
    ----------
    frames : ndarray of float32, shape (n_kept, dim)
        Feature vectors of the kept frames, in time order.
    n_total : int
        Frames before VAD.
    n_kept : int
        Frames after VAD (``frames.shape[0]``).
    """

    frames: np.ndarray
    n_total: int
    n_kept: int

    @property
    def kept_fraction(self) -> float:
        """``n_kept / n_total`` (0 when there is no frame)."""
        return self.n_kept / self.n_total if self.n_total else 0.0


def extract(signal: FloatArray, config: FeatureConfig, *, name: str = "<signal>") -> Features:
    """Compute the features of one utterance.

    Parameters
    ----------
    signal : ndarray of float, shape (n_samples,)
        Mono signal at ``config.sample_rate`` Hz, nominally in [-1, 1] (the VAD floor is in
        dBFS).
    config : FeatureConfig
        Settings.
    name : str
        Utterance name (path or id) used in error messages.

    Returns
    -------
    Features
        ``frames`` float32 ``(n_kept, config.dim)``, always finite.

    Raises
    ------
    DataError
        The signal is not 1-D, holds NaN/inf, is too short for one frame, or the VAD keeps
        no frame (the message names ``name`` and says what to change).
    """
    x = np.asarray(signal)
    if x.ndim != 1:
        raise DataError(f"{name}: expected a 1-D (mono) signal, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise DataError(f"{name}: expected a float signal, got dtype {x.dtype}")
    if x.size and not np.isfinite(x).all():
        raise DataError(f"{name}: the signal holds NaN or infinite samples")
    params = config.spectral_params()
    n_total = n_frames(x.shape[0], params)
    if n_total == 0:
        raise DataError(
            f"{name}: {x.size} samples ({x.size / config.sample_rate:.4f} s) is too short for one "
            f"frame of {config.frame_length_samples} samples ({config.frame_length} s at "
            f"{config.sample_rate} Hz)"
        )
    ceps = cepstra(log_mel_spectrum(x, params), params)
    sumsq = frame_energy(x, params) if (config.energy == "log_energy" or config.vad == "energy") else None
    if sumsq is not None and config.energy == "log_energy":
        log_e = np.log(np.maximum(sumsq, np.float32(config.log_floor)))
        if config.log == "db":
            log_e *= np.float32(10.0 / np.log(10.0))
        ceps[:, 0] = log_e
    if config.energy == "none":
        ceps = ceps[:, 1:]
    feats = add_deltas(ceps, order=config.deltas, window=config.delta_window)
    if sumsq is not None and config.vad == "energy":
        energy_db = frame_energy_db(sumsq, params.frame_length)
        keep = energy_vad(
            energy_db,
            threshold_db=config.vad_threshold,
            reference=config.vad_reference,
            floor_db=config.vad_floor,
            context=config.vad_context,
            proportion=config.vad_proportion,
        )
        n_kept = int(np.count_nonzero(keep))
        if n_kept == 0:
            raise DataError(
                f"{name}: the energy VAD kept none of its {n_total} frames (loudest frame "
                f"{float(energy_db.max()):.1f} dBFS, floor {config.vad_floor} dBFS): the file may be "
                "silent; lower 'vad_floor', raise 'vad_threshold', or set 'vad: none'"
            )
        if n_kept < n_total:
            feats = feats[keep]
    else:
        n_kept = n_total
    out = normalize(feats, config.normalize, window=config.norm_window)
    out = np.ascontiguousarray(out, dtype=np.float32)
    if not np.isfinite(out).all():  # defensive: every step above is finite by construction
        raise DataError(f"{name}: non-finite features (please report this as a bug)")
    logger.debug("%s: %d frames, %d kept", name, n_total, n_kept)
    return Features(frames=out, n_total=n_total, n_kept=n_kept)


def extract_many(
    items: Iterable[tuple[str, FloatArray]],
    config: FeatureConfig,
    *,
    skip_bad: bool = False,
) -> Iterator[tuple[str, Features]]:
    """Extract features of several utterances, optionally skipping the unusable ones.

    Parameters
    ----------
    items : iterable of (str, ndarray of float, shape (n_samples,))
        Utterance names and signals.
    config : FeatureConfig
        Settings.
    skip_bad : bool
        False: the first :class:`DataError` propagates. True: utterances raising DataError
        (too short, VAD-empty, ...) are skipped; when the iterator is exhausted one
        :class:`SkippedInputWarning` states how many were skipped and names the first few.

    Yields
    ------
    (str, Features)
        Name and features of each usable utterance, in input order.
    """
    skipped: list[str] = []
    for name, signal in items:
        try:
            feats = extract(signal, config, name=name)
        except DataError as exc:
            if not skip_bad:
                raise
            logger.warning("skipped %s", exc)
            skipped.append(name)
            continue
        yield name, feats
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"skipped {len(skipped)} utterance(s) with unusable features: {shown}",
            SkippedInputWarning,
            stacklevel=2,
        )
