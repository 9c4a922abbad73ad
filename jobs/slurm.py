"""Thin, fast wrappers around the SLURM command-line tools (login node; no torch).

Every function returns None / empty when SLURM cannot answer, so callers can fall back to the
run directory's own state on clusters without accounting or off-cluster.
"""

from __future__ import annotations

import shutil
import subprocess

from jobs.profiles import parse_slurm_time

TIMEOUT_S = 10


def available() -> bool:
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


def queue_state(job_id: str) -> str | None:
    """State from squeue (PENDING, RUNNING, COMPLETING, ...) or None when not in the queue."""
    proc = run(["squeue", "-h", "-j", str(job_id), "-o", "%T"])
    if proc is None or proc.returncode != 0:
        return None
    lines = proc.stdout.split()
    return lines[0] if lines else None


def accounting(job_id: str) -> dict[str, str] | None:
    """State, exit code and elapsed time from sacct, or None without accounting."""
    proc = run(["sacct", "-X", "-n", "-P", "-j", str(job_id), "-o", "JobID,State,ExitCode,Elapsed,Start,End"])
    if proc is None or proc.returncode != 0:
        return None
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
    if not rows:
        return None
    job, state, exit_code, elapsed, start, end = rows[-1][:6]
    return {"JobID": job, "State": state, "ExitCode": exit_code, "Elapsed": elapsed, "Start": start, "End": end}


def job_state(job_id: str) -> tuple[str | None, str]:
    """(state, source): squeue first, then sacct; (None, '') when SLURM does not know the job."""
    state = queue_state(job_id)
    if state:
        return state, "squeue"
    acct = accounting(job_id)
    if acct:
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
