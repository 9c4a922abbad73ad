"""Thin, fast wrappers around the SLURM command-line tools (login node; no torch).

Every function returns None / empty when SLURM cannot answer, so callers can fall back to the
run directory's own state on clusters without accounting or off-cluster.
"""

from __future__ import annotations

import shutil
import subprocess

from jobs.profiles import parse_slurm_time

TIMEOUT_S = 10
# Job states in which a job is queued, running, or about to run again.
ACTIVE = frozenset({"PENDING", "RUNNING", "COMPLETING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                    "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED"})


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
