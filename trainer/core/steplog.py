"""Step records: per-step numbers summed over a log window, reduced over ranks, written to
``metrics.jsonl`` and the log, with the warnings a user must not miss (gradient norms; the task's own)."""

from __future__ import annotations

import math

import torch

from trainer.core import dist
from trainer.core.log import get_logger

log = get_logger("loop")


class StepWindow:
    """Sums of step records between two log lines (reduced across ranks when logged)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.num_steps = 0

    def add(self, record: dict, data_seconds: float, step_seconds: float) -> None:
        self.num_steps += 1
        for key, value in {**record, "data_sec_per_step": data_seconds, "sec_per_step": step_seconds}.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def reduced(self, world_size: int) -> dict[str, float]:
        """Means per step and rank (``num_*`` keys: totals), identical on every rank (a collective)."""
        keys = sorted(self.sums)
        totals = dist.all_reduce_sum(torch.tensor([self.sums[k] for k in keys], dtype=torch.float64)).tolist()
        out = {}
        for key, total in zip(keys, totals, strict=True):
            out[key] = total if key.startswith("num_") else total / (self.num_steps * world_size)
        return out


class EpochCounters:
    """This rank's running sums, over the current epoch, of the task's ``epoch_counters`` (e.g. items
    with a discriminator label). They are part of the checkpoint (as all ranks' sums), so the epoch
    record of a resumed run equals the uninterrupted run's."""

    def __init__(self, names: tuple[str, ...]):
        self.values = dict.fromkeys(names, 0)

    def add(self, record: dict) -> None:
        for key in self.values:
            self.values[key] += record.get(key, 0)

    def summed(self) -> dict[str, int]:
        """The sums over all ranks (a collective, which every rank skips when there are no counters)."""
        if not self.values:
            return {}
        totals = dist.all_reduce_sum(torch.tensor([float(v) for v in self.values.values()]))
        return {k: int(v) for k, v in zip(self.values, totals.tolist(), strict=True)}

    def restore(self, saved: dict, rank: int) -> None:
        """The sums a checkpoint saved: all ranks' sums, counted once (on rank 0)."""
        if rank == 0:
            self.values.update({k: int(v) for k, v in saved.items() if k in self.values})


def grad_norm_alert(name: str, norm: float, threshold: float) -> str | None:
    """A warning line when a gradient norm is non-finite or above the safety threshold, else None."""
    if not math.isfinite(norm):
        return f"{name} gradient norm is {norm} (non-finite)"
    if threshold > 0 and norm > threshold:
        return f"{name} gradient norm {norm:.1f} exceeds the alert threshold optim.grad_norm_alert={threshold:g}"
    return None


def window_record(means: dict, *, step: int, epoch: int, gan_weight: float, lrs: tuple[float, float],
                  samples_per_step: int, counters: tuple[str, ...] = ()) -> dict:
    """The ``kind: step`` record of a log window, without the task's epoch ``counters``."""
    fields = {k: v for k, v in means.items() if k not in counters}
    return {"kind": "step", "step": step, "epoch": epoch, **fields, "gan_weight": gan_weight,
            "lr_g": lrs[0], "lr_d": lrs[1], "samples_per_sec": samples_per_step / max(1e-9, means["sec_per_step"])}


def log_window(record: dict, *, grad_norm_threshold: float, log_every: int, note: str = "",
               warnings: list[str] = ()) -> None:
    """The window's log line (``note``: the task's phrase in it), then the gradient-norm alerts and the
    task's ``warnings``."""
    log.info("epoch %d step %d loss %.4f d_loss %.4f gan_w %.3f%s %.2fs/step%s", record["epoch"] + 1, record["step"],
             record["loss"], record.get("d_loss", float("nan")), record["gan_weight"],
             f" {note}" if note else "", record["sec_per_step"],
             f" ({record['alert']})" if "alert" in record else "")
    for name in ("grad_norm_g", "grad_norm_d"):
        if name in record:
            alert = grad_norm_alert(name, record[name], grad_norm_threshold)
            if alert:
                log.warning("%s (mean of the last %d steps)", alert, log_every)
    for warning in warnings:
        log.warning("%s", warning)
