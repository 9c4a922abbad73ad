"""Per-file DNSMOS rows for ``trainer.evaluate`` (run inside the metric pool; never imports torch).

DNSMOS is defined at 16 kHz: other rates are resampled (polyphase) and the row's ``sample_rate``
keeps the file's own rate so that the summary can say how many were resampled. Samples beyond full
scale (float files) are clipped to [-1, 1], as writing them to 16-bit would (the reference refuses them).
"""

from __future__ import annotations

import numpy as np

from trainer.metrics.dnsmos import DNSMOS_KEYS, DnsmosUnavailable, dnsmos
from trainer.metrics.quality import MIN_REFERENCE_SECONDS, SILENCE_PEAK, resample_to_16k


def dnsmos_scores(wave: np.ndarray, sr: int) -> dict:
    """The four DNSMOS scores of one mono signal and ``dnsmos_error`` (None, or why they are None)."""
    failed = dict.fromkeys(DNSMOS_KEYS)
    wave = np.asarray(wave, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(wave)):
        return failed | {"dnsmos_error": "non-finite samples"}
    if len(wave) < MIN_REFERENCE_SECONDS * sr:
        return failed | {"dnsmos_error": f"too short for DNSMOS (< {MIN_REFERENCE_SECONDS} s)"}
    if np.max(np.abs(wave)) < SILENCE_PEAK:
        return failed | {"dnsmos_error": "silent signal"}
    if sr != 16000:
        wave = resample_to_16k(wave, sr)
    wave = np.clip(wave, -1.0, 1.0)  # the reference refuses samples beyond full scale; a 16-bit file clips them
    try:
        return dnsmos(wave.astype(np.float32)) | {"dnsmos_error": None}
    except DnsmosUnavailable:
        raise
    except Exception as exc:  # onnxruntime raises its own error classes
        return failed | {"dnsmos_error": f"dnsmos failed ({type(exc).__name__})"}


def with_dnsmos(row: dict, wave: np.ndarray | None, sr: int) -> dict:
    """``row`` plus the DNSMOS columns of ``wave``; a DNSMOS failure becomes the row's error."""
    if wave is None:
        return row | dict.fromkeys(DNSMOS_KEYS)
    scores = dnsmos_scores(wave, sr)
    problem = scores.pop("dnsmos_error")
    if problem and not row.get("error"):
        row = row | {"error": problem}
    return row | scores | {"sample_rate": sr}


def score_file_reference_free(name: str, path: str) -> dict:
    """One row (name, seconds, sample_rate, DNSMOS columns, error) for an audio file without a reference."""
    import soundfile as sf

    row = {"name": name, "seconds": None, "sample_rate": None, "error": None} | dict.fromkeys(DNSMOS_KEYS)
    try:
        wave, sr = sf.read(path, dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable or broken files
        return row | {"error": f"unreadable audio ({type(exc).__name__})"}
    if wave.shape[1] != 1:
        return row | {"error": f"{wave.shape[1]} channels; give mono files"}
    row |= {"seconds": round(len(wave) / sr, 3), "sample_rate": sr}
    return with_dnsmos(row, wave[:, 0], sr)
