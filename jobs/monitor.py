"""Login-node commands: logs, status, list, cancel (no torch; each answers in about a second)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jobs import outcome, runs, slurm
from jobs.runs import LaunchError

ACTIVE = slurm.ACTIVE
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
    best = state.get("best")
    value = best.get("pesq") if isinstance(best, dict) else None
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _attempt_counts(run_dir: Path) -> int:
    return sum(1 for a in runs.read_attempts(run_dir) if a.get("event") == "start")


def _end_line(end: dict, sacct_state: str | None) -> str:
    steps = f"step {end.get('step_start')} -> {end.get('step_end')}"
    if end.get("step_reached") not in (None, end.get("step_end")):
        steps += f" (reached {end.get('step_reached')})"
    slurm_says = f" [sacct {sacct_state}]" if sacct_state else ""
    return (f"    job {end.get('job_id')} restart {end.get('restart')}: exit {end.get('exit_code')}, {steps}, "
            f"{end.get('action')}: {end.get('reason')}{slurm_says}")


def status(target: str | None) -> int:
    job_id, run_dir = runs.resolve(target)
    lines = [f"job {job_id or '-'}  run directory {run_dir}"]
    queue = acct = None
    history: list[dict] = []
    if job_id and slurm.available():
        queue = slurm.queue_state_reason(job_id)
        history = slurm.attempt_records(job_id)  # one record per attempt; the last is sacct's latest
        acct = history[-1] if history else None
    result = outcome.gather(job_id, run_dir, queue_state=queue, acct=acct, ask_slurm=False)
    lines.append(f"  state:  {result.headline}")  # the headline: how the job stands or ended
    if queue:
        lines.append(f"  squeue: {queue[0]}" + (f" ({queue[1]})" if queue[1] and queue[1] != "None" else ""))
    if acct:
        lines.append(f"  sacct:  {acct['State']} exit {acct['ExitCode']} elapsed {acct['Elapsed']}")
    if job_id and slurm.available() and not queue and not acct:
        lines.append("  SLURM no longer knows this job (no accounting); the run directory says:")
    state, problem = runs.load_state(run_dir)
    if problem:
        lines.append(f"  run:    {problem}")
    elif state:
        epoch = f"{state.get('epoch', '-')}/{state.get('epochs', '-')}"
        lines.append(f"  run:    {state.get('status', '?')} step {state.get('step', '-')} epoch {epoch} "
                     f"best pesq {_best_pesq(state)} updated {state.get('updated', '-')}")
    else:
        lines.append("  run:    no state.json yet (the trainer has not started)")
    ends = [a for a in runs.read_attempts(run_dir) if a.get("event") == "end"]
    lines.append(f"  attempts: {_attempt_counts(run_dir)}")
    recorded = {(str(e.get("job_id")), e.get("restart")) for e in ends}
    for end in ends[-5:]:
        same_job = str(end.get("job_id")) == job_id and isinstance(end.get("restart"), int)
        record = history[end["restart"]] if same_job and 0 <= end["restart"] < len(history) else {}
        lines.append(_end_line(end, record.get("State")))
    for index, record in enumerate(history):  # attempts Slurm ended without one of ours (e.g. cancelled while pending)
        if (job_id, index) not in recorded and record.get("State", "").split(" ")[0] not in slurm.ACTIVE:
            started = not slurm.never_started(record)
            lines.append(f"    job {job_id} restart {index}: sacct {record.get('State')} "
                         f"{'after ' + record.get('Elapsed', '?') if started else 'before it started'}, "
                         "no attempt record (not requeued by us)")
    _out("\n".join(lines) + "\n")
    return 0


def list_runs(limit: int = 20) -> int:
    latest: dict[str, dict] = {}
    for sub in runs.submissions():
        latest.pop(sub["run_dir"], None)
        latest[sub["run_dir"]] = sub
    subs = list(latest.values())[-limit:]
    queue: dict[str, tuple[str, str]] = {}
    accts: dict[str, dict] = {}
    if subs and slurm.available():
        for job in slurm.queue() or []:
            queue[job["JobID"]] = (job["State"], job["Reason"])
        accts = slurm.accounting_many([sub["job_id"] for sub in subs if sub["job_id"] not in queue])
    rows = [("JOB", "NAME", "STATE", "STEP", "EPOCH", "BEST_PESQ", "ATTEMPTS", "RUN_DIR")]
    notes = []
    for sub in reversed(subs):
        run_dir = Path(sub["run_dir"])
        state, problem = runs.load_state(run_dir)
        result = outcome.gather(sub["job_id"], run_dir, queue_state=queue.get(sub["job_id"]),
                                acct=accts.get(sub["job_id"]), ask_slurm=False, resume=False)
        if problem:
            notes.append(f"note: job {sub['job_id']}: {problem}")
        rows.append((sub["job_id"], str(sub.get("name", "-")), result.state, str(state.get("step", "-")),
                     f"{state.get('epoch', '-')}/{state.get('epochs', '-')}", _best_pesq(state),
                     str(_attempt_counts(run_dir)), str(run_dir)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        _out("  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] + "\n")
    for note in notes:
        _out(note + "\n")
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
