"""Stable hashes of JSON-like configuration, the stage fingerprints of a recipe run."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["stable_hash"]


def stable_hash(obj: Any) -> str:
    """SHA-1 hex digest (40 characters) of ``obj`` as sorted-key JSON (other values via ``str``)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
