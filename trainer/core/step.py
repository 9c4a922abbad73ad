"""One training step of the protocol described in :mod:`trainer.core.loop`: both networks' losses,
the flags all-reduce, backward, clipping and optimizer steps, non-finite skipping.

The :class:`TrainingStep` owns the per-step mechanics; the ``Trainer`` owns everything around it
(setup, resume, epochs, saving, stopping).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from trainer.core import dist, signals
from trainer.core.checkpoint import Progress
from trainer.core.config import Config
from trainer.core.log import get_logger

log = get_logger("loop")
# what each entry of the step's all-reduced flags counts (ranks with it set)
G_NONFINITE, D_NONFINITE, STOP_REQUESTED, CHECKPOINT_DUE = range(4)


class Diverged(RuntimeError):
    """Too many consecutive non-finite losses."""


class TrainingStep:
    # Benchmarks set this: CUDA is synchronised at the phase boundaries of a step, so that the
    # sec_* fields of its record hold each phase's GPU time (training leaves the kernels queued).
    sync_phase_timing = False

    def __init__(self, cfg: Config, task, device: torch.device, amp: bool, networks: dict, run_dir: Path):
        """``networks``: generator, discriminator (the plain modules), g_ddp, d_ddp (what runs the
        step: DDP-wrapped and/or compiled), opt_g, opt_d."""
        self.cfg, self.task, self.device, self.amp, self.run_dir = cfg, task, device, amp, run_dir
        self.generator, self.discriminator = networks["generator"], networks["discriminator"]
        self.g_ddp, self.d_ddp = networks["g_ddp"], networks["d_ddp"]
        self.opt_g, self.opt_d = networks["opt_g"], networks["opt_d"]
        self.num_nonfinite_in_row = 0

    def clock(self) -> float:
        if self.sync_phase_timing and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def __call__(self, batch: dict, weight: float, progress: Progress,
                 checkpoint_due: Callable[[], bool]) -> tuple[list[float], dict]:
        """One step; returns the all-reduced flags [G non-finite, D non-finite, stop, checkpoint due]
        and the step's record. ``checkpoint_due`` is asked after both forward passes.

        With ``train.overlap_labels`` the task starts the discriminator's labels (PESQ in a process
        pool) right after the generator's forward, and the generator's backward runs while they are
        computed; the discriminator step then waits for what is left. The losses equal the serial
        order's: the discriminator's input is detached, the generator's backward changes no
        discriminator parameter and draws no random numbers (the torch RNG is used in the same
        order: generator forward, then discriminator forward). That backward precedes the flags'
        all-reduce, so every rank runs it, and its gradients are dropped when any rank's generator
        loss was non-finite. Record fields ``sec_generator`` (forward, backward, clip, step),
        ``sec_discriminator`` (the same, without the task's ``sec_label_wait``).
        """
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        overlap = self.cfg.train.overlap_labels
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        tick = self.clock()
        self.discriminator.requires_grad_(False)
        with autocast:
            g_loss, terms, context = self.task.generator_step(self.g_ddp, self.discriminator, batch, weight)
        self.discriminator.requires_grad_(True)
        if overlap:
            self.task.start_discriminator_labels(context)
            g_loss.backward()
        tock = self.clock()
        seconds = {"generator": tock - tick}
        with autocast:
            d_loss, d_info = self.task.discriminator_step(self.d_ddp, context)
        seconds["discriminator"] = self.clock() - tock - d_info.get("sec_label_wait", 0.0)
        record = scalars_to_host({"loss": g_loss, **terms, "d_loss": d_loss, **d_info})
        local = torch.tensor([float(not math.isfinite(record["loss"])), float(not math.isfinite(record["d_loss"])),
                              float(signals.stop_requested()), float(checkpoint_due())])
        flags = dist.all_reduce_sum(local).tolist()
        self._update(record, flags, seconds, progress, (g_loss, overlap), (d_loss, False))
        record.update({f"sec_{which}": value for which, value in seconds.items()})
        return flags, record

    def _update(self, record: dict, flags: list[float], seconds: dict, progress: Progress,
                generator: tuple, discriminator: tuple) -> None:
        """Backwards (unless done), gradient norms and clipping, optimizer steps, unless non-finite on any rank.

        A non-finite generator loss or gradient norm skips both networks' steps, a non-finite
        discriminator loss or norm the discriminator's. Both norms come to the host together (one
        device synchronisation): the discriminator's backward runs before the generator's optimizer step,
        which changes nothing it computes (its input is detached).
        """
        parts = (("generator", generator, self.generator, self.opt_g, flags[G_NONFINITE] == 0),
                 ("discriminator", discriminator, self.discriminator, self.opt_d, flags[D_NONFINITE] == 0))
        norms = []
        for which, (loss, backward_done), module, _, finite in parts:
            if not finite:
                break
            tick = self.clock()
            if not backward_done:
                loss.backward()
            norms.append(self._clip(module))
            seconds[which] += self.clock() - tick
        norms = scalars_to_host(norms)
        for (which, _, _, opt, _), norm in zip(parts, norms + [None] * (2 - len(norms)), strict=True):
            if norm is None:
                opt.zero_grad(set_to_none=True)
                self._count_nonfinite(f"{which} loss", progress)
                return
            record[f"grad_norm_{which[0]}"] = norm
            if not math.isfinite(norm):  # equal on every rank: DDP averaged the gradients
                opt.zero_grad(set_to_none=True)
                self._count_nonfinite(f"{which} gradient norm", progress)
                return
            tick = self.clock()
            opt.step()
            seconds[which] += self.clock() - tick
        self.num_nonfinite_in_row = 0

    def _clip(self, module: torch.nn.Module) -> torch.Tensor:
        """The gradients' total norm (a 0-d tensor, left on the device), after clipping them to
        ``optim.grad_clip`` (when > 0; else the gradients are left alone, as clipping to infinity does)."""
        if self.cfg.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(module.parameters(), self.cfg.optim.grad_clip)
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())

    def _count_nonfinite(self, what: str, progress: Progress) -> None:
        self.num_nonfinite_in_row += 1
        progress.num_nonfinite_total += 1
        step = progress.step + 1
        log.warning("non-finite %s at step %d: step skipped (%d in a row, %d in total)", what, step,
                    self.num_nonfinite_in_row, progress.num_nonfinite_total)
        if self.num_nonfinite_in_row >= self.cfg.train.max_nonfinite_steps:
            raise Diverged(f"{self.num_nonfinite_in_row} consecutive non-finite losses at step {step}: "
                           f"stopping; the last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'} "
                           "(lower optim.lr, raise optim.grad_clip, or check the data)")


def scalars_to_host(values):
    """``values`` (a dict or a list) with every one-element tensor replaced by its Python float, copied
    to the host together: one device synchronisation instead of one per value. Other values are kept
    as they are. Exact: each value goes through float64, as ``float(tensor)`` does."""
    items = list(values.items()) if isinstance(values, dict) else list(enumerate(values))
    tensors = [(key, v) for key, v in items if isinstance(v, torch.Tensor) and v.numel() == 1]
    if tensors:
        stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for _, v in tensors])
        host = dict(zip((key for key, _ in tensors), stacked.cpu().tolist(), strict=True))
    else:
        host = {}
    converted = [(key, host.get(key, v)) for key, v in items]
    return dict(converted) if isinstance(values, dict) else [v for _, v in converted]
