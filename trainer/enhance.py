"""Enhance a folder of recordings (no clean reference needed): ``python -m trainer.enhance``.

    python -m trainer.enhance --checkpoint CKPT --noisy-dir DIR --out-dir OUT \\
        [--chunk-seconds 30] [--overlap-seconds 1] [--batch-size 8] [--device auto|cpu|cuda]

Every ``.wav``/``.flac`` under DIR (recursively) is enhanced with a speech checkpoint (a training
checkpoint or an imported official one) and written to OUT under the same relative path with a
``.wav`` suffix (float32, the input's sample rate, length and level). Long files go through the
generator in overlapping chunks (bounded memory); chunks of several files are batched. Re-running
skips files already written (each is written atomically, so an existing file is complete); OUT
remembers the checkpoint and settings in ``enhance.json`` and refuses another checkpoint. A file
that cannot be read is listed with its reason and the others go on; the exit code is then 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED
from trainer.core.io import atomic_write_text, atomic_write_wav
from trainer.core.log import get_logger, setup_logging
from trainer.report.enhance_score import score_outputs, score_problem

AUDIO_SUFFIXES = (".wav", ".flac")
MANIFEST = "enhance.json"
log = get_logger("enhance")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.enhance", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a speech checkpoint (.pt)")
    parser.add_argument("--noisy-dir", type=Path, required=True, help="folder of .wav/.flac files (recursive)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the enhanced .wav files go")
    parser.add_argument("--chunk-seconds", type=float, default=30.0,
                        help="longer files are enhanced in chunks of this length (default 30)")
    parser.add_argument("--overlap-seconds", type=float, default=1.0, help="cross-fade between chunks (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per generator call (default: 8 on a GPU, 1 on the CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--score", action="store_true",
                        help="then score OUT without references (DNSMOS; OUT/scores.csv and scores.json; "
                             "pip install .[dnsmos])")
    return parser


def list_audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _fail(message: str) -> int:
    print(f"enhance: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _check_args(args) -> str | None:
    if not args.noisy_dir.is_dir():
        return f"--noisy-dir {args.noisy_dir} is not a folder"
    if not args.checkpoint.is_file():
        return f"--checkpoint {args.checkpoint}: no such file"
    if args.out_dir.exists() and not args.out_dir.is_dir():
        return f"--out-dir {args.out_dir} is a file, not a folder"
    if args.out_dir.resolve() == args.noisy_dir.resolve():
        return "--out-dir must differ from --noisy-dir (the inputs would be overwritten)"
    if not args.overlap_seconds >= 0 or not args.chunk_seconds > 2 * args.overlap_seconds:
        return f"--chunk-seconds {args.chunk_seconds} must exceed twice --overlap-seconds {args.overlap_seconds}"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size {args.batch_size} must be at least 1"
    return None


def _claim_out_dir(out_dir: Path, identity: dict) -> str | None:
    """Record what OUT holds; refuse an OUT written with another checkpoint or settings."""
    path = out_dir / MANIFEST
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return f"{path} is unreadable ({exc}); delete it or use another --out-dir"
        if previous != identity:
            changed = sorted(k for k in identity if previous.get(k) != identity[k])
            return (f"{out_dir} holds files enhanced with other settings ({', '.join(changed)} differ; see {path}); "
                    "use another --out-dir")
    atomic_write_text(path, json.dumps(identity, indent=1) + "\n")
    return None


def _read(path: Path):
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if wave.shape[1] != 1:
        raise ValueError(f"{wave.shape[1]} channels; give mono files")
    if wave.shape[0] == 0:
        raise ValueError("no samples")
    return wave[:, 0], rate


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check_args(args) or (score_problem() if args.score else None)
    if problem:
        return _fail(problem)
    setup_logging(0)
    import torch

    from trainer.core.checkpoint import CheckpointError, load_generator
    from trainer.tasks.speech.inference import ChunkedEnhancer

    if args.device == "cuda" and not torch.cuda.is_available():
        return _fail("--device cuda but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    try:
        generator, cfg, info = load_generator(args.checkpoint, device, task="speech_enhancement",
                                              other_tool="python -m trainer.infer")
    except CheckpointError as exc:
        return _fail(str(exc))
    identity = {"checkpoint": str(args.checkpoint.resolve()), "epoch": info["epoch"], "step": info["step"],
                "model": cfg.model.name, "chunk_seconds": args.chunk_seconds, "overlap_seconds": args.overlap_seconds}
    files = list_audio(args.noisy_dir)
    if not files:
        return _fail(f"no .wav or .flac files under --noisy-dir {args.noisy_dir}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    problem = _claim_out_dir(args.out_dir, identity)
    if problem:
        return _fail(problem)
    todo = [(p, args.out_dir / p.relative_to(args.noisy_dir).with_suffix(".wav")) for p in files]
    done = sum(out.is_file() for _, out in todo)
    todo = [(p, out) for p, out in todo if not out.is_file()]
    log.info("%d files under %s: %d already enhanced, %d to do (model %s, step %d, %s)", len(files),
             args.noisy_dir, done, len(todo), cfg.model.name, info["step"], device)
    batch_size = args.batch_size or (8 if device == "cuda" else 1)
    enhancer = ChunkedEnhancer(generator, cfg, chunk_seconds=args.chunk_seconds,
                               overlap_seconds=args.overlap_seconds, batch_size=batch_size)
    failures: list[tuple[Path, str]] = []

    def readable():
        for path, out in todo:
            try:
                wave, rate = _read(path)
            except Exception as exc:  # soundfile raises several types for broken files
                failures.append((path, " ".join(str(exc).split()) or type(exc).__name__))
                continue
            yield (out, rate), wave, rate

    from tqdm import tqdm

    with tqdm(total=len(todo), disable=args.no_progress, unit="file", file=sys.stderr) as bar:
        for (out, rate), enhanced in enhancer.enhance_many(readable()):
            atomic_write_wav(out, enhanced, rate)
            bar.update(1)
        bar.update(len(failures))
    for path, reason in failures:
        print(f"enhance: {path}: {reason}", file=sys.stderr)
    written = len(todo) - len(failures)
    log.info("wrote %d enhanced files to %s%s", written, args.out_dir,
             f"; {len(failures)} unreadable (listed above)" if failures else "")
    scored = score_outputs(args.out_dir, args.no_progress) if args.score else EXIT_FINISHED
    return EXIT_BAD_INPUT if failures else scored


if __name__ == "__main__":
    sys.exit(main())
