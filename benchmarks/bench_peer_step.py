"""Our training step against the authors' own train.py step (CMGAN, MP-SENet): same weights, batch, device.

    .venv/bin/python benchmarks/bench_peer_step.py --cmgan-src ~/src/CMGAN --mpsenet-src ~/src/MP-SENet \\
        [--models cmgan,mpsenet] [--device cpu|cuda] [--batch 2] [--seconds 1.0] [--steps 3] [--rounds 2]
        [--amp] [--json OUT.json]
    .venv/bin/python benchmarks/bench_peer_step.py --fetch ...   (clones both from GitHub into a temporary folder)

``--cmgan-src`` / ``--mpsenet-src`` are checkouts of https://github.com/ruizhecao96/CMGAN and
https://github.com/yxlu-0102/MP-SENet (as for ``check_reference_equivalence.py``); ``--fetch`` clones them
(``git clone --depth 1``; needs the internet) into a temporary folder outside the repository, deleted at
the end. The reference code is run from there and never copied into this repository. It needs ``einops``
(CMGAN's conformer), ``joblib`` and ``pesq`` (both references' ``batch_pesq``).

Per model, with the reference generator and discriminator built with ``torch.manual_seed(--seed)`` and
the same weights copied into ours:

- ``reference``: CMGAN's ``Trainer.train_step`` (``src/train.py``) / the body of MP-SENet's training loop
  (``train.py``), run as written (``benchmarks/refcheck/peer.py``): STFTs, generator forward, their
  joblib ``batch_pesq`` of the batch, the discriminator's and the generator's losses, backwards and
  AdamW steps. No DDP wrapper (one process; CMGAN's script wraps even one GPU in DDP).
- ``ours``: the training loop's own step (``Trainer.step``, a ``trainer.core.step.TrainingStep``) with the
  preset ``configs/cmgan.yaml`` / ``configs/mpsenet.yaml`` (fp32; PESQ labels in the persistent pool,
  overlapped with the generator's backward, the preset's defaults), on the demo corpus's first batch;
- ``ours_bf16`` (``--amp``, CUDA): the same with ``train.amp=true``.

Every side runs the same batch (``--batch`` x ``--seconds`` from the demo corpus) each step; the sides
take turns in ``--rounds`` blocks of ``--steps`` timed steps (one untimed warm-up step per side first)
so that a shared machine's load falls on all alike. Printed per side: median seconds per step,
samples/s, the speed ratio against the reference (> 1: ours is faster) and the peak memory of its
blocks (CUDA: max allocated; CPU: this process's resident high-water mark, which also holds the other
sides' models). On the CPU a step is slow (CMGAN at the recipe's 4 x 2 s takes about 34 s here), so
the defaults are a small batch and few steps; on a GPU use ``--device cuda --batch 4 --seconds 2
--steps 10`` (``benchmarks/gpu_acceptance.sh --peer-src DIR`` does).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.bench_throughput import _peak_rss_mib, _release_memory, _reset_peak_rss  # noqa: E402
from benchmarks.refcheck.common import import_cmgan, import_mpsenet, metric_discriminator_state  # noqa: E402
from benchmarks.refcheck.peer import (  # noqa: E402
    CmganReferenceStep,
    MpsenetReferenceStep,
    import_cmgan_train,
    import_mpsenet_train,
)
from trainer.core.config import load_config  # noqa: E402
from trainer.core.env import read_env  # noqa: E402
from trainer.core.loop import Trainer  # noqa: E402
from trainer.tasks.speech.models import cmgan as our_cmgan  # noqa: E402
from trainer.tasks.speech.models import mpsenet as our_mpsenet  # noqa: E402

MODELS = ("cmgan", "mpsenet")
REPOSITORIES = {"cmgan": "https://github.com/ruizhecao96/CMGAN", "mpsenet": "https://github.com/yxlu-0102/MP-SENet"}


def reference_networks(model: str, src: Path, seed: int):
    """(reference step factory, generator, discriminator, how to load them into ours)."""
    torch.manual_seed(seed)
    if model == "cmgan":
        ref = import_cmgan(src)
        generator, discriminator = ref.TSCNet(num_channel=64, num_features=201), ref.Discriminator(ndf=16)
        load = our_cmgan.load_official_state_dict
    else:
        ref = import_mpsenet(src)
        generator, discriminator = ref.MPNet(ref.h), ref.MetricDiscriminator()
        def load(ours, state):
            our_mpsenet.load_official_state_dict(ours, {"generator": state})
    return ref, generator, discriminator, load


def build_reference_step(model: str, src: Path, ref, generator, discriminator, device, batch: int, samples: int):
    if model == "cmgan":
        return CmganReferenceStep(import_cmgan_train(src, batch, samples), generator, discriminator, device)
    h = type(ref.h)({**ref.h, "batch_size": batch})  # its AttrDict; one_labels = torch.ones(h.batch_size)
    return MpsenetReferenceStep(import_mpsenet_train(src), h, generator, discriminator, device)


class OurStep:
    """The loop's own step on the preset, with the reference's weights, always on the same batch."""

    def __init__(self, model: str, args, run_dir: Path, amp: bool, weights: tuple):
        cfg = load_config(f"configs/{model}.yaml", [
            "data.demo=true", f"data.batch_size={args.batch}", f"data.crop_seconds={args.seconds}",
            "data.num_workers=0", "checkpoint.every_steps=0", "checkpoint.every_minutes=0",
            "train.log_every=1000000", "train.tensorboard=false", f"train.device={args.device}",
            f"train.amp={str(amp).lower()}", *args.overrides])
        self.trainer = Trainer(cfg, run_dir, read_env())
        load, generator_state, discriminator_state = weights
        load(self.trainer.generator, generator_state)
        self.trainer.discriminator.load_state_dict(metric_discriminator_state(discriminator_state), strict=True)
        self.batch = next(iter(self.trainer.train_loader))
        self.weight = self.trainer.task.gan_weight(0)
        self.pesq_workers = self.trainer.task.labeler.num_workers

    def __call__(self) -> tuple[float, float]:
        _, record = self.trainer.step(self.batch, self.weight, self.trainer.progress, lambda: False)
        return record["loss"], record["d_loss"]

    def close(self) -> None:
        self.trainer.close()


class Side:
    def __init__(self, name: str, run, device: torch.device):
        self.name, self.run, self.device = name, run, device
        self.seconds: list[float] = []
        self.peak_mib = 0.0
        self.losses: list[tuple[float, float]] = []

    def block(self, steps: int, warm_up: bool) -> None:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        _release_memory()
        reset = _reset_peak_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        if warm_up:
            self.losses.append(self.run())
        for _ in range(steps):
            sync()
            started = time.perf_counter()
            self.losses.append(self.run())
            sync()
            self.seconds.append(time.perf_counter() - started)
        peak = (torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda"
                else _peak_rss_mib() if reset or not self.peak_mib else self.peak_mib)
        self.peak_mib = max(self.peak_mib, peak)
        print(f"    {self.name}: {steps} steps, median {statistics.median(self.seconds[-steps:]):.3f} s "
              f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


def bench_model(model: str, src: Path, args, work: Path) -> dict:
    device = torch.device(args.device)
    samples = int(round(args.seconds * 16000))
    ref, generator, discriminator, load = reference_networks(model, src, args.seed)
    weights = (load, copy.deepcopy(generator.state_dict()), copy.deepcopy(discriminator.state_dict()))
    ours = {"ours": OurStep(model, args, work / f"{model}_fp32", False, weights)}
    if args.amp:
        ours["ours_bf16"] = OurStep(model, args, work / f"{model}_bf16", True, weights)
    batch = ours["ours"].batch
    if args.threads:  # after the trainers, which set the threads from the cores
        torch.set_num_threads(args.threads)
    reference = build_reference_step(model, src, ref, generator, discriminator, device, args.batch, samples)
    clean, noisy = batch["clean"], batch["noisy"]
    sides = [Side("reference", lambda: reference(clean, noisy), device),
             *(Side(name, step, device) for name, step in ours.items())]
    try:
        for round_index in range(args.rounds):
            for side in sides:
                side.block(args.steps, warm_up=round_index == 0)
    finally:
        for step in ours.values():
            step.close()
    ref_median = statistics.median(sides[0].seconds)
    result = {"model": model, "pesq_workers_ours": ours["ours"].pesq_workers, "sides": {}}
    for side in sides:
        median = statistics.median(side.seconds)
        result["sides"][side.name] = {
            "sec_per_step_median": median, "sec_per_step_all": side.seconds,
            "samples_per_sec": args.batch / median, "speed_vs_reference": ref_median / median,
            "peak_mib": side.peak_mib, "first_losses": side.losses[0]}
    return result


def fetch_sources(models: list[str], into: Path) -> dict[str, Path]:
    sources = {}
    for model in models:
        target = into / model
        proc = subprocess.run(["git", "clone", "-q", "--depth", "1", REPOSITORIES[model], str(target)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"--fetch: git clone {REPOSITORIES[model]} failed: {proc.stderr.strip()} "
                             f"(without internet, give --{model}-src a checkout instead)")
        sources[model] = target
    return sources


def print_table(results: list[dict], args, load: tuple[float, float]) -> None:
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"device {args.device} ({where}); batch {args.batch} x {args.seconds} s; {args.rounds} rounds x "
          f"{args.steps} timed steps per side; torch threads {torch.get_num_threads()}; "
          f"1-min load average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    print(f"{'model':<9}{'side':<11}{'s/step':>9}{'samples/s':>11}{'vs ref':>8}{'peak MiB':>10}")
    for result in results:
        for name, side in result["sides"].items():
            print(f"{result['model']:<9}{name:<11}{side['sec_per_step_median']:>9.3f}{side['samples_per_sec']:>11.2f}"
                  f"{side['speed_vs_reference']:>7.2f}x{side['peak_mib']:>10.0f}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cmgan-src", type=Path, help="checkout of ruizhecao96/CMGAN")
    parser.add_argument("--mpsenet-src", type=Path, help="checkout of yxlu-0102/MP-SENet")
    parser.add_argument("--fetch", action="store_true", help="clone the references into a temporary folder")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per block")
    parser.add_argument("--rounds", type=int, default=2, help="blocks per side, the sides taking turns")
    parser.add_argument("--amp", action="store_true", help="also time ours with bf16 autocast (CUDA)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: the trainer's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for ours")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if not args.models or any(m not in MODELS for m in args.models):
        parser.error(f"--models: a comma-separated subset of {','.join(MODELS)}")
    for model in args.models:
        if not args.fetch and getattr(args, f"{model}_src") is None:
            parser.error(f"--{model}-src DIR (a checkout of {REPOSITORIES[model]}) or --fetch")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench_peer_step_") as work:
        sources = fetch_sources(args.models, Path(work) / "src") if args.fetch else {}
        results = []
        for model in args.models:
            src = sources.get(model) or getattr(args, f"{model}_src").expanduser().resolve()
            print(f"  {model} ({src})", file=sys.stderr, flush=True)
            results.append(bench_model(model, src, args, Path(work)))
    print_table(results, args, (load_start, os.getloadavg()[0]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": args.device, "batch": args.batch, "seconds": args.seconds,
                                         "steps": args.steps, "rounds": args.rounds, "results": results,
                                         "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
