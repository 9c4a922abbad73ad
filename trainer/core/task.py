"""The runtime contract between the training loop and a model family (a task).

The loop (``trainer/core/loop.py``) names no task: it builds ``task = Task(cfg, device, cores)``
from the registered :class:`~trainer.core.registry.TaskSpec` and calls, every step,

1. ``generator_step(generator, discriminator, batch, gan_weight) -> (loss, terms, context)``;
2. ``start_discriminator_labels(context)`` (optional): start slow work the discriminator's targets
   need, off the critical path (the speech task submits its PESQ labels to a process pool); the
   loop then runs the generator's backward while it works (``train.overlap_labels``);
3. ``discriminator_step(discriminator, context) -> (loss, info)``: collects what step 2 started.

and at each validation ``validate_item`` per utterance, ``score`` per rank and ``summarise`` over
all ranks; on rank 0, with TensorBoard on, ``media`` per fixed validation utterance (what to listen
to and look at: :class:`Media`). Everything a step returns is a tensor or float; ``terms``/``info`` go into the step
records of ``metrics.jsonl`` as they are. A task must make every rank run the same collectives
whatever its data (e.g. mask failed items, never skip a backward).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn

from trainer.core.config import Config
from trainer.core.registry import resolve, task_spec
from trainer.core.schedules import ramp_weight


@dataclasses.dataclass
class Media:
    """What a task shows of one fixed validation utterance in TensorBoard (:meth:`Task.media`).

    ``audio``, ``images``, ``scalars`` and ``text`` depend on the model and are written at every
    validation; ``reference_audio`` and ``reference_images`` (the inputs and targets, e.g. noisy and
    clean) do not, and are written once per run directory. Audio: 1-D float arrays at
    ``sample_rate``, at the original level (values beyond [-1, 1] are clipped when written); images:
    (H, W, 3) uint8 arrays, row 0 at the top (``trainer.audio.images``).
    """

    sample_rate: int
    audio: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    reference_audio: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    reference_images: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    scalars: dict[str, float] = dataclasses.field(default_factory=dict)
    text: dict[str, str] = dataclasses.field(default_factory=dict)


class Task:
    """Base class with the optional hooks' defaults; subclasses implement the abstract ones."""

    # Validation metrics where larger is better (the rest, e.g. loss, are minimised).
    maximise: tuple[str, ...] = ()
    # Integer counters of the step records (e.g. items the discriminator got a label for) that the loop
    # sums over each epoch and all ranks, keeping the running sums in checkpoints so that a resumed
    # epoch's record equals an uninterrupted one's. Window records hold their window totals only until
    # :meth:`window_extras` has read them; :meth:`epoch_extras` turns the epoch's sums into fields.
    epoch_counters: tuple[str, ...] = ()

    def __init__(self, cfg: Config, device: torch.device, cores: int):
        self.cfg, self.device, self.cores = cfg, device, cores

    # ----- models and schedule ------------------------------------------------------------------
    def build_models(self) -> tuple[nn.Module, nn.Module]:
        raise NotImplementedError

    def gan_weight(self, epoch: int) -> float:
        """Weight of the adversarial term in ``epoch`` (the loss section's GAN schedule)."""
        loss = self.cfg.loss
        return ramp_weight(epoch, self.cfg.train.epochs, loss.w_gan, loss.gan_start_fraction, loss.gan_ramp_epochs)

    # ----- one training step ---------------------------------------------------------------------
    def generator_step(self, generator: nn.Module, discriminator: nn.Module, batch: dict, gan_weight: float):
        raise NotImplementedError

    def start_discriminator_labels(self, context: dict) -> None:
        """Optional: start computing the discriminator's targets from ``context`` without waiting
        (e.g. submit to a process pool; store a handle in ``context`` for :meth:`discriminator_step`).

        Called right after :meth:`generator_step` when ``train.overlap_labels`` is on; the generator's
        backward runs before :meth:`discriminator_step`. It must not draw from the torch RNG, run a
        collective or change anything the losses depend on: the losses must equal those of the
        serial order, where it is not called. Default: nothing (the discriminator step does it all).
        """

    def discriminator_step(self, discriminator: nn.Module, context: dict):
        raise NotImplementedError

    def window_extras(self, means: dict) -> dict:
        """Derived fields of a log window or an epoch's validation summary (from mean values; a window's
        :attr:`epoch_counters` are its totals)."""
        return {}

    def epoch_extras(self, totals: dict[str, int]) -> dict:
        """Fields of the epoch record from the epoch's :attr:`epoch_counters`, summed over all ranks."""
        return {}

    def window_note(self, record: dict) -> str:
        """A short phrase for the log line of a window record (e.g. a rate); '' for none."""
        return ""

    def warnings(self, record: dict) -> list[str]:
        """Warnings a user must not miss about a window or epoch record (``record["kind"]``: ``step`` or
        ``epoch``; an epoch's before its validation), logged by the loop."""
        return []

    # ----- validation ------------------------------------------------------------------------------
    def validation_metrics(self, validation_index: int, last: bool) -> tuple[str, ...]:
        """Per-utterance metrics (computed by :meth:`score`) of the ``validation_index``-th validation."""
        return ()

    def validate_item(self, generator: nn.Module, discriminator: nn.Module, batch: dict) -> dict:
        """One utterance (batch of 1) -> a row: ``name`` and numbers (plus anything :meth:`score` needs)."""
        raise NotImplementedError

    def score(self, rows: list[dict], which: tuple[str, ...]) -> list[dict]:
        """This rank's rows with the ``which`` metrics added (plain, gatherable values only)."""
        return rows

    def summarise(self, rows: list[dict], which: tuple[str, ...]) -> dict:
        """All ranks' rows -> the validation summary (``valid_*`` fields of the epoch record)."""
        return mean_summary(rows, which)

    def media(self, generator: nn.Module, batch: dict) -> Media | None:
        """One fixed validation utterance (batch of 1; the generator in eval mode, no grad, called on
        rank 0 only, so no collectives) -> what TensorBoard shows of it; None: nothing.

        Must not draw from any random generator the training uses (the loop also restores the torch
        RNG state around it)."""
        return None

    # ----- lifetime ----------------------------------------------------------------------------------
    def state(self) -> dict:
        """Counters worth keeping in a checkpoint (informational; not needed to resume exactly)."""
        return {}

    def close(self) -> None:
        """Stop pools and other helpers (called once, also after errors)."""


def build_task(cfg: Config, device: torch.device, cores: int) -> Task:
    return resolve(task_spec(cfg.task).task)(cfg, device, cores)


def _mean(values: list) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def mean_summary(rows: list[dict], which: tuple[str, ...]) -> dict:
    """Means of every numeric per-utterance value; the metrics in ``which`` over the rows without
    an ``error`` only (failed utterances are counted, never averaged in as NaN)."""
    ok = [row for row in rows if not row.get("error")]
    summary: dict = {"num_utterances": len(rows), "num_failed": len(rows) - len(ok)}
    numeric = sorted({k for row in rows for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in which})
    for key in numeric:
        summary[key] = _mean([row.get(key) for row in rows])
    for key in which:
        summary[key] = _mean([row.get(key) for row in ok])
    return summary
