"""Benchmark gmmspeaker's MFCC against librosa (and kaldi-native-fbank, python_speech_features
where importable) on one core.

Usage::

    python scripts/bench_features.py [--seconds 60] [--repeats 5]

Audio: ``--seconds`` of 16 kHz speech, made of FSDD recordings (../shared/corpora/fsdd,
8 kHz, resampled to 16 kHz) concatenated; a synthetic speech-like signal when the corpus is
absent. Every extractor computes 20 MFCCs from 40 mel bands, 25 ms / 10 ms frames, 512-point
FFT. Prints the real-time factor (seconds of audio per second of compute, best of
``--repeats``, BLAS limited to one thread) with ratios against librosa, then the time from
``import`` to the first features in a fresh interpreter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

SR = 16000
FSDD = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora" / "fsdd" / "recordings"


def load_audio(seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of 16 kHz float32 audio and a description of where it comes from."""
    n = int(seconds * SR)
    files = sorted(FSDD.glob("*.wav")) if FSDD.is_dir() else []
    if files:
        import soundfile as sf
        from scipy.signal import resample_poly

        parts, total = [], 0
        for path in files[::7]:
            y, sr = sf.read(path, dtype="float32")
            y = resample_poly(y, SR, sr).astype(np.float32)
            parts.append(y)
            total += y.size
            if total >= n:
                break
        x = np.concatenate(parts)
        while x.size < n:
            x = np.concatenate([x, x])
        return x[:n], f"FSDD recordings resampled 8 -> 16 kHz ({len(parts)} files)"
    rng = np.random.default_rng(0)
    t = np.arange(n) / SR
    f0 = 120.0 + 30.0 * np.sin(2 * np.pi * 0.5 * t)
    voiced = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / SR) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0.0, None)
    x = 0.3 * envelope * voiced + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32), "synthetic harmonic bursts (FSDD absent)"


def extractors() -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> function computing (frames x 20) MFCCs of a 16 kHz signal."""
    from gmmspeaker.features import FeatureConfig, extract

    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    plain = FeatureConfig(sample_rate=SR, n_mels=40, n_mfcc=20, deltas=0, vad="none", normalize="none")
    full = FeatureConfig(sample_rate=SR, n_mels=40, n_mfcc=20)
    out["gmmspeaker mfcc"] = lambda x: extract(x, plain).frames
    out["gmmspeaker +deltas+VAD+CMVN"] = lambda x: extract(x, full).frames

    import librosa

    out["librosa.feature.mfcc"] = lambda x: (
        librosa.feature.mfcc(y=x, sr=SR, n_mfcc=20, n_mels=40, n_fft=512, hop_length=160, win_length=400).T
    )
    try:
        import kaldi_native_fbank as knf
    except ImportError:
        print("kaldi-native-fbank not importable: skipped")
    else:

        def kaldi(x: np.ndarray) -> np.ndarray:
            opts = knf.MfccOptions()
            opts.frame_opts.samp_freq = SR
            opts.frame_opts.dither = 0.0
            opts.mel_opts.num_bins = 40
            opts.num_ceps = 20
            opts.use_energy = False
            m = knf.OnlineMfcc(opts)
            m.accept_waveform(SR, x)
            m.input_finished()
            return np.stack([m.get_frame(i) for i in range(m.num_frames_ready)])

        out["kaldi-native-fbank"] = kaldi
    try:
        import python_speech_features as psf
    except ImportError:
        print("python_speech_features not importable: skipped")
    else:
        out["python_speech_features"] = lambda x: psf.mfcc(
            x, SR, numcep=20, nfilt=40, nfft=512, winfunc=np.hamming
        )
    return out


IMPORT_SNIPPET = {
    "gmmspeaker": (
        "from gmmspeaker.features import FeatureConfig, extract\n"
        "extract(x, FeatureConfig(deltas=0, vad='none', normalize='none'))"
    ),
    "librosa": (
        "import librosa\n"
        "librosa.feature.mfcc(y=x, sr=16000, n_mfcc=20, n_mels=40, n_fft=512, hop_length=160, win_length=400)"
    ),
}


def import_to_first_features(lib: str) -> float:
    """Seconds from the first import to the first features of 1 s of audio, fresh process."""
    code = (
        "import time\nt0 = time.perf_counter()\nimport numpy as np\n"
        "x = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1\n"
        f"{IMPORT_SNIPPET[lib]}\nprint(time.perf_counter() - t0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    x, origin = load_audio(args.seconds)
    print(f"audio: {x.size / SR:.1f} s at {SR} Hz, {origin}; one core (threadpool_limits(1))")
    timings: dict[str, float] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    with threadpool_limits(1):
        for name, fn in extractors().items():
            shapes[name] = fn(x).shape  # warm-up (caches, JIT)
            best = np.inf
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fn(x)
                best = min(best, time.perf_counter() - t0)
            timings[name] = best
    ref = timings["librosa.feature.mfcc"]
    print()
    print(
        f"| {'extractor':<28} | {'frames x dims':>13} | {'time (ms)':>9} | {'x real time':>11} | {'vs librosa':>10} |"
    )
    print(f"|{'-' * 30}|{'-' * 15}|{'-' * 11}|{'-' * 13}|{'-' * 12}|")
    for name, t in timings.items():
        shape = "x".join(str(s) for s in shapes[name])
        print(f"| {name:<28} | {shape:>13} | {t * 1e3:>9.1f} | {x.size / SR / t:>11.0f} | {ref / t:>9.2f}x |")
    print()
    print("import to first features (fresh interpreter, best of 3):")
    for lib in IMPORT_SNIPPET:
        t = min(import_to_first_features(lib) for _ in range(3))
        print(f"  {lib:<11} {t:.3f} s")


if __name__ == "__main__":
    main()
