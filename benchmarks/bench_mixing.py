"""Mixtures per second per loader worker (on-the-fly mixing) against the paired shard reader, same run.

One process stands for one DataLoader worker: it builds items exactly as a worker does
(``MixtureDataset[(epoch, index)]``: draw, read, reverberate, mix, normalise; ``ShardDataset``
crops for the paired baseline) at 16 kHz with 2 s crops. Settings: 1 noise without reverberation,
1 noise with reverberation on every mixture, 3 noises with reverberation. The paired baseline
reads the same number of 2 s crops from a paired shard folder (the fixed validation mixtures,
packed). Memory: the resident set after each epoch of the 3-noise setting (flat = no growth) and
the peak. Goal (issue 20): one worker makes at least 10x what one GPU consumes (about 17 samples/s
per H100, README), i.e. >= 170 mixtures/s.

    .venv/bin/python benchmarks/bench_mixing.py [--items 200] [--epochs 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.core.config import load_config  # noqa: E402
from trainer.data.demo_mixing import reader, write_dns_tree  # noqa: E402
from trainer.data.mixing import training_dataset  # noqa: E402
from trainer.data.mixvalid import ensure_valid_set  # noqa: E402
from trainer.data.shards import ShardDataset, ShardIndex  # noqa: E402
from trainer.data.single import prepare_single  # noqa: E402

GPU_SAMPLES_PER_SEC = 17.0  # README: training throughput per H100


def corpora(root: Path) -> Path:
    if not (root / "rir" / "train" / "manifest.json").is_file():
        tree = write_dns_tree(root / "dns", 16000, num_speakers=8, per_speaker=6, num_noises=24, num_rirs=16)
        prepare_single("speech", tree / "clean_fullband", root / "speech", valid_speakers=[reader(7)],
                       progress=False)
        prepare_single("noise", tree / "noise_fullband", root / "noise", valid_fraction=0.25, progress=False)
        prepare_single("rir", tree / "impulse_responses", root / "rir", valid_fraction=0.25, progress=False)
    return root


def config(root: Path, *extra: str):
    return load_config("configs/smoke_mixing.yaml", [
        "mixing.demo=false", f"mixing.speech={root / 'speech'}", f"mixing.noise={root / 'noise'}",
        f"mixing.rir={root / 'rir'}", f"mixing.valid_dir={root / 'valid_mix'}", "data.crop_seconds=2.0",
        "mixing.snr_db=[-5, 20]", *extra])


def rate(dataset, keys) -> float:
    start = time.perf_counter()
    for key in keys:
        dataset[key]
    return len(keys) / (time.perf_counter() - start)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200, help="items per measurement")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of the memory measurement")
    parser.add_argument("--root", default=None, help="corpora folder (kept; default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = corpora(Path(args.root) if args.root else Path(tmp))
        paired_dir = ensure_valid_set(config(root, "mixing.valid_items=48"))
        index = ShardIndex(paired_dir)
        paired = ShardDataset(index, train=True, crop_samples=32000, seed=0)
        keys = [(1, i % len(index)) for i in range(args.items)]
        rows = [("paired shards (baseline)", rate(paired, keys))]
        settings = {"1 noise, no reverberation": ("mixing.reverb_probability=0", "mixing.noises_per_mixture=[1, 1]"),
                    "1 noise, reverberation": ("mixing.reverb_probability=1", "mixing.noises_per_mixture=[1, 1]"),
                    "3 noises, reverberation": ("mixing.reverb_probability=1", "mixing.noises_per_mixture=[3, 3]")}
        for name, extra in settings.items():
            dataset = training_dataset(config(root, *extra, f"mixing.items_per_epoch={args.items}"))
            dataset[(0, 0)]  # open the shards
            rows.append((name, rate(dataset, [(1, i) for i in range(args.items)])))
        rss = []
        for epoch in range(args.epochs):
            rate(dataset, [(2 + epoch, i) for i in range(args.items)])
            rss.append(current_rss_mb())
    baseline = rows[0][1]
    print(f"{'setting (16 kHz, 2 s crops, one process)':44s} {'items/s':>9s} {'vs paired':>9s} {'x 1 GPU':>8s}")
    for name, value in rows:
        print(f"{name:44s} {value:9.1f} {value / baseline:9.2f} {value / GPU_SAMPLES_PER_SEC:8.1f}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"resident set after each epoch of {args.items} mixtures (3 noises, reverberation): "
          + ", ".join(f"{r:.0f}" for r in rss) + f" MiB; peak {peak:.0f} MiB")


if __name__ == "__main__":
    main()
