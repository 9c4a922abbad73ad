"""Signal level: the one unit-RMS factor shared by the data loaders, evaluation and inference."""

from __future__ import annotations

import math

import numpy as np

NORM_EPS = 1e-8


def unit_rms_scale(wave: np.ndarray) -> np.float32:
    """1 / RMS (with an epsilon): the factor that brings ``wave`` to unit RMS (CMGAN convention)."""
    # not `wave @ wave`: a BLAS call may spin up threads, which in loader workers oversubscribe the CPUs
    energy = float(np.square(wave, dtype=np.float64).sum())
    return np.float32(1.0 / math.sqrt(energy / max(1, len(wave)) + NORM_EPS))
