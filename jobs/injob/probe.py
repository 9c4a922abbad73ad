"""A tiny stand-in for the trainer (no torch) to check a cluster's save/requeue plumbing.

    python launch.py --config configs/smoke.yaml --entry jobs.probe ...

It honours the trainer's contract: ``main(argv) -> exit code``, flag-only USR2/TERM handlers
(``trainer.core.signals``), resume from ``RUN_DIR/state.json``, ``metrics.jsonl`` step records,
EXIT_REQUEUE after a stop request at a step boundary. Rank 0 writes the files. Environment:
SEGAN_PROBE_STEPS (total steps, default 20), SEGAN_PROBE_STEP_SECONDS (default 0.5),
SEGAN_PROBE_CRASH=1 (raise at start: a crash loop), SEGAN_PROBE_IGNORE_USR2=1 (only SIGTERM stops
it: a job whose save cannot finish before its time limit). ``state.json`` names the file that ran
(``source``) and each step record carries ``loss`` 1/step.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from trainer.core import signals
from trainer.core.exitcodes import EXIT_FINISHED, EXIT_REQUEUE
from trainer.core.io import atomic_write_text


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="jobs.probe")
    parser.add_argument("--config")
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    signals.install()
    if os.environ.get("SEGAN_PROBE_IGNORE_USR2") == "1":
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        if signals.stop_reason() == "SIGUSR2":  # an early USR2 caught by the job wrapper's handler
            signals.reset()
    run_dir = Path(args.run_dir)
    is_main = os.environ.get("RANK", "0") == "0"
    num_steps = int(os.environ.get("SEGAN_PROBE_STEPS", "20"))
    step_seconds = float(os.environ.get("SEGAN_PROBE_STEP_SECONDS", "0.5"))
    if os.environ.get("SEGAN_PROBE_CRASH") == "1":
        raise RuntimeError("jobs.probe: crashing on purpose (SEGAN_PROBE_CRASH=1)")
    state_path = run_dir / "state.json"
    step = json.loads(state_path.read_text()).get("step", 0) if state_path.is_file() else 0

    def write_state(status: str) -> None:
        if is_main:
            atomic_write_text(state_path, json.dumps({
                "status": status, "step": step, "epoch": 0, "epochs": 1, "best": {},
                "job_id": os.environ.get("SLURM_JOB_ID"), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                "source": __file__,  # which copy of the code ran (the code snapshot of a submitted job)
                "code": json.loads(os.environ.get("SEGAN_CODE") or "null"),  # what a checkpoint would record
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))

    write_state("running")
    while step < num_steps:
        if signals.stop_requested():
            write_state("checkpointed")
            return EXIT_REQUEUE
        time.sleep(step_seconds)
        step += 1
        if is_main:
            with open(run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps({"kind": "step", "step": step, "loss": 1.0 / step}) + "\n")
        write_state("running")
    write_state("finished")
    return EXIT_FINISHED


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
