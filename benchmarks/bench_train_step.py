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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--pesq-workers", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--demo", action="store_true", help="train on the built-in demo corpus (data.demo=true)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA), as train.amp")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    cfg = load_config(args.config, ["loss.gan_start_fraction=0.0", "loss.gan_ramp_epochs=0",
                                   f"train.pesq_workers={args.pesq_workers}",
                                   *(["data.demo=true"] if args.demo else []), *args.overrides])
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    torch.manual_seed(0)
    task = SpeechTask(cfg, device, cores=1)
    labeler = task.labeler
    generator, discriminator = (m.to(device) for m in task.build_models())
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp and cuda)
    opt_g = build_optimizer(cfg, generator.parameters(), cfg.optim.lr)
    opt_d = build_optimizer(cfg, discriminator.parameters(), cfg.optim.lr * cfg.optim.disc_lr_ratio)
    loader, sampler = build_train_loader(cfg, 0, 1)
    phases: dict[str, list[float]] = {"data": [], "generator": [], "pesq_labels": [], "discriminator": []}
    step = 0
    epoch = 0
    while step < args.steps + 2:  # the first two steps warm up (pool start, allocator)
        sampler.set_epoch(epoch)
        tick = time.perf_counter()
        for batch in loader:
            t_data = time.perf_counter()
            discriminator.requires_grad_(False)
            with autocast:
                g_loss, _, context = task.generator_step(generator, discriminator, batch, cfg.loss.w_gan)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
            discriminator.requires_grad_(True)
            sync()
            t_gen = time.perf_counter()
            clean, out = context["clean"], context["out"]
            scores, valid = labeler.score(clean.float().cpu().numpy(), out["wave"].detach().float().cpu().numpy(),
                                          batch["lengths"].numpy())
            t_pesq = time.perf_counter()
            with autocast:
                loss, _ = discriminator_loss(discriminator, task.clean_magnitude(clean), task.estimate_magnitude(out),
                                             torch.as_tensor(scores, device=device),
                                             torch.as_tensor(valid, device=device))
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
            sync()
            t_disc = time.perf_counter()
            if step >= 2:
                for name, seconds in zip(phases, (t_data - tick, t_gen - t_data, t_pesq - t_gen, t_disc - t_pesq),
                                         strict=True):
                    phases[name].append(seconds)
            step += 1
            tick = time.perf_counter()
            if step >= args.steps + 2:
                break
        epoch += 1
    task.close()
    total = sum(statistics.mean(v) for v in phases.values())
    print(f"config {args.config} (model {cfg.model.name}); batch {cfg.data.batch_size} x {cfg.data.crop_seconds} s; "
          f"{args.steps} steps; PESQ workers {args.pesq_workers}; torch threads {torch.get_num_threads()}")
    print(f"{'phase':<14}{'ms/step':>10}{'share':>8}")
    for name, values in phases.items():
        mean = statistics.mean(values)
        print(f"{name:<14}{1000 * mean:>10.1f}{100 * mean / total:>7.1f}%")
    print(f"{'total':<14}{1000 * total:>10.1f}   ({cfg.data.batch_size / total:.1f} samples/s, "
          f"p90 step {1000 * float(np.percentile([sum(s) for s in zip(*phases.values(), strict=True)], 90)):.0f} ms)")
    report = {
        "config": args.config, "model": cfg.model.name, "overrides": args.overrides, "device": str(device),
        "amp": bool(args.amp and cuda),
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "batch_size": cfg.data.batch_size, "crop_seconds": cfg.data.crop_seconds, "steps": args.steps,
        "pesq_workers": args.pesq_workers, "torch_threads": torch.get_num_threads(),
        "ms_per_step": {name: 1000 * statistics.mean(values) for name, values in phases.items()},
        "samples_per_sec": cfg.data.batch_size / total,
        "generator_params": sum(p.numel() for p in generator.parameters()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_allocated_mib": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
    }
    print(f"peak memory: CPU RSS {report['peak_rss_mib']:.0f} MiB"
          + (f", CUDA max allocated {report['peak_cuda_allocated_mib']:.0f} MiB" if cuda else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
