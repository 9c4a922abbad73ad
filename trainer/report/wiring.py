"""What ``trainer.evaluate`` adds for issue 21: its extra flags, checks made before any scoring,
DNSMOS means, the statistics block, the reference-free mode, the outputs of the folder modes
(:func:`write_outputs`) and the exit rule when nothing scored."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from trainer.core.exitcodes import EXIT_BAD_INPUT
from trainer.core.io import atomic_write_text
from trainer.metrics.dnsmos import MISSING, missing_packages
from trainer.metrics.quality import summarize
from trainer.report.folder import report_folder_problem
from trainer.report.stats import read_conditions
from trainer.report.summary import add_dnsmos_means, format_statistics, notes, statistics
from trainer.report.tables import environment_info, format_table, rows_to_csv

AUDIO_SUFFIXES = (".wav", ".flac")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reference-free scores, intervals, breakdowns and the report")
    group.add_argument("--dnsmos", action="store_true",
                       help="also DNSMOS SIG/BAK/OVRL/P.808 of the enhanced files (needs no --clean-dir; "
                            "pip install .[dnsmos])")
    group.add_argument("--conditions", type=Path,
                       help="CSV with a 'name' column and condition columns (e.g. noise, snr_db; snr_db is "
                            "grouped in 5 dB bands): the summaries are broken down by each")
    group.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")
    group.add_argument("--report", type=Path, help="write a listening report to REPORT/index.html")


def prepare(args) -> str | None:
    """Checks made before any scoring; loads ``args.condition_table``. Returns the problem or None."""
    args.condition_table = None
    if args.dnsmos and missing_packages():
        return f"--dnsmos: {MISSING} (missing: {', '.join(missing_packages())})"
    if args.conditions is not None:
        try:
            args.condition_table = read_conditions(args.conditions)
        except ValueError as exc:
            return str(exc)
    if args.report is not None:
        return report_folder_problem(args.report)
    return None


def summarize_rows(rows: list[dict]) -> dict:
    """The means of :func:`trainer.metrics.summarize` plus DNSMOS means and the notes (PESQ bands)."""
    summary = add_dnsmos_means(summarize(rows), rows)
    summary_notes = notes(rows, summary)
    if summary_notes:
        summary["notes"] = summary_notes
    return summary


def nothing_scored(summaries: dict[str, dict]) -> str | None:
    """The line to print (and exit 2) when every file of every column failed."""
    if summaries and all(s.get("num_valid", 0) == 0 for s in summaries.values()):
        failed = max(s.get("num_failed", 0) for s in summaries.values())
        return f"every file failed ({failed}); nothing could be scored (reasons above)"
    return None


def add_statistics(report: dict, rows_by_column: dict[str, list[dict]], args) -> str:
    """Adds ``statistics`` to the JSON ``report``; returns the printed form."""
    stats = statistics(rows_by_column, args.condition_table, args.seed)
    report["statistics"] = stats
    return format_statistics(stats)


def list_audio(folder: Path) -> list[tuple[str, str]]:
    return sorted((p.relative_to(folder).as_posix(), str(p)) for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)


def reference_free(args, workers: int, run_tasks) -> int:
    """``--enhanced-dir DIR --dnsmos`` without ``--clean-dir``: DNSMOS of every audio file."""
    from trainer.report.scoring import score_file_reference_free

    if not args.dnsmos:
        return _fail("give --clean-dir A (intrusive metrics) or --dnsmos (reference-free), see --help")
    files = list_audio(args.enhanced_dir)
    if not files:
        return _fail(f"no .wav or .flac files under --enhanced-dir {args.enhanced_dir}")
    started = time.perf_counter()
    rows = run_tasks(score_file_reference_free, files, workers, not args.no_progress)
    elapsed = time.perf_counter() - started
    summary = summarize_rows(rows)
    report = {"summary": summary, "num_files": len(rows), "enhanced_dir": str(args.enhanced_dir.resolve()),
              "conventions": "DNSMOS P.835/P.808 as Microsoft's dnsmos_local.py (speechmos's ONNX models)",
              "workers": workers, "wall_seconds": round(elapsed, 2)}
    headline = (f"scored {summary['num_valid']} of {len(rows)} files ({summary['num_failed']} failed) "
                f"in {elapsed:.1f} s with {workers} worker(s), no references: DNSMOS only")
    return write_outputs(args, report, rows, [headline], report_audio=dict)


def write_outputs(args, report: dict, rows: list[dict], headlines: list[str], report_audio) -> int:
    """The end of the folder modes (one column: ``report["summary"]`` of ``rows``): the statistics, the
    CSV and JSON files (``report`` with the environment), the headlines, table, notes and statistics,
    the listening report (``report_audio()``: its audio); exit 2 when no file could be scored."""
    column, summary = os.path.basename(str(args.enhanced_dir).rstrip("/")) or "enhanced", report["summary"]
    report.update(environment_info())
    text = add_statistics(report, {column: rows}, args)
    if args.csv:
        atomic_write_text(args.csv, rows_to_csv(rows))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")
    print("\n".join(headlines))
    print(format_table({column: summary}, rows))
    print(notes_text({column: summary}) + text)
    if args.report is not None:
        from trainer.report.html import write_report

        write_report(args.report, report, {column: rows}, audio=report_audio())
        print(f"report: {args.report / 'index.html'}")
    problem = nothing_scored({column: summary})
    return _fail(problem) if problem else 0


def _fail(message: str) -> int:
    print(f"evaluate: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def notes_text(summaries: dict[str, dict]) -> str:
    lines = sorted({note for s in summaries.values() for note in s.get("notes", [])})
    return "".join(f"note: {line}\n" for line in lines)


def _read(path) -> tuple:
    import soundfile as sf

    wave, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return wave[:, 0], sr


def folder_audio(args, rows: list[dict]) -> dict:
    """``{name: {label: (wave, sr)}}`` for the report's files in folder mode (clean and enhanced)."""
    from trainer.report.select import report_files

    audio = {}
    for name in report_files({"enhanced": rows}, None):
        try:
            audio[name] = {"clean": _read(args.clean_dir / name), "enhanced": _read(args.enhanced_dir / name)}
        except Exception:  # noqa: BLE001 - a file that failed to score may be unreadable; the report skips it
            continue
    return audio


def report_audio(args, checkpoints: dict, rows_by_column: dict[str, list[dict]]) -> dict:
    """Noisy, clean and every checkpoint's output for the report's files (re-enhanced: only these)."""
    from trainer.core.checkpoint import load_generator
    from trainer.report.select import report_files
    from trainer.tasks.speech.inference import enhance

    names = report_files(rows_by_column, "noisy")
    audio: dict[str, dict] = {}
    for name in names:
        try:
            audio[name] = {"noisy": _read(args.noisy_dir / name), "clean": _read(args.clean_dir / name)}
        except Exception:  # noqa: BLE001 - unreadable files are failed rows already
            continue
    for column, path in checkpoints.items():
        generator, cfg, _ = load_generator(path, "cpu", task="speech_enhancement", other_tool="python -m trainer.infer")
        for waves in audio.values():
            wave, sr = waves["noisy"]
            waves[column] = (enhance(generator, cfg, wave, sr), sr)
    return audio


def checkpoint_report(args, report: dict, checkpoints: dict, rows_by_column: dict[str, list[dict]]) -> None:
    """The report of the checkpoint modes; with ``--run-dir`` also its curves and divergence alerts."""
    from trainer.core.runstate import read_metrics
    from trainer.report.alerts import divergence_alerts
    from trainer.report.html import write_report
    from trainer.report.kept import kept_points

    records = read_metrics(args.run_dir) if args.run_dir is not None else []
    alerts = divergence_alerts(records) if args.run_dir is not None else []
    report["alerts"] = alerts
    if args.run_dir is not None:
        report["kept_checkpoints"] = kept_points(args.run_dir, records)
    write_report(args.report, report, rows_by_column, audio=report_audio(args, checkpoints, rows_by_column),
                 run_dir=args.run_dir, alerts=alerts)
    for alert in alerts:
        print(f"alert: {alert}")
    print(f"report: {args.report / 'index.html'}")
