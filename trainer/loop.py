"""The Trainer: one object per process that owns models, optimizers, data and the run directory.

Step protocol (identical on every rank, so a failure on one rank can never hang DDP):
1. generator forward and loss (the discriminator frozen, called without DDP);
2. PESQ labels for the estimates (failed items masked) and the discriminator loss;
3. one all-reduce of [G loss non-finite, D loss non-finite, stop requested, checkpoint due];
4. both backwards and optimizer steps unless a loss was non-finite on any rank (then skipped,
   counted; ``train.max_nonfinite_steps`` in a row stops the run, keeping the last good checkpoint);
5. on "checkpoint due" all ranks save ``last`` together; on "stop requested" they save and exit 42.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from trainer import checkpoint as ckpt
from trainer import dist, signals
from trainer.config import Config, ConfigError, to_dict
from trainer.exitcodes import EXIT_FINISHED, EXIT_REQUEUE
from trainer.log import get_logger, warn_once
from trainer.runstate import MetricsLog, write_state
from trainer.validate import run_validation

log = get_logger("loop")
MIN_PESQ_RATE = 0.70  # warn when fewer than 70% of the discriminator's items get a PESQ label


class Diverged(RuntimeError):
    """Too many consecutive non-finite losses."""


def lr_factor(cfg: Config, epoch: int) -> float:
    """Learning-rate multiplier for ``epoch``: a pure function, so extending a run stays consistent."""
    if cfg.optim.scheduler == "step":
        return cfg.optim.step_gamma ** (epoch // cfg.optim.step_epochs)
    if cfg.optim.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, cfg.train.epochs) / cfg.train.epochs))
    return 1.0


def _make_optimizer(cfg: Config, params, lr: float) -> torch.optim.Optimizer:
    kind = torch.optim.AdamW if cfg.optim.name == "adamw" else torch.optim.Adam
    extra = {"weight_decay": cfg.optim.weight_decay} if cfg.optim.name == "adamw" else {}
    return kind(params, lr=lr, betas=tuple(cfg.optim.betas), **extra)


def _build_task(cfg: Config, device: torch.device, labeler):
    if cfg.task == "creative_agent":
        from trainer.creative_task import CreativeTask

        return CreativeTask(cfg, device, labeler)
    from trainer.se_task import SpeechTask

    return SpeechTask(cfg, device, labeler)


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path, env: dist.DistEnv):
        from trainer.data import build_eval_loader, build_train_loader
        from trainer.metrics import PesqLabeler, process_pool

        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.device = dist.select_device(env, cfg.train.device)
        dist.init(env, self.device)
        if cfg.train.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        if cfg.train.amp and not self.amp:
            warn_once(log, "amp-cpu", "train.amp is ignored on the CPU (autocast is for CUDA here)")
        self._ensure_demo_corpus()
        self.metrics = MetricsLog(self.run_dir, enabled=env.is_main)
        self.cores = dist.cores_per_rank(env)
        if "OMP_NUM_THREADS" not in os.environ:  # else torch takes every core of the node in each rank
            torch.set_num_threads(self.cores)
        pesq_workers = cfg.train.pesq_workers
        if pesq_workers is None:
            pesq_workers = min(cfg.data.batch_size, self.cores) if self.cores > 1 else 0
        self.labeler = PesqLabeler(pesq_workers)
        self.metric_pool = process_pool(self.cores) if self.cores > 1 else None
        self.task = _build_task(cfg, self.device, self.labeler)

        torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
        generator, discriminator = self.task.build_models()
        self.generator = generator.to(self.device)
        self.discriminator = discriminator.to(self.device)
        self.opt_g = _make_optimizer(cfg, self.generator.parameters(), cfg.optim.lr)
        self.opt_d = _make_optimizer(cfg, self.discriminator.parameters(), cfg.optim.lr * cfg.optim.disc_lr_ratio)
        # Per-rank streams (anything random inside a step, e.g. the creative variant's noise).
        seed = cfg.run.seed * 1000 + env.rank
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        if env.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.g_ddp = DistributedDataParallel(self.generator, device_ids=ids)
            self.d_ddp = DistributedDataParallel(self.discriminator, device_ids=ids)
        else:
            self.g_ddp, self.d_ddp = self.generator, self.discriminator

        self.train_loader, self.sampler = build_train_loader(cfg, env.rank, env.world_size)
        self.valid_loader = build_eval_loader(None, cfg, env.rank, env.world_size,
                                              max_seconds=cfg.data.valid_max_seconds,
                                              max_utterances=cfg.valid.max_utterances)
        self.steps_per_epoch = len(self.sampler)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ConfigError(f"data.batch_size={cfg.data.batch_size} x {env.world_size} ranks leaves no full "
                              f"batch in {cfg.data.train_dir}; lower the batch size")
        self.epoch, self.step, self.batches_done = 0, 0, 0
        self.best: dict[str, float] = {}
        self.num_nonfinite_in_row = 0
        self.num_nonfinite_total = 0
        self.last_save_time = time.monotonic()
        self._resume()

    # ----- setup helpers -------------------------------------------------------------------
    def _ensure_demo_corpus(self) -> None:
        """Rank 0 builds the demo corpus (once, atomically) while the other ranks wait."""
        if not self.cfg.data.demo:
            return
        from trainer.demo import demo_for

        if self.env.is_main:
            demo_for(self.cfg)
        dist.barrier()

    def _resume(self) -> None:
        path = self.run_dir / "checkpoints" / "last.pt"
        if not path.exists():
            log.info("new run in %s (%d steps per epoch, %d rank(s), device %s)", self.run_dir,
                     self.steps_per_epoch, self.env.world_size, self.device)
            return
        state = ckpt.load(path)
        diffs = ckpt.architecture_mismatches(state["config"], to_dict(self.cfg))
        if diffs:
            raise ckpt.CheckpointError(f"{path}: the config does not match the checkpoint's architecture: "
                                       + "; ".join(diffs) + " (use a new run directory for a new architecture)")
        ckpt.load_module_state(self.generator, state["generator"], "generator", path)
        ckpt.load_module_state(self.discriminator, state["discriminator"], "discriminator", path)
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.epoch, self.step, self.batches_done = state["epoch"], state["step"], state["batches_done"]
        self.best = dict(state["best"])
        self.num_nonfinite_total = state.get("num_nonfinite_total", 0)
        if state["sampler"]:  # the batch to continue at, in this run's layout (world size may differ)
            self.batches_done = self.sampler.load_state_dict(state["sampler"])
        if len(state["rng"]) == self.env.world_size:
            ckpt.restore_rng(state["rng"][self.env.rank])
        else:
            log.warning("checkpoint was written by %d ranks, this run has %d: random streams restart "
                        "(the data order is still exact)", len(state["rng"]), self.env.world_size)
        dropped = self.metrics.truncate_after(self.step)
        log.info("resumed %s at epoch %d, step %d (batch %d of the epoch)%s", path, self.epoch, self.step,
                 self.batches_done, f"; dropped {dropped} metrics records written after it" if dropped else "")

    # ----- checkpoints -----------------------------------------------------------------------
    def _state(self) -> dict:
        rng = dist.all_gather_objects(ckpt.capture_rng())
        return {
            "format_version": ckpt.FORMAT_VERSION,
            "config": to_dict(self.cfg),
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "lr_schedule": {"name": self.cfg.optim.scheduler, "factor": lr_factor(self.cfg, self.epoch)},
            "epoch": self.epoch,
            "step": self.step,
            "batches_done": self.batches_done,
            "sampler": self.sampler.state_dict(self.batches_done) if self.batches_done else {},
            "rng": rng,
            "best": dict(self.best),
            "num_nonfinite_total": self.num_nonfinite_total,
            "pesq_labels": {"num_items": self.labeler.num_items, "num_failed": self.labeler.num_failed},
            "world_size": self.env.world_size,
            "versions": ckpt.versions(),
        }

    def save(self, improved: tuple[str, ...] = ()) -> list[str]:
        """Collective: every rank contributes its RNG state; rank 0 writes. Returns names saved."""
        state = self._state()
        saved = []
        if self.env.is_main:
            folder = self.run_dir / "checkpoints"
            ckpt.save_atomic(state, folder / "last.pt")
            saved.append("last")
            for metric in improved:
                ckpt.copy_atomic(folder / "last.pt", folder / f"best_{metric}.pt")
                saved.append(f"best_{metric}")
            write_state(self.run_dir, status="running", step=self.step, epoch=self.epoch,
                        epochs=self.cfg.train.epochs, best=self.best, job_id=self.env.job_id,
                        world_size=self.env.world_size)
        dist.barrier()
        self.last_save_time = time.monotonic()
        return saved

    def mark(self, status: str) -> None:
        if self.env.is_main:
            write_state(self.run_dir, status=status, step=self.step, epoch=self.epoch,
                        epochs=self.cfg.train.epochs, best=self.best)

    # ----- the loop -------------------------------------------------------------------------
    def _set_lr(self) -> None:
        factor = lr_factor(self.cfg, self.epoch)
        for group in self.opt_g.param_groups:
            group["lr"] = self.cfg.optim.lr * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.cfg.optim.lr * self.cfg.optim.disc_lr_ratio * factor

    def _checkpoint_due(self, step: int) -> bool:
        every_steps, every_minutes = self.cfg.checkpoint.every_steps, self.cfg.checkpoint.every_minutes
        if every_steps and step % every_steps == 0:
            return True
        return bool(every_minutes) and time.monotonic() - self.last_save_time >= 60 * every_minutes

    def fit(self) -> int:
        from trainer.losses import gan_weight

        cfg = self.cfg
        self.mark("running")
        if self.env.is_main:
            write_state(self.run_dir, job_id=self.env.job_id, world_size=self.env.world_size)
        while self.epoch < cfg.train.epochs:
            self._set_lr()
            weight = gan_weight(self.epoch, cfg.train.epochs, cfg.loss)
            self.sampler.set_epoch(self.epoch)
            if self.batches_done:
                self.sampler.load_state_dict(self.sampler.state_dict(self.batches_done))
            epoch_totals = {"num_valid": 0, "num_items": 0, "num_steps": 0}
            window = _Window()
            last_tick = time.perf_counter()
            for batch in self.train_loader:
                if self.batches_done >= self.steps_per_epoch:
                    break
                data_seconds = time.perf_counter() - last_tick
                flags, record = self._train_step(batch, weight)
                self.batches_done += 1
                self.step += 1
                step_seconds = time.perf_counter() - last_tick
                last_tick = time.perf_counter()
                window.add(record, data_seconds, step_seconds)
                for key in ("num_valid", "num_items"):
                    epoch_totals[key] += record.get(key, 0)
                epoch_totals["num_steps"] += 1
                if self.step % cfg.train.log_every == 0:
                    self._log_window(window, weight)
                    window = _Window()
                stop = flags[2] > 0
                if stop or flags[3] > 0:
                    self.save()
                if stop:
                    return self._requeue_exit()
            self._end_epoch(epoch_totals)
            if self._any_rank_stopping():  # collective: every rank asks, flag set or not
                return self._requeue_exit()
        self.mark("finished")
        log.info("finished: %d epochs, step %d; best %s", cfg.train.epochs, self.step, self.best)
        return EXIT_FINISHED

    def _any_rank_stopping(self) -> bool:
        return float(dist.all_reduce_sum(torch.tensor([float(signals.stop_requested())]))[0]) > 0

    def _requeue_exit(self) -> int:
        if self.env.is_main:
            write_state(self.run_dir, status="checkpointed", step=self.step, epoch=self.epoch)
        log.info("stop requested (%s): saved last at step %d; exiting with %d so the job is requeued",
                 signals.stop_reason() or "another rank", self.step, EXIT_REQUEUE)
        return EXIT_REQUEUE

    def _train_step(self, batch: dict, weight: float) -> tuple[list[float], dict]:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        self.discriminator.requires_grad_(False)
        with autocast:
            g_loss, terms, context = self.task.generator_step(self.g_ddp, self.discriminator, batch, weight)
        self.discriminator.requires_grad_(True)
        with autocast:
            d_loss, d_info = self.task.discriminator_step(self.d_ddp, context)
        local = torch.tensor([float(not torch.isfinite(g_loss)), float(not torch.isfinite(d_loss)),
                              float(signals.stop_requested()), float(self._checkpoint_due(self.step + 1))])
        flags = dist.all_reduce_sum(local).tolist()
        self.opt_g.zero_grad(set_to_none=True)
        self.opt_d.zero_grad(set_to_none=True)
        record = {"loss": float(g_loss.detach()), **{k: float(v.detach()) for k, v in terms.items()},
                  "d_loss": float(d_loss.detach()), **d_info}
        if flags[0] > 0:
            self._count_nonfinite("generator")
            return flags, record
        g_loss.backward()
        record["grad_norm_g"] = self._clip(self.generator)
        self.opt_g.step()
        if flags[1] > 0:
            self._count_nonfinite("discriminator")
            return flags, record
        d_loss.backward()
        record["grad_norm_d"] = self._clip(self.discriminator)
        self.opt_d.step()
        self.num_nonfinite_in_row = 0
        return flags, record

    def _clip(self, module: torch.nn.Module) -> float:
        max_norm = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        return float(torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm))

    def _count_nonfinite(self, which: str) -> None:
        self.num_nonfinite_in_row += 1
        self.num_nonfinite_total += 1
        log.warning("non-finite %s loss at step %d: step skipped (%d in a row, %d in total)", which,
                    self.step + 1, self.num_nonfinite_in_row, self.num_nonfinite_total)
        if self.num_nonfinite_in_row >= self.cfg.train.max_nonfinite_steps:
            raise Diverged(f"{self.num_nonfinite_in_row} consecutive non-finite losses at step {self.step + 1}: "
                           f"stopping; the last good checkpoint is {self.run_dir / 'checkpoints' / 'last.pt'} "
                           "(lower optim.lr, raise optim.grad_clip, or check the data)")

    def _log_window(self, window: _Window, weight: float) -> None:
        means = window.reduced(self.env.world_size)
        record = {"kind": "step", "step": self.step, "epoch": self.epoch, **means, "gan_weight": weight,
                  "lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"],
                  "samples_per_sec": self.cfg.data.batch_size * self.env.world_size / max(1e-9, means["sec_per_step"])}
        rate = None
        if "num_items" in means:
            rate = record["pesq_valid_rate"] = record.pop("num_valid") / max(1.0, record.pop("num_items"))
        record.update(self.task.window_extras(means))
        self.metrics.write(record)
        log.info("epoch %d step %d loss %.4f d_loss %.4f gan_w %.3f%s %.2fs/step%s", self.epoch, self.step,
                 record["loss"], record.get("d_loss", float("nan")), weight,
                 "" if rate is None else f" pesq-labelled {100 * rate:.0f}%", record["sec_per_step"],
                 f" ({record['alert']})" if "alert" in record else "")
        threshold = self.cfg.loss.grad_norm_alert
        for name in ("grad_norm_g", "grad_norm_d"):
            if threshold and record.get(name, 0.0) > threshold:
                log.warning("%s %.1f is above the alert threshold loss.grad_norm_alert=%g", name, record[name],
                            self.cfg.loss.grad_norm_alert)
        if rate is not None and rate < MIN_PESQ_RATE:
            log.warning("discriminator trained on only %.0f%% of its items in the last %d steps (PESQ failed "
                        "on the rest; silent or too-short clips?)", 100 * rate, self.cfg.train.log_every)

    def _end_epoch(self, totals: dict) -> None:
        cfg = self.cfg
        summed = dist.all_reduce_sum(torch.tensor([float(totals["num_valid"]), float(totals["num_items"])]))
        record = {"kind": "epoch", "epoch": self.epoch, "step": self.step}
        if summed[1] > 0:  # tasks whose discriminator is labelled by PESQ
            rate = float(summed[0]) / float(summed[1])
            record["pesq_valid_rate"] = rate
            if rate < MIN_PESQ_RATE:
                log.warning("epoch %d: discriminator trained on only %.0f%% of its items", self.epoch, 100 * rate)
        last_epoch = self.epoch + 1 == cfg.train.epochs
        improved: tuple[str, ...] = ()
        if (self.epoch + 1) % cfg.valid.every_epochs == 0 or last_epoch:
            which = self.task.validation_metrics((self.epoch + 1) // cfg.valid.every_epochs, last_epoch)
            summary = run_validation(self.task, self.generator, self.discriminator, self.valid_loader,
                                     which=which, sample_rate=cfg.data.sample_rate, pool=self.metric_pool)
            summary.update(self.task.window_extras(summary))
            record.update({f"valid_{k}": v for k, v in summary.items()})
            improved = self._update_best(summary)
            log.info("epoch %d validation: %s", self.epoch,
                     ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float)))
        self.epoch += 1
        self.batches_done = 0
        record["checkpoints"] = self.save(improved)
        self.metrics.write(record)

    def _update_best(self, summary: dict) -> tuple[str, ...]:
        improved = []
        for metric in self.cfg.checkpoint.keep_best:
            value = summary.get(metric)
            if value is None:  # not computed this epoch (e.g. STOI every few epochs)
                continue
            previous = self.best.get(metric)
            maximise = metric in self.task.maximise
            if previous is None or (value > previous if maximise else value < previous):
                self.best[metric] = value
                improved.append(metric)
        return tuple(improved)

    def close(self) -> None:
        self.metrics.close()
        self.labeler.close()
        for loader in (self.train_loader, self.valid_loader):
            loader.close()
        if self.metric_pool is not None:
            self.metric_pool.shutdown(wait=True)


class _Window:
    """Sums of step records between two log lines (reduced across ranks when logged)."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.num_steps = 0

    def add(self, record: dict, data_seconds: float, step_seconds: float) -> None:
        self.num_steps += 1
        for key, value in {**record, "data_sec_per_step": data_seconds, "sec_per_step": step_seconds}.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def reduced(self, world_size: int) -> dict[str, float]:
        keys = sorted(self.sums)
        totals = dist.all_reduce_sum(torch.tensor([self.sums[k] for k in keys], dtype=torch.float64)).tolist()
        out = {}
        for key, total in zip(keys, totals, strict=True):
            out[key] = total if key.startswith("num_") else total / (self.num_steps * world_size)
        return out
