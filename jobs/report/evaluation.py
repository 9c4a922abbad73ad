"""What became of a run's evaluation job (``launch.py status``): one word and one sentence from
squeue, sacct and the run directory's records (no torch)."""

from __future__ import annotations

from pathlib import Path

from jobs import slurm
from jobs.injob.evaluation import SCORES, read_record
from jobs.rundir import RunDir


def describe(run_dir: Path, queue_state: tuple[str, str] | None = None, acct: dict | None = None,
             ask_slurm: bool = True) -> tuple[str, str] | None:
    """(one word, one sentence) on the run's evaluation job, None when it has none."""
    record = read_record(run_dir)
    if record is None:
        return None
    eval_id, after = str(record["job_id"]), str(record.get("after"))
    if ask_slurm and slurm.available():
        queue_state = queue_state or slurm.queue_state_reason(eval_id)
        acct = acct or (None if queue_state else slurm.accounting(eval_id))
    ours = [a for a in RunDir(run_dir).attempts() if a.get("job_id") == eval_id]
    cancelled_by_us = next((a for a in reversed(ours) if a.get("event") == "evaluation_cancelled"), None)
    done = next((a for a in reversed(ours) if a.get("event") == "evaluation"), None)
    scores = Path(run_dir) / SCORES
    if queue_state:
        state, reason = queue_state
        if state == "PENDING" and reason == "DependencyNeverSatisfied":
            return "never", (f"job {eval_id} will never start: training job {after} did not complete successfully "
                             "(squeue PENDING, DependencyNeverSatisfied); cancel it: python launch.py cancel "
                             f"{eval_id}")
        if state == "PENDING" and reason == "Dependency":
            return "waiting", (f"job {eval_id} waits for training job {after} to finish for good (squeue PENDING, "
                               f"Dependency); then it scores every kept checkpoint on {record.get('test_dir')}")
        if state == "RUNNING":
            return "running", (f"job {eval_id} is scoring every kept checkpoint on {record.get('test_dir')} "
                               "(squeue RUNNING)")
        return state.lower(), f"job {eval_id}: squeue {state}" + (f" ({reason})" if reason and reason != "None" else "")
    word = ((acct or {}).get("State") or "").split(" ")[0]
    if cancelled_by_us is not None:
        return "cancelled", f"job {eval_id} cancelled: {cancelled_by_us.get('reason')}"
    if word == "COMPLETED" or (not word and done is not None and done.get("exit_code") == 0):
        return "done", f"job {eval_id} done: test scores in {scores}" if scores.is_file() else f"job {eval_id} done"
    if word == "CANCELLED":
        if (acct or {}).get("Reason") in ("Dependency", "DependencyNeverSatisfied") or slurm.never_started(acct or {}):
            return "cancelled", (f"job {eval_id} cancelled before it started: training job {after} did not complete "
                                 "successfully, so its afterok dependency could never be satisfied "
                                 "(DependencyNeverSatisfied; --kill-on-invalid-dep)")
        return "cancelled", f"job {eval_id} cancelled ({acct.get('State')})"
    if word:
        return word.lower(), (f"job {eval_id} ended {acct.get('State')} (exit {acct.get('ExitCode')})"
                              f"{_why(run_dir, eval_id)}")
    if done is not None:
        return "failed", f"job {eval_id} exited {done.get('exit_code')}{_why(run_dir, eval_id)}"
    return "submitted", f"job {eval_id} (Slurm does not know it here); after training job {after}"


def _why(run_dir: Path, eval_id: str) -> str:
    """': <the last line of the job's error log>; see it with: python launch.py logs E --err' (the
    one-line reason of a failed evaluation is written to stderr)."""
    err = RunDir(run_dir).log_path(eval_id, err=True)
    try:
        lines = [line for line in err.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = f": {lines[-1].strip()}" if lines else ""
    return f"{last}; see {err} (python launch.py logs {eval_id} --err)"
