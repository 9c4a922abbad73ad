"""One owner per run directory: the training's lock file ``RUN_DIR/train.lock``.

Taken by rank 0 of a training before it writes anything into the run directory, released when it
ends. ``O_CREAT | O_EXCL`` (atomic on local file systems, NFS and Lustre; flock is not reliable
across Lustre clients), holding JSON with the holder's host, pid, SLURM job id and restart count,
start time and a random token. Login-node commands (``launch.py status/list``, evaluate, plot)
only read run directories and never take it.

A lock whose holder is gone is stale and taken over, with a warning naming it:
- same host: the pid no longer exists (or was reused by another process: its start time differs);
- an earlier attempt of this very SLURM job (same job id, lower ``SLURM_RESTART_COUNT``): SLURM runs
  one attempt of a job at a time;
- another host with a SLURM job id: ``squeue -h -j ID`` (only when ``squeue`` exists, with a timeout)
  says the job is not running any more;
- an unreadable lock file older than a minute (a writer killed between creating and filling it).
Otherwise the start is refused in one line naming the holder (exit code 2). When it cannot be told
(another host without SLURM, or squeue not answering) the message says which file to delete if
the holder is known to be dead. No call here can hang: squeue runs with a timeout.

This ``squeue`` liveness probe and its :data:`RUNNING_STATES` are the trainer's own: ``trainer/``
never imports ``jobs/``, whose Slurm adapter ``jobs/slurm.py`` makes every other Slurm call of the
toolkit (``tests/jobs/test_slurm.py`` checks that these states are among its active ones).
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from trainer.core.env import DistEnv
from trainer.core.errors import BadInput
from trainer.core.io import DiskFull, is_no_space, umask_mode
from trainer.core.log import get_logger

LOCK_FILE = "train.lock"
UNREADABLE_GRACE_SECONDS = 60.0  # a lock file being created is empty for a moment
SQUEUE_TIMEOUT_SECONDS = 15.0
RUNNING_STATES = {"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
                  "RESIZING"}

log = get_logger("lock")


class LockHeld(BadInput):
    """The run directory belongs to another training (or a concurrent start); exit code 2."""


def _proc_start(pid: int) -> str | None:
    """The start time of a local process in clock ticks since boot (Linux), to detect pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


class RunLock:
    """A held lock; :meth:`release` removes the file if it is still ours."""

    def __init__(self, path: Path, record: dict):
        self.path, self.record = path, record

    @property
    def mtime(self) -> float:
        """When the lock was taken, in the run directory's own file-system clock."""
        try:
            return self.path.stat().st_mtime
        except OSError:
            return time.time()

    def release(self) -> None:
        try:
            if json.loads(self.path.read_text()).get("token") == self.record["token"]:
                self.path.unlink()
        except (OSError, ValueError, AttributeError):
            pass


def _describe(record: dict) -> str:
    job = f", SLURM job {record['job_id']}" if record.get("job_id") else ""
    return f"host {record.get('host')}, pid {record.get('pid')}{job}, since {record.get('started')}"


def _slurm_state(job_id: str) -> str | None:
    """The job's state from squeue, "GONE" when SLURM no longer knows it, None when it cannot be told."""
    if shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                              timeout=SQUEUE_TIMEOUT_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode == 0:
        states = proc.stdout.split()
        return states[0] if states else "GONE"
    return "GONE" if "invalid job id" in proc.stderr.lower() else None


def stale_reason(record: dict | None, lock_mtime: float, env: DistEnv) -> tuple[str | None, str]:
    """(why the holder is gone, or None if it may be alive; what to do when it cannot be told)."""
    if record is None:
        if time.time() - lock_mtime > UNREADABLE_GRACE_SECONDS:
            return "an unreadable lock file older than a minute", ""
        return None, "another start is taking it right now"
    host, pid, job_id = record.get("host"), record.get("pid"), record.get("job_id")
    if host == socket.gethostname() and isinstance(pid, int):
        start = _proc_start(pid)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return f"process {pid} no longer exists", ""
        except PermissionError:
            pass  # alive, another user's
        if record.get("proc_start") and start and start != record["proc_start"]:
            return f"pid {pid} now belongs to another process", ""
        return None, ""
    if job_id and env.job_id and str(job_id) == str(env.job_id):
        if int(record.get("restart_count") or 0) < env.restart_count:
            return f"an earlier attempt of this SLURM job {job_id}", ""
        return None, ""
    if job_id:
        state = _slurm_state(job_id)
        if state is None:
            return None, f"squeue cannot tell whether SLURM job {job_id} still runs"
        if state not in RUNNING_STATES:
            return f"SLURM job {job_id} is no longer running ({state.lower()})", ""
        return None, ""
    return None, f"it cannot be checked from {socket.gethostname()}"


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _take_over(path: Path, seen: bytes) -> None:
    """Remove the stale lock ``seen`` unless another start replaced it meanwhile (then keep theirs)."""
    aside = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")  # a temporary: cleared at start if left
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_bytes() != seen:  # we moved a fresh lock of a concurrent start: put it back
            os.link(aside, path)
    except OSError:
        pass
    aside.unlink(missing_ok=True)


def acquire(run_dir: str | Path, env: DistEnv, *, attempts: int = 5) -> RunLock:
    """Take the run directory's lock (rank 0 only), taking over a stale one; raises LockHeld."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    for _ in range(attempts):
        record = {"host": socket.gethostname(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()),
                  "job_id": env.job_id, "restart_count": env.restart_count,
                  "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                  "token": secrets.token_hex(8)}
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, umask_mode())
        except FileExistsError:
            try:
                seen, mtime = path.read_bytes(), path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: try again
            holder = _read(path) if seen else None
            reason, unsure = stale_reason(holder, mtime, env)
            if reason is None:
                who = _describe(holder) if holder else "unknown holder"
                hint = (f"; {unsure}: if that training is dead, delete {path}" if unsure else
                        "; wait for it to end or stop it, or use another --run-dir")
                raise LockHeld(f"{run_dir}: in use by another training ({who}){hint}") from None
            log.warning("%s: taking over the stale lock of %s (%s)", run_dir,
                        _describe(holder) if holder else "an unknown holder", reason)
            _take_over(path, seen)
            continue
        text = json.dumps(record) + "\n"
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            path.unlink(missing_ok=True)
            if is_no_space(exc):
                raise DiskFull.of(path, len(text), exc) from None
            raise
        return RunLock(path, record)
    raise LockHeld(f"{run_dir}: could not take {path} after {attempts} tries (other starts racing for it); "
                   "start one training per run directory")


def claim_run_dir(run_dir: str | Path, env: DistEnv, device_preference: str) -> RunLock | None:
    """Collective: rank 0 takes the lock, every rank learns its verdict (so that no rank waits
    alone in a collective when rank 0 is refused). Raises LockHeld (or DiskFull) on every rank on
    refusal; the message is for rank 0 to print. Returns the lock on rank 0, None elsewhere."""
    lock, refusal = None, None
    if env.is_main:
        try:
            lock = acquire(run_dir, env)
        except (LockHeld, DiskFull) as exc:
            refusal = (type(exc).__name__, str(exc))
    if env.is_distributed:
        from trainer.core import dist  # torch: only for multi-rank runs

        dist.init(env, dist.select_device(env, device_preference))
        refusal = dist.broadcast_object(refusal)
    if refusal is not None:
        kind, message = refusal
        raise (DiskFull if kind == "DiskFull" else LockHeld)(message)
    return lock
