"""gmmspeaker: speaker recognition with GMM-UBM.

The public API is re-exported here lazily, so ``import gmmspeaker`` stays cheap
(no librosa, no h5py until they are needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # errors
    "GmmSpeakerError": "gmmspeaker.errors",
    "AudioError": "gmmspeaker.errors",
    "ConfigError": "gmmspeaker.errors",
    "DataError": "gmmspeaker.errors",
    "ModelError": "gmmspeaker.errors",
    "ConvergenceWarning": "gmmspeaker.errors",
    # audio
    "load_audio": "gmmspeaker.audio",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmmspeaker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
