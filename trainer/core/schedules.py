"""Schedules over epochs: pure functions of the config and the epoch, so extending or resuming a run
recomputes them consistently (nothing to store)."""

from __future__ import annotations

import math

from trainer.core.config import Config


def lr_factor(cfg: Config, epoch: int) -> float:
    """Learning-rate multiplier for ``epoch`` (``optim.scheduler``)."""
    if cfg.optim.scheduler == "step":
        return cfg.optim.step_gamma ** (epoch // cfg.optim.step_epochs)
    if cfg.optim.scheduler == "exponential":
        return cfg.optim.exp_gamma ** epoch
    if cfg.optim.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.train.epochs) / cfg.train.epochs))
    return 1.0


def ramp_start_epoch(epochs: int, start_fraction: float) -> int:
    """First (0-based) epoch of a ramp that enters after ``start_fraction`` of the epochs (half up)."""
    return math.floor(start_fraction * epochs + 0.5)


def ramp_weight(epoch: int, epochs: int, weight: float, start_fraction: float, ramp_epochs: int) -> float:
    """A weight that is 0 before ``ramp_start_epoch`` and then ramps linearly to ``weight``.

    With ``start = ramp_start_epoch(epochs, start_fraction)``: 0 for ``epoch < start``;
    ``weight * min(1, (epoch - start + 1) / ramp_epochs)`` from then on, so epoch ``start`` gives
    ``weight / ramp_epochs`` and epoch ``start + ramp_epochs - 1`` and later the full weight;
    ``ramp_epochs = 0`` gives the full weight from epoch ``start``. Because ``start`` follows
    ``epochs``, extending a run moves the entry point. Examples (the GAN term): se_cmgan (fraction 0,
    ramp 0): 0.05 from epoch 0. se_balanced (250 epochs, fraction 0.6, ramp 20, 0.3): 0 up to epoch
    149, 0.015 at 150, 0.15 at 159, 0.30 from 169.
    """
    start = ramp_start_epoch(epochs, start_fraction)
    if epoch < start:
        return 0.0
    if ramp_epochs == 0:
        return float(weight)
    return float(weight) * min(1.0, (epoch - start + 1) / ramp_epochs)
