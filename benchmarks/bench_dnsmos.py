"""DNSMOS files per second: trainer.metrics.dnsmos in the metric pool vs speechmos.dnsmos.run, same files and cores.

    .venv/bin/python benchmarks/bench_dnsmos.py [--num-files 20] [--min-seconds 4] [--max-seconds 10]
                                                [--workers CORES] [--skip-cold] [--skip-warm]

Files: espeak-ng sentences mixed with babble-like noise at 0-15 dB, lengths drawn uniformly from
[--min-seconds, --max-seconds] (seeded, not whole seconds; the reference repeats clips shorter than
9.01 s and scores at most 7 windows of 9.01 s per clip). Two comparisons:

1. warm, in this process: both sides warmed up first (model loading, librosa's numba compilation
   and the pool's start are not timed). speechmos: ``dnsmos.run(audio, 16000)`` per file, as its
   README shows (it keeps its onnxruntime sessions in a module global across calls; they use every
   core); ours: ``dnsmos.dnsmos`` mapped over the files in ``trainer.metrics.process_pool(--workers)``
   (one single-threaded session pair per worker, kept open; all windows of a clip in one call);
2. as a user runs it on a folder (unless ``--skip-cold``): a fresh interpreter reading the folder's
   wav files and calling ``speechmos.dnsmos.run`` per file, vs ``python -m trainer.evaluate
   --enhanced-dir DIR --dnsmos --workers N`` (imports, sessions, pool start and CSV included).

Prints files/s of each, the ratios, the largest per-file difference of the four scores, the windows
scored and the P.835 model's CPU seconds per window (single-threaded): the arithmetic any faithful
implementation must do.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
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


def make_files(num_files: int, low: float, high: float) -> list[np.ndarray]:
    sentences = [synthesize_speech(s, 16000).astype(np.float64) for s in SENTENCES]
    lengths = np.random.default_rng(0).uniform(low, high, size=num_files)
    files = []
    for i, seconds in enumerate(lengths):
        parts, length = [], 0
        while length < seconds * 16000:
            parts.append(sentences[(i + len(parts)) % len(sentences)])
            length += len(parts[-1])
        clean = np.concatenate(parts)[: int(seconds * 16000)]
        noisy = mix_at_snr(clean, babble_like_noise(len(clean), 16000, seed=i), 15 * (i % 4) / 3)
        files.append((noisy / max(1.0, np.abs(noisy).max())).astype(np.float32))
    return files


def p835_seconds_per_window() -> float:
    """CPU seconds of one P.835 window on one thread (the sessions ours uses)."""
    primary, _ = dnsmos._sessions()
    window = (np.random.default_rng(1).standard_normal((1, dnsmos.WINDOW)) * 0.05).astype(np.float32)
    primary.run(None, {"input_1": window})
    started = time.process_time()
    for _ in range(3):
        primary.run(None, {"input_1": window})
    return (time.process_time() - started) / 3


def warm(files: list[np.ndarray], workers: int) -> tuple[float, float, float]:
    from speechmos import dnsmos as reference

    reference.run(files[0], 16000)  # warm-up: sessions, librosa/numba
    started = time.perf_counter()
    theirs = [reference.run(audio, 16000) for audio in files]
    t_ref = time.perf_counter() - started
    pool = process_pool(workers)
    try:
        list(pool.map(dnsmos.dnsmos, files[:workers]))  # warm-up: every worker loads its sessions
        started = time.perf_counter()
        ours = list(pool.map(dnsmos.dnsmos, files, chunksize=1))
        t_ours = time.perf_counter() - started
    finally:
        pool.shutdown(wait=True)
    diff = max(abs(o[k] - float(t[n])) for o, t in zip(ours, theirs, strict=True) for k, n in NAMES.items())
    return t_ref, t_ours, diff


REFERENCE_FOLDER = """import sys, pathlib, soundfile as sf
from speechmos import dnsmos
for path in sorted(pathlib.Path(sys.argv[1]).glob('*.wav')):
    audio, sr = sf.read(path, dtype='float32')
    print(path.name, dnsmos.run(audio, sr))
"""


def _timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every process it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_folder(files: list[np.ndarray], workers: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) seconds of a fresh interpreter scoring the folder: speechmos per file, then trainer.evaluate."""
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "enhanced"
        folder.mkdir()
        for i, audio in enumerate(files):
            sf.write(folder / f"f{i:03d}.wav", audio, 16000, subtype="PCM_16")
        reference = _timed([sys.executable, "-c", REFERENCE_FOLDER, str(folder)])
        ours = _timed([sys.executable, "-m", "trainer.evaluate", "--enhanced-dir", str(folder), "--dnsmos",
                       "--workers", str(workers), "--no-progress", "--csv", str(Path(tmp) / "rows.csv")])
        return reference, ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-files", type=int, default=20)
    parser.add_argument("--min-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=local_cores())
    parser.add_argument("--skip-cold", action="store_true", help="leave out the fresh-interpreter folder comparison")
    parser.add_argument("--skip-warm", action="store_true", help="leave out the warm in-process comparison")
    args = parser.parse_args()
    files = make_files(args.num_files, args.min_seconds, args.max_seconds)
    num_windows = sum(len(dnsmos.windows(audio)) for audio in files)
    print(f"{len(files)} files of {args.min_seconds:g}-{args.max_seconds:g} s ({num_windows} windows of 9.01 s), "
          f"{args.workers} worker(s) for ours, {local_cores()} core(s) visible, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    per_window = p835_seconds_per_window()
    print(f"P.835 model: {per_window:.3f} CPU s per window on one thread, so at least "
          f"{num_windows * per_window / max(1, min(args.workers, local_cores())):.1f} s for these files on "
          f"{min(args.workers, local_cores())} core(s), whoever runs it")
    if not args.skip_warm:
        t_ref, t_ours, diff = warm(files, args.workers)
        print(f"warm speechmos.dnsmos.run : {len(files) / t_ref:7.3f} files/s ({t_ref:.1f} s)")
        print(f"warm trainer.metrics.dnsmos: {len(files) / t_ours:7.3f} files/s ({t_ours:.1f} s)")
        print(f"warm ratio (ours / speechmos): {t_ref / t_ours:.2f}x; largest score difference {diff:.5f}")
    if not args.skip_cold:
        (w_ref, c_ref), (w_ours, c_ours) = cold_folder(files, args.workers)
        print(f"folder, fresh interpreter: speechmos per file {w_ref:.1f} s wall ({c_ref:.1f} s CPU), "
              f"trainer.evaluate --dnsmos {w_ours:.1f} s wall ({c_ours:.1f} s CPU); ratio {w_ref / w_ours:.2f}x "
              f"wall, {c_ref / c_ours:.2f}x CPU")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
