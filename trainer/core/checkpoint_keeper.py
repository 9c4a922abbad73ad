"""The training loop's saves: when one is due, the collective save of ``last`` (and of each improved
best), and what state.json says about the last save.

``core/checkpoint`` knows what a checkpoint holds; this knows when the loop writes one and which
step state.json reports, so a run stopped between two saves continues from the last one.
"""

from __future__ import annotations

import time
from pathlib import Path

from trainer.core import checkpoint as ckpt
from trainer.core.config import Config
from trainer.core.env import DistEnv
from trainer.core.runstate import write_state
from trainer.core.schedules import lr_factor


class CheckpointKeeper:
    """Saves the models, optimizers, sampler and task state of one Trainer; remembers the last save."""

    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv, parts: dict, sampler, task):
        self.cfg, self.run_dir, self.env = cfg, run_dir, env
        self.parts, self.sampler, self.task = parts, sampler, task  # generator, discriminator, opt_g, opt_d
        self.saved_at = (0, 0)  # (step, epoch) of checkpoints/last.pt: what state.json reports
        self.saved_best: dict[str, float] = {}  # the best values whose checkpoints exist (state.json's)
        self.last_save_time = time.monotonic()

    def due(self, step: int) -> bool:
        """Whether ``checkpoint.every_steps`` or ``checkpoint.every_minutes`` asks for a save at ``step``."""
        every_steps, every_minutes = self.cfg.checkpoint.every_steps, self.cfg.checkpoint.every_minutes
        if every_steps and step % every_steps == 0:
            return True
        return bool(every_minutes) and time.monotonic() - self.last_save_time >= 60 * every_minutes

    def restored(self, progress: ckpt.Progress) -> None:
        """The checkpoint a resume loaded is the last save."""
        self.saved_best = dict(progress.best)
        self.saved_at = (progress.step, progress.epoch)

    def save(self, progress: ckpt.Progress, improved: tuple[str, ...], config_changes: list[dict],
             epoch_totals: dict[str, int]) -> list[str]:
        """Collective: every rank contributes its RNG state; rank 0 writes. Returns names saved."""
        cfg = self.cfg
        state = ckpt.training_state(cfg, self.parts, self.sampler, progress,
                                    extra={**self.task.state(), "world_size": self.env.world_size,
                                           "config_changes": config_changes,
                                           "epoch_totals": epoch_totals,
                                           "lr_schedule": {"name": cfg.optim.scheduler,
                                                           "factor": lr_factor(cfg, progress.epoch)}})
        saved = ckpt.save_collectively(state, self.run_dir / "checkpoints", improved, self.env.is_main)
        self.restored(progress)
        if self.env.is_main:
            self.mark("running", progress, job_id=self.env.job_id, world_size=self.env.world_size)
        self.last_save_time = time.monotonic()
        return saved

    def mark(self, status: str, progress: ckpt.Progress, **extra) -> None:
        """Record ``status`` in state.json with the position of the last checkpoint (a run stopped
        between two saves, e.g. by a second Ctrl-C, continues from there, not from where it stopped);
        ``step_reached``: the step it had reached (the launcher's attempt records)."""
        if self.env.is_main:
            step, epoch = self.saved_at
            write_state(self.run_dir, status=status, step=step, epoch=epoch, epochs=self.cfg.train.epochs,
                        step_reached=progress.step, best=self.saved_best, **extra)
