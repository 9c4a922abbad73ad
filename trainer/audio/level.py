"""Signal level: the unit-RMS factor of the data loaders (with an epsilon), and the references' exact
one for inference (enhance, evaluate)."""

from __future__ import annotations

import math

import numpy as np

NORM_EPS = 1e-8


def unit_rms_scale(wave: np.ndarray) -> np.float32:
    """1 / RMS (with an epsilon): the factor that brings ``wave`` to unit RMS (CMGAN convention)."""
    # not `wave @ wave`: a BLAS call may spin up threads, which in loader workers oversubscribe the CPUs
    energy = float(np.square(wave, dtype=np.float64).sum())
    return np.float32(1.0 / math.sqrt(energy / max(1, len(wave)) + NORM_EPS))


def reference_unit_rms_scale(wave: np.ndarray) -> np.float32:
    """The inference factor of CMGAN's ``enhance_one_track`` and MP-SENet's ``inference.py``:
    ``sqrt(T / sum(x ** 2))`` computed as they compute it (float32 torch, no epsilon), so a model sees
    bitwise the reference's input; the epsilon factor :func:`unit_rms_scale` (float64) for a silent
    ``wave`` or one whose float32 energy overflows (their scripts would divide by infinity).

    Why not :func:`unit_rms_scale` here: MP-SENet feeds the noisy *phase* to its network, and the phase
    of a bin near the negative real axis jumps between -pi and pi with the last bits of the input, so a
    relative change of 2e-6 in the factor (the epsilon's, at a level of -34 dBFS) changed a
    random-weight MP-SENet's output by 0.05 (tests/test_import_checkpoint.py). Training and
    validation keep :func:`unit_rms_scale` (the loaders'; no such comparison to keep).
    """
    import torch  # the loaders (unit_rms_scale) stay torch-free

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    energy = torch.sum(x**2.0)
    if not 0.0 < float(energy) < math.inf:  # silence, or a float32 overflow (samples near 1e19): float64
        return unit_rms_scale(wave)
    return np.float32(torch.sqrt(len(x) / energy).item())
