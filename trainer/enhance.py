"""Enhance audio with a trained checkpoint (used by ``trainer.evaluate --checkpoint/--run-dir``).

The generator is rebuilt from the config stored in the checkpoint, so a checkpoint is
self-contained. Input is normalised as in training (``data.normalize``: noisy to unit RMS) and
the output scaled back, so enhanced files keep the input's level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer import checkpoint as ckpt
from trainer.config import Config, config_from_dict
from trainer.data import unit_rms_scale
from trainer.log import get_logger, warn_once
from trainer.models import build_generator

log = get_logger("enhance")


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   task: str | None = None) -> tuple[torch.nn.Module, Config, dict]:
    """(generator in eval mode, its config, {epoch, step, best}) from a training checkpoint.

    ``task``: refuse a checkpoint of another model family (before building anything).
    """
    state = ckpt.load(path)
    cfg = config_from_dict(state["config"])
    if task is not None and cfg.task != task:
        tool = "python -m trainer.infer" if cfg.task == "creative_agent" else "python -m trainer.evaluate"
        raise ckpt.CheckpointError(f"{path}: a {cfg.task!r} checkpoint, but this command needs {task!r} "
                                   f"checkpoints (use {tool})")
    generator = build_generator(cfg)
    ckpt.load_module_state(generator, state["generator"], "generator", path)
    generator.to(device).eval()
    info = {"epoch": state["epoch"], "step": state["step"], "best": dict(state["best"])}
    return generator, cfg, info


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
