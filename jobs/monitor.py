"""Login-node commands: logs, status, list, cancel (no torch; each answers in about a second)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jobs import runs, slurm
from jobs.runs import LaunchError

ACTIVE = {"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
          "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"}
RUN_DONE = {"finished", "failed", "diverged"}


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def job_active(job_id: str | None, run_dir: Path) -> bool:
    """Is the job still queued/running (or about to run again)? Falls back to the run dir."""
    if job_id and slurm.available():
        state, _ = slurm.job_state(job_id)
        if state is not None:
            return state in ACTIVE
    ends = [a for a in runs.read_attempts(run_dir) if a.get("event") == "end"]
    if ends and ends[-1].get("action") in ("finish", "stop"):
        return False
    return runs.read_state(run_dir).get("status") not in RUN_DONE


def logs(target: str | None, follow: bool, rank: int, err: bool, poll_s: float = 0.5) -> int:
    job_id, run_dir = runs.resolve(target)
    if job_id is None:
        raise LaunchError(f"no job recorded for {run_dir}")
    path = runs.log_path(run_dir, job_id, rank, err)
    if not follow:
        if not path.exists():
            raise LaunchError(f"no log yet at {path} (job {job_id} may still be pending: "
                              f"python launch.py status {job_id})")
        _out(path.read_text(errors="replace"))
        return 0
    position, waited_msg = 0, False
    try:
        while True:
            active = job_active(job_id, run_dir)  # asked before reading: no lines lost at the end
            if path.exists():
                with open(path, errors="replace") as fh:
                    fh.seek(position)
                    chunk = fh.read()
                    position = fh.tell()
                if chunk:
                    _out(chunk)
            elif not waited_msg:
                _out(f"launch.py: waiting for {path} (job {job_id} not started yet)\n")
                waited_msg = True
            if not active:
                return 0
            time.sleep(poll_s)
    except KeyboardInterrupt:
        return 0


def _best_pesq(state: dict) -> str:
    best = state.get("best") or {}
    value = best.get("pesq")
    return f"{value:.3f}" if isinstance(value, (int, float)) else "-"


def _attempt_counts(run_dir: Path) -> int:
    return sum(1 for a in runs.read_attempts(run_dir) if a.get("event") == "start")


def status(target: str | None) -> int:
    job_id, run_dir = runs.resolve(target)
    lines = [f"job {job_id or '-'}  run directory {run_dir}"]
    if job_id and slurm.available():
        state = slurm.queue_state(job_id)
        if state:
            lines.append(f"  squeue: {state}")
        acct = slurm.accounting(job_id)
        if acct:
            lines.append(f"  sacct:  {acct['State']} exit {acct['ExitCode']} elapsed {acct['Elapsed']}")
        if not state and not acct:
            lines.append("  SLURM no longer knows this job (no accounting); the run directory says:")
    state = runs.read_state(run_dir)
    if state:
        epoch = f"{state.get('epoch', '-')}/{state.get('epochs', '-')}"
        lines.append(f"  run:    {state.get('status', '?')} step {state.get('step', '-')} epoch {epoch} "
                     f"best pesq {_best_pesq(state)} updated {state.get('updated', '-')}")
    else:
        lines.append("  run:    no state.json yet (the trainer has not started)")
    attempts = runs.read_attempts(run_dir)
    ends = [a for a in attempts if a.get("event") == "end"]
    lines.append(f"  attempts: {_attempt_counts(run_dir)}")
    for end in ends[-5:]:
        lines.append(f"    job {end.get('job_id')} restart {end.get('restart')}: exit {end.get('exit_code')}, "
                     f"step {end.get('step_start')} -> {end.get('step_end')}, {end.get('action')}: "
                     f"{end.get('reason')}")
    _out("\n".join(lines) + "\n")
    return 0


def list_runs(limit: int = 20) -> int:
    latest: dict[str, dict] = {}
    for sub in runs.submissions():
        latest.pop(sub["run_dir"], None)
        latest[sub["run_dir"]] = sub
    subs = list(latest.values())[-limit:]
    queue: dict[str, str] = {}
    if subs and slurm.available():
        proc = slurm.run(["squeue", "-h", "-o", "%i %T"])
        if proc is not None and proc.returncode == 0:
            queue = dict(line.split(None, 1) for line in proc.stdout.splitlines() if " " in line)
    rows = [("JOB", "NAME", "STATE", "STEP", "EPOCH", "BEST_PESQ", "ATTEMPTS", "RUN_DIR")]
    for sub in reversed(subs):
        run_dir = Path(sub["run_dir"])
        state = runs.read_state(run_dir)
        run_state = queue.get(sub["job_id"], "").lower() or state.get("status", "submitted")
        rows.append((sub["job_id"], sub.get("name", "-"), run_state, str(state.get("step", "-")),
                     f"{state.get('epoch', '-')}/{state.get('epochs', '-')}", _best_pesq(state),
                     str(_attempt_counts(run_dir)), str(run_dir)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] + "\n")
    return 0


def cancel(job_id: str) -> int:
    _, run_dir = runs.resolve(job_id)
    runs.cancel_marker(run_dir, job_id).parent.mkdir(parents=True, exist_ok=True)
    runs.cancel_marker(run_dir, job_id).write_text(runs.now_iso() + "\n")
    proc = slurm.run(["scancel", job_id])
    if proc is None:
        raise LaunchError("scancel is not available here (not a SLURM login node)")
    if proc.returncode != 0:
        raise LaunchError(f"scancel {job_id} failed: {(proc.stderr or proc.stdout).strip()}")
    _out(f"cancelled job {job_id} (it will not be requeued); run directory {run_dir}\n")
    return 0
