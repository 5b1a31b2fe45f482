"""Percentiles of measured samples: one definition (numpy's linear interpolation) for the
flight report, the tools and the benchmarks."""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def percentile(values: Iterable[float], q: float, empty: float | None = float("nan")) -> float | None:
    """The ``q``-th percentile (q in [0, 100]) of ``values``; ``empty`` when there are none."""
    arr = np.asarray(list(values), dtype=float)
    if arr.size == 0:
        return empty
    return float(np.percentile(arr, q))
