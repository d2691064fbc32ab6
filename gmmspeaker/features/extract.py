"""One configuration, one function: a signal in, a (frames x dims) feature matrix out.

Order of operations: MFCC on every frame -> deltas (over the contiguous frames) -> VAD
selection -> normalisation over the kept frames (CMN/CMVN statistics come from speech only).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from gmmspeaker._typing import FloatArray, PathLike
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

__all__ = ["FeatureConfig", "Features", "RATE_DEFAULTS", "extract", "extract_many", "resolve_sample_rate"]

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

_COMMON_DEFAULTS: dict[str, Any] = {
    "frame_length": 0.025,
    "frame_shift": 0.010,
    "n_fft": None,
    "window": "hamming",
    "center": False,
    "preemphasis": 0.97,
    "remove_dc": False,
    "power": 2.0,
    "fmin": 20.0,
    "mel_scale": "htk",
    "mel_norm": "none",
    "log": "ln",
    "log_floor": 1.0e-10,
    "top_db": None,
    "n_mfcc": 20,
    "lifter": 0,
    "energy": "c0",
    "deltas": 2,
    "delta_window": 2,
    "vad": "energy",
    "vad_threshold": 35.0,
    "vad_reference": 95.0,
    "vad_floor": -80.0,
    "vad_context": 2,
    "vad_proportion": 0.6,
    "normalize": "cmvn",
    "norm_window": 301,
}

#: The tuned feature defaults per sample rate (Hz), every key of :class:`FeatureConfig`.
#: The one source of truth: ``configs/features-8k.yaml`` and ``configs/features-16k.yaml``
#: hold the same values (a test checks it), and ``sample_rate: auto`` picks from here.
#: 8 kHz (telephone band): 24 mel bands (a 256-point FFT would make more bands 2-3 bins
#: wide at the bottom) up to 3800 Hz; 16 kHz: 40 bands up to 7600 Hz, all frames (no VAD)
#: and CMN, as the 16 kHz ablation chose.
RATE_DEFAULTS: Mapping[int, Mapping[str, Any]] = MappingProxyType(
    {
        8000: MappingProxyType({"sample_rate": 8000, **_COMMON_DEFAULTS, "n_mels": 24, "fmax": 3800.0}),
        16000: MappingProxyType(
            {
                "sample_rate": 16000,
                **_COMMON_DEFAULTS,
                "n_mels": 40,
                "fmax": 7600.0,
                # chosen by the ablation (docs/ablation.md): all frames, CMN
                "vad": "none",
                "normalize": "cmn",
            }
        ),
    }
)


@dataclass(frozen=True, kw_only=True)
class FeatureConfig:
    """Feature extraction settings; validated on construction.

    Defaults are Kaldi-like MFCCs for 16 kHz audio (``configs/features-16k.yaml``,
    ``configs/features-8k.yaml`` hold tuned defaults). :meth:`librosa_like` gives the
    settings under which :func:`extract` reproduces ``librosa.feature.mfcc``.

    Attributes
    ----------
    sample_rate : int or "auto"
        Hz; the signal must already be at this rate. ``"auto"``: a template whose rate is
        read from the audio (:func:`resolve_sample_rate`, :meth:`resolve`); fields left at
        their generic defaults then take the :data:`RATE_DEFAULTS` of that rate. Until
        resolved, properties that need the rate raise :class:`ConfigError`.
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

    sample_rate: int | str = 16000
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
        if isinstance(self.sample_rate, str) and self.sample_rate != "auto":
            return "sample_rate", f"expected a rate in Hz or 'auto', got {self.sample_rate!r}"
        auto = self.sample_rate == "auto"
        positive = (
            *(() if auto else ("sample_rate",)),
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
        if self.n_mfcc > self.n_mels:
            return "n_mfcc", f"{self.n_mfcc} exceeds n_mels ({self.n_mels})"
        if auto:
            return self._rate_free_problem()
        if self.frame_samples < 2:
            return "frame_length", f"{self.frame_length} s is under 2 samples at {self.sample_rate} Hz"
        if self.hop_samples < 1:
            return "frame_shift", f"{self.frame_shift} s is under 1 sample at {self.sample_rate} Hz"
        if self.n_fft is not None and self.n_fft < self.frame_samples:
            return "n_fft", f"{self.n_fft} is smaller than the frame ({self.frame_samples} samples)"
        nyquist = self.rate / 2.0
        if not 0.0 <= self.fmin < nyquist:
            return "fmin", f"expected 0 <= fmin < {nyquist} (Nyquist), got {self.fmin!r}"
        if not self.fmin < self.fmax_hz <= nyquist:
            return "fmax", (f"expected fmin ({self.fmin}) < fmax <= {nyquist} (Nyquist), got {self.fmax!r}")
        return self._rate_free_problem()

    def _rate_free_problem(self) -> tuple[str, str] | None:
        """Checks that do not depend on the sample rate."""
        if self.n_fft is not None and self.n_fft < 1:
            return "n_fft", f"expected null or an int >= 1, got {self.n_fft!r}"
        if not 0.0 <= self.preemphasis < 1.0:
            return "preemphasis", f"expected a value in [0, 1), got {self.preemphasis!r}"
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

    # ------------------------------------------------------------------ sample rate
    @property
    def rate(self) -> int:
        """The sample rate in Hz; raises :class:`ConfigError` while it is ``"auto"``."""
        if isinstance(self.sample_rate, str):
            raise ConfigError(
                "FeatureConfig: sample_rate is 'auto': resolve it from the audio first "
                "(FeatureConfig.resolve(rate) or gmmspeaker.features.resolve_sample_rate)"
            )
        return self.sample_rate

    @classmethod
    def for_rate(
        cls, rate: int, overrides: Mapping[str, Any] | None = None, *, source: str = "<config>"
    ) -> FeatureConfig:
        """The tuned defaults of ``rate`` (:data:`RATE_DEFAULTS`) with ``overrides`` on top.

        Raises
        ------
        ConfigError
            No defaults exist for ``rate`` (the message suggests writing a config), or an
            override is invalid.
        """
        if rate not in RATE_DEFAULTS:
            raise ConfigError(
                f"{source}: no default features for {rate} Hz audio (defaults exist for "
                f"{', '.join(str(r) for r in RATE_DEFAULTS)} Hz); give a feature config with "
                f"sample_rate: {rate} (start from configs/features-16k.yaml and set n_mels and fmax), "
                "or resample the audio"
            )
        values = {**RATE_DEFAULTS[rate], **(overrides or {})}
        values["sample_rate"] = rate
        return cls.from_dict(values, source=source)

    def resolve(self, rate: int, *, source: str = "<config>") -> FeatureConfig:
        """A concrete config for audio at ``rate`` Hz.

        A config with a fixed rate is returned unchanged (the caller checks the audio
        against it). With ``sample_rate="auto"``, every field still at its generic class
        default takes the value of :data:`RATE_DEFAULTS` for ``rate`` (so an explicit value
        equal to the generic default is not distinguishable from an unset one); the other
        fields are kept.

        Raises
        ------
        ConfigError
            ``rate`` has no defaults (see :meth:`for_rate`).
        """
        if self.sample_rate != "auto":
            return self
        generic = {f.name: f.default for f in dataclasses.fields(self)}
        overrides = {
            k: v for k, v in self.to_dict().items() if k != "sample_rate" and not _same(v, generic[k])
        }
        return FeatureConfig.for_rate(rate, overrides, source=source)

    # ------------------------------------------------------------------ derived values
    @property
    def frame_samples(self) -> int:
        """Window length in samples."""
        return int(round(self.frame_length * self.rate))

    @property
    def hop_samples(self) -> int:
        """Frame shift in samples."""
        return int(round(self.frame_shift * self.rate))

    @property
    def fft_size(self) -> int:
        """FFT size actually used."""
        if self.n_fft is not None:
            return self.n_fft
        return 1 << max(0, (self.frame_samples - 1).bit_length())

    @property
    def fmax_hz(self) -> float:
        """Upper filterbank edge in Hz."""
        nyquist = self.rate / 2.0
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
            sample_rate=self.rate,
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
    elif base == "int|str":  # sample_rate: Hz or "auto"
        ok = value == "auto" or (
            isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
        )
        value = int(value) if ok and not isinstance(value, str) else value
        base = "int or 'auto'"
    else:  # pragma: no cover - every field has one of the types above
        ok = True
    if not ok:
        raise ConfigError(
            f"{source}: key {key!r}: expected {base}{' or null' if optional else ''}, "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal values of the same kind (``1 == 1.0`` but ``True != 1``)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _probe_rates(paths: Sequence[PathLike]) -> dict[str, int]:
    """Sample rate of every readable file, from its header (unreadable files are left to
    the extraction, which reports them properly)."""
    import soundfile as sf

    rates: dict[str, int] = {}
    for p in paths:
        try:
            rates[str(p)] = int(sf.info(str(p)).samplerate)
        except Exception:
            continue
    return rates


def resolve_sample_rate(
    config: FeatureConfig,
    paths: Sequence[PathLike],
    *,
    resample: bool = False,
    resample_flag: str = "resample=True",
    config_flag: str = "a FeatureConfig",
) -> FeatureConfig:
    """Resolve ``sample_rate="auto"`` from the rates of the audio files.

    Reads only the file headers. Unreadable files are ignored here (the extraction
    reports them with the other bad files).

    Parameters
    ----------
    config : FeatureConfig
        With a fixed rate it is returned as it is: a file of another rate is then a bad
        file for the extraction (:func:`gmmspeaker.audio.load_audio`), reported or skipped
        with the others. With ``"auto"``: the files' common rate picks
        :data:`RATE_DEFAULTS`; with mixed rates and
        ``resample``, the highest rate with defaults that is not above the lowest file
        rate (8000 Hz for 8 kHz + 16 kHz lists: downsampling loses nothing the 8 kHz files
        have; upsampling would invent an empty upper band).
    paths : sequence of path-like
        The audio files.
    resample : bool
        Whether the caller will resample audio of another rate.
    resample_flag, config_flag : str
        How the user turns resampling on and gives a feature config in the interface
        they are in (``"--resample"`` / ``"--config"`` on the command line,
        ``"data.resample: true"`` / ``"the recipe's features: section"`` in a recipe);
        the errors name them.

    Returns
    -------
    FeatureConfig
        With a concrete ``sample_rate``.

    Raises
    ------
    AudioError
        Mixed rates without ``resample`` (names two files and their rates); no readable
        file.
    ConfigError
        ``"auto"`` and a rate without defaults (suggests a config or resampling).
    """
    from gmmspeaker.errors import AudioError

    if config.sample_rate != "auto":
        return config
    rates = _probe_rates(paths)
    if not rates:
        shown = str(paths[0]) if paths else "(no files)"
        raise AudioError(
            f"{shown}: sample_rate: auto needs the rate of the audio, but none of the "
            f"{len(paths)} file(s) could be read"
        )
    by_rate: dict[int, str] = {}
    for p, r in rates.items():
        by_rate.setdefault(r, p)
    distinct = sorted(by_rate)
    if len(distinct) > 1 and not resample:
        lo, hi = distinct[0], distinct[-1]
        counts = ", ".join(f"{sum(1 for r in rates.values() if r == x)} at {x} Hz" for x in distinct)
        raise AudioError(
            f"mixed sample rates: {by_rate[lo]} is {lo} Hz but {by_rate[hi]} is {hi} Hz ({counts}); "
            f"resample them to one rate with {resample_flag}, or split the list by rate"
        )
    lowest = distinct[0]
    if resample:
        fitting = [r for r in RATE_DEFAULTS if r <= lowest]
        target = max(fitting) if fitting else min(RATE_DEFAULTS)
    else:
        target = lowest
        if target not in RATE_DEFAULTS:
            supported = ", ".join(str(r) for r in RATE_DEFAULTS)
            raise ConfigError(
                f"{by_rate[target]}: sample rate {target} Hz has no default features (defaults "
                f"exist for {supported} Hz); give {config_flag} with sample_rate: {target} "
                f"(start from configs/features-16k.yaml and set n_mels and fmax), or resample "
                f"with {resample_flag}"
            )
    if len(distinct) > 1 or target != lowest:
        logger.info("sample_rate auto: resampling %s Hz audio to %d Hz", "/".join(map(str, distinct)), target)
    return config.resolve(target)


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
