"""Training throughput: where a step's time goes, with serial vs overlapped PESQ labelling in one run.

    .venv/bin/python benchmarks/bench_throughput.py [--config configs/base.yaml] [--set k=v ...]
        [--steps 8] [--rounds 2] [--torch-threads 1] [--pesq-workers 1] [--modes serial,overlapped,none]
        [--device cpu|cuda] [--amp] [--json OUT.json]

Drives the training loop's own step (``Trainer.step``, a ``core.step.TrainingStep``, the real task, models,
optimizers and PESQ pool; no checkpoints) on the demo corpus, the modes taking turns in ``--rounds`` blocks of
``--steps`` measured steps so that the load of a shared machine falls on all of them alike:

- ``serial``: ``train.overlap_labels=false``, the labels computed before the backwards;
- ``overlapped``: the default: labels in the pool while the generator's backward runs;
- ``none``: no PESQ at all (constant labels): the floor, to see what the labelling adds.

Per mode: the median seconds per step of data, generator (forward, backward, clip, optimizer step),
label WAIT (the part of the labelling the step waited for: all of it when serial), discriminator,
and the rest (flags all-reduce, records); the median step and the CPU time this process used in it
(wall minus CPU: time the step waited, for the pool or for a core another program held) and the
CPU time of the PESQ workers per step (mean), samples per second, the best and median
of the per-block mean step (the spread the shared machine adds), and peak memory per mode (CPU
RSS high-water mark of this process, reset per block; CUDA max allocated); each block builds its
own ``Trainer`` (one unmeasured warm-up step: pool start, allocator) and closes it, so only one
mode's models live at a time; "idle CPUs": the share of the machine's CPU time left idle during
the mode's measured steps (near 0 %: other programs held the cores the pool was meant to have).
Then the ratios.
On a machine where other programs compete for the cores, the wall times carry their load. The
"own-cores estimate" is what a step costs when this process and the pool each have their own cores:
the step's CPU time, plus the labelling the step could not hide (serial: the workers' CPU time
spread over the workers; overlapped: the measured wait), compared with the same for ``none``.
The defaults give the pool its own core(s): torch on ``--torch-threads`` threads, ``--pesq-workers``
PESQ processes, the data loaded in this process (``data.num_workers=0``). ``--set`` overrides come
last (e.g. ``--set data.num_workers=2``). The generator is picked by ``--config``/``--set model.*``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.core.config import load_config  # noqa: E402
from trainer.core.env import read_env  # noqa: E402
from trainer.core.loop import Trainer  # noqa: E402

MODES = ("serial", "overlapped", "none")
PHASES = ("data", "generator", "label_wait", "discriminator", "other")


class _FreeLabels:
    """Stands in for the PESQ labeller in mode ``none``: every item valid, label 0.5, no work."""

    def __init__(self, batch: int):
        self._batch = batch

    def submit(self, clean, enhanced, lengths=None, sr: int = 16000):
        return self

    def result(self):
        return np.full(self._batch, 0.5, np.float32), np.ones(self._batch, bool)

    def close(self) -> None:
        pass


def _reset_peak_rss() -> bool:
    try:  # Linux: writing 5 resets this process's VmHWM
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc: hand freed heap pages back (honest RSS)
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of the whole machine (Linux /proc/stat; zeros elsewhere)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return values[3] + values[4], sum(values[:8])  # idle + iowait; user..steal


def _pool_cpu_seconds(task) -> float:
    """CPU seconds used so far by the task's PESQ workers (Linux /proc; 0 without a pool)."""
    executor = getattr(getattr(task, "labeler", None), "_executor", None)
    total = 0.0
    for pid in list(getattr(executor, "_processes", None) or ()):
        try:  # fields after the command name: utime and stime are the 12th and 13th
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            continue
    return total


class Runner:
    """One mode: a fresh Trainer per block (only one mode's models and pool alive at a time, so the
    peak memory is this mode's), an iterator over its training loader, and the measurements."""

    def __init__(self, mode: str, cfg, run_dir: Path, env):
        self.mode, self.cfg, self.run_dir, self.env = mode, cfg, run_dir, env
        self.steps: list[dict] = []
        self.block_means: list[float] = []
        self.peak_rss_mib = 0.0
        self.peak_cuda_mib = 0.0
        self.params = 0
        self.machine_idle: list[float] = []

    def _start(self, torch_threads: int) -> None:
        self.trainer = Trainer(self.cfg, self.run_dir, self.env)
        torch.set_num_threads(torch_threads)
        if self.mode == "none":
            self.trainer.task.labeler.close()
            self.trainer.task.labeler = _FreeLabels(self.cfg.data.batch_size)
        self.trainer.step.sync_phase_timing = True
        self.weight = self.trainer.task.gan_weight(0)
        self.params = sum(p.numel() for p in self.trainer.generator.parameters())
        self.epoch, self.batches = 0, None

    def _next_batch(self) -> dict:
        while True:
            if self.batches is None:
                self.trainer.sampler.set_epoch(self.epoch)
                self.trainer.sampler.start_at(0)
                self.batches = iter(self.trainer.train_loader)
            try:
                return next(self.batches)
            except StopIteration:
                self.batches, self.epoch = None, self.epoch + 1

    def step(self) -> dict:
        cpu_started, pool_started = time.process_time(), _pool_cpu_seconds(self.trainer.task)
        started = self.trainer.step.clock()
        batch = self._next_batch()
        loaded = self.trainer.step.clock()
        _, record = self.trainer.step(batch, self.weight, self.trainer.progress, lambda: False)
        total = self.trainer.step.clock() - started
        phases = {"data": loaded - started, "generator": record["sec_generator"],
                  "label_wait": record.get("sec_label_wait", 0.0), "discriminator": record["sec_discriminator"]}
        phases["other"] = total - sum(phases.values())
        return {**phases, "total": total, "cpu": time.process_time() - cpu_started,
                "pool_cpu": max(0.0, _pool_cpu_seconds(self.trainer.task) - pool_started), "loss": record["loss"]}

    def block(self, steps: int, torch_threads: int) -> None:
        _release_memory()
        rss_reset = _reset_peak_rss()
        self._start(torch_threads)
        device = self.trainer.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            self.step()  # warm-up: pool start, allocator, caches
            idle_before, total_before = _cpu_ticks()
            measured = [self.step() for _ in range(steps)]
            idle_after, total_after = _cpu_ticks()
        finally:
            self.trainer.close()
        if total_after > total_before:
            self.machine_idle.append((idle_after - idle_before) / (total_after - total_before))
        self.steps += measured
        self.block_means.append(statistics.mean(s["total"] for s in measured))
        print(f"  {self.mode}: block of {steps} steps, mean step {1000 * self.block_means[-1]:.0f} ms "
              f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        if rss_reset or not self.peak_rss_mib:
            self.peak_rss_mib = max(self.peak_rss_mib, _peak_rss_mib())
        if device.type == "cuda":
            self.peak_cuda_mib = max(self.peak_cuda_mib, torch.cuda.max_memory_allocated(device) / 2**20)
        self.device = device
        del self.trainer, self.batches

    def summary(self, batch_size: int) -> dict:
        median = {name: statistics.median(s[name] for s in self.steps) for name in (*PHASES, "total", "cpu")}
        # the workers' CPU clock ticks in 10 ms: a mean, not a median
        median["pool_cpu"] = statistics.mean(s["pool_cpu"] for s in self.steps)
        return {"ms_per_step_median": {k: 1000 * v for k, v in median.items()},
                "samples_per_sec": batch_size / median["total"],
                "block_mean_step_ms": [1000 * m for m in self.block_means],
                "step_ms_best_block": 1000 * min(self.block_means),
                "step_ms_median_block": 1000 * statistics.median(self.block_means),
                "steps_measured": len(self.steps), "peak_rss_mib": self.peak_rss_mib,
                "machine_idle_pct": 100 * statistics.mean(self.machine_idle) if self.machine_idle else None,
                "peak_cuda_allocated_mib": self.peak_cuda_mib or None}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/base.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=8, help="measured steps per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per mode, the modes taking turns")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--pesq-workers", type=int, default=1)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), as train.amp")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes: a comma-separated subset of {','.join(MODES)}")
    return args


def _run_modes(args: argparse.Namespace) -> tuple[list[Runner], object]:
    """Every mode's blocks, the modes taking turns; the runners and the (last mode's) config."""
    common = ["data.demo=true", "data.batch_size=4", "data.crop_seconds=2.0", "data.num_workers=0",
              "loss.gan_start_fraction=0.0", "loss.gan_ramp_epochs=0", "checkpoint.every_steps=0",
              "checkpoint.every_minutes=0", "train.log_every=1000000", "train.tensorboard=false",
              f"train.device={args.device}",
              f"train.amp={str(args.amp).lower()}", f"train.pesq_workers={args.pesq_workers}"]
    env = read_env()
    runners = []
    with tempfile.TemporaryDirectory(prefix="bench_throughput_") as work:
        for mode in args.modes:
            overlap = "false" if mode == "serial" else "true"
            cfg = load_config(args.config, [*common, f"train.overlap_labels={overlap}", *args.overrides])
            runners.append(Runner(mode, cfg, Path(work) / mode, env))
        for _ in range(args.rounds):
            for runner in runners:
                runner.block(args.steps, args.torch_threads)
    return runners, cfg


def _print_table(args, cfg, device, params: int, load_start: float, results: dict) -> None:
    batch_size, crop = cfg.data.batch_size, cfg.data.crop_seconds
    print(f"config {' '.join([args.config, *args.overrides])}; generator {cfg.model.name} ({params / 1e6:.2f} M "
          f"params); batch {batch_size} x {crop} s; device {device}{' bf16' if args.amp else ''}; "
          f"torch threads {args.torch_threads}, PESQ workers {args.pesq_workers}, "
          f"{os.cpu_count()} cores; {args.rounds} blocks x {args.steps} steps per mode; "
          f"1-min load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{'mode':<11}" + "".join(f"{p:>14}" for p in (*PHASES, "step", "step CPU", "pool CPU"))
          + f"{'samples/s':>11}"
          + f"{'best/med blk':>15}{'peak RSS':>10}" + (f"{'peak CUDA':>11}" if device.type == "cuda" else "")
          + f"{'idle CPUs':>11}")
    for mode, res in results.items():
        ms = res["ms_per_step_median"]
        print(f"{mode:<11}" + "".join(f"{ms[p]:>12.1f}ms" for p in (*PHASES, "total", "cpu", "pool_cpu"))
              + f"{res['samples_per_sec']:>11.2f}"
              + f"{res['step_ms_best_block']:>8.0f}/{res['step_ms_median_block']:<6.0f}"
              + f"{res['peak_rss_mib']:>7.0f}MiB"
              + (f"{res['peak_cuda_allocated_mib']:>8.0f}MiB" if device.type == "cuda" else "")
              + (f"{res['machine_idle_pct']:>10.0f}%" if res["machine_idle_pct"] is not None else ""))


def _wall_ratios(results: dict) -> dict:
    """The median steps' ratios between the modes measured; printed."""
    ratios = {}
    total = {mode: res["ms_per_step_median"]["total"] for mode, res in results.items()}
    if "serial" in total and "overlapped" in total:
        ratios["serial_over_overlapped"] = _ratio(total["serial"], total["overlapped"])
        ratios["label_wait_overlapped_over_serial"] = _ratio(
            results["overlapped"]["ms_per_step_median"]["label_wait"],
            results["serial"]["ms_per_step_median"]["label_wait"])
    for mode in ("serial", "overlapped"):
        if mode in total and "none" in total:
            ratios[f"{mode}_over_none"] = _ratio(total[mode], total["none"])
    if ratios:
        print("ratios (median step): " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
        for mode in ("serial", "overlapped"):
            if f"{mode}_over_none" in ratios:
                print(f"  {mode}: the labelling adds {100 * (ratios[f'{mode}_over_none'] - 1):+.0f}% to the step")
    return ratios


def _own_cores_estimate(results: dict, ratios: dict, pesq_workers: int, batch_size: int) -> None:
    """Adds each mode's own-cores step estimate to ``results`` and its ratios to ``ratios``; printed."""
    # On a machine where other programs hold cores, wall time mixes in their load. The CPU view:
    # the step's own CPU time plus what it had to wait for labels that no core of its own could
    # hide (serial: the workers' CPU time shared by the workers; overlapped: the measured wait).
    own = {}
    parallel = max(1, min(pesq_workers, batch_size))
    for mode, res in results.items():
        ms = res["ms_per_step_median"]
        own[mode] = ms["cpu"] + (ms["pool_cpu"] / parallel if mode == "serial" else ms["label_wait"])
        res["own_cores_step_ms_estimate"] = own[mode]
    if "none" in own and len(own) > 1:
        for mode in ("serial", "overlapped"):
            if mode in own:
                ratios[f"{mode}_over_none_own_cores_estimate"] = _ratio(own[mode], own["none"])
        print("own-cores estimate (step CPU + unhidden labelling): "
              + ", ".join(f"{mode} {ms:.0f} ms" for mode, ms in own.items()) + "; the labelling adds "
              + ", ".join(f"{100 * (ratios[f'{m}_over_none_own_cores_estimate'] - 1):+.0f}% ({m})"
                          for m in ("serial", "overlapped") if f"{m}_over_none_own_cores_estimate" in ratios))


def main() -> None:
    args = _parse_args()
    load_start = os.getloadavg()[0]
    runners, cfg = _run_modes(args)
    device = runners[0].device
    batch_size, crop = cfg.data.batch_size, cfg.data.crop_seconds
    params = runners[0].params
    results = {r.mode: r.summary(batch_size) for r in runners}
    _print_table(args, cfg, device, params, load_start, results)
    ratios = _wall_ratios(results)
    _own_cores_estimate(results, ratios, args.pesq_workers, batch_size)
    report = {"config": args.config, "overrides": args.overrides, "device": str(device), "amp": args.amp,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "generator": cfg.model.name, "generator_params": params, "batch_size": batch_size,
              "crop_seconds": crop, "steps_per_block": args.steps, "rounds": args.rounds,
              "torch_threads": args.torch_threads, "pesq_workers": args.pesq_workers,
              "cpu_cores": os.cpu_count(), "load_average_start_end": [load_start, os.getloadavg()[0]],
              "modes": results, "ratios": ratios}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")

if __name__ == "__main__":
    main()
