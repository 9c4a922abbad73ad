"""Enhance a whole signal with a speech generator (evaluation and the enhance command).

Input is normalised as in training (``data.normalize``: noisy to unit RMS) and the output scaled
back, so enhanced files keep the input's level; other sample rates are resampled to the model's
and back.
"""

from __future__ import annotations

import numpy as np
import torch

from trainer.audio.level import unit_rms_scale
from trainer.core.config import Config
from trainer.core.log import get_logger, warn_once

log = get_logger("enhance")


@torch.no_grad()
def enhance(generator: torch.nn.Module, cfg: Config, noisy: np.ndarray, sample_rate: int) -> np.ndarray:
    """Enhance one mono signal; returns float32 at ``sample_rate`` and the same length."""
    wave = torch.as_tensor(np.asarray(noisy, dtype=np.float32))
    if wave.ndim != 1:
        raise ValueError(f"expected a mono signal, got shape {tuple(wave.shape)}")
    model_rate = cfg.data.sample_rate
    if sample_rate != model_rate:
        import torchaudio.functional as AF

        warn_once(log, f"resample-{sample_rate}", f"resampling {sample_rate} Hz input to the model's {model_rate} Hz")
        wave = AF.resample(wave, sample_rate, model_rate)
    scale = float(unit_rms_scale(wave.numpy())) if cfg.data.normalize else 1.0
    device = next(generator.parameters()).device
    out = generator((wave * scale)[None].to(device))["wave"][0].float().cpu() / scale
    if sample_rate != model_rate:
        import torchaudio.functional as AF

        out = AF.resample(out, model_rate, sample_rate)
    length = len(noisy)
    out = out[:length] if len(out) >= length else torch.nn.functional.pad(out, (0, length - len(out)))
    return out.numpy().astype(np.float32)
