"""The launcher's one Slurm adapter (login node and batch shell; no torch).

Every call of Slurm's commands by the launcher (``squeue``, ``sacct``, ``scontrol``, ``scancel``,
``sinfo``, ``sbatch --test-only``) is made here, every set of Slurm state words is defined here,
and so is the ending classifier (:func:`classify_ending`: why a job that asked to be requeued
ends). Every query returns None / empty when SLURM cannot answer, so callers can fall back to the
run directory's own state on clusters without accounting or off-cluster. The sbatch scripts
themselves are rendered by :mod:`jobs.sbatch`. The trainer's run-directory lock
(``trainer/core/lock.py``) keeps its own ``squeue`` liveness probe: ``trainer/`` never imports ``jobs/``.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time

from trainer.core.settings import ConfigError

TIMEOUT_S = 10
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", re.ASCII)
# Job states in which a job is queued, running, or about to run again.
ACTIVE = frozenset({"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"})
# sacct states after which Slurm will not run the job again by itself -> the one word `launch.py list` shows
FINAL_WORDS = {
    "COMPLETED": "completed", "CANCELLED": "cancelled", "TIMEOUT": "timeout", "FAILED": "failed",
    "NODE_FAIL": "node_fail", "PREEMPTED": "preempted", "OUT_OF_MEMORY": "out_of_memory",
    "BOOT_FAIL": "boot_fail", "DEADLINE": "deadline", "REVOKED": "revoked",
}
# sacct states that say how an attempt ended. slurmctld sends them to slurmdbd asynchronously: for a
# moment after Slurm requeued a job, sacct can still show the attempt RUNNING (or not answer).
SETTLED_STATES = frozenset({*FINAL_WORDS, "REQUEUED"})
ACCOUNTING_WAIT_S = 8.0  # well inside Slurm's KillWait (30 s by default) after the job's SIGTERM


def parse_slurm_time(text: str) -> int:
    """Slurm time ('MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') -> seconds.

    Strict where Slurm would silently carry over: minutes and seconds after a ':' are 0-59 and the
    hours after 'D-' are 0-23 ('99:99:99' and '11:59:60' are refused, not read as 4 days or noon)."""
    match = _TIME.fullmatch(str(text))
    if not match:
        raise ConfigError(f"time: {text!r}: not a Slurm time; use HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        fields = (("hours", a, 23), ("minutes", b, 59), ("seconds", c, 59))
        total = int(days) * 86400 + a * 3600 + b * 60 + c
    elif match.group(4) is not None:  # HH:MM:SS
        fields = (("minutes", b, 59), ("seconds", c, 59))
        total = a * 3600 + b * 60 + c
    else:  # MM[:SS]
        fields = (("seconds", b, 59),)
        total = a * 60 + b
    for what, value, limit in fields:
        if value > limit:
            raise ConfigError(f"time: {text!r}: {what} must be 0-{limit}; use HH:MM:SS or D-HH:MM:SS")
    return total


def format_slurm_time(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


def available() -> bool:
    """Is this a Slurm login node (sbatch on PATH)?"""
    return shutil.which("sbatch") is not None


def run(args: list[str], timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess | None:
    """Run a SLURM tool (never through a shell); None when it is missing or hangs."""
    if shutil.which(args[0]) is None:
        return None
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def parse_key_values(text: str) -> dict[str, str]:
    """`scontrol show ... -o` output ('Key=Value Key=Value ...') -> dict."""
    out = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep:
            out[key] = value
    return out


def partition_info(name: str) -> dict[str, str] | None:
    """The partition's settings (MaxTime, Nodes, TRES, ...), or None if it does not exist."""
    proc = run(["scontrol", "show", "partition", name, "-o"])
    if proc is None or proc.returncode != 0 or not proc.stdout.strip():
        return None
    return parse_key_values(proc.stdout)


def partition_names() -> list[str]:
    proc = run(["sinfo", "-h", "-o", "%R"])
    if proc is None or proc.returncode != 0:
        return []
    return sorted({line.strip() for line in proc.stdout.splitlines() if line.strip()})


def partition_max_time_s(info: dict[str, str]) -> int | None:
    value = info.get("MaxTime", "UNLIMITED")
    if value in ("UNLIMITED", "INFINITE", ""):
        return None
    return parse_slurm_time(value)


def job_info(job_id: str) -> dict[str, str] | None:
    """`scontrol show job` as a dict (JobState, Restarts, StdOut, ...), None once forgotten."""
    proc = run(["scontrol", "show", "job", str(job_id), "-o"])
    if proc is None or proc.returncode != 0 or not proc.stdout.strip():
        return None
    return parse_key_values(proc.stdout.splitlines()[0])


def queue_state_reason(job_id: str) -> tuple[str, str] | None:
    """(state, reason) from squeue (PENDING/BeginTime, RUNNING/None, ...), None when not in the queue."""
    proc = run(["squeue", "-h", "-j", str(job_id), "-o", "%T|%r"])
    if proc is None or proc.returncode != 0:
        return None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if not lines:
        return None
    state, _, reason = lines[0].partition("|")
    return state.strip(), reason.strip()


def left_queue(job_id: str) -> bool | None:
    """True when squeue answers and the job is not queued, running or ending any more (ended, or
    forgotten: ``squeue -j`` then refuses the id); False while it is in the queue; None when
    squeue cannot answer."""
    proc = run(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
    if proc is None:
        return None
    if proc.returncode != 0:
        return True if "Invalid job id" in proc.stderr else None
    return not proc.stdout.strip()


def queue_state(job_id: str) -> str | None:
    """State from squeue (PENDING, RUNNING, COMPLETING, ...) or None when not in the queue."""
    found = queue_state_reason(job_id)
    return found[0] if found else None


ACCT_FIELDS = ("JobID", "State", "ExitCode", "Elapsed", "Start", "End", "Reason", "NodeList")


def _sacct(job_ids: list[str], duplicates: bool, timeout: float = TIMEOUT_S) -> list[dict[str, str]] | None:
    args = ["sacct", "-X", "-n", "-P", "-j", ",".join(job_ids), "-o", ",".join(ACCT_FIELDS)]
    proc = run(args + (["--duplicates"] if duplicates else []), timeout=timeout)
    if proc is None or proc.returncode != 0:
        return None
    rows = []
    for line in proc.stdout.splitlines():
        cells = line.split("|")
        if len(cells) >= len(ACCT_FIELDS):
            rows.append(dict(zip(ACCT_FIELDS, cells, strict=False)))
    return rows


def never_started(record: dict[str, str]) -> bool:
    """Did this sacct record's attempt never run (cancelled while pending)? No node was assigned;
    Start is None, or equal to End when the job was cancelled while it waited for its BeginTime."""
    return record.get("NodeList") in ("None assigned", "") or record.get("Start") in ("None", "Unknown", "")


def accounting(job_id: str) -> dict[str, str] | None:
    """sacct's latest record of the job (State, ExitCode, Elapsed, Start, End, Reason, NodeList),
    or None without accounting."""
    rows = _sacct([str(job_id)], duplicates=False)
    return rows[-1] if rows else None


def accounting_many(job_ids: list[str]) -> dict[str, dict[str, str]] | None:
    """The latest sacct record of each job, in one call; None when sacct does not answer."""
    if not job_ids:
        return {}
    rows = _sacct([str(j) for j in job_ids], duplicates=False)
    return None if rows is None else {row["JobID"]: row for row in rows}


def attempt_records(job_id: str, timeout: float = TIMEOUT_S) -> list[dict[str, str]]:
    """sacct's record of every attempt of the job, oldest first (``--duplicates``: a requeued job
    keeps one record per run, whose State says how it ended: REQUEUED, PREEMPTED, NODE_FAIL, ...)."""
    return attempt_history(job_id, timeout) or []


def attempt_history(job_id: str, timeout: float = TIMEOUT_S) -> list[dict[str, str]] | None:
    """:func:`attempt_records`, but None when sacct does not answer (slurmdbd down, or no accounting)."""
    return _sacct([str(job_id)], duplicates=True, timeout=timeout)


SACCT_SILENT = "sacct does not answer (slurmdbd down?)"


def log_of(job_id: str) -> str | None:
    """The job's StdOut path as Slurm knows it (the job is queued, running or ended minutes ago), else None."""
    info = job_info(job_id)
    return (info or {}).get("StdOut") or None


def queue() -> list[dict[str, str]] | None:
    """Every job squeue shows (all users, all partitions, one line per array element): JobID (an
    array element as ARRAYID_TASK, as `scontrol requeue` and the index name it), State, Reason,
    StdOut (the log path pattern, e.g. RUN_DIR/slurm/%j_0_log.out). None when squeue cannot answer."""
    proc = run(["squeue", "-h", "-a", "-r", "-O", "JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,Reason:|,StdOut:|"])
    if proc is None or proc.returncode != 0:
        return None
    jobs = []
    for line in proc.stdout.splitlines():
        cells = line.split("|", 5)
        if len(cells) == 6:
            job_id, array_id, task = (cell.strip() for cell in cells[:3])
            if task.isdigit() and array_id.isdigit():
                job_id = f"{array_id}_{task}"
            jobs.append({"JobID": job_id, "State": cells[3].strip(), "Reason": cells[4].strip(),
                         "StdOut": cells[5].rstrip().removesuffix("|")})
    return jobs


def max_array_size() -> int:
    """Slurm's MaxArraySize (array task ids are below it); 1001, Slurm's default, when it cannot be asked."""
    proc = run(["scontrol", "show", "config"])
    for line in (proc.stdout if proc is not None and proc.returncode == 0 else "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "MaxArraySize" and value.strip().isdigit():
            return int(value.strip())
    return 1001


def job_state(job_id: str) -> tuple[str | None, str]:
    """(state, source): squeue first, then sacct; (None, '') when SLURM does not know the job."""
    state = queue_state(job_id)
    if state:
        return state, "squeue"
    acct = accounting(job_id)
    if acct and acct["State"]:
        return acct["State"].split()[0], "sacct"
    return None, ""


def account_error(account: str, partition: str) -> str | None:
    """Ask the scheduler (`sbatch --test-only`) whether account+partition may submit; None if fine."""
    proc = run(["sbatch", "--test-only", f"--account={account}", f"--partition={partition}",
                "--time=1", "--wrap=true"])
    if proc is None:
        return None
    if proc.returncode == 0:
        return None
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return lines[-1] if lines else f"sbatch --test-only exited with {proc.returncode}"


def ping() -> subprocess.CompletedProcess | None:
    """``scontrol ping``: is the controller UP? None when scontrol is missing or hangs."""
    return run(["scontrol", "ping"])


def cancel(job_id: str) -> subprocess.CompletedProcess | None:
    """``scancel JOB`` (a job, an array, or one element ARRAYID_TASK); None when scancel is missing or hangs."""
    return run(["scancel", str(job_id)])


def requeue(job_id: str) -> str | None:
    """``scontrol requeue JOB``; None on success, else why it failed."""
    proc = run(["scontrol", "requeue", str(job_id)])
    if proc is not None and proc.returncode == 0:
        return None
    return "scontrol not found or not answering" if proc is None else (proc.stderr or proc.stdout).strip()


# ----- why a job ends: the ending classifier ---------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Ending:
    """Why a job that is no longer RUNNING ends: ``kind`` is cancelled, timeout, preempted,
    node_fail, requeued (by someone else) or ending (anything else); ``slurm_requeues``: Slurm
    has already requeued the job, so it runs again without our ``scontrol requeue``."""

    kind: str
    reason: str
    slurm_requeues: bool = False

    def __str__(self) -> str:
        return self.reason


def state_word(record: dict[str, str]) -> str:
    """A sacct record's state without its detail ('CANCELLED by 0' -> 'CANCELLED'); '' when there is none."""
    parts = (record.get("State") or "").split()
    return parts[0] if parts else ""


def settled_record(job_id: str, restart: int, wait_s: float = ACCOUNTING_WAIT_S) -> dict[str, str]:
    """sacct's record of attempt ``restart``, waiting up to ``wait_s`` for it to exist with a state in
    :data:`SETTLED_STATES` (an earlier attempt's record does not count); when none comes in time, the
    last answer: that record, else the latest one, else {}."""
    deadline = time.monotonic() + wait_s
    while True:
        attempts = attempt_records(job_id, timeout=max(1.0, deadline - time.monotonic()))
        record = attempts[restart] if 0 <= restart < len(attempts) else None
        if record is not None and state_word(record) in SETTLED_STATES:
            return record
        if time.monotonic() >= deadline:
            return record if record is not None else (attempts[-1] if attempts else {})
        time.sleep(0.25)


def ending_job_info(job_id: str, stop_signal: str) -> dict[str, str]:
    """scontrol's view of the ending job. When scontrol does not answer (its controller is busy while
    it preempts or requeues), or the job was stopped by SIGTERM (Slurm ends it: preemption, scancel,
    a failed node) but still shows RUNNING, ask again for up to ACCOUNTING_WAIT_S: in CI a preempted
    job's end record, written at once, lacked Slurm's requeue and read as our own requeue."""
    deadline = time.monotonic() + ACCOUNTING_WAIT_S
    while True:
        info = job_info(job_id) or {}
        state = info.get("JobState", "")
        unsettled = (state == "" and shutil.which("scontrol") is not None) or (
            state == "RUNNING" and stop_signal in ("SIGTERM", "TERM"))
        if not unsettled or time.monotonic() >= deadline:
            return info
        time.sleep(0.5)


def _restarts(info: dict[str, str], default: int) -> int:
    try:
        return int(info.get("Restarts"))
    except (TypeError, ValueError):
        return default


def _requeued_by_slurm(record: dict[str, str]) -> Ending:
    word, acct = state_word(record), record.get("State", "")
    if word == "PREEMPTED":
        return Ending("preempted", "preempted (sacct PREEMPTED): Slurm requeued the job itself "
                      "(PreemptMode=REQUEUE); it resumes from the last save", True)
    if word == "NODE_FAIL":
        return Ending("node_fail", f"a node of the job failed (sacct NODE_FAIL on {record.get('NodeList', '?')}): "
                      "Slurm requeued the job itself; it resumes from the last save", True)
    if word not in SETTLED_STATES:
        return Ending("requeued", f"Slurm requeued the job itself; sacct had not recorded why within "
                      f"{ACCOUNTING_WAIT_S:.0f} s (sacct {acct or 'no record'}): it resumes from the last save",
                      True)
    return Ending("requeued", f"requeued by someone else (sacct {acct}, e.g. scontrol requeue): "
                  "Slurm runs it again; it resumes from the last save", True)


def classify_ending(job_id: str, restart: int, stop_signal: str = "") -> Ending | None:
    """Why attempt ``restart`` of the job must not be requeued by us: None while it is RUNNING.
    ``stop_signal``: the signal that asked the attempt to stop (SIGUSR2, SIGTERM), if any.

    Every way a job ends shows JobState=COMPLETING in scontrol while its processes exit (we are
    one of them); what happened is in Slurm's records: scontrol's Restarts counts up as soon as
    Slurm requeues the job itself (preemption with PreemptMode=REQUEUE, node failure, another
    ``scontrol requeue``), and sacct keeps one record per attempt whose state says why it ended.
    """
    info = ending_job_info(job_id, stop_signal)
    state = info.get("JobState", "")
    if state in ("RUNNING", ""):
        return None
    record = settled_record(job_id, restart)
    acct, word = record.get("State", ""), state_word(record)
    if _restarts(info, restart) > restart:
        return _requeued_by_slurm(record)
    if word == "CANCELLED" or state.startswith("CANCELLED"):
        return Ending("cancelled", f"cancelled with scancel (sacct {acct or state}); not requeued")
    if word == "TIMEOUT" or info.get("Reason") == "TimeLimit" or state == "TIMEOUT":
        return Ending("timeout", "the time limit passed before the save finished (sacct TIMEOUT); not requeued: "
                      "raise --signal-lead above the time a save takes, then resubmit")
    if word == "PREEMPTED" or state == "PREEMPTED":
        return Ending("preempted", "preempted and not requeued by Slurm (sacct PREEMPTED, PreemptMode=CANCEL): "
                      "resubmit with the same --run-dir to continue from the last save")
    if word == "NODE_FAIL" or state == "NODE_FAIL":
        return Ending("node_fail", "a node of the job failed (sacct NODE_FAIL) and Slurm did not requeue it: "
                      "resubmit with the same --run-dir to continue from the last save")
    return Ending("ending", f"the job is ending (JobState={state}, Reason={info.get('Reason', '-')}, "
                  f"sacct {acct or '-'}); not requeued")
