"""What runs inside the SLURM job: one :class:`TrainingJob` call per rank (srun task).

Each task exports the torchrun contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and calls ``trainer.train.main(argv)`` in-process.

Save and requeue: Slurm sends ``--signal=USR2@LEAD`` (and ``scancel --signal=USR2``) to every
process of the step. Before the trainer starts we replace submitit's handler (which would act
on rank 0 alone, from inside a signal handler) by one that only asks the trainer to stop; the
trainer installs the same kind of handler itself, and at the next step boundary all ranks save
``last`` together and return EXIT_REQUEUE. Only then does global rank 0 decide, outside any
signal handler, whether to ``scontrol requeue`` the job (see :func:`decide`), and records the
attempt in ``RUN_DIR/attempts.jsonl``. A job the user cancelled is never requeued.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

from jobs import runs
from trainer.core import signals as trainer_signals
from trainer.core.exitcodes import EXIT_CRASHED, EXIT_FINISHED, EXIT_REQUEUE


@dataclasses.dataclass
class RequeuePolicy:
    max_requeues: int = 20
    max_crash_requeues: int = 2
    max_stalled_restarts: int = 3


def master_port(job_id: str, restart_count: int) -> int:
    """A port unique per job id on a node (ids of concurrent jobs differ by far less than 20000);
    the restart parity avoids rebinding a port the previous attempt may still hold."""
    digits = "".join(c for c in str(job_id) if c.isdigit()) or "0"
    return 20000 + (int(digits) % 20000) * 2 + restart_count % 2


def decide(exit_code: int, ends: list[dict], policy: RequeuePolicy, ending: str | None) -> tuple[str, str]:
    """-> (action, reason); action is 'finish', 'requeue' or 'stop'.

    ``ends`` are this job's earlier ``end`` records plus the current one (last), each with
    ``step_start``/``step_end``/``action``. ``ending``: why the job cannot be requeued (cancelled,
    past its limit), None while it runs.
    """
    if exit_code == EXIT_FINISHED:
        return "finish", "training finished"
    if ending:
        return "stop", ending
    if exit_code not in (EXIT_REQUEUE, EXIT_CRASHED):
        return "stop", f"exit code {exit_code} is not retried (bad input or diverged; see train.log)"
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
    why = "crashed" if exit_code == EXIT_CRASHED else "stop requested (timeout or preemption)"
    return "requeue", f"{why}; requeue {len(requeued) + 1} of {policy.max_requeues}"


def ending_reason(run_dir: Path, job_id: str) -> str | None:
    """Why this job must not be requeued although it asked to be: None while it is RUNNING.

    A cancelled job shows COMPLETING in scontrol/squeue while its processes get SIGTERM; only
    sacct (or the marker ``launch.py cancel`` leaves) tells that the user cancelled it.
    """
    from jobs import slurm

    if runs.cancel_marker(run_dir, job_id).exists():
        return "cancelled by the user (launch.py cancel); not requeued"
    state = (slurm.job_info(job_id) or {}).get("JobState", "")
    if state in ("RUNNING", ""):
        return None
    acct = (slurm.accounting(job_id) or {}).get("State", "")
    if state.startswith("CANCELLED") or acct.startswith("CANCELLED"):
        return "cancelled by the user; not requeued"
    return (f"the job is already ending (JobState={state}, sacct {acct or '-'}): the time limit may have "
            "passed before the save; raise the signal lead")


@dataclasses.dataclass
class TrainingJob:
    """The pickled callable submitit runs in every task of the job."""

    argv: list[str]
    run_dir: str
    policy: RequeuePolicy = dataclasses.field(default_factory=RequeuePolicy)
    entry: str = "trainer.train"  # a module with main(argv) -> exit code

    def __call__(self) -> int:
        trainer_signals.install()  # flag-only USR2/TERM handlers, replacing submitit's
        import submitit

        env = submitit.JobEnvironment()
        job_id = str(env.job_id)
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        os.environ.update(MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(master_port(job_id, restart)),
                          RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank),
                          WORLD_SIZE=str(env.num_tasks), LOCAL_WORLD_SIZE=str(env.num_tasks // env.num_nodes))
        run_dir = Path(self.run_dir)
        is_leader = env.global_rank == 0
        header = (f"===== attempt {restart + 1} of job {job_id} · rank {env.global_rank}/{env.num_tasks} "
                  f"· {socket.gethostname()} · {runs.now_iso()} =====\n")
        for stream in (sys.stdout, sys.stderr):
            stream.write(header)
            stream.flush()
        step_start = runs.read_state(run_dir).get("step", 0)
        if is_leader:
            runs.append_jsonl(runs.attempts_path(run_dir), {
                "event": "start", "job_id": job_id, "restart": restart, "step": step_start,
                "time": runs.now_iso(), "host": socket.gethostname(), "world_size": env.num_tasks})
        code = self._run_entry()
        if is_leader:
            self._finish_attempt(job_id, restart, step_start, code)
        if code in (EXIT_FINISHED, EXIT_REQUEUE):
            return code
        sys.exit(code)

    def _run_entry(self) -> int:
        try:
            code = importlib.import_module(self.entry).main(list(self.argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CRASHED)
        except Exception:
            traceback.print_exc()
            code = EXIT_CRASHED
        return int(code)

    def _finish_attempt(self, job_id: str, restart: int, step_start: int, code: int) -> None:
        run_dir = Path(self.run_dir)
        step_end = runs.read_state(run_dir).get("step", step_start)
        ends = [a for a in runs.read_attempts(run_dir) if a.get("event") == "end" and a.get("job_id") == job_id]
        current = {"event": "end", "job_id": job_id, "restart": restart, "exit_code": code,
                   "step_start": step_start, "step_end": step_end, "time": runs.now_iso()}
        action, reason = decide(code, ends + [current], self.policy, ending_reason(run_dir, job_id))
        current.update(action=action, reason=reason)
        # Recorded before the requeue: `scontrol requeue` ends this process within moments.
        runs.append_jsonl(runs.attempts_path(run_dir), current)
        sys.stderr.write(f"===== attempt {restart + 1} of job {job_id} ended: exit {code}, "
                         f"step {step_start} -> {step_end}; {action}: {reason} =====\n")
        sys.stderr.flush()
        if action == "requeue":
            proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True)
            if proc.returncode != 0:
                failure = (f"scontrol requeue failed ({(proc.stderr or proc.stdout).strip()}); the time limit "
                           "may have passed before the save: raise the signal lead")
                runs.append_jsonl(runs.attempts_path(run_dir), {"event": "requeue_failed", "job_id": job_id,
                                                                "reason": failure, "time": runs.now_iso()})
                sys.stderr.write(f"===== {failure} =====\n")
