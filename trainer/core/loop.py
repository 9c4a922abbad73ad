"""The Trainer: one object per process that runs a task's models over the data, epoch by epoch.

Step protocol (identical on every rank, so a failure on one rank can never hang DDP):
1. generator forward and loss (``task.generator_step``; the discriminator frozen, called without DDP);
   with ``train.overlap_labels`` (default) the task starts the discriminator's labels
   (``task.start_discriminator_labels``, e.g. in a process pool) and the generator's backward runs
   while they are computed;
2. the discriminator's loss on the detached estimates (``task.discriminator_step``; waits for the labels);
3. one all-reduce of [G loss non-finite, D loss non-finite, stop requested, checkpoint due];
4. both backwards (the generator's unless already run) and optimizer steps unless a loss was
   non-finite on any rank (then skipped, counted; ``train.max_nonfinite_steps`` in a row stops the
   run, keeping the last good checkpoint);
   a non-finite gradient norm (the same on every rank after DDP's all-reduce) skips that step too;
5. on "checkpoint due" all ranks save ``last`` together; on "stop requested" they save and exit 42
   (130 after a Ctrl-C on any rank: no requeue).

Epochs in log lines are counted from 1 ("epoch 11/30"), as ``launch.py status``, ``list`` and
``compare`` show them; the ``epoch`` fields of metrics.jsonl and checkpoints are 0-based indices.

Where the rest lives: the step itself ``core/step``, process setup ``core/runtime``, what a
checkpoint holds ``core/checkpoint``, when the loop saves one ``core/checkpoint_keeper``,
schedules ``core/schedules``, step records ``core/steplog``, validation ``core/validation``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer.core import checkpoint as ckpt
from trainer.core import dist, revision, signals
from trainer.core.changes import Change, allowed_by
from trainer.core.changes import describe as describe_change
from trainer.core.checkpoint_keeper import CheckpointKeeper
from trainer.core.config import Config, ConfigError, to_dict
from trainer.core.env import DistEnv
from trainer.core.exitcodes import EXIT_FINISHED, stop_exit_code
from trainer.core.log import get_logger
from trainer.core.registry import data_loaders
from trainer.core.runstate import MetricsLog, truncate_logs
from trainer.core.runtime import seed_all, setup_process, start_compile_workers
from trainer.core.schedules import lr_factor
from trainer.core.step import (  # noqa: F401 (Diverged: re-exported for train.py)
    CHECKPOINT_DUE,
    STOP_REQUESTED,
    Diverged,
    TrainingStep,
)
from trainer.core.steplog import EpochCounters, StepWindow, log_window, window_record
from trainer.core.task import build_task
from trainer.core.tracking import build_tracker
from trainer.core.validation import improved_metrics, run_validation

log = get_logger("loop")


def build_optimizer(cfg: Config, params, lr: float) -> torch.optim.Optimizer:
    """``optim.name`` (AdamW or Adam) with ``optim.betas`` (and weight decay for AdamW) at ``lr``."""
    kind = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    extra = {"weight_decay": cfg.optim.weight_decay} if cfg.optim.name == "adamw" else {}
    return kind(params, lr=lr, betas=tuple(cfg.optim.betas), **extra)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv, changes: list[Change] = ()):
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.config_changes: list[dict] = []  # every change a resume accepted (core/changes), kept in checkpoints
        self.device, cores, self.amp = setup_process(cfg, env)
        self.metrics = MetricsLog(self.run_dir, enabled=env.is_main)
        self.tracker = build_tracker(cfg, self.run_dir, env.is_main)  # TensorBoard mirror of metrics.jsonl
        self.task = build_task(cfg, self.device, cores)

        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        generator, discriminator = self.task.build_models()
        self.generator, self.discriminator = generator.to(self.device), discriminator.to(self.device)
        self.opt_g = build_optimizer(cfg, self.generator.parameters(), cfg.optim.lr)
        self.opt_d = build_optimizer(cfg, self.discriminator.parameters(), cfg.optim.lr * cfg.optim.disc_lr_ratio)
        seed_all(cfg.run.seed * 1000 + env.rank)  # per-rank streams (e.g. noise inside a step)
        if env.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_ddp = DistributedDataParallel(self.generator, device_ids=ids)
            self.d_ddp = DistributedDataParallel(self.discriminator, device_ids=ids)
        else:
            self.g_ddp, self.d_ddp = self.generator, self.discriminator
        if cfg.train.compile:  # the training step's generator only; checkpoints keep the eager module's keys
            if cfg.train.compile_backend == "inductor":
                start_compile_workers()
            self.g_ddp = torch.compile(self.g_ddp, backend=cfg.train.compile_backend)

        loaders = data_loaders(cfg)  # the data kind's builders: paired shards or on-the-fly mixing
        self.train_loader, self.sampler = loaders.build_train_loader(cfg, env.rank, env.world_size)
        self.valid_loader = loaders.build_eval_loader(None, cfg, env.rank, env.world_size,
                                              max_seconds=cfg.data.valid_max_seconds,
                                              max_utterances=cfg.valid.max_utterances)
        self.steps_per_epoch = len(self.sampler)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {env.world_size} ranks leaves no full "
                              f"batch in {cfg.data.train_dir}; lower the batch size")
        self.step = TrainingStep(cfg, self.task, self.device, self.amp, {
            "generator": self.generator, "discriminator": self.discriminator, "g_ddp": self.g_ddp,
            "d_ddp": self.d_ddp, "opt_g": self.opt_g, "opt_d": self.opt_d}, self.run_dir)
        self.progress = ckpt.Progress()
        self.epoch_totals = EpochCounters(self.task.epoch_counters)
        self.checkpoints = CheckpointKeeper(cfg, self.run_dir, env, {
            "generator": self.generator, "discriminator": self.discriminator,
            "opt_g": self.opt_g, "opt_d": self.opt_d}, self.sampler, self.task)
        if self.env.is_main:  # what every checkpoint of this process records (read now, at its start)
            code = revision.code_version() or {}
            log.info("code: %s%s", revision.describe(code),
                     f", snapshot {code['snapshot']}" if code.get("snapshot") else "")
        self._resume(changes)

    def _resume(self, changes: list[Change]) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.exists():
            if self.env.is_main:
                truncate_logs(self.run_dir, 0)  # records of an attempt that died before its first save
            log.info("new run in %s (%d steps per epoch, %d rank(s), device %s)", self.run_dir,
                     self.steps_per_epoch, self.env.world_size, self.device)
            if self.cfg.train.init_from:
                loaded = ckpt.init_weights_from(self.cfg.train.init_from, self.cfg, self.generator, self.discriminator)
                log.info("fine-tuning: %s from %s, fresh optimizers", loaded, self.cfg.train.init_from)
            self.tracker.start(0)  # a fresh run: old TensorBoard events go
            return
        state = ckpt.load(path)
        diffs = ckpt.architecture_mismatches(state["config"], to_dict(self.cfg))
        if diffs:
            raise ckpt.CheckpointError(f"{path}: the config does not match the checkpoint's architecture: "
                                       + "; ".join(diffs) + " (use a new run directory for a new architecture)")
        self.progress = ckpt.restore_training_state(state, path, self.checkpoints.parts, self.sampler, self.env)
        self.config_changes = list(state.get("config_changes", []))
        for change in changes:
            log.info("config change at step %d: %s", self.progress.step, describe_change(change))
            self.config_changes.append(change.record(self.progress.step, allowed_by(change)))
        self.epoch_totals.restore(state.get("epoch_totals", {}), self.env.rank)
        self.checkpoints.restored(self.progress)
        dropped = truncate_logs(self.run_dir, self.progress.step) if self.env.is_main else 0
        self.tracker.start(self.progress.step)  # TensorBoard events after the checkpoint go too
        p = self.progress
        log.info("resumed %s at epoch %d, step %d (batch %d of the epoch)%s", path, p.epoch + 1, p.step,
                 p.batches_done, f"; dropped {dropped} metrics records written after it" if dropped else "")

    def save(self, improved: tuple[str, ...] = ()) -> list[str]:
        """Collective: every rank contributes its RNG state; rank 0 writes. Returns names saved."""
        epoch_totals = self.epoch_totals.summed()
        return self.checkpoints.save(self.progress, improved, self.config_changes, epoch_totals)

    def mark(self, status: str, **extra) -> None:
        """Record ``status`` in state.json (``CheckpointKeeper.mark``)."""
        self.checkpoints.mark(status, self.progress, **extra)

    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg, self.progress.epoch)
        for opt, base in ((self.opt_g, self.cfg.optim.lr),
                          (self.opt_d, self.cfg.optim.lr * self.cfg.optim.disc_lr_ratio)):
            for group in opt.param_groups:
                group["lr"] = base * factor

    def fit(self) -> int:
        cfg, p = self.cfg, self.progress
        self.mark("running", job_id=self.env.job_id, world_size=self.env.world_size, exit_code=None)
        while p.epoch < cfg.train.epochs:
            self._set_lr()
            weight = self.task.gan_weight(p.epoch)
            self.sampler.set_epoch(p.epoch)
            self.sampler.start_at(p.batches_done)
            window = StepWindow()
            last_tick = time.perf_counter()
            for batch in self.train_loader:
                if p.batches_done >= self.steps_per_epoch:
                    break
                data_seconds = time.perf_counter() - last_tick
                flags, record = self.step(batch, weight, p, lambda: self.checkpoints.due(p.step + 1))
                p.batches_done += 1
                p.step += 1
                window.add(record, data_seconds, time.perf_counter() - last_tick)
                last_tick = time.perf_counter()
                self.epoch_totals.add(record)
                if p.step % cfg.train.log_every == 0:
                    self._log_window(window, weight)
                    window = StepWindow()
                if flags[STOP_REQUESTED] > 0 or flags[CHECKPOINT_DUE] > 0:
                    self.save()
                if flags[STOP_REQUESTED] > 0:
                    return self._exit_after_stop()
            self._end_epoch()
            # every rank has the same epoch, so all of them skip the collective after the last one together
            if p.epoch < cfg.train.epochs and self._any_rank_stopping():
                return self._exit_after_stop()
        if signals.stop_requested():  # e.g. USR2 during the last validation: nothing is left to requeue for
            log.info("stop requested (%s) after the last epoch: the run has finished, no requeue",
                     signals.stop_reason())
        self.mark("finished")
        log.info("finished: %d epochs, step %d; best %s", cfg.train.epochs, p.step, p.best)
        return EXIT_FINISHED

    def _any_rank_stopping(self) -> bool:
        return float(dist.all_reduce_sum(torch.tensor([float(signals.stop_requested())]))[0]) > 0

    def _exit_after_stop(self) -> int:
        """After a stop request and a save: EXIT_REQUEUE (42, state "checkpointed": the job layer may requeue
        it), or EXIT_INTERRUPTED (130, state "stopped", never requeued) when a rank got a Ctrl-C."""
        interrupted = dist.any_rank(signals.interrupted())  # collective: a Ctrl-C on any rank ends the run
        code = stop_exit_code(interrupted)
        self.mark("stopped" if interrupted else "checkpointed", exit_code=code)
        log.info("stop requested (%s): saved last at step %d; exiting with %d %s", signals.stop_reason() or
                 "another rank", self.progress.step, code,
                 "(Ctrl-C: no requeue; run the same command to continue)" if interrupted else "so the job is requeued")
        return code

    def _log_window(self, window: StepWindow, weight: float) -> None:
        p = self.progress
        means = window.reduced(self.env.world_size)
        record = window_record(means, step=p.step, epoch=p.epoch, gan_weight=weight,
                               lrs=(self.opt_g.param_groups[0]["lr"], self.opt_d.param_groups[0]["lr"]),
                               samples_per_step=self.cfg.data.batch_size * self.env.world_size,
                               counters=self.task.epoch_counters)
        record.update(self.task.window_extras(means))
        self.metrics.write(record)
        self.tracker.write(record)
        log_window(record, grad_norm_threshold=self.cfg.optim.grad_norm_alert, log_every=self.cfg.train.log_every,
                   note=self.task.window_note(record), warnings=self.task.warnings(record))

    def _end_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        record = {"kind": "epoch", "epoch": p.epoch, "step": p.step,
                  **self.task.epoch_extras(self.epoch_totals.summed())}
        for warning in self.task.warnings(record):
            log.warning("%s", warning)
        last_epoch = p.epoch + 1 == cfg.train.epochs
        improved: tuple[str, ...] = ()
        if (p.epoch + 1) % cfg.valid.every_epochs == 0 or last_epoch:
            which = self.task.validation_metrics((p.epoch + 1) // cfg.valid.every_epochs, last_epoch)
            summary = run_validation(self.task, self.generator, self.discriminator, self.valid_loader, which=which)
            summary.update(self.task.window_extras(summary))
            self.tracker.validation(self.task, self.generator, p.step)  # rank 0: audio, spectrograms
            record.update({f"valid_{k}": v for k, v in summary.items()})
            improved = improved_metrics(summary, p.best, cfg.checkpoint.keep_best, self.task.maximise)
            log.info("epoch %d/%d validation: %s", p.epoch + 1, cfg.train.epochs,
                     ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float)))
        p.epoch += 1
        p.batches_done = 0
        self.epoch_totals = EpochCounters(self.task.epoch_counters)
        record["checkpoints"] = self.save(improved)
        self.metrics.write(record)
        self.tracker.write(record)

    def close(self) -> None:
        self.metrics.close()
        self.tracker.close()
        self.task.close()
        for loader in (self.train_loader, self.valid_loader):
            loader.close()
