"""Enhance a folder of recordings (no clean reference needed): ``python -m trainer.enhance``.

    python -m trainer.enhance --checkpoint CKPT --noisy-dir DIR --out-dir OUT \\
        [--chunk-seconds S] [--overlap-seconds 1] [--batch-size 8] [--device auto|cpu|cuda]

Every ``.wav``/``.flac`` under DIR (recursively) is enhanced with a speech checkpoint (a training
checkpoint or an imported official one) and written to OUT under the same relative path with a
``.wav`` suffix (float32, the input's sample rate, length and level). Long files go through the
generator in overlapping chunks (bounded memory; the default length is the generator's, and a
chunk that would not fit in the device's memory is refused before any work, naming the largest
that fits); chunks of several files are batched. Re-running skips files already written (each is
written atomically, so an existing file is complete) and deletes the temporary files a killed run
left; OUT remembers the checkpoint and settings in ``enhance.json`` and refuses another checkpoint.

A file that cannot be enhanced (unreadable, non-finite samples, too short, two inputs such as
``x.wav`` and ``x.flac`` that would share one output name) is listed with its reason at the end and
the others go on; the exit code is then 2 (also when nothing could be done), 4 on a full disk.
See docs/enhancement-and-evaluation-trust.md.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_DISK_FULL, EXIT_FINISHED
from trainer.core.io import (
    DiskFull,
    atomic_write_text,
    atomic_write_wav,
    is_no_space,
    remove_stale_temporaries,
)
from trainer.core.log import get_logger, setup_logging
from trainer.report.enhance_score import score_outputs, score_problem

AUDIO_SUFFIXES = (".wav", ".flac")
MANIFEST = "enhance.json"
LOCK = ".enhance.lock"
log = get_logger("enhance")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.enhance", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a speech checkpoint (.pt)")
    parser.add_argument("--noisy-dir", type=Path, required=True, help="folder of .wav/.flac files (recursive)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the enhanced .wav files go")
    parser.add_argument("--chunk-seconds", type=float, default=None,
                        help="longer files are enhanced in chunks of this length (default: the generator's, "
                             "e.g. 30 for BSRNN, 3 for CMGAN; see docs/enhancement-and-evaluation-trust.md)")
    parser.add_argument("--overlap-seconds", type=float, default=1.0, help="cross-fade between chunks (default 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="chunks per generator call (default: 8 on a GPU, fewer if they do not fit; 1 on the CPU)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--score", action="store_true",
                        help="then score OUT without references (DNSMOS; OUT/scores.csv and scores.json; "
                             "pip install .[dnsmos])")
    return parser


def list_audio(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> int:
    print(f"enhance: error: {message}", file=sys.stderr)
    return code


def _inside(inner: Path, outer: Path) -> bool:
    return inner.resolve().is_relative_to(outer.resolve())


def _check_args(args) -> str | None:
    if not args.noisy_dir.is_dir():
        return f"--noisy-dir {args.noisy_dir} is not a folder"
    if not args.checkpoint.is_file():
        return f"--checkpoint {args.checkpoint}: no such file"
    if args.out_dir.exists() and not args.out_dir.is_dir():
        return f"--out-dir {args.out_dir} is a file, not a folder"
    if args.out_dir.resolve() == args.noisy_dir.resolve():
        return "--out-dir must differ from --noisy-dir (the inputs would be overwritten)"
    if _inside(args.out_dir, args.noisy_dir):
        return (f"--out-dir {args.out_dir} is inside --noisy-dir {args.noisy_dir}: a re-run would enhance the "
                "enhanced files again; choose an --out-dir outside it")
    for flag, value in (("--chunk-seconds", args.chunk_seconds), ("--overlap-seconds", args.overlap_seconds)):
        if value is not None and not math.isfinite(value):
            return f"{flag} {value} is not a finite number of seconds"
    if not args.overlap_seconds >= 0 or not (args.chunk_seconds or math.inf) > 2 * args.overlap_seconds:
        return f"--chunk-seconds {args.chunk_seconds} must exceed twice --overlap-seconds {args.overlap_seconds}"
    if args.batch_size is not None and args.batch_size < 1:
        return f"--batch-size {args.batch_size} must be at least 1"
    return None


def write_problem(folder: Path, flag: str = "--out-dir") -> str | None:
    """Why files cannot be written into ``folder`` (created if missing), tried with a real file:
    a read-only file system refuses even root. None if they can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull.of(folder / "(a new file)", None, exc) from None
        return f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a writable folder"
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


def _previous_chunk(out_dir: Path) -> float | None:
    try:
        value = json.loads((out_dir / MANIFEST).read_text()).get("chunk_seconds")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _lock_out_dir(out_dir: Path):
    """Hold OUT for this run (an flock, released however the process ends); then every temporary
    file under OUT is a killed run's and is deleted. Returns the open lock file, or a refusal."""
    import fcntl

    fh = open(out_dir / LOCK, "a")  # noqa: SIM115 - held until the process ends
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        fh.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return f"another trainer.enhance is writing to --out-dir {out_dir}; wait for it or choose another folder"
        raise
    folders = [out_dir, *(p for p in out_dir.rglob("*") if p.is_dir())]
    removed, freed = remove_stale_temporaries(folders, time.time())
    if removed:
        log.info("deleted %d temporary file(s) (%d bytes) of a killed run under %s", removed, freed, out_dir)
    return fh


def _read(path: Path):
    import soundfile as sf

    wave, rate = sf.read(str(path), dtype="float32", always_2d=True)
    if wave.shape[1] != 1:
        raise ValueError(f"{wave.shape[1]} channels; give mono files")
    if wave.shape[0] == 0:
        raise ValueError("no samples")
    return wave[:, 0], rate


def plan_outputs(files: list[Path], noisy_dir: Path, out_dir: Path):
    """(input, output) pairs, and (input, reason) for inputs that would share an output name
    (``x.wav`` and ``x.flac`` both become ``x.wav``): neither is enhanced, both are listed."""
    by_output: dict[Path, list[Path]] = {}
    for path in files:
        by_output.setdefault(out_dir / path.relative_to(noisy_dir).with_suffix(".wav"), []).append(path)
    todo, refused = [], []
    for out, sources in by_output.items():
        if len(sources) == 1:
            todo.append((sources[0], out))
            continue
        names = " and ".join(p.name for p in sources)
        refused += [(p, f"{names} would both be written to {out}; rename one of them") for p in sources]
    return sorted(todo), refused


def _device(choice: str) -> str | None:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        return None
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def _chunking(args, cfg, device: str) -> tuple[float, int] | str:
    """(chunk seconds, batch size) for this generator and device, or why they do not fit. What the
    user did not choose is fitted: the default batch to the chunk, the default chunk to the batch."""
    from trainer.tasks.speech.chunking import (
        chunk_problem,
        default_chunk_seconds,
        fitting_batch_size,
        fitting_chunk,
    )

    name, rate = cfg.model.name, cfg.data.sample_rate
    chunk = args.chunk_seconds if args.chunk_seconds is not None else default_chunk_seconds(name, rate)
    batch = args.batch_size or (fitting_batch_size(name, rate, chunk, device, 8) if device == "cuda" else 1)
    if args.chunk_seconds is None:
        chunk = fitting_chunk(name, rate, chunk, batch, device)
        if not chunk > 2 * args.overlap_seconds:
            return (f"--overlap-seconds {args.overlap_seconds} is too long for the {name} generator's chunk of "
                    f"{chunk:g} s on this device (it must be under half the chunk); lower it or --batch-size")
    return chunk_problem(name, rate, chunk, batch, device, args.overlap_seconds) or (chunk, batch)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    problem = _check_args(args) or (score_problem() if args.score else None)
    if problem:
        return _fail(problem)
    setup_logging(0)
    try:
        return _run(args)
    except DiskFull as exc:
        return _fail(str(exc), EXIT_DISK_FULL)


def _run(args) -> int:
    from trainer.core.checkpoint import CheckpointError, load_generator
    from trainer.tasks.speech.inference import ChunkedEnhancer

    device = _device(args.device)
    if device is None:
        return _fail("--device cuda but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    try:
        generator, cfg, info = load_generator(args.checkpoint, device, task="speech_enhancement",
                                              other_tool="python -m trainer.infer")
    except CheckpointError as exc:
        return _fail(str(exc))
    if args.chunk_seconds is None:  # a re-run into the same OUT keeps the chunk it was started with
        args.chunk_seconds = _previous_chunk(args.out_dir)
    plan = _chunking(args, cfg, device)
    if isinstance(plan, str):
        return _fail(plan)
    chunk_seconds, batch_size = plan
    files = list_audio(args.noisy_dir)
    if not files:
        return _fail(f"no .wav or .flac files under --noisy-dir {args.noisy_dir}")
    problem = write_problem(args.out_dir)
    lock = problem or _lock_out_dir(args.out_dir)
    if isinstance(lock, str):
        return _fail(lock)
    identity = {"checkpoint": str(args.checkpoint.resolve()), "epoch": info["epoch"], "step": info["step"],
                "model": cfg.model.name, "chunk_seconds": chunk_seconds, "overlap_seconds": args.overlap_seconds}
    with lock:
        problem = _claim_out_dir(args.out_dir, identity)
        if problem:
            return _fail(problem)
        enhancer = ChunkedEnhancer(generator, cfg, chunk_seconds=chunk_seconds,
                                   overlap_seconds=args.overlap_seconds, batch_size=batch_size)
        return _enhance_folder(args, enhancer, files, f"model {cfg.model.name}, step {info['step']}, {device}, "
                                                      f"chunks of {chunk_seconds:g} s")


def _enhance_folder(args, enhancer, files: list[Path], what: str) -> int:
    todo, failures = plan_outputs(files, args.noisy_dir, args.out_dir)
    done = sum(out.is_file() for _, out in todo)
    todo = [(p, out) for p, out in todo if not out.is_file()]
    log.info("%d files under %s: %d already enhanced, %d to do (%s)", len(files), args.noisy_dir, done, len(todo),
             what)
    code, written = _enhance_files(enhancer, todo, failures, not args.no_progress)
    for path, reason in sorted(failures):
        print(f"enhance: {path}: {reason}", file=sys.stderr)
    if code == EXIT_DISK_FULL:
        return code
    log.info("wrote %d enhanced files to %s%s", written, args.out_dir,
             f"; {len(failures)} could not be enhanced (listed above)" if failures else "")
    scored = score_outputs(args.out_dir, args.no_progress) if args.score else EXIT_FINISHED
    return EXIT_BAD_INPUT if failures else scored


def _enhance_files(enhancer, todo: list[tuple[Path, Path]], failures: list[tuple[Path, str]],
                   progress: bool) -> tuple[int, int]:
    """Enhance and write ``todo``; what cannot be done goes to ``failures``; a full disk stops it.
    Returns (EXIT_FINISHED or EXIT_DISK_FULL, files written)."""
    import numpy as np
    from tqdm import tqdm

    def readable():
        for path, out in todo:
            try:
                wave, rate = _read(path)
                problem = enhancer.refusal(wave, rate)
            except Exception as exc:  # soundfile raises several types for broken files
                problem = " ".join(str(exc).split()) or type(exc).__name__
            if problem:
                failures.append((path, problem))
                bar.update(1)
                continue
            yield (path, out, rate), wave, rate

    written = 0
    with tqdm(total=len(todo), disable=not progress, unit="file", file=sys.stderr) as bar:
        for (path, out, rate), enhanced in enhancer.enhance_many(readable()):
            bar.update(1)
            if not np.isfinite(enhanced).all():
                failures.append((path, "the model's output is not finite (NaN or Inf); nothing written"))
                continue
            try:
                atomic_write_wav(out, enhanced, rate)
                written += 1
            except DiskFull as exc:
                print(f"enhance: error: {exc}", file=sys.stderr)
                return EXIT_DISK_FULL, written
            except OSError as exc:
                failures.append((path, f"cannot write {out} ({exc.strerror or exc})"))
    return EXIT_FINISHED, written


if __name__ == "__main__":
    sys.exit(main())
