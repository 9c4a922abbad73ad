"""The requeue policy of a training job: one implementation for both ways a job runs (no torch).

The submitit path (:class:`jobs.injob.job.TrainingJob`, global rank 0) calls :func:`start_attempt` and
:func:`end_attempt` in-process; the plain sbatch template (``slurm_templates/levante.sbatch``)
calls the same functions from its batch shell through this CLI::

    python -m jobs.requeue --run-dir D start [--job-id J] [--restart R] [--world-size N]
    python -m jobs.requeue --run-dir D end --exit-code C [--launcher torchrun] [--stop-requested]
        --max-requeues N --max-crash-requeues N --max-stalled-restarts N

``start`` records the attempt (``event: start``) in ``RUN_DIR/attempts.jsonl`` and prints the
attempt header; ``end`` records the attempt's end with the decision of :func:`decide` (requeue,
finish, stop, or Slurm is requeueing the job itself), prints it, runs ``scontrol requeue`` when
the decision is to requeue, and exits with the code the job should end with (0 after a requeue
or a finished run). Job id and restart count default to ``$SLURM_JOB_ID`` and
``$SLURM_RESTART_COUNT``.

Why a job that asked to be requeued may not be (:func:`classify_ending`) comes from Slurm's own
records: ``scontrol show job`` (JobState, Reason, Restarts) and ``sacct --duplicates`` (the state
of each attempt: CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, REQUEUED).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TextIO

from jobs import rundir, runs, slurm
from jobs.rundir import RunDir
from jobs.slurm import Ending
from trainer.core.exitcodes import (
    EXIT_BAD_INPUT,
    EXIT_CRASHED,
    EXIT_DISK_FULL,
    EXIT_DIVERGED,
    EXIT_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_REQUEUE,
)

ACTIONS = ("finish", "requeue", "slurm-requeue", "stop")  # slurm-requeue: Slurm requeued the job itself


@dataclasses.dataclass
class RequeuePolicy:
    max_requeues: int = 20
    max_crash_requeues: int = 2
    max_stalled_restarts: int = 3


NOT_RETRIED = {  # a requeue would fail the same way: a person has to act first
    EXIT_BAD_INPUT: "bad input: the one-line error in train.log says what to fix",
    EXIT_DIVERGED: "diverged: the last good checkpoint is kept; see train.log",
    EXIT_DISK_FULL: "disk full or quota exceeded: free space, then resubmit",
    EXIT_INTERRUPTED: "stopped with Ctrl-C: resubmit to continue",
}


def decide(exit_code: int, ends: list[dict], policy: RequeuePolicy,
           ending: Ending | str | None) -> tuple[str, str]:
    """-> (action, reason); action is one of :data:`ACTIONS`.

    ``ends`` are this job's earlier ``end`` records plus the current one (last), each with
    ``step_start``/``step_end``/``action``. ``ending``: why the job cannot be requeued by us
    (see :func:`classify_ending`), None while it runs.
    """
    if exit_code == EXIT_FINISHED:
        return "finish", "training finished"
    if isinstance(ending, Ending) and ending.slurm_requeues:
        return "slurm-requeue", ending.reason
    if ending:
        return "stop", str(ending)
    if exit_code not in (EXIT_REQUEUE, EXIT_CRASHED):
        why = NOT_RETRIED.get(exit_code, "see train.log")
        return "stop", f"exit code {exit_code} is not retried ({why})"
    requeued = [e for e in ends[:-1] if e.get("action") == "requeue"]
    if len(requeued) >= policy.max_requeues:
        return "stop", f"requeue budget spent ({policy.max_requeues} requeues); resubmit to continue"
    if exit_code == EXIT_CRASHED:
        crashes = [e for e in requeued if e.get("exit_code") == EXIT_CRASHED]
        if len(crashes) >= policy.max_crash_requeues:
            return "stop", (f"crashed {len(crashes) + 1} times (crash budget {policy.max_crash_requeues} "
                            "requeues); see the traceback in the logs")
    stalled = 0
    for end in reversed(ends):
        if (end.get("step_end") or 0) > (end.get("step_start") or 0):
            break
        stalled += 1
    if stalled > policy.max_stalled_restarts:
        return "stop", (f"no training step of progress in {stalled} attempts in a row (limit "
                        f"{policy.max_stalled_restarts} restarts); not requeued again, see the logs")
    if exit_code == EXIT_CRASHED:
        crashes = sum(1 for e in requeued if e.get("exit_code") == EXIT_CRASHED)
        return "requeue", (f"crashed; requeue {len(requeued) + 1} of {policy.max_requeues} (crash budget: "
                           f"{crashes + 1} of {policy.max_crash_requeues})")
    return "requeue", f"stop requested (timeout or preemption); requeue {len(requeued) + 1} of {policy.max_requeues}"


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def classify_ending(run_dir: Path, job_id: str, restart: int, stop_signal: str = "") -> Ending | None:
    """Why attempt ``restart`` of the job must not be requeued by us: None while it is RUNNING. A job
    the user cancelled with ``launch.py cancel`` (its marker in the run directory) is never requeued;
    otherwise Slurm's records say (:func:`jobs.slurm.classify_ending`)."""
    if RunDir(run_dir).cancel_marker(job_id).exists():
        return Ending("cancelled", "cancelled by the user (launch.py cancel); not requeued")
    return slurm.classify_ending(job_id, restart, stop_signal)


def start_attempt(run_dir: Path, job_id: str, restart: int, world_size: int | None = None) -> dict:
    """Record the start of an attempt (global rank 0 / the batch shell) and return the record."""
    run = RunDir(run_dir)
    record = {"event": "start", "job_id": str(job_id), "restart": restart, "step": run.resume_step(),
              "time": runs.now_iso(), "host": socket.gethostname()}
    if world_size is not None:
        record["world_size"] = world_size
    run.add_attempt(record)
    return record


def locked_out_by(run_dir: Path, job_id: str) -> str | None:
    """The other job that holds the run directory's lock (RUN_DIR/train.lock) while it is still queued
    or running: this attempt was refused its start. None otherwise (no lock, ours, or a stale one)."""
    holder = RunDir(run_dir).lock_holder()
    if not holder or holder.split("_")[0] == str(job_id).split("_")[0]:
        return None
    return holder if slurm.left_queue(holder) is False else None


def register_plain_job(run_dir: Path, job_id: str) -> None:
    """Put a job of the plain sbatch template (submitted with ``sbatch``, not from launch.py) into the
    submission index at its first start, so ``list``, ``status``, ``logs`` and ``cancel`` find it."""
    if any(sub["job_id"] == str(job_id) for sub in runs.submissions()):
        return
    try:
        runs.record_submission(str(job_id), Path(run_dir).resolve(), Path(run_dir).name,
                               os.environ.get("SEGAN_CLUSTER", "-"), kind="training", via="sbatch")
    except OSError as exc:  # the index is a convenience: the job itself goes on
        sys.stderr.write(f"jobs.requeue: job {job_id} not recorded in {runs.index_path()} ({exc.strerror})\n")


def _start_record(run_dir: Path, job_id: str, restart: int) -> dict | None:
    starts = [a for a in RunDir(run_dir).attempts("start", str(job_id)) if a.get("restart") == restart]
    return starts[-1] if starts else None


def end_attempt(run_dir: Path, job_id: str, restart: int, exit_code: int, policy: RequeuePolicy,
                step_start: int | None = None, ending: Ending | str | None = None, ask_slurm: bool = True,
                stop_signal: str = "") -> dict:
    """Decide what follows the attempt and record it (before any requeue: `scontrol requeue` ends
    the job's processes within moments). Returns the ``end`` record, with ``action`` and ``reason``.

    Steps: ``step_start`` where the attempt started, ``step_reached`` the step it was at when it
    ended (state.json), ``step_end`` where the next attempt resumes (the checkpoint's step; after a
    crash this is the last save, not the step reached). ``stop_signal``: see :func:`classify_ending`."""
    job_id, run = str(job_id), RunDir(run_dir)
    if step_start is None:
        start = _start_record(run_dir, job_id, restart)
        step_start = start.get("step", 0) if start else run.resume_step()
    state = run.state()  # "step" is last.pt's; "step_reached" where the trainer stopped
    step_reached = rundir.state_step({"step": state.get("step_reached", state.get("step"))})
    step_end = run.resume_step()
    ends = run.attempts("end", job_id)
    current = {"event": "end", "job_id": job_id, "restart": restart, "exit_code": exit_code,
               "step_start": step_start, "step_reached": step_reached if step_reached is not None else step_end,
               "step_end": step_end, "time": runs.now_iso()}
    holder = locked_out_by(run_dir, job_id) if exit_code != EXIT_FINISHED and ask_slurm else None
    if holder:  # refused at the start (exit 2, which torchrun reports as 1): not a crash, and no retry
        current["locked_out_by"] = holder
        action, reason = "stop", (f"locked out: job {holder} trains in this run directory; not retried "
                                  f"(python launch.py cancel {job_id} if it was submitted twice by mistake)")
        current.update(action=action, reason=reason)
        run.add_attempt(current)
        return current
    if ending is None and ask_slurm and exit_code != EXIT_FINISHED:
        ending = classify_ending(run_dir, job_id, restart, stop_signal)
    action, reason = decide(exit_code, ends + [current], policy, ending)
    if isinstance(ending, Ending):
        current["ending"] = ending.kind
    current.update(action=action, reason=reason)
    run.add_attempt(current)
    return current


def describe_end(record: dict) -> str:
    steps = f"step {record.get('step_start')} -> {record.get('step_end')}"
    if record.get("step_reached") not in (None, record.get("step_end")):
        steps += f" (reached {record.get('step_reached')})"
    return (f"===== attempt {_int(record.get('restart'), 0) + 1} of job {record.get('job_id')} ended: "
            f"exit {record.get('exit_code')}, {steps}; {record.get('action')}: {record.get('reason')} =====")


def requeue(run_dir: Path, job_id: str) -> str | None:
    """``scontrol requeue`` the job; None on success, else the failure (also recorded)."""
    why = slurm.requeue(job_id)
    if why is None:
        return None
    failure = (f"scontrol requeue failed ({why}); the time limit may have passed before the save: "
               "raise the signal lead")
    RunDir(run_dir).add_attempt({"event": "requeue_failed", "job_id": str(job_id),
                                                    "reason": failure, "time": runs.now_iso()})
    return failure


def act_on(run_dir: Path, job_id: str, record: dict, out: TextIO) -> bool:
    """Do what the decision in the ``end`` ``record`` says, for the submitit job and the plain template
    alike: ``requeue`` runs ``scontrol requeue``; ``stop`` (ended for good without finishing) cancels the
    evaluation chained after training (``--evaluate-after``); anything else needs nothing. Lines for the
    job's log go to ``out``. Returns whether a requeue was asked for and failed."""
    failure = None
    if record["action"] == "requeue":
        failure = requeue(run_dir, job_id)
        if failure:
            out.write(f"===== {failure} =====\n")
    elif record["action"] == "stop":
        from jobs.injob.evaluation import cancel_dependent

        line = cancel_dependent(run_dir, job_id, record["reason"])
        if line:
            out.write(line + "\n")
    out.flush()
    return failure is not None


# ----- the CLI of the plain sbatch template ----------------------------------------------------

def _parse_time(text) -> datetime.datetime | None:
    try:
        when = datetime.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)


def trainer_exit_code(raw: int, run_dir: Path, stop_requested: bool, since: str | None) -> int:
    """The trainer's own exit code behind torchrun's: torchrun exits 1 whenever a rank exits non-zero
    (42 included), so read what the trainer wrote to state.json during this attempt instead."""
    if raw == 0:
        return EXIT_FINISHED
    state = RunDir(run_dir).state()
    updated, started = _parse_time(state.get("updated")), _parse_time(since)
    fresh = updated is None or started is None or updated >= started.replace(microsecond=0)
    status = state.get("status") if fresh else None
    recorded = state.get("exit_code") if fresh else None
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded not in (0, EXIT_REQUEUE):
        return recorded  # the trainer's own code for a stop or failure (bad input, disk full, Ctrl-C, ...)
    if status == "checkpointed" and stop_requested:
        return EXIT_REQUEUE
    if status == "diverged":
        return EXIT_DIVERGED
    if status == "finished":
        return EXIT_FINISHED
    return EXIT_CRASHED  # a crash, or a bad-input exit 2 that torchrun hides (retried within the crash budget)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m jobs.requeue",
                                     description="record a job attempt and apply the requeue policy")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--job-id", default=os.environ.get("SLURM_JOB_ID"), help="default: $SLURM_JOB_ID")
    parser.add_argument("--restart", type=int, default=_int(os.environ.get("SLURM_RESTART_COUNT"), 0),
                        help="the attempt's restart count (default: $SLURM_RESTART_COUNT)")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="record the start of an attempt and print its header")
    start.add_argument("--world-size", type=int)
    end = sub.add_parser("end", help="record the end of an attempt, decide, requeue if so")
    end.add_argument("--exit-code", type=int, required=True, help="the trainer's exit code (or torchrun's)")
    end.add_argument("--launcher", choices=("direct", "torchrun"), default="direct",
                     help="torchrun: --exit-code is torchrun's; read the trainer's outcome from state.json")
    end.add_argument("--stop-requested", action="store_true", help="a save was requested (USR2/TERM)")
    end.add_argument("--stop-signal", default="", choices=("", "USR2", "TERM"),
                     help="the signal that asked for the save (the batch shell's first one)")
    end.add_argument("--step-start", type=int, help="default: from this attempt's start record")
    end.add_argument("--max-requeues", type=int, required=True)
    end.add_argument("--max-crash-requeues", type=int, required=True)
    end.add_argument("--max-stalled-restarts", type=int, required=True)
    end.add_argument("--no-requeue", action="store_true", help="decide and record, but do not run scontrol")
    return parser


def job_exit_code(action: str, exit_code: int, requeue_failed: bool) -> int:
    """What the batch script exits with after the decision."""
    if action in ("finish", "slurm-requeue") or (action == "requeue" and not requeue_failed):
        return 0
    return exit_code if exit_code not in (0, EXIT_REQUEUE) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.job_id:
        sys.stderr.write("jobs.requeue: error: no job id (--job-id, or run it inside a Slurm job)\n")
        return 2
    if args.command == "start":
        record = start_attempt(args.run_dir, args.job_id, args.restart, args.world_size)
        register_plain_job(args.run_dir, args.job_id)
        sys.stdout.write(f"===== attempt {args.restart + 1} of job {args.job_id} · {record['host']} · "
                         f"{record['time']} · step {record['step']} =====\n")
        return 0
    policy = RequeuePolicy(max_requeues=args.max_requeues, max_crash_requeues=args.max_crash_requeues,
                           max_stalled_restarts=args.max_stalled_restarts)
    code = args.exit_code
    if args.launcher == "torchrun":
        start = _start_record(args.run_dir, args.job_id, args.restart)
        code = trainer_exit_code(code, args.run_dir, args.stop_requested, start.get("time") if start else None)
    for signum in (signal.SIGTERM, signal.SIGUSR2):  # record the decision whatever arrives now
        signal.signal(signum, signal.SIG_IGN)
    record = end_attempt(args.run_dir, args.job_id, args.restart, code, policy, step_start=args.step_start,
                         stop_signal=args.stop_signal)
    sys.stdout.write(describe_end(record) + "\n")
    failed = False if args.no_requeue else act_on(args.run_dir, args.job_id, record, sys.stdout)
    sys.stdout.flush()
    return job_exit_code(record["action"], code, failed)


if __name__ == "__main__":
    sys.exit(main())
