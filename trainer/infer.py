"""Listen to a creative-agent checkpoint: write input, target and output wavs and report copying.

Validation pairs from the checkpoint's own config (``data.valid_dir``)::

    python -m trainer.infer --checkpoint logs/runs/creative_agent/best_loss.pt --num-samples 5 \\
        [--shuffle-targets] --out-dir listen/

A user's own pair of files (any rate or channel count; mixed to mono, resampled)::

    python -m trainer.infer --checkpoint CKPT --input drums.wav --target piano.wav --out-dir listen/

Per sample it writes ``sample_<k>_{input,target,output}.wav`` (float32 WAV at the model's rate and
level, so nothing clips), prints the output->input / output->target correlations, mask means and
the alert line, and writes all of it to ``report.json``. Pieces are cut to ``--max-seconds``
(default: the training crop length; longer inputs cost quadratic attention memory; it must be a
positive finite number). A file with NaN or Inf samples is refused naming it (exit 2); a silent
input or target gets the alert "silent ...: nothing to compare", not a copy verdict; ``report.json``
is strict JSON (a non-finite value is written as null).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from trainer.audio.level import unit_rms_scale
from trainer.core import checkpoint
from trainer.core.config import Config, ConfigError
from trainer.core.exitcodes import EXIT_BAD_INPUT
from trainer.core.io import atomic_write_text, atomic_write_wav
from trainer.core.log import get_logger
from trainer.tasks.creative import diagnostics

log = get_logger("infer")


def load_generator(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, Config]:
    """The checkpoint's creative agent (eval mode) and its resolved config."""
    model, cfg, _ = checkpoint.load_generator(path, device, task="creative_agent",
                                              other_tool="python -m trainer.evaluate")
    return model, cfg


def validation_pairs(cfg: Config, num_samples: int, shuffle_targets: bool, seed: int,
                     max_samples: int) -> list[dict]:
    """``num_samples`` evenly spaced validation items; with ``shuffle_targets`` each input is paired
    with the target of another, randomly chosen item (seeded). Centre crops of ``max_samples``."""
    from trainer.data.shards import ShardDataset, open_split, split_dirs

    index = open_split(split_dirs(cfg)[1], cfg)
    dataset = ShardDataset(index, train=False, crop_samples=None, normalize=False)
    items = np.unique(np.linspace(0, len(index) - 1, min(num_samples, len(index))).round().astype(np.int64))
    rng = np.random.default_rng(seed)

    def centre(item: int, signal: str) -> np.ndarray:
        full = int(index.length_of[item])
        length = min(full, max_samples)
        return dataset.read(item, signal, (full - length) // 2, length)

    pairs = []
    for item in (int(i) for i in items):
        other = item
        if shuffle_targets and len(index) > 1:
            other = int(rng.choice([i for i in range(len(index)) if i != item]))
        pairs.append({"input": centre(item, dataset.input), "target": centre(other, dataset.reference),
                      "input_name": index.names[item], "target_name": index.names[other],
                      "paired": other == item})
    return pairs


def read_mono(path: str | Path, sample_rate: int, max_samples: int) -> np.ndarray:
    """A file as mono float32 at ``sample_rate``, first ``max_samples`` samples."""
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read audio ({exc}); give a WAV/FLAC/OGG file") from None
    if wave.size == 0:
        raise ConfigError(f"{path}: the file holds no samples")
    if not np.isfinite(wave).all():
        raise ConfigError(f"{path}: {int((~np.isfinite(wave)).sum())} non-finite samples (NaN or Inf); "
                          "repair the file or give another")
    wave = wave.mean(axis=1)
    if rate != sample_rate:
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, sample_rate).numpy()
    return wave[:max_samples]


@torch.no_grad()
def run_pairs(model: torch.nn.Module, cfg: Config, pairs: list[dict], out_dir: Path,
              device: torch.device) -> list[dict]:
    """Run the agent on each pair, write the three wavs, return one report row per sample."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, pair in enumerate(pairs):
        length = min(len(pair["input"]), len(pair["target"]))
        wave_in, wave_tgt = pair["input"][:length], pair["target"][:length]
        if cfg.data.normalize:  # as in training: unit-RMS input; a true pair's target by the same factor
            scale = unit_rms_scale(wave_in)
            wave_tgt = wave_tgt * (scale if pair["paired"] else unit_rms_scale(wave_tgt))
            wave_in = wave_in * scale
        x = torch.from_numpy(np.ascontiguousarray(wave_in))[None].to(device)
        y = torch.from_numpy(np.ascontiguousarray(wave_tgt))[None].to(device)
        out = model(x, y)
        diag = diagnostics.creative_diagnostics(out, x, y)
        silent = [role for role, wave in (("input", wave_in), ("target", wave_tgt)) if not np.any(wave)]
        if silent:  # correlations with silence are 0 by convention, not a finding
            diag["alert"] = f"silent {' and '.join(silent)}: nothing to compare (correlations are undefined)"
        wave_out = out["wave"][0].float().cpu().numpy()
        files = {}
        for role, wave in (("input", wave_in), ("target", wave_tgt), ("output", wave_out)):
            files[role] = out_dir / f"sample_{k:02d}_{role}.wav"
            atomic_write_wav(files[role], wave, cfg.data.sample_rate)
        rows.append({"sample": k, "input_name": pair["input_name"], "target_name": pair["target_name"],
                     "seconds": length / cfg.data.sample_rate, **diag,
                     "files": {role: str(p) for role, p in files.items()}})
    atomic_write_text(out_dir / "report.json", json.dumps(_json_safe(rows), indent=2, allow_nan=False) + "\n")
    return rows


def _json_safe(value):
    """Non-finite floats as null: report.json stays JSON (NaN is not)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def print_table(rows: list[dict]) -> None:
    print(f"{'sample':>6}  {'corr_in':>7}  {'corr_tgt':>8}  {'m_in':>5}  {'m_tgt':>5}  {'compl%':>6}  alert")
    for r in rows:
        print(f"{r['sample']:>6}  {r['corr_input']:>7.3f}  {r['corr_target']:>8.3f}  {r['mask_input_mean']:>5.2f}  "
              f"{r['mask_target_mean']:>5.2f}  {r['complementarity_pct']:>6.1f}  {r['alert']}"
              f"   ({r['input_name']} + {r['target_name']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a creative_agent checkpoint (last.pt, best_*.pt)")
    parser.add_argument("--out-dir", required=True, help="folder for the wavs and report.json")
    parser.add_argument("--num-samples", type=int, default=5, help="validation pairs to render (default 5)")
    parser.add_argument("--shuffle-targets", action="store_true",
                        help="pair each validation input with the target of another, random item")
    parser.add_argument("--input", help="your own input piece (needs --target)")
    parser.add_argument("--target", help="your own target piece (needs --input)")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="cut pieces to this length (default: the checkpoint's data.crop_seconds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --shuffle-targets")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    if (args.input is None) != (args.target is None):
        parser.error("give both --input and --target (or neither, for validation pairs)")
    if args.num_samples < 1:
        parser.error("--num-samples must be at least 1")
    if args.max_seconds is not None and not 0 < args.max_seconds < float("inf"):
        print(f"error: --max-seconds {args.max_seconds} must be a positive number of seconds", file=sys.stderr)
        return EXIT_BAD_INPUT
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    from trainer.core.checkpoint import CheckpointError
    from trainer.data.format import DataError

    try:
        model, cfg = load_generator(args.checkpoint, device)
        seconds = args.max_seconds if args.max_seconds is not None else cfg.data.crop_seconds
        max_samples = max(1, int(round(seconds * cfg.data.sample_rate)))
        if args.input is not None:
            pairs = [{"input": read_mono(args.input, cfg.data.sample_rate, max_samples),
                      "target": read_mono(args.target, cfg.data.sample_rate, max_samples),
                      "input_name": Path(args.input).name, "target_name": Path(args.target).name,
                      "paired": False}]
        else:
            pairs = validation_pairs(cfg, args.num_samples, args.shuffle_targets, args.seed, max_samples)
        rows = run_pairs(model, cfg, pairs, Path(args.out_dir), device)
    except (ConfigError, CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print_table(rows)
    if args.input is None and len(rows) < args.num_samples:
        print(f"note: --num-samples {args.num_samples}: the validation split holds {len(rows)} item(s); rendered "
              f"all {len(rows)}", file=sys.stderr)
    log.info("wrote %d samples and report.json to %s", len(rows), args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
