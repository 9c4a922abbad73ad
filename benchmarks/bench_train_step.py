"""Where a training step's time goes: data, generator, PESQ labelling, discriminator.

    .venv/bin/python benchmarks/bench_train_step.py [--config configs/smoke.yaml] [--demo] [--steps 20]
        [--set k=v ...] [--device cpu|cuda] [--amp] [--json OUT.json]

Runs the real task step functions (the same as the training loop, single process, the config's
optimizers) and prints the mean wall time per step of each phase and its share. Any speech config
works, e.g. the published presets at their recipe's batch 4 x 2 s on the built-in demo corpus:

    .venv/bin/python benchmarks/bench_train_step.py --config configs/cmgan.yaml --demo --device cuda --amp
    .venv/bin/python benchmarks/bench_train_step.py --config configs/mpsenet.yaml --demo --device cuda --amp

(``--demo`` is ``--set data.demo=true``: the demo corpus instead of the config's ``data.train_dir``.)
The PESQ-labelling phase uses the persistent ``PesqLabeler`` pool; for a comparison against a fresh
joblib pool per call, see ``benchmarks/bench_pesq_labelling.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.core.config import load_config  # noqa: E402
from trainer.core.loop import build_optimizer  # noqa: E402
from trainer.data.shards import build_train_loader  # noqa: E402
from trainer.tasks.speech.losses import discriminator_loss  # noqa: E402
from trainer.tasks.speech.task import SpeechTask  # noqa: E402


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pesq-workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--demo", action="store_true", help="train on the built-in demo corpus (data.demo=true)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), as train.amp")
    parser.add_argument("--json", help="also write the numbers here")
    return parser.parse_args()


class _Setup:
    """The task, its models and optimizers, the training loader: what the timed steps run on."""

    def __init__(self, cfg, device: torch.device, amp: bool):
        torch.manual_seed(0)
        self.cfg, self.device = cfg, device
        self.task = SpeechTask(cfg, device, cores=1)
        self.generator, self.discriminator = (m.to(device) for m in self.task.build_models())
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda")
        self.opt_g = build_optimizer(cfg, self.generator.parameters(), cfg.optim.lr)
        self.opt_d = build_optimizer(cfg, self.discriminator.parameters(), cfg.optim.lr * cfg.optim.disc_lr_ratio)
        self.loader, self.sampler = build_train_loader(cfg, 0, 1)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed_step(self, batch: dict) -> tuple[float, float, float]:
        """One step after its batch arrived: the (generator, PESQ labels, discriminator) seconds."""
        task, generator, discriminator = self.task, self.generator, self.discriminator
        t_data = time.perf_counter()
        discriminator.requires_grad_(False)
        with self.autocast:
            g_loss, _, context = task.generator_step(generator, discriminator, batch, self.cfg.loss.w_gan)
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        discriminator.requires_grad_(True)
        self.sync()
        t_gen = time.perf_counter()
        clean, out = context["clean"], context["out"]
        scores, valid = task.labeler.score(clean.float().cpu().numpy(), out["wave"].detach().float().cpu().numpy(),
                                           batch["lengths"].numpy())
        t_pesq = time.perf_counter()
        with self.autocast:
            loss, _ = discriminator_loss(discriminator, task.clean_magnitude(clean), task.estimate_magnitude(out),
                                         torch.as_tensor(scores, device=self.device),
                                         torch.as_tensor(valid, device=self.device))
        self.opt_d.zero_grad()
        loss.backward()
        self.opt_d.step()
        self.sync()
        return t_gen - t_data, t_pesq - t_gen, time.perf_counter() - t_pesq


def _measure(setup: _Setup, steps: int) -> dict[str, list[float]]:
    """Seconds per phase of ``steps`` steps, after two warm-up steps (pool start, allocator)."""
    phases: dict[str, list[float]] = {"data": [], "generator": [], "pesq_labels": [], "discriminator": []}
    step = 0
    epoch = 0
    while step < steps + 2:
        setup.sampler.set_epoch(epoch)
        tick = time.perf_counter()
        for batch in setup.loader:
            data_seconds = time.perf_counter() - tick
            seconds = setup.timed_step(batch)
            if step >= 2:
                for name, value in zip(phases, (data_seconds, *seconds), strict=True):
                    phases[name].append(value)
            step += 1
            tick = time.perf_counter()
            if step >= steps + 2:
                break
        epoch += 1
    return phases


def _print_phases(args: argparse.Namespace, cfg, phases: dict[str, list[float]]) -> float:
    """The table of phases; returns the mean step's seconds."""
    total = sum(statistics.mean(v) for v in phases.values())
    print(f"config {args.config} (model {cfg.model.name}); batch {cfg.data.batch_size} x {cfg.data.crop_seconds} s; "
          f"{args.steps} steps; PESQ workers {args.pesq_workers}; torch threads {torch.get_num_threads()}")
    print(f"{'phase':<14}{'ms/step':>10}{'share':>8}")
    for name, values in phases.items():
        mean = statistics.mean(values)
        print(f"{name:<14}{1000 * mean:>10.1f}{100 * mean / total:>7.1f}%")
    print(f"{'total':<14}{1000 * total:>10.1f}   ({cfg.data.batch_size / total:.1f} samples/s, "
          f"p90 step {1000 * float(np.percentile([sum(s) for s in zip(*phases.values(), strict=True)], 90)):.0f} ms)")
    return total


def main() -> None:
    args = _parse_args()
    cfg = load_config(args.config, ["loss.gan_start_fraction=0.0", "loss.gan_ramp_epochs=0",
                                   f"train.pesq_workers={args.pesq_workers}",
                                   *(["data.demo=true"] if args.demo else []), *args.overrides])
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    setup = _Setup(cfg, device, args.amp)
    phases = _measure(setup, args.steps)
    setup.task.close()
    total = _print_phases(args, cfg, phases)
    report = {
        "config": args.config, "model": cfg.model.name, "overrides": args.overrides, "device": str(device),
        "amp": bool(args.amp and cuda),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "batch_size": cfg.data.batch_size, "crop_seconds": cfg.data.crop_seconds, "steps": args.steps,
        "pesq_workers": args.pesq_workers, "torch_threads": torch.get_num_threads(),
        "ms_per_step": {name: 1000 * statistics.mean(values) for name, values in phases.items()},
        "samples_per_sec": cfg.data.batch_size / total,
        "generator_params": sum(p.numel() for p in setup.generator.parameters()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }
    print(f"peak memory: CPU RSS {report['peak_rss_mib']:.0f} MiB"
          + (f", CUDA max allocated {report['peak_cuda_allocated_mib']:.0f} MiB" if cuda else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")

if __name__ == "__main__":
    main()
