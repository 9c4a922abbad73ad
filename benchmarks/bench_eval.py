"""Validation and evaluation throughput: files per second and where the time goes, on one core and all.

    .venv/bin/python benchmarks/bench_eval.py [--config configs/smoke.yaml] [--set k=v ...]
        [--run-dir RUN] [--repeats 2] [--json OUT.json]

1. **Validation pass** (``trainer.core.validation.run_validation`` of a ``Trainer`` built from the
   config, on the demo corpus's validation split, PESQ + SSNR + STOI): split into enhance (the
   task's ``validate_item`` per utterance: data, generator, loss, discriminator), score (the task's
   ``score``: the metrics, in the metric pool) and summarise (gather + summary).
2. **Evaluation** of the demo test set with every kept checkpoint of ``--run-dir`` (default: a
   short smoke run trained first in a temporary folder): ``python -m trainer.evaluate --run-dir RUN``
   as a command (its wall time, Python start and imports included) and the same
   ``evaluate_checkpoints`` in this process with its stages timed: reading the wavs, loading the
   checkpoints, enhancing, scoring (the first scoring includes the pool's start).

Each runs on one core (this process and its pools pinned to one CPU, one torch thread, one scoring
process) and on all cores (all torch threads, one scoring process per core), ``--repeats`` times;
the best and the median are printed. Files per second count every scored file (one per column:
the noisy input and each checkpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import trainer.core.checkpoint as checkpoint_module  # noqa: E402
import trainer.evaluate as evaluate_module  # noqa: E402
import trainer.tasks.speech.inference as inference_module  # noqa: E402
from trainer.core.config import load_config  # noqa: E402
from trainer.core.env import read_env  # noqa: E402
from trainer.core.loop import Trainer  # noqa: E402
from trainer.core.validation import run_validation  # noqa: E402
from trainer.metrics.labeler import process_pool  # noqa: E402

ALL_CORES = sorted(os.sched_getaffinity(0))


class Timers:
    """Seconds spent in wrapped callables, by stage name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        return timed


@contextlib.contextmanager
def patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def cores(count: int):
    """This process (and pools started inside) on ``count`` CPUs with as many torch threads."""
    threads = torch.get_num_threads()
    os.sched_setaffinity(0, ALL_CORES[:count])
    torch.set_num_threads(count)
    try:
        yield
    finally:
        os.sched_setaffinity(0, ALL_CORES)
        torch.set_num_threads(threads)


def time_validation(trainer: Trainer, num_cores: int) -> dict:
    task, timers = trainer.task, Timers()
    which = ("pesq", "ssnr", "stoi")
    pool = process_pool(num_cores) if num_cores > 1 else None
    try:
        with cores(num_cores), patched(task, "metric_pool", pool), \
                patched(task, "validate_item", timers.wrap("enhance", task.validate_item)), \
                patched(task, "score", timers.wrap("score", task.score)), \
                patched(task, "summarise", timers.wrap("summarise", task.summarise)):
            if pool is not None:  # start the workers outside the timing, as in training
                list(pool.map(abs, range(num_cores)))
            started = time.perf_counter()
            summary = run_validation(task, trainer.generator, trainer.discriminator, trainer.valid_loader,
                                     which=which)
            total = time.perf_counter() - started
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    return {"total": total, **timers.seconds, "utterances": summary["num_utterances"],
            "failed": summary["num_failed"], "pesq": summary.get("pesq")}


def time_evaluate_in_process(run_dir: Path, clean: Path, noisy: Path, num_cores: int) -> dict:
    timers = Timers()
    checkpoints = checkpoint_module.kept_checkpoints(run_dir)
    with cores(num_cores), \
            patched(evaluate_module, "_read_mono", timers.wrap("read", evaluate_module._read_mono)), \
            patched(checkpoint_module, "load_generator", timers.wrap("load", checkpoint_module.load_generator)), \
            patched(inference_module, "enhance", timers.wrap("enhance", inference_module.enhance)), \
            patched(evaluate_module, "score_pairs", timers.wrap("score", evaluate_module.score_pairs)):
        started = time.perf_counter()
        summaries, _, _ = evaluate_module.evaluate_checkpoints(checkpoints, clean, noisy, num_cores)
        total = time.perf_counter() - started
    files = sum(s["num_valid"] + s["num_failed"] for s in summaries.values())
    return {"total": total, **timers.seconds, "files": files, "columns": len(summaries)}


def time_evaluate_command(run_dir: Path, num_cores: int, work: Path) -> dict:
    out = work / f"evaluate_{num_cores}.json"
    cmd = [sys.executable, "-m", "trainer.evaluate", "--run-dir", str(run_dir), "--workers", str(num_cores),
           "--device", "cpu", "--json", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(num_cores)}
    started = time.perf_counter()
    proc = subprocess.run(["taskset", "-c", ",".join(map(str, ALL_CORES[:num_cores])), *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"trainer.evaluate: exit {proc.returncode}: {proc.stderr[-2000:]}")
    report = json.loads(out.read_text())
    files = sum(s["num_valid"] + s["num_failed"] for s in report["summaries"].values())
    return {"wall": wall, "enhance_and_score": report["wall_seconds"], "files": files}


def train_smoke_run(run_dir: Path) -> None:
    sets = ["train.epochs=1", "train.max_steps_per_epoch=2", "valid.max_utterances=2", "train.log_every=1"]
    cmd = [sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--run-dir", str(run_dir),
           *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"training the smoke run failed: {proc.stderr[-2000:]}")


def _progress(what: str, seconds: float) -> None:
    print(f"  {what}: {seconds:.1f} s (load average {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)


def _stats(values: list[float], best=min) -> str:
    return f"{best(values):.2f}/{statistics.median(values):.2f}"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/smoke.yaml", help="the validation's config (demo corpus)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--run-dir", type=Path, help="evaluate this run's kept checkpoints (default: train one)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers here")
    return parser.parse_args()


def _measure(args: argparse.Namespace, counts: list[int], results: dict) -> tuple:
    """Validation, evaluation in process and the evaluation command on each core count, ``--repeats``
    times, into ``results``; returns the (closed) validation trainer, its config and the evaluated run."""
    from trainer.data.demo import demo_for

    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        work = Path(tmp)
        cfg = load_config(args.config, ["data.demo=true", "checkpoint.every_steps=0", "checkpoint.every_minutes=0",
                                        *args.overrides])
        trainer = Trainer(cfg, work / "valid_run", read_env())
        run_dir = args.run_dir
        if run_dir is None:
            run_dir = work / "smoke_run"
            train_smoke_run(run_dir)
        paths = demo_for(cfg)
        clean, noisy = Path(paths["test_clean"]), Path(paths["test_noisy"])
        try:
            for _ in range(args.repeats):  # the core counts take turns, so a busy spell hits both
                for n in counts:
                    results["validation"].setdefault(n, []).append(time_validation(trainer, n))
                    _progress(f"validation on {n} core(s)", results["validation"][n][-1]["total"])
                    results["evaluate_in_process"].setdefault(n, []).append(
                        time_evaluate_in_process(run_dir, clean, noisy, n))
                    _progress(f"evaluation in process on {n} core(s)", results["evaluate_in_process"][n][-1]["total"])
                    results["evaluate_command"].setdefault(n, []).append(time_evaluate_command(run_dir, n, work))
                    _progress(f"evaluation command on {n} core(s)", results["evaluate_command"][n][-1]["wall"])
        finally:
            trainer.close()
    return trainer, cfg, run_dir


def _print_validation(args: argparse.Namespace, trainer: Trainer, cfg, counts: list[int], results: dict) -> None:
    audio_seconds = sum(float(b["lengths"][0]) for b in trainer.valid_loader) / cfg.data.sample_rate
    first = results["validation"][counts[0]][0]
    print(f"validation: {first['utterances']} utterances ({audio_seconds:.1f} s of audio), {args.config} "
          f"({cfg.model.name}), PESQ+SSNR+STOI; seconds best/median of {args.repeats}")
    print(f"{'cores':>5}{'total':>14}{'enhance':>14}{'score':>14}{'summarise':>14}{'utt/s':>14}")
    for n in counts:
        rows = results["validation"][n]
        print(f"{n:>5}" + "".join(f"{_stats([r.get(k, 0.0) for r in rows]):>14}"
                                  for k in ("total", "enhance", "score", "summarise"))
              + f"{_stats([r['utterances'] / r['total'] for r in rows], max):>14}")


def _print_evaluation(args: argparse.Namespace, run_dir: Path, counts: list[int], results: dict) -> None:
    ev = results["evaluate_in_process"][counts[0]][0]
    print(f"evaluation of the demo test set: {ev['files'] // ev['columns']} files x {ev['columns']} columns "
          f"(noisy + {ev['columns'] - 1} checkpoints of {run_dir.name if args.run_dir else 'a smoke run'})")
    print(f"{'cores':>5}{'command':>14}{'in-process':>14}{'read':>14}{'load':>14}{'enhance':>14}{'score':>14}"
          f"{'files/s':>14}")
    for n in counts:
        cmd, inproc = results["evaluate_command"][n], results["evaluate_in_process"][n]
        print(f"{n:>5}{_stats([r['wall'] for r in cmd]):>14}"
              + "".join(f"{_stats([r.get(k, 0.0) for r in inproc]):>14}"
                        for k in ("total", "read", "load", "enhance", "score"))
              + f"{_stats([r['files'] / r['total'] for r in inproc], max):>14}")
    print("files/s: in-process enhance + score of every column; 'command' adds Python start, imports and output")


def _print_speedups(counts: list[int], results: dict) -> None:
    """All cores over one, median times, into ``results`` (with more than one core)."""
    if len(counts) > 1:
        one, every = counts[0], counts[-1]
        speedups = {what: statistics.median(r[key] for r in results[what][one])
                    / statistics.median(r[key] for r in results[what][every])
                    for what, key in (("validation", "total"), ("evaluate_in_process", "total"),
                                      ("evaluate_command", "wall"))}
        results["speedup_all_cores_over_one"] = speedups
        print(f"ratios ({every} cores over 1, median time): "
              + ", ".join(f"{what} {value:.2f}x" for what, value in speedups.items()))


def main() -> None:
    args = _parse_args()
    counts = sorted({1, len(ALL_CORES)})
    results: dict = {"cores": counts, "load_average_start": os.getloadavg()[0], "validation": {},
                     "evaluate_in_process": {}, "evaluate_command": {}}
    trainer, cfg, run_dir = _measure(args, counts, results)
    _print_validation(args, trainer, cfg, counts, results)
    _print_evaluation(args, run_dir, counts, results)
    _print_speedups(counts, results)
    results["load_average_end"] = os.getloadavg()[0]
    print(f"1-min load average {results['load_average_start']:.1f} at the start, "
          f"{results['load_average_end']:.1f} at the end ({len(ALL_CORES)} cores)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")

if __name__ == "__main__":
    main()
