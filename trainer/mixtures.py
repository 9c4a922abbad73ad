"""Listen to what a mixing run trains on: ``python -m trainer.mixtures --config CFG [--set k=v ...]
--split train|valid --count N --out DIR [--epoch E]``.

Writes ``DIR/clean/NAME.wav`` and ``DIR/noisy/NAME.wav`` (32-bit float, ``data.sample_rate``, before
the model's normalisation) and ``DIR/params.jsonl`` (one JSON object per mixture: ``name`` (the
files' stem), ``snr_db``, ``speech`` (source file id), ``noise`` (list of ids), ``rir`` (id or null),
the offsets, level and gains, and the augmentations drawn). ``--split train``: mixture ``i`` is
exactly item ``i`` of epoch ``E`` of the training loader (``trainer.data.mixing``); ``--split valid``:
the first N mixtures of the fixed validation set. ``DIR/conditions.csv`` (``name``, ``snr_db``,
``reverberant``, ``noises``) is what ``trainer.evaluate --conditions`` reads to break scores down by
condition (SNR in 5 dB bands). DIR is built in a temporary folder beside it and
renamed into place when complete; an existing DIR is refused (exit 2), a full disk exits 4.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
from pathlib import Path

from scipy.io import wavfile

from trainer.core.config import ConfigError, load_config
from trainer.core.errors import BadInput
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_DISK_FULL
from trainer.core.io import is_no_space


def mixtures(cfg, split: str, count: int, epoch: int):
    """Yield (clean, noisy, record) of the first ``count`` mixtures of ``split``."""
    if split == "train":
        from trainer.data.mixing import training_dataset

        dataset = training_dataset(cfg)
        for index in range(count):
            yield dataset.mixture(epoch, index)
    else:
        from trainer.data.mixing import Corpora
        from trainer.data.mixvalid import valid_mixtures

        yield from valid_mixtures(cfg, Corpora(cfg, "valid"), count)


def write(cfg, split: str, count: int, epoch: int, out: Path) -> None:
    if out.exists():
        raise BadInput(f"--out {out}: already exists; choose a new folder (or delete it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for kind in ("clean", "noisy"):
            (tmp / kind).mkdir()
        with open(tmp / "params.jsonl", "w", encoding="utf-8") as params, \
                open(tmp / "conditions.csv", "w", encoding="utf-8", newline="") as table:
            conditions = csv.writer(table)
            conditions.writerow(["name", "snr_db", "reverberant", "noises"])
            for clean, noisy, record in mixtures(cfg, split, count, epoch):
                # scipy's float32 WAV: libsndfile's carries a PEAK chunk with a time stamp (files would differ)
                wavfile.write(tmp / "clean" / f"{record['name']}.wav", cfg.data.sample_rate, clean)
                wavfile.write(tmp / "noisy" / f"{record['name']}.wav", cfg.data.sample_rate, noisy)
                params.write(json.dumps(record) + "\n")
                conditions.writerow([f"{record['name']}.wav", record["snr_db"],
                                     "no" if record["rir"] is None else "yes", len(record["noise"])])
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.mixtures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a training config with a mixing section")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--split", choices=("train", "valid"), default="train")
    parser.add_argument("--count", type=int, default=8, help="number of mixtures")
    parser.add_argument("--epoch", type=int, default=0, help="--split train: the epoch (0-based)")
    parser.add_argument("--out", required=True, help="new folder for clean/, noisy/ and params.jsonl")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
        if not cfg.mixing.active:
            raise ConfigError(f"{args.config}: mixing.speech is not set (nor mixing.demo); nothing is mixed")
        if args.count < 1 or args.epoch < 0:
            raise BadInput(f"--count {args.count} / --epoch {args.epoch}: need a count >= 1 and an epoch >= 0")
        write(cfg, args.split, args.count, args.epoch, Path(args.out))
    except BadInput as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if is_no_space(exc):
            print(f"error: {args.out}: no space left on the device ({exc}); free space and run again",
                  file=sys.stderr)
            return EXIT_DISK_FULL
        raise
    print(f"wrote {args.count} {args.split} mixtures to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
