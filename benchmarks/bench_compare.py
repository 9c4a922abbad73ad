"""Speed of ``launch.py compare`` on 50 synthetic run directories (a sweep's worth).

    .venv/bin/python benchmarks/bench_compare.py [--runs 50] [--epochs 100] [--step-records 50] [--repeats 5]

Each run directory gets a resolved config.yaml (configs/smoke.yaml with two values that differ per
run), a metrics.jsonl of ``--epochs`` epoch records and ``--step-records`` step records per epoch
(the size of a real run with log_every 10: about 3 MB), a state.json and, for every other run, a
test_scores.json. Prints, as the median of ``--repeats``:

- the whole command, ``python launch.py compare`` as a user runs it (interpreter start-up included),
  in wall time and in CPU time (user+sys: what the command costs where the machine is shared),
  against the start-up baseline ``python launch.py --help`` (the same interpreter and imports,
  no run read): the ratio says what the 50 runs add to starting the CLI;
- the same table in-process (``jobs.report.compare``), against a baseline that parses every line of every
  metrics.jsonl with ``json.loads`` (what reading the files with ``trainer.core.runstate.read_jsonl``
  costs): the ratio says what skipping the step records saves.

All four are timed one after the other in the same run, on the same files, so each ratio
compares numbers taken under the same conditions.

No timed assertion anywhere: the numbers are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs import compare  # noqa: E402
from trainer.core.config import load_config  # noqa: E402
from trainer.core.runstate import read_jsonl  # noqa: E402
from trainer.core.settings import dump_yaml  # noqa: E402


def step_record(step: int, rng: random.Random) -> dict:
    names = ("loss", "loss_ri", "loss_mag", "loss_time", "loss_gan", "gan_weight", "d_loss", "d_clean", "d_estimate",
             "grad_norm_g", "grad_norm_d", "lr_g", "lr_d", "pesq_valid_rate", "seconds_per_step", "samples_per_second",
             "data_seconds", "generator_seconds", "labels_seconds", "discriminator_seconds")
    return {"kind": "step", "step": step, "epoch": step // 100, **{n: rng.random() for n in names}}


def epoch_record(epoch: int, step: int, quality: float, rng: random.Random) -> dict:
    pesq = 1.5 + quality * (1 - 1 / (1 + epoch / 20)) + 0.02 * rng.random()
    return {"kind": "epoch", "epoch": epoch, "step": step, "pesq_valid_rate": 1.0, "valid_num_utterances": 824,
            "valid_num_failed": 0, "valid_d_clean": rng.random(), "valid_d_estimate": rng.random(),
            "valid_loss": 1 / (1 + epoch), "valid_loss_mag": rng.random(), "valid_loss_ri": rng.random(),
            "valid_loss_time": rng.random(), "valid_pesq": pesq, "valid_ssnr": 5 + 3 * rng.random(),
            "valid_stoi": 0.9 + 0.05 * rng.random(), "valid_pesq_normalised": (pesq - 1) / 3.5,
            "valid_d_pesq_correlation": rng.random(), "valid_composite": 0.3 + 0.1 * rng.random(),
            "checkpoints": ["last", "best_pesq"]}


def make_runs(folder: Path, num_runs: int, epochs: int, step_records: int) -> list[Path]:
    rng = random.Random(0)
    paths = []
    for index in range(num_runs):
        w_gan, lr = (0.05, 0.1, 0.3, 0.5, 1.0)[index % 5], (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2,
                                                            5e-2, 1e-1)[index // 5 % 10]
        run_dir = folder / f"w_gan={w_gan},lr={lr}-{index}"
        run_dir.mkdir(parents=True)
        cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"loss.w_gan={w_gan}", f"optim.lr={lr}",
                                                            f"train.epochs={epochs}"])
        (run_dir / "config.yaml").write_text(dump_yaml(cfg))
        with open(run_dir / "metrics.jsonl", "w") as fh:
            step = 0
            for epoch in range(epochs):
                for _ in range(step_records):
                    step += 10
                    fh.write(json.dumps(step_record(step, rng)) + "\n")
                fh.write(json.dumps(epoch_record(epoch, step, 1.5 * rng.random(), rng)) + "\n")
        (run_dir / "state.json").write_text(json.dumps({"status": "finished", "step": step, "epoch": epochs,
                                                        "epochs": epochs}))
        if index % 2 == 0:
            (run_dir / "test_scores.json").write_text(json.dumps({"summaries": {
                "noisy": {"pesq": 1.97}, "best_pesq": {"pesq": 2.5, "stoi": 0.93, "ssnr": 8.0}}}))
        paths.append(run_dir)
    return paths


def child_cpu_seconds(command: list[str], env: dict, repeats: int) -> float:
    """Median user+sys CPU seconds of the command (on a machine shared with other work, wall time
    includes waiting for a core; CPU time does not)."""
    times = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(command, cwd=ROOT, capture_output=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--step-records", type=int, default=50, help="step records per epoch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_compare_") as tmp:
        paths = make_runs(Path(tmp), args.runs, args.epochs, args.step_records)
        size = sum((p / "metrics.jsonl").stat().st_size for p in paths)
        targets = [str(p) for p in paths]
        env = {**os.environ, "SEGAN_JOB_INDEX": os.devnull, "PATH": "/nonexistent"}
        command = [sys.executable, str(ROOT / "launch.py"), "compare", *targets]
        first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
        if first.returncode != 0:
            sys.stderr.write(first.stderr)
            return 1
        whole = median_seconds(lambda: subprocess.run(command, cwd=ROOT, capture_output=True, env=env), args.repeats)
        help_command = [sys.executable, str(ROOT / "launch.py"), "compare", "--help"]
        startup = median_seconds(lambda: subprocess.run(help_command, cwd=ROOT, capture_output=True, env=env),
                                 args.repeats)
        whole_cpu = child_cpu_seconds(command, env, args.repeats)
        startup_cpu = child_cpu_seconds(help_command, env, args.repeats)

        def in_process():
            with contextlib.redirect_stdout(io.StringIO()):
                compare.main(targets)

        inside = median_seconds(in_process, args.repeats)
        naive = median_seconds(lambda: [read_jsonl(p / "metrics.jsonl") for p in paths], args.repeats)
        print(f"{args.runs} runs, {args.epochs} epochs x {args.step_records} step records each, "
              f"metrics.jsonl {size / 1e6 / args.runs:.1f} MB per run ({size / 1e6:.0f} MB in all)")
        print(f"launch.py compare (whole command, start-up included): {whole:.3f} s")
        print(f"  baseline, launch.py compare --help (start-up only): {startup:.3f} s "
              f"(the command takes {whole / max(startup, 1e-9):.2f}x its start-up)")
        print(f"  CPU time (user+sys), whole command vs --help:       {whole_cpu:.3f} s vs {startup_cpu:.3f} s "
              f"({whole_cpu / max(startup_cpu, 1e-9):.2f}x)")
        print(f"  in-process table:                                   {inside:.3f} s")
        print(f"  baseline, json.loads of every line (reading only):  {naive:.3f} s "
              f"({naive / max(inside, 1e-9):.1f}x the in-process table)")
        print("first rows:")
        print("\n".join(first.stdout.splitlines()[:4]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
