"""i-vectors of a set of utterances on disk.

:func:`save_ivectors` / :func:`load_ivectors` keep raw i-vectors by utterance id in one
HDF5 file. Trials are scored with them by :class:`gmmspeaker.systems.ivector.Ivector`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gmmspeaker._io import read_h5, write_h5
from gmmspeaker._typing import FloatArray, PathLike
from gmmspeaker.errors import ModelError

if TYPE_CHECKING:
    pass

__all__ = ["save_ivectors", "load_ivectors"]

IVECTOR_FORMAT = "gmmspeaker-ivectors"


# ---------------------------------------------------------------------------
# i-vector files
# ---------------------------------------------------------------------------


def save_ivectors(path: PathLike, ids: Sequence[str], vectors: FloatArray) -> None:
    """Write i-vectors (``ids`` strings, ``vectors`` (U, R) float64) to HDF5 atomically."""
    write_h5(path, IVECTOR_FORMAT, {"ids": list(ids), "vectors": np.asarray(vectors, dtype=np.float64)})


def load_ivectors(path: PathLike) -> dict[str, FloatArray]:
    """Read :func:`save_ivectors` output as ``{utterance id: (R,) float64}``.

    Raises
    ------
    ModelError
        Missing or malformed file (the message names it).
    """
    arrays, _ = read_h5(path, IVECTOR_FORMAT, ("ids", "vectors"), what="i-vector file")
    ids, vectors = arrays["ids"], np.asarray(arrays["vectors"], dtype=np.float64)
    if vectors.shape[0] != len(ids):
        raise ModelError(f"{path}: {len(ids)} ids for {vectors.shape[0]} i-vectors")
    return dict(zip(ids, vectors))
