"""DNSMOS files per second: trainer.metrics.dnsmos in the metric pool vs speechmos.dnsmos.run, same files and cores.

    .venv/bin/python benchmarks/bench_dnsmos.py [--num-files 8] [--seconds 6] [--workers CORES]

Files: espeak-ng sentences mixed with babble-like noise at 0-15 dB, about ``--seconds`` long (the
reference repeats clips shorter than 9.01 s, so a 6 s clip is 2 windows). Both sides are warmed up
first (model loading, librosa's numba compilation and the pool's start are not timed). speechmos:
``dnsmos.run(audio, 16000)`` per file in this process (its onnxruntime sessions use every core);
ours: ``dnsmos.dnsmos`` mapped over the files in ``trainer.metrics.process_pool(--workers)`` (one
single-threaded session pair per worker, kept open). Prints files/s of each, the ratio and the
largest per-file difference of the four scores. Then the cold start of each in a fresh interpreter
(imports, sessions and the first 6 s file; speechmos imports librosa, whose numba functions compile
on first use): the wait before a small evaluation's first score.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from trainer.core.env import local_cores  # noqa: E402
from trainer.data.synth import babble_like_noise, mix_at_snr, synthesize_speech  # noqa: E402
from trainer.metrics import dnsmos  # noqa: E402
from trainer.metrics.labeler import process_pool  # noqa: E402

SENTENCES = ("The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
             "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
             "Rice is often served in round bowls.", "The juice of lemons makes fine punch.")
NAMES = {"dnsmos_sig": "sig_mos", "dnsmos_bak": "bak_mos", "dnsmos_ovrl": "ovrl_mos", "dnsmos_p808": "p808_mos"}


def make_files(num_files: int, seconds: float) -> list[np.ndarray]:
    sentences = [synthesize_speech(s, 16000).astype(np.float64) for s in SENTENCES]
    files = []
    for i in range(num_files):
        parts, length = [], 0
        while length < seconds * 16000:
            parts.append(sentences[(i + len(parts)) % len(sentences)])
            length += len(parts[-1])
        clean = np.concatenate(parts)[: int(seconds * 16000)]
        noisy = mix_at_snr(clean, babble_like_noise(len(clean), 16000, seed=i), 15 * (i % 4) / 3)
        files.append((noisy / max(1.0, np.abs(noisy).max())).astype(np.float32))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-files", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--workers", type=int, default=local_cores())
    args = parser.parse_args()
    from speechmos import dnsmos as reference

    files = make_files(args.num_files, args.seconds)
    print(f"{len(files)} files of {args.seconds:g} s, {args.workers} worker(s) for ours, "
          f"{local_cores()} core(s) visible")
    reference.run(files[0], 16000)  # warm-up: sessions, librosa/numba
    started = time.perf_counter()
    theirs = [reference.run(audio, 16000) for audio in files]
    t_ref = time.perf_counter() - started
    pool = process_pool(args.workers)
    try:
        list(pool.map(dnsmos.dnsmos, files[: args.workers]))  # warm-up: every worker loads its sessions
        started = time.perf_counter()
        ours = list(pool.map(dnsmos.dnsmos, files, chunksize=1))
        t_ours = time.perf_counter() - started
    finally:
        pool.shutdown(wait=True)
    diff = max(abs(o[k] - float(t[n])) for o, t in zip(ours, theirs, strict=True) for k, n in NAMES.items())
    print(f"speechmos.dnsmos.run : {len(files) / t_ref:7.3f} files/s ({t_ref:.1f} s)")
    print(f"trainer.metrics.dnsmos: {len(files) / t_ours:7.3f} files/s ({t_ours:.1f} s)")
    print(f"ratio (ours / speechmos): {t_ref / t_ours:.2f}x; largest score difference {diff:.5f}")
    cold = {label: cold_start(code) for label, code in COLD.items()}
    print(f"cold start, first file in a fresh interpreter: speechmos {cold['speechmos']:.1f} s, "
          f"ours {cold['ours']:.1f} s, ratio {cold['speechmos'] / cold['ours']:.2f}x")


COLD = {"speechmos": "from speechmos import dnsmos; dnsmos.run(x, 16000)",
        "ours": "from trainer.metrics import dnsmos; dnsmos.dnsmos(x)"}


def cold_start(code: str) -> float:
    """Seconds for a fresh interpreter to import and score one 6 s file (numpy's import not counted)."""
    script = ("import time, numpy as np; x = (np.random.default_rng(0).standard_normal(96000) * 0.05)"
              f".astype(np.float32); t = time.perf_counter(); {code}; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    return float(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
