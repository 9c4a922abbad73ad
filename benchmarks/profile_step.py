"""Where the host time of our training step goes: device reads (synchronisations), time outside ops, kernel gaps.

    .venv/bin/python benchmarks/profile_step.py [--config configs/smoke.yaml] [--set k=v ...] [--steps 5]
        [--warmup 2] [--device cpu|cuda] [--amp] [--no-labels] [--json OUT.json] [--trace OUT.json]

Drives the training loop's own step (``Trainer.step``, a ``trainer.core.step.TrainingStep``, as
``bench_throughput.py`` does) on the demo corpus and reports, per measured step (medians):

- **device reads**: every ``Tensor.item/tolist/cpu/numpy/__float__/__int__/__bool__`` called from the
  toolkit's own code (``trainer/``), counted by call site. On CUDA each is a host-device
  synchronisation unless the tensor is already on the host; on the CPU the count is the same code path's
  (what would synchronise on a GPU, an upper bound). On CUDA the script also counts the
  synchronisations torch itself reports (``torch.cuda.set_sync_debug_mode("warn")``), by call site.
- **host time outside ops**: the step's wall time minus the union of the top-level ``aten::`` operator
  intervals (any thread) inside it, i.e. Python, dispatch and bookkeeping around the ops, less the
  time the step waited for its PESQ labels (``sec_label_wait``, reported apart).
- **kernel gaps** (CUDA): the step's wall time minus the union of its GPU kernels' intervals: the time
  the GPU sat idle, waiting for the host; and kernels launched per step.
- the operators with the most self CPU time (and CUDA time) over the measured steps.

``--no-labels`` replaces the PESQ labeller by constant labels (``bench_throughput.py --modes none``), so
only the step's own work is seen. ``--trace`` writes a Chrome trace of the measured steps.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from benchmarks.bench_throughput import _FreeLabels  # noqa: E402
from trainer.core.config import load_config  # noqa: E402
from trainer.core.env import read_env  # noqa: E402
from trainer.core.loop import Trainer  # noqa: E402

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__")
STEP_LABEL = "profiled_step"


@contextlib.contextmanager
def counted_reads(counts: collections.Counter):
    """Count the device reads called from trainer/ (by 'file:line method'); restored on exit."""
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    package = str(ROOT / "trainer")

    def wrap(name, original):
        def counting(self, *args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(package):
                where = os.path.relpath(caller.f_code.co_filename, ROOT)
                counts[f"{where}:{caller.f_lineno} {name}"] += 1
            return original(self, *args, **kwargs)
        return counting

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@contextlib.contextmanager
def cuda_sync_warnings(counts: collections.Counter, enabled: bool):
    """torch's own count of CUDA synchronisations (one warning each), by the Python line that caused it."""
    if not enabled:
        yield
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for warning in caught:
        if "synchroniz" in str(warning.message).lower():
            counts[f"{os.path.relpath(warning.filename, ROOT)}:{warning.lineno}"] += 1


def _union(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for start, stop in sorted(intervals):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _has_aten_ancestor(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def step_timings(events) -> list[dict]:
    """Per profiled step: wall, union of top-level aten ops (CPU), union of kernels and their count (CUDA), in ms."""
    steps = sorted((e for e in events if e.name == STEP_LABEL and e.device_type == DeviceType.CPU),
                   key=lambda e: e.time_range.start)
    ops = [e for e in events if e.device_type == DeviceType.CPU and e.name.startswith("aten::")
           and not _has_aten_ancestor(e)]
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    rows = []
    for step in steps:
        start, end = step.time_range.start, step.time_range.end
        inside = [(e.time_range.start, e.time_range.end) for e in ops
                  if e.time_range.start >= start and e.time_range.end <= end]
        in_kernels = [(max(e.time_range.start, start), min(e.time_range.end, end)) for e in kernels
                      if e.time_range.end > start and e.time_range.start < end]
        rows.append({"wall_ms": (end - start) / 1000, "ops_ms": _union(inside) / 1000,
                     "kernels_ms": _union(in_kernels) / 1000, "kernels": len(in_kernels)})
    return rows


def build_trainer(args, work: Path) -> Trainer:
    cfg = load_config(args.config, [
        "data.demo=true", "data.num_workers=0", "loss.gan_start_fraction=0.0", "loss.gan_ramp_epochs=0",
        "checkpoint.every_steps=0", "checkpoint.every_minutes=0", "train.log_every=1000000",
        "train.tensorboard=false", f"train.device={args.device}", f"train.amp={str(args.amp).lower()}",
        *args.overrides])
    trainer = Trainer(cfg, work, read_env())
    if args.no_labels:
        trainer.task.labeler.close()
        trainer.task.labeler = _FreeLabels(cfg.data.batch_size)
    return trainer


def run_steps(trainer: Trainer, batches, count: int, profiled: bool) -> list[dict]:
    weight = trainer.task.gan_weight(0)
    records = []
    for _ in range(count):
        batch = next(batches)
        with record_function(STEP_LABEL) if profiled else contextlib.nullcontext():
            _, record = trainer.step(batch, weight, trainer.progress, lambda: False)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
        records.append(record)
    return records


def batches_forever(trainer: Trainer):
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        trainer.sampler.start_at(0)
        yield from trainer.train_loader
        epoch += 1


def profile_steps(args) -> dict:
    cuda = args.device == "cuda"
    reads, syncs = collections.Counter(), collections.Counter()
    with tempfile.TemporaryDirectory(prefix="profile_step_") as work:
        trainer = build_trainer(args, Path(work))
        try:
            batches = batches_forever(trainer)
            run_steps(trainer, batches, args.warmup, profiled=False)
            activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
            started = time.perf_counter()
            with profile(activities=activities) as prof, counted_reads(reads), cuda_sync_warnings(syncs, cuda):
                records = run_steps(trainer, batches, args.steps, profiled=True)
            wall = time.perf_counter() - started
        finally:
            trainer.close()
        if args.trace:
            prof.export_chrome_trace(str(args.trace))
    timings = step_timings(prof.events())
    waits = [1000 * r.get("sec_label_wait", 0.0) for r in records]
    sort_key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    top = prof.key_averages().table(sort_by=sort_key, row_limit=args.top, max_name_column_width=48)
    median = {key: statistics.median(t[key] for t in timings) for key in ("wall_ms", "ops_ms", "kernels_ms", "kernels")}
    return {
        "config": args.config, "overrides": args.overrides, "device": args.device, "amp": args.amp,
        "labels": not args.no_labels, "steps": args.steps, "profiled_wall_s": wall,
        "gpu": torch.cuda.get_device_name() if cuda else None, "torch_threads": torch.get_num_threads(),
        "per_step_median": {**median, "label_wait_ms": statistics.median(waits),
                            "outside_ops_ms": statistics.median(t["wall_ms"] - t["ops_ms"] - w
                                                                for t, w in zip(timings, waits, strict=True)),
                            "kernel_gaps_ms": median["wall_ms"] - median["kernels_ms"] if cuda else None},
        "device_reads_per_step": sum(reads.values()) / args.steps,
        "device_reads_by_site": {k: v / args.steps for k, v in reads.most_common()},
        "cuda_syncs_per_step": sum(syncs.values()) / args.steps if cuda else None,
        "cuda_syncs_by_site": {k: v / args.steps for k, v in syncs.most_common()} if cuda else None,
        "top_ops_table": top,
    }


def print_report(result: dict) -> None:
    m = result["per_step_median"]
    print(f"config {' '.join([result['config'], *result['overrides']])}; device {result['device']}"
          f"{' (' + result['gpu'] + ')' if result['gpu'] else ''}{' bf16' if result['amp'] else ''}; "
          f"labels {'PESQ pool' if result['labels'] else 'constant'}; {result['steps']} profiled steps; "
          f"torch threads {result['torch_threads']}; 1-min load average {os.getloadavg()[0]:.1f}")
    print(f"per step (median): wall {m['wall_ms']:.1f} ms, in top-level aten ops {m['ops_ms']:.1f} ms, "
          f"outside ops {m['outside_ops_ms']:.1f} ms (label wait {m['label_wait_ms']:.1f} ms apart)")
    if result["device"] == "cuda":
        print(f"GPU kernels: {m['kernels']:.0f} per step, busy {m['kernels_ms']:.1f} ms, idle gaps "
              f"{m['kernel_gaps_ms']:.1f} ms ({100 * m['kernel_gaps_ms'] / m['wall_ms']:.0f} % of the step)")
        print(f"CUDA synchronisations per step (torch's sync debug mode): {result['cuda_syncs_per_step']:.1f}")
        for site, count in result["cuda_syncs_by_site"].items():
            print(f"  {count:5.1f}  {site}")
    print(f"device reads from trainer/ per step: {result['device_reads_per_step']:.1f}")
    for site, count in result["device_reads_by_site"].items():
        print(f"  {count:5.1f}  {site}")
    print(result["top_ops_table"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=5, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps first (pool start, allocator)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), as train.amp")
    parser.add_argument("--no-labels", action="store_true", help="constant labels instead of the PESQ pool")
    parser.add_argument("--top", type=int, default=15, help="rows of the operator table")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--trace", type=Path, help="write a Chrome trace of the profiled steps here")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    result = profile_steps(args)
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
