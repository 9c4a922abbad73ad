"""Training crops per second: packed HDF5 shards vs per-file wav reading (soundfile).

Both readers use the same crop logic (trainer.data.crop_offset, zero padding, RMS
normalisation) over the same utterances in the same epoch order, in the same process.
Two settings: "warm" (after a warm-up epoch, everything in the page cache: the per-file open
and decode overhead alone) and "cold" (every file evicted from the page cache with
posix_fadvise before each epoch: reads come from the disk, as for a corpus larger than RAM).
On a Lustre filesystem every open is also a metadata-server round trip, which a local disk
does not show; the files opened per epoch are counted for that.

    .venv/bin/python benchmarks/bench_data.py [--num-pairs 300] [--epochs 3] [--root DIR]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data.demo import write_pairs  # noqa: E402
from trainer.data.pack import prepare  # noqa: E402
from trainer.data.sampler import ResumableBatchSampler, crop_offset  # noqa: E402
from trainer.data.shards import ShardDataset, ShardIndex  # noqa: E402
from trainer.data.synth import SENTENCES, VOICES  # noqa: E402


class WavCrops:
    """The baseline: open both wav files of a pair for every crop."""

    def __init__(self, clean_dir: Path, noisy_dir: Path, names: list[str], crop: int, seed: int):
        self.clean_dir, self.noisy_dir, self.names, self.crop, self.seed = clean_dir, noisy_dir, names, crop, seed
        self.files_opened = 0

    def __getitem__(self, key):
        epoch, item = key
        waves = {}
        for signal, folder in (("clean", self.clean_dir), ("noisy", self.noisy_dir)):
            with sf.SoundFile(folder / f"{self.names[item]}.wav") as fh:
                self.files_opened += 1
                start = crop_offset(self.seed, epoch, item, fh.frames, self.crop)
                fh.seek(start)
                wave = np.zeros(self.crop, dtype=np.float32)
                data = fh.read(min(self.crop, fh.frames), dtype="float32")
                wave[:len(data)] = data
                waves[signal] = (wave, len(data))
        length = waves["noisy"][1]
        scale = np.float32(1.0 / math.sqrt(float(np.mean(np.square(waves["noisy"][0][:length], dtype=np.float64)))
                                           + 1e-8))
        return {"clean": waves["clean"][0] * scale, "noisy": waves["noisy"][0] * scale, "length": length}


def evict(paths: list[Path]) -> None:
    """Drop the files' pages from the page cache (no root needed; they must be clean)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_epochs(dataset, sampler: ResumableBatchSampler, epochs: list[int],
               cold_files: list[Path] | None = None) -> tuple[float, int]:
    """(seconds, crops) for reading every crop of the given epochs."""
    num, seconds = 0, 0.0
    for epoch in epochs:
        if cold_files:
            evict(cold_files)
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        for batch in sampler:
            for item in batch:
                dataset[(epoch, item)]
                num += 1
        seconds += time.perf_counter() - start
    return seconds, num


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-pairs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--crop-seconds", type=float, default=2.0)
    parser.add_argument("--root", help="work folder, reused by later runs (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        wav = root / "wav"
        t0 = time.perf_counter()
        per_voice = math.ceil(args.num_pairs / len(VOICES))
        for seed, voice in enumerate(VOICES if not (wav / "noisy").is_dir() else ()):  # --root: reuse
            sentences = [SENTENCES[i % len(SENTENCES)] for i in range(per_voice)]
            write_pairs(wav, voice, sentences, 16000, seed, speaker=f"s{seed}")
        t1 = time.perf_counter()
        prepare(wav / "clean", wav / "noisy", root / "shards", shard_size_mb=64, workers=2, progress=False)
        t2 = time.perf_counter()
        index = ShardIndex(root / "shards")
        crop = int(args.crop_seconds * index.sample_rate)
        shards = ShardDataset(index, train=True, crop_samples=crop, seed=0)
        files = WavCrops(wav / "clean", wav / "noisy", index.names, crop, seed=0)
        sampler = ResumableBatchSampler(len(index), 1, 0, 1, seed=0)
        for dataset in (shards, files):  # warm-up epoch: page cache, lazy opens
            run_epochs(dataset, sampler, [0])
        opened_before = (shards.files_opened, files.files_opened)
        all_files = [*index.shard_paths, *sorted(wav.rglob("*.wav"))]
        epochs = list(range(1, args.epochs + 1))
        results: dict[tuple[str, str], float] = {}
        for cache, cold in (("warm", None), ("cold", all_files)):
            for name, dataset in (("shards", shards), ("wav", files)) * 2:  # alternated; best of two
                seconds, num = run_epochs(dataset, sampler, epochs, cold)
                results[cache, name] = max(results.get((cache, name), 0.0), num / seconds)
        shard_opens = (shards.files_opened - opened_before[0]) / (4 * len(epochs))
        wav_opens = (files.files_opened - opened_before[1]) / (4 * len(epochs))
        wav_mib = sum(p.stat().st_size for p in all_files[len(index.shard_paths):]) / 2**20
        shard_mib = sum(p.stat().st_size for p in index.shard_paths) / 2**20
    minutes = float(index.length_of.sum()) / index.sample_rate / 60
    print(f"corpus: {len(index)} pairs, {minutes:.1f} min of audio (16-bit wav: "
          f"{wav_mib:.0f} MiB; float32 shards: {shard_mib:.0f} MiB in {len(index.shard_paths)} file(s)); "
          f"wav synthesis {t1 - t0:.1f} s, prepare {t2 - t1:.1f} s")
    print(f"{'cache':6} {'shards crops/s':>15} {'wav crops/s':>12} {'ratio':>6}")
    for cache in ("warm", "cold"):
        ratio = results[cache, "shards"] / results[cache, "wav"]
        print(f"{cache:6} {results[cache, 'shards']:15.0f} {results[cache, 'wav']:12.0f} {ratio:5.2f}x")
    print(f"files opened per epoch: wav {wav_opens:.0f}, shards {shard_opens:.0f} after the first epoch "
          f"({opened_before[0]} in a process's first epoch: one per shard)")


if __name__ == "__main__":
    main()
