"""Login-node commands: logs, status, list, cancel (no torch; each answers in about a second).

A sweep (``launch.py sweep``) is named by its root, its name under logs/runs or its array job id:
``status`` then shows one line per element, ``list`` groups its elements under one line, and
``cancel`` cancels every element (and the evaluation array chained after them)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jobs import runs, slurm
from jobs.injob.evaluation import read_record as read_evaluation_record
from jobs.report import evaluation, outcome
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from trainer.core.runstate import read_epoch_records
from trainer.report.alerts import divergence_alerts

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
    ends = [a for a in RunDir(run_dir).attempts() if a.get("event") == "end"]
    if ends and ends[-1].get("action") in ("finish", "stop"):
        return False
    return RunDir(run_dir).state().get("status") not in RUN_DONE


def _check_rank(rank: int, job_id: str, run_dir: Path) -> None:
    """A rank the job does not have is an error (not a log that never comes)."""
    if rank < 0:
        raise LaunchError(f"--rank {rank}: a rank is 0 or more")
    sizes = [a.get("world_size") for a in RunDir(run_dir).attempts()
             if a.get("event") == "start" and a.get("job_id") == job_id and isinstance(a.get("world_size"), int)]
    if sizes and rank >= sizes[-1]:
        raise LaunchError(f"--rank {rank}: job {job_id} has {sizes[-1]} rank(s), 0 to {sizes[-1] - 1}")


def logs(target: str | None, follow: bool, rank: int, err: bool, poll_s: float = 0.5) -> int:
    job_id, run_dir = runs.resolve(target)
    if job_id is None:
        raise LaunchError(f"no job recorded for {run_dir}")
    _check_rank(rank, job_id, run_dir)
    path = RunDir(run_dir).log_path(job_id, rank, err)
    if not follow:
        if not path.exists():
            raise LaunchError(f"no log yet at {path} (job {job_id} may still be pending: "
                              f"python launch.py status {job_id})")
        _out(path.read_text(errors="replace"))
        if not err:
            _out(_evaluation_errors(job_id, run_dir))
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


EVALUATION_ERROR_LINES = 20


def _evaluation_errors(job_id: str, run_dir: Path) -> str:
    """An evaluation job writes its one-line reason for failing (a missing test folder, a bad checkpoint)
    to its error log, not to the log ``logs`` shows: the error log's last lines follow, under a header."""
    record = read_evaluation_record(run_dir)
    if record is None or str(record.get("job_id")) != job_id:
        return ""
    path = RunDir(run_dir).log_path(job_id, err=True)
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    shown = lines[-EVALUATION_ERROR_LINES:]
    which = "its last line" if len(shown) == 1 else f"its last {len(shown)} lines"
    return (f"===== the evaluation's error log {path} ({which}; all of it: python launch.py logs {job_id} --err) "
            "=====\n" + "\n".join(shown) + "\n")


def _saved_step(run_dir: Path, state: dict) -> str:
    """The STEP column of ``list`` and a sweep's status: the step the run resumes from (its last save;
    the checkpoint's sidecar, else state.json), not the step it had reached."""
    step = RunDir(run_dir).checkpoint_step()
    return str(step if step is not None else state.get("step", "-"))


def _best_pesq(state: dict) -> str:
    best = state.get("best")
    value = best.get("pesq") if isinstance(best, dict) else None
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _attempt_counts(run_dir: Path) -> int:
    return sum(1 for a in RunDir(run_dir).attempts() if a.get("event") == "start")


def _end_line(end: dict, sacct_state: str | None) -> str:
    steps = f"step {end.get('step_start')} -> {end.get('step_end')}"
    if end.get("step_reached") not in (None, end.get("step_end")):
        steps += f" (reached {end.get('step_reached')})"
    slurm_says = f" [sacct {sacct_state}]" if sacct_state else ""
    return (f"    job {end.get('job_id')} restart {end.get('restart')}: exit {end.get('exit_code')}, {steps}, "
            f"{end.get('action')}: {end.get('reason')}{slurm_says}")


def _evaluation_status(job_id: str, run_dir: Path) -> int:
    record = read_evaluation_record(run_dir) or {}
    found = evaluation.describe(run_dir)
    lines = [f"job {job_id}  evaluation of run directory {run_dir} after training job {record.get('after', '-')}",
             f"  state:  {found[1] if found else 'no evaluation record in ' + str(RunDir(run_dir).slurm)}",
             f"  test:   {record.get('test_dir', '-')}",
             f"  log:    {RunDir(run_dir).log_path(job_id)}"]
    _out("\n".join(lines) + "\n")
    return 0


def status(target: str | None) -> int:
    found = runs.sweep_target(target)
    if found is not None:
        return sweep_status(*found)
    job_id, run_dir = runs.resolve(target)
    kind = next((s.get("kind") for s in reversed(runs.submissions()) if s["job_id"] == job_id), None)
    if kind == "evaluation":
        return _evaluation_status(job_id, run_dir)
    lines = [f"job {job_id or '-'}  run directory {run_dir}"]
    queue = acct = None
    history: list[dict] | None = []
    if job_id and slurm.available():
        queue = slurm.queue_state_reason(job_id)
        history = slurm.attempt_history(job_id)  # one record per attempt; the last is sacct's latest
        acct = history[-1] if history else None
    silent = history is None
    history = history or []
    result = outcome.gather(job_id, run_dir, queue_state=queue, acct=acct, ask_slurm=False, sacct_silent=silent)
    lines.append(f"  state:  {result.headline}")  # the headline: how the job stands or ended
    if queue:
        lines.append(f"  squeue: {queue[0]}" + (f" ({queue[1]})" if queue[1] and queue[1] != "None" else ""))
    if acct:
        lines.append(f"  sacct:  {acct['State']} exit {acct['ExitCode']} elapsed {acct['Elapsed']}")
    if silent and job_id and slurm.available():
        lines.append(f"  sacct:  {slurm.SACCT_SILENT}: how the job ended is unknown; the run directory says:")
    elif job_id and slurm.available() and not queue and not acct:
        lines.append("  SLURM no longer knows this job (no accounting); the run directory says:")
    state, problem = RunDir(run_dir).load_state()
    if problem:
        lines.append(f"  run:    {problem}")
    elif state:
        epoch = f"{state.get('epoch', '-')}/{state.get('epochs', '-')}"
        word = state.get("status", "?")
        if word == "running" and not result.active:  # the attempt that wrote it died before it could say so
            word = "not running (state.json still says running: its attempt ended without updating it)"
        lines.append(f"  run:    {word} step {state.get('step', '-')} epoch {epoch} "
                     f"best pesq {_best_pesq(state)} updated {state.get('updated', '-')}")
    else:
        lines.append("  run:    no state.json yet (the trainer has not started)")
    lines += [f"  alert:  {alert}" for alert in divergence_alerts(read_epoch_records(run_dir))]
    record = read_evaluation_record(run_dir)
    if record is not None and str(record.get("after")) == str(job_id):
        described = evaluation.describe(run_dir)
        if described:
            lines.append(f"  evaluation: {described[1]}")
    ends = [a for a in RunDir(run_dir).attempts() if a.get("event") == "end"]
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


def _slurm_views(job_ids: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, dict], bool]:
    """squeue (one call, array elements one by one), the latest sacct record of the other jobs (one call)
    and whether sacct did not answer."""
    queue: dict[str, tuple[str, str]] = {}
    accts: dict[str, dict] | None = {}
    if job_ids and slurm.available():
        for job in slurm.queue() or []:
            queue[job["JobID"]] = (job["State"], job["Reason"])
        accts = slurm.accounting_many([j for j in job_ids if j not in queue])
    return queue, accts or {}, accts is None


def _table(rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in rows]


def sweep_status(root: Path, sweep: dict) -> int:
    elements = [e for e in sweep["elements"] if isinstance(e, dict) and e.get("run_dir")]
    evals = [str(e["evaluation_job_id"]) for e in elements if e.get("evaluation_job_id")]
    queue, accts, silent = _slurm_views([str(e.get("job_id")) for e in elements] + evals)
    axes = " x ".join(f"{a.get('key')}={','.join(map(str, a.get('values') or []))}" for a in sweep.get("grid") or [])
    which = runs.sweep_submissions(sweep) or f"array {sweep.get('array_job_id')}"
    lines = [f"sweep {sweep.get('name')}  {which}  {len(elements)} elements  "
             f"root {root}", f"  grid: {axes}"]
    rows = [("ELEMENT", "JOB", "STATE", "STEP", "EPOCH", "BEST_PESQ", "ATTEMPTS", "EVALUATION", "WHAT")]
    for element in elements:
        job_id, run_dir = str(element.get("job_id")), Path(element["run_dir"])
        state, problem = RunDir(run_dir).load_state()
        result = outcome.gather(job_id, run_dir, queue_state=queue.get(job_id), acct=accts.get(job_id),
                                ask_slurm=False, resume=False, sacct_silent=silent)
        eval_id = str(element.get("evaluation_job_id") or "")
        described = evaluation.describe(run_dir, queue.get(eval_id), accts.get(eval_id), ask_slurm=False)
        rows.append((str(element.get("name")), job_id, result.state, _saved_step(run_dir, state),
                     f"{state.get('epoch', '-')}/{state.get('epochs', '-')}", _best_pesq(state),
                     str(_attempt_counts(run_dir)), described[0] if described else "-", problem or result.headline))
    lines += _table(rows, "  ")
    lines.append(f"  details of one element: python launch.py status JOB; compare: python launch.py compare {root}")
    _out("\n".join(lines) + "\n")
    return 0


def list_runs(limit: int = 20) -> int:
    latest: dict[str, dict] = {}
    for sub in runs.training_submissions():
        latest.pop(sub["run_dir"], None)
        latest[sub["run_dir"]] = sub
    subs = list(latest.values())[-limit:]
    queue, accts, silent = _slurm_views([sub["job_id"] for sub in subs])
    header = ("JOB", "NAME", "STATE", "STEP", "EPOCH", "BEST_PESQ", "ATTEMPTS", "RUN_DIR")
    groups: list[tuple[str | None, list[tuple[str, ...]]]] = []  # (sweep root or None, rows), newest first
    by_sweep: dict[str, list[tuple[str, ...]]] = {}
    words: dict[str, list[str]] = {}
    notes = []
    for sub in reversed(subs):
        run_dir = Path(sub["run_dir"])
        state, problem = RunDir(run_dir).load_state()
        result = outcome.gather(sub["job_id"], run_dir, queue_state=queue.get(sub["job_id"]),
                                acct=accts.get(sub["job_id"]), ask_slurm=False, resume=False, sacct_silent=silent)
        if problem:
            notes.append(f"note: job {sub['job_id']}: {problem}")
        root = sub.get("sweep")
        name = run_dir.name if root else str(sub.get("name", "-"))
        row = (sub["job_id"], name, result.state, _saved_step(run_dir, state),
               f"{state.get('epoch', '-')}/{state.get('epochs', '-')}", _best_pesq(state),
               str(_attempt_counts(run_dir)), str(run_dir))
        if root is None:
            groups.append((None, [row]))
            continue
        if root not in by_sweep:
            by_sweep[root], words[root] = [], []
            groups.append((root, by_sweep[root]))
        by_sweep[root].append(row)
        words[root].append(result.state)
    rows = [header] + [row for _, group in groups for row in group]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]

    def line(row: tuple[str, ...], indent: str = "") -> str:
        return (indent + "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
                + "\n")

    _out(line(header))
    for root, group in groups:
        if root is None:
            _out(line(group[0]))
            continue
        counts = ", ".join(f"{words[root].count(w)} {w}" for w in dict.fromkeys(words[root]))
        sweep = runs.read_sweep(Path(root)) or {}
        which = runs.sweep_submissions(sweep) or f"array {group[0][0].split('_', 1)[0]}"
        _out(f"sweep {sweep.get('name', Path(root).name)}: {which}, {len(group)} runs ({counts})  {root}\n")
        order = {str(e.get("run_dir")): i for i, e in enumerate(sweep.get("elements") or []) if isinstance(e, dict)}
        for row in sorted(group, key=lambda r: (order.get(r[-1], len(order)), r[0])):  # element order
            _out(line(row, "  "))
    if silent:
        notes.append(f"note: {slurm.SACCT_SILENT}: STATE 'unknown' is a job no longer queued whose end is not known")
    for note in notes:
        _out(note + "\n")
    return 0


def _scancel(job_id: str) -> None:
    proc = slurm.cancel(job_id)
    if proc is None:
        raise LaunchError("scancel is not available here (not a SLURM login node)")
    if proc.returncode != 0:
        raise LaunchError(f"scancel {job_id} failed: {(proc.stderr or proc.stdout).strip()}")


def cancel(target: str) -> int:
    found = runs.sweep_target(target)
    if found is not None:
        root, sweep = found
        elements = [e for e in sweep["elements"] if isinstance(e, dict) and e.get("run_dir") and e.get("job_id")
                    and not e.get("skipped")]  # a finished element skipped by a resubmission has no job now
        for element in elements:  # the markers first: an element that saves now is not requeued
            RunDir(element["run_dir"]).mark_cancelled(str(element["job_id"]), runs.now_iso())
        array = str(sweep.get("array_job_id"))
        _scancel(array)
        extra = ""
        evaluations = runs.evaluation_arrays(sweep)  # every submission's: a resubmission keeps the earlier ones
        for evaluation_job in evaluations:
            _scancel(evaluation_job)
        if evaluations:
            extra = " and its evaluation " + runs.sweep_submissions({**sweep, "evaluation_arrays": evaluations},
                                                                    "evaluation_arrays", "evaluation_job_id")
        latest = "job" if runs.sweep_submissions({**sweep, "arrays": [array]}).startswith("job") else "job array"
        count = f"{len(elements)} element{'s' if len(elements) != 1 else ''}"
        _out(f"cancelled sweep {sweep.get('name')}: {latest} {array} ({count}){extra}; none is requeued; root {root}\n")
        return 0
    job_id, run_dir = runs.resolve(target)
    job_id = job_id or target
    if slurm.available() and slurm.left_queue(job_id):  # scancel answers 0 for an ended job: ask first
        acct = slurm.accounting(job_id)
        how = f"sacct {acct['State']}" if acct and acct.get("State") else slurm.SACCT_SILENT if acct is None else ""
        _out(f"job {job_id} had already ended{f' ({how})' if how else ''}: nothing to cancel, nothing written; "
             f"run directory {run_dir} (python launch.py status {job_id})\n")
        return 1
    RunDir(run_dir).mark_cancelled(job_id, runs.now_iso())
    _scancel(job_id)
    extra = ""
    record = read_evaluation_record(run_dir)
    if record is not None and str(record.get("after")) == job_id:
        slurm.cancel(str(record["job_id"]))
        extra = f" and the evaluation job {record['job_id']} waiting for it"
    _out(f"cancelled job {job_id}{extra} (it will not be requeued); run directory {run_dir}\n")
    return 0
