"""Type aliases shared across the package."""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]
PathLike = Union[str, "os.PathLike[str]"]
