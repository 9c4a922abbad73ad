"""Score enhanced speech against clean references: ``python -m trainer.evaluate``.

    python -m trainer.evaluate --clean-dir A --enhanced-dir B [--workers N] [--csv FILE] [--json FILE]
    python -m trainer.evaluate --enhanced-dir B --dnsmos [--csv FILE] [--json FILE]   (no references)

Pairs every ``*.wav`` under ``A`` with the file of the same relative path under ``B`` and computes
PESQ, CSIG, CBAK, COVL, SSNR, STOI, ESTOI and SI-SDR (:mod:`trainer.metrics`, the CMGAN/Loizou
conventions) in a process pool; ``--dnsmos`` adds DNSMOS SIG/BAK/OVRL/P.808 (reference-free; the
``dnsmos`` extra), the only scores without ``--clean-dir``. Every summary also gives seeded bootstrap
95 % intervals, the paired difference against the noisy input (checkpoint modes) and, with
``--conditions CSV``, a breakdown by condition (:mod:`trainer.report`). A file that cannot be read,
has no counterpart or cannot be scored becomes a row with an ``error`` and is left out of the means;
it never stops the run. Prints a table; ``--csv``
writes one row per utterance, ``--json`` a summary with means, counts, failures, package versions
and the git revision (both written atomically).

Checkpoint modes (the trained generator is rebuilt from the config stored in the checkpoint):

    python -m trainer.evaluate --checkpoint CKPT --clean-dir A --noisy-dir B [--out-dir C]
    python -m trainer.evaluate --run-dir RUN [--clean-dir A --noisy-dir B]

enhance every noisy wav (written to ``--out-dir`` when given) and score it; ``--run-dir`` does this
for every kept checkpoint of a run (best_loss, best_pesq, best_stoi, best_composite, last) and
prints them side by side next to the unprocessed noisy input. A run trained on the demo corpus
defaults to the demo test set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from trainer.core.env import local_cores
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_DISK_FULL
from trainer.core.io import DiskFull, atomic_write_text, atomic_write_wav
from trainer.enhance import write_problem
from trainer.metrics.labeler import process_pool
from trainer.metrics.quality import METRIC_KEYS, compute_metrics
from trainer.report import wiring
from trainer.report.scoring import with_dnsmos
from trainer.report.tables import environment_info, format_table, rows_to_csv

CONVENTIONS = "CMGAN compute_metrics.py (Loizou composite.m port); STOI from pystoi"


def _score_arrays(name: str, clean: np.ndarray, enhanced: np.ndarray, sr: int, which, dnsmos: bool = False) -> dict:
    result = compute_metrics(clean, enhanced, sr, which=which)
    row = {"name": name, "seconds": round(min(len(clean), len(enhanced)) / sr, 3)} | result | {"sample_rate": sr}
    return with_dnsmos(row, enhanced, sr) if dnsmos else row


def _score_files(name: str, clean_path: str, enhanced_path: str | None, which, dnsmos: bool = False) -> dict:
    import soundfile as sf

    failed = {"name": name, "seconds": None} | dict.fromkeys(METRIC_KEYS) | {"error": None}
    if enhanced_path is None:
        return failed | {"error": "missing enhanced file"}
    try:
        clean, sr_clean = sf.read(clean_path, dtype="float64", always_2d=False)
        enhanced, sr_enh = sf.read(enhanced_path, dtype="float64", always_2d=False)
    except Exception as exc:  # soundfile raises several types for unreadable or broken files
        return failed | {"error": f"unreadable wav ({type(exc).__name__})"}
    if sr_clean != sr_enh:
        return failed | {"error": f"sample rate mismatch ({sr_clean} vs {sr_enh} Hz)"}
    return _score_arrays(name, clean, enhanced, sr_clean, which, dnsmos)


def _run_tasks(fn: Callable[..., dict], tasks: list[tuple], workers: int, progress: bool, pool=None) -> list[dict]:
    """``fn(*task)`` for every task, in ``pool`` or a new process pool when ``workers > 1``; order kept."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="scoring", unit="file", disable=not progress, file=sys.stderr)
    rows: list[dict] = []
    own_pool = pool is None and workers > 1 and len(tasks) > 1
    if own_pool:
        pool = process_pool(min(workers, len(tasks)))
    try:
        if pool is None:
            for task in tasks:
                rows.append(fn(*task))
                bar.update()
        else:
            for row in pool.map(fn, *zip(*tasks, strict=True), chunksize=1):
                rows.append(row)
                bar.update()
        return rows
    finally:
        bar.close()
        if own_pool:
            pool.shutdown(wait=True)


def score_pairs(pairs: Iterable[tuple[str, np.ndarray, np.ndarray]], sr: int, workers: int = 1, *,
                which=None, progress: bool = False, pool=None, dnsmos: bool = False) -> tuple[list[dict], dict]:
    """Score in-memory ``(name, clean, enhanced)`` pairs; returns per-utterance rows and the summary.

    ``pool``: an executor from :func:`trainer.metrics.process_pool` to reuse across calls (e.g.
    one per checkpoint); otherwise a pool of ``workers`` processes is started for this call.
    """
    tasks = [(name, clean, enhanced, sr, which, dnsmos) for name, clean, enhanced in pairs]
    rows = _run_tasks(_score_arrays, tasks, workers, progress, pool)
    return rows, wiring.summarize_rows(rows)


def match_files(clean_dir: Path, enhanced_dir: Path) -> tuple[list[tuple[str, str, str | None]], list[str]]:
    """``(name, clean_path, enhanced_path or None)`` per clean wav, and enhanced wavs without a clean one."""
    clean = {p.relative_to(clean_dir).as_posix(): p for p in clean_dir.rglob("*") if p.suffix.lower() == ".wav"}
    enhanced = {p.relative_to(enhanced_dir).as_posix(): p for p in enhanced_dir.rglob("*")
                if p.suffix.lower() == ".wav"}
    pairs = [(name, str(clean[name]), str(enhanced[name]) if name in enhanced else None) for name in sorted(clean)]
    return pairs, sorted(set(enhanced) - set(clean))


def score_folders(clean_dir: Path, enhanced_dir: Path, workers: int = 1, *, which=None,
                  progress: bool = False, dnsmos: bool = False) -> tuple[list[dict], dict, list[str]]:
    """Score matching wav files; returns rows, summary and the unmatched enhanced names."""
    pairs, unmatched = match_files(clean_dir, enhanced_dir)
    rows = _run_tasks(_score_files, [(*pair, which, dnsmos) for pair in pairs], workers, progress)
    return rows, wiring.summarize_rows(rows), unmatched


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean-dir", type=Path, help="folder with the clean reference wavs")
    parser.add_argument("--enhanced-dir", type=Path, help="folder with the enhanced wavs (same relative names)")
    parser.add_argument("--workers", type=int, default=None, help="scoring processes (default: all cores)")
    parser.add_argument("--csv", type=Path, help="write one row per utterance here")
    parser.add_argument("--json", type=Path, help="write the summary (means, failures, versions) here")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    wiring.add_arguments(parser)
    modes = parser.add_argument_group("checkpoint modes")
    modes.add_argument("--checkpoint", type=Path, help="enhance --noisy-dir with this checkpoint, then score")
    modes.add_argument("--noisy-dir", type=Path, help="noisy inputs (same relative names as --clean-dir)")
    modes.add_argument("--out-dir", type=Path, help="write the enhanced wavs here (one folder per checkpoint)")
    modes.add_argument("--run-dir", type=Path, help="score every kept checkpoint of a run side by side")
    modes.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="where the generator runs (auto: the GPU when one is visible)")
    return parser


def _read_mono(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wave, sr = sf.read(path, dtype="float32", always_2d=True)
    if wave.shape[1] != 1:
        raise ValueError(f"{path}: {wave.shape[1]} channels; give mono files")
    return wave[:, 0], sr


def evaluate_checkpoints(checkpoints: dict[str, Path], clean_dir: Path, noisy_dir: Path, workers: int, *,
                         out_dir: Path | None = None, progress: bool = False, device: str = "cpu",
                         dnsmos: bool = False, rows_by_column: dict | None = None) -> tuple[dict, dict, list[dict]]:
    """Enhance ``noisy_dir`` with each checkpoint and score it; also score the noisy input itself.

    Returns (summaries by column name, identities by column name, rows of the last column).
    A file that cannot be read is a failed row in every column. ``rows_by_column``, when given, is
    filled with every column's rows (for intervals and paired differences).
    """
    from trainer.core.checkpoint import load_generator

    readable, unreadable, sr = _read_signals(clean_dir, noisy_dir)
    models = {column: load_generator(path, device, task="speech_enhancement", other_tool="python -m trainer.infer")
              for column, path in checkpoints.items()}  # every checkpoint verified before any scoring
    summaries, identities, rows = {}, {}, []
    pool = process_pool(workers) if workers > 1 else None
    try:
        def score(column: str, estimates: list[np.ndarray | str]) -> None:
            nonlocal rows  # an estimate that is a str: why the generator refused that file
            done = [(item, est) for item, est in zip(readable, estimates, strict=True) if not isinstance(est, str)]
            refused = [{"name": item[0], "seconds": None, "error": est} | dict.fromkeys(METRIC_KEYS)
                       for item, est in zip(readable, estimates, strict=True) if isinstance(est, str)]
            scored, _ = score_pairs([(name, clean, est) for (name, clean, _, _), est in done], sr, workers,
                                    progress=progress, pool=pool, dnsmos=dnsmos)
            rows = scored + refused + unreadable
            summaries[column] = wiring.summarize_rows(rows)
            if rows_by_column is not None:
                rows_by_column[column] = rows

        score("noisy", [noisy for _, _, noisy, _ in readable])
        identities["noisy"] = {"path": str(noisy_dir.resolve())}
        for column, path in checkpoints.items():
            generator, cfg, info = models.pop(column)
            score(column, _enhance_all(generator, cfg, readable, out_dir and out_dir / column))
            identities[column] = {"path": str(Path(path).resolve()), "epoch": info["epoch"], "step": info["step"],
                                  "run": cfg.run.name, "model": cfg.model.name}
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return summaries, identities, rows


def _read_signals(clean_dir: Path, noisy_dir: Path) -> tuple[list[tuple], list[dict], int]:
    """``(name, clean, noisy, sample rate)`` of every readable pair, a failed row for each other clean
    file, and the one sample rate of them all (a ValueError when they differ)."""
    pairs, _ = match_files(clean_dir, noisy_dir)
    signals: list[tuple[str, np.ndarray | None, np.ndarray | None, int]] = []
    for name, clean_path, noisy_path in pairs:
        try:
            if noisy_path is None:
                raise ValueError("missing noisy file")
            clean, sr = _read_mono(clean_path)
            noisy, sr_noisy = _read_mono(noisy_path)
            if sr != sr_noisy:
                raise ValueError(f"sample rate mismatch ({sr} vs {sr_noisy} Hz)")
            signals.append((name, clean, noisy, sr))
        except Exception as exc:  # soundfile raises several types for broken files
            signals.append((name, None, None, 0))
            print(f"evaluate: {name}: {exc}", file=sys.stderr)
    readable = [item for item in signals if item[1] is not None]
    unreadable = [{"name": name, "error": "unreadable or unmatched file"} | dict.fromkeys(METRIC_KEYS)
                  for name, clean, _, _ in signals if clean is None]
    rates = {sr for *_, sr in readable}
    if len(rates) > 1:
        raise ValueError(f"files have different sample rates {sorted(rates)}; score one rate at a time")
    return readable, unreadable, rates.pop() if rates else 16000


def _enhance_all(generator, cfg, readable: list[tuple], out_dir: Path | None) -> list[np.ndarray | str]:
    """The generator's estimate of each readable noisy signal (written to ``out_dir`` when given), or
    for a signal it cannot take (too short, non-finite) why not: a failed row."""
    from trainer.tasks.speech.inference import enhance

    estimates: list[np.ndarray | str] = []
    for name, _, noisy, rate in readable:
        try:  # chunks of the generator's default length (CMGAN's attention grows quadratically)
            estimate = enhance(generator, cfg, noisy, rate)
        except ValueError as exc:
            print(f"evaluate: {name}: {exc}", file=sys.stderr)
            estimates.append(f"not enhanced: {exc}")
            continue
        estimates.append(estimate)
        if out_dir is not None:
            atomic_write_wav(out_dir / name, estimate, rate)
    return estimates


def _device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
    return "cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu"


def _checkpoint_mode(args, workers: int) -> int:
    from trainer.core.checkpoint import kept_checkpoints, load_generator

    if args.run_dir is not None:
        checkpoints = kept_checkpoints(args.run_dir)
        if not checkpoints:
            return _fail(f"--run-dir {args.run_dir}: no checkpoints under {args.run_dir / 'checkpoints'}")
    else:
        if not args.checkpoint.is_file():
            return _fail(f"--checkpoint {args.checkpoint}: no such file")
        checkpoints = {args.checkpoint.stem: args.checkpoint}
    if args.clean_dir is None and args.noisy_dir is None:
        from trainer.data.demo import demo_for

        _, cfg, _ = load_generator(next(iter(checkpoints.values())), task="speech_enhancement",
                                   other_tool="python -m trainer.infer")
        if not cfg.data.demo:
            return _fail("give --clean-dir A --noisy-dir B (the test set to enhance and score)")
        paths = demo_for(cfg)
        args.clean_dir, args.noisy_dir = Path(paths["test_clean"]), Path(paths["test_noisy"])
    for flag, folder in (("--clean-dir", args.clean_dir), ("--noisy-dir", args.noisy_dir)):
        if folder is None or not folder.is_dir():
            return _fail(f"{flag} {folder} is not a folder")
    problem = args.out_dir and write_problem(args.out_dir)  # before any scoring (a read-only mount stops root)
    if problem:
        return _fail(problem)
    started = time.perf_counter()
    rows_by_column: dict[str, list[dict]] = {}
    summaries, identities, rows = evaluate_checkpoints(checkpoints, args.clean_dir, args.noisy_dir, workers,
                                                       out_dir=args.out_dir, progress=not args.no_progress,
                                                       device=_device(args.device), dnsmos=args.dnsmos,
                                                       rows_by_column=rows_by_column)
    elapsed = time.perf_counter() - started
    report = {"summaries": summaries, "checkpoints": identities, "clean_dir": str(args.clean_dir.resolve()),
              "noisy_dir": str(args.noisy_dir.resolve()), "workers": workers,
              "wall_seconds": round(elapsed, 2),
              "conventions": CONVENTIONS}
    statistics_text = wiring.add_statistics(report, rows_by_column, args)
    if args.csv:
        atomic_write_text(args.csv, rows_to_csv(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps(report | environment_info(), indent=2) + "\n")
    print(f"enhanced and scored {len(rows)} files with {len(checkpoints)} checkpoint(s) in {elapsed:.1f} s")
    for column, identity in identities.items():
        if column != "noisy":
            print(f"  {column}: epoch {identity['epoch']}, step {identity['step']} ({identity['path']})")
    print(format_table(summaries, rows))
    print(wiring.notes_text(summaries) + statistics_text)
    if args.report is not None:
        wiring.checkpoint_report(args, report, checkpoints, rows_by_column)
    problem = wiring.nothing_scored(summaries)
    return _fail(problem) if problem else 0


def _fail(message: str) -> int:
    print(f"evaluate: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def output_problem(flag: str, path: Path | None) -> str | None:
    """Why ``path`` cannot take a report file, checked before any scoring (None if it can)."""
    if path is None:
        return None
    if path.is_dir():
        return f"{flag} {path} is a folder; give a file name, e.g. {path / ('scores' + flag[1:].replace('-', '.'))}"
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{flag} {path}: {parent} is not a folder"
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        return f"{flag} {path}: {parent} is not writable"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workers = local_cores() if args.workers is None else args.workers
    if workers < 1:
        return _fail(f"--workers must be at least 1, got {workers}")
    for flag, path in (("--csv", args.csv), ("--json", args.json)):
        problem = output_problem(flag, path)
        if problem:
            return _fail(problem)
    problem = wiring.prepare(args)
    if problem:
        return _fail(problem)
    if args.checkpoint or args.run_dir:
        if args.enhanced_dir is not None:
            return _fail("--enhanced-dir is for scoring existing files; with --checkpoint/--run-dir give --noisy-dir")
        from trainer.core.checkpoint import CheckpointError  # imports torch: only in the checkpoint modes

        try:
            return _checkpoint_mode(args, workers)
        except (CheckpointError, ValueError) as exc:
            return _fail(str(exc))
        except DiskFull as exc:
            print(f"evaluate: {exc}", file=sys.stderr)
            return EXIT_DISK_FULL
    if args.clean_dir is None and args.enhanced_dir is not None and args.enhanced_dir.is_dir():
        return wiring.reference_free(args, workers, _run_tasks)
    return _folder_mode(args, workers)


def _folder_mode(args, workers: int) -> int:
    """``--clean-dir A --enhanced-dir B``: score the enhanced files against their references."""
    if args.clean_dir is None or args.enhanced_dir is None:
        return _fail("give --clean-dir A and --enhanced-dir B (see --help)")
    for flag, folder in (("--clean-dir", args.clean_dir), ("--enhanced-dir", args.enhanced_dir)):
        if not folder.is_dir():
            return _fail(f"{flag} {folder} is not a folder")
    pairs, _ = match_files(args.clean_dir, args.enhanced_dir)
    if not pairs:
        return _fail(f"no .wav files under --clean-dir {args.clean_dir}")
    started = time.perf_counter()
    rows, summary, unmatched = score_folders(args.clean_dir, args.enhanced_dir, workers,
                                             progress=not args.no_progress, dnsmos=args.dnsmos)
    elapsed = time.perf_counter() - started
    report = {"summary": summary, "num_pairs": len(rows), "unmatched_enhanced": unmatched,
              "clean_dir": str(args.clean_dir.resolve()), "enhanced_dir": str(args.enhanced_dir.resolve()),
              "conventions": CONVENTIONS, "workers": workers, "wall_seconds": round(elapsed, 2)}
    headlines = [f"scored {summary['num_valid']} of {len(rows)} files ({summary['num_failed']} failed) "
                 f"in {elapsed:.1f} s with {workers} worker(s)"]
    if unmatched:
        headlines.append(f"{len(unmatched)} enhanced file(s) without a clean reference were ignored, "
                         f"e.g. {unmatched[0]}")
    return wiring.write_outputs(args, report, rows, headlines, report_audio=lambda: wiring.folder_audio(args, rows))


if __name__ == "__main__":
    sys.exit(main())
