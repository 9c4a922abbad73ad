"""The evaluation chained after training (``--evaluate-after``), in the job: :class:`EvaluationJob`
runs ``python -m trainer.evaluate --run-dir RUN --clean-dir TEST/clean --noisy-dir TEST/noisy --json
RUN/test_scores.json`` in-process (its table goes to the job's log) and records its end in
``attempts.jsonl``; :func:`cancel_dependent` cancels it when training ends for good without
finishing (called by :func:`jobs.injob.requeue.act_on`). ``RUN_DIR/slurm/evaluation.json``
(:func:`read_record`; written at submission by :mod:`jobs.submit.evaluation`) names the job, the
test folder and the training job it waits for. No torch here (trainer.evaluate is imported in the job).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import socket
import sys
from pathlib import Path

from jobs import runs, slurm
from jobs.rundir import RunDir

RECORD = "evaluation.json"  # in RUN_DIR/slurm/
SCORES = "test_scores.json"  # in RUN_DIR


@dataclasses.dataclass
class EvaluationJob:
    """The pickled callable of the evaluation job: ``trainer.evaluate`` on every kept checkpoint."""

    run_dir: str
    clean_dir: str
    noisy_dir: str
    workers: int = 1
    after: str = ""

    def argv(self) -> list[str]:
        return ["--run-dir", self.run_dir, "--clean-dir", self.clean_dir, "--noisy-dir", self.noisy_dir,
                "--json", str(Path(self.run_dir) / SCORES), "--workers", str(self.workers), "--no-progress"]

    def __call__(self) -> int:
        import submitit

        from trainer import evaluate

        job_id = str(submitit.JobEnvironment().job_id)
        sys.stdout.write(f"===== evaluation job {job_id} of {self.run_dir} after training job {self.after} · "
                         f"{socket.gethostname()} · {runs.now_iso()} =====\n"
                         f"python -m trainer.evaluate {shlex.join(self.argv())}\n")
        sys.stdout.flush()
        code = evaluate.main(self.argv())
        RunDir(self.run_dir).add_attempt({
            "event": "evaluation", "job_id": job_id, "after": self.after, "exit_code": code, "time": runs.now_iso(),
            "scores": str(Path(self.run_dir) / SCORES) if code == 0 else None})
        sys.stdout.flush()
        if code:
            sys.exit(code)
        return 0


def read_record(run_dir: Path) -> dict | None:
    try:
        value = json.loads((RunDir(run_dir).slurm / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("job_id") else None


def cancel_dependent(run_dir: Path, job_id: str, reason: str) -> str | None:
    """Training job ``job_id`` ended for good without finishing: cancel the evaluation waiting for it
    (recorded in attempts.jsonl). Returns a line for the log, None when there is none to cancel."""
    record = read_record(run_dir)
    if record is None or str(record.get("after")) != str(job_id):
        return None
    eval_id = str(record["job_id"])
    proc = slurm.cancel(eval_id)
    ok = proc is not None and proc.returncode == 0
    RunDir(run_dir).add_attempt({
        "event": "evaluation_cancelled", "job_id": eval_id, "after": str(job_id), "time": runs.now_iso(),
        "reason": f"training ended for good without finishing ({reason})",
        **({} if ok else {"scancel": "scancel failed or not available"})})
    return (f"===== evaluation job {eval_id} cancelled: training ended for good without finishing "
            f"({reason}) =====")
