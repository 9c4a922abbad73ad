"""Memory growth of each speech generator with the length of one enhanced chunk (case 7 of issue 22).

    python benchmarks/bench_enhance_memory.py [--seconds 0.5 1 2 4] [--configs configs/smoke.yaml ...]

For every config and length, a fresh process builds the generator (random weights: memory does not
depend on their values), runs one warm-up call on 0.1 s, reads its peak resident memory (the kernel's
``VmHWM``), enhances one chunk of the given length under ``torch.no_grad()`` on the CPU with one
thread, and reports the growth of the peak. A least-squares fit ``a * s + b * s**2`` (s: seconds at
the model's rate) per config gives the bytes per second and per second squared that
``trainer.tasks.speech.chunking.MEMORY_MODELS`` keeps (rounded up); the quadratic term is the
attention over time (CMGAN, MP-SENet), zero for BSRNN's recurrences.
No timed assertion anywhere: the numbers are for docs/enhancement-and-evaluation-trust.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROBE = r"""
import json, sys, torch
torch.set_num_threads(1)
from trainer.core.config import load_config
from trainer.core.registry import build_generator

def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024

cfg = load_config(sys.argv[1], ['data.demo=true']); seconds = float(sys.argv[2])
g = build_generator(cfg).eval(); rate = cfg.data.sample_rate
with torch.no_grad():
    g(torch.randn(1, int(0.1 * rate)))
    before = hwm()
    g(torch.randn(1, int(seconds * rate)))
print(json.dumps({"growth": hwm() - before, "model": cfg.model.name}))
"""


def measure(config: str, seconds: float) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, config, str(seconds)], cwd=ROOT, capture_output=True,
                          text=True, check=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--configs", nargs="+", default=["configs/smoke.yaml", "configs/cmgan_smoke.yaml",
                                                          "configs/mpsenet_smoke.yaml", "configs/base.yaml",
                                                          "configs/cmgan.yaml", "configs/mpsenet.yaml"])
    args = parser.parse_args()
    for config in args.configs:
        rows = [(s, measure(config, s)) for s in args.seconds]
        s = np.array([r[0] for r in rows])
        growth = np.array([r[1]["growth"] for r in rows], dtype=np.float64)
        (linear, quadratic), *_ = np.linalg.lstsq(np.stack([s, s**2], axis=1), growth, rcond=None)
        cells = "  ".join(f"{x:g} s: {g / 2**20:7.1f} MiB" for x, g in zip(s, growth, strict=True))
        print(f"{config} ({rows[0][1]['model']}): {cells}  ->  {linear / 2**20:.1f} MiB/s + "
              f"{quadratic / 2**20:.2f} MiB/s^2")


if __name__ == "__main__":
    main()
