"""Helpers for the tests on the one-machine SLURM cluster of tests/cluster/up.sh."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import in_ci

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "testacct"
STATE = Path(os.environ.get("SEGAN_SLURM_STATE", "/var/lib/segan-slurm"))  # tests/cluster/up.sh's state folder


def daemon_pid(name: str) -> int | None:
    """The pid of a running daemon of the test cluster (slurmdbd, slurmctld), from its pid file."""
    try:
        pid = int((STATE / "run" / f"{name}.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def cluster_problem() -> str | None:
    """None when the test cluster answers (controller, partition gpu, account testacct)."""
    def out(*args):
        try:
            proc = subprocess.run(args, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, str(exc)
        return (proc.stdout if proc.returncode == 0 else None), proc.stderr.strip()

    ping, err = out("scontrol", "ping")
    if not ping or "UP" not in ping:
        return f"slurmctld not reachable ({err or ping}); start it with: bash tests/cluster/up.sh"
    part, err = out("sinfo", "-h", "-p", "gpu", "-o", "%a %T")
    if not part or not part.startswith("up") or not re.search(r"idle|mixed|allocated", part):
        return f"partition gpu not usable ({part or err!r}); bash tests/cluster/up.sh"
    nodes, err = out("sinfo", "-h", "-N", "-p", "gpu", "-o", "%N|%T|%E")
    for line in (nodes or "").splitlines():
        node, state, reason = (line.split("|") + ["", ""])[:3]
        if re.search(r"drain|down|fail", state):
            return f"node {node} is {state} ({reason}); bash tests/cluster/up.sh returns it to service"
    acct, err = out("sacctmgr", "-n", "-P", "list", "account", ACCOUNT, "format=account")
    if not acct or ACCOUNT not in acct:
        return f"account {ACCOUNT} missing ({err}); bash tests/cluster/up.sh"
    return None


def leftover_jobs() -> list[str]:
    proc = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True)
    return proc.stdout.split()


def cluster_for_one_test():
    """The autouse fixture body of every cluster test module: the cluster answers before the test, and
    after it no job of the test is left in the queue. A test that fails half-way leaves its jobs
    running (seen in CI: a failed preemption test kept a node's GPUs, so the next test's sweep got
    one node instead of two and failed too); they are cancelled here, and the next test starts only
    once the queue is empty."""
    require_cluster()
    yield
    left = leftover_jobs()
    if left:
        subprocess.run(["scancel", *left], capture_output=True)
        wait_for(lambda: not leftover_jobs(), 180, f"the cancellation of jobs left by the test ({' '.join(left)})")


def require_cluster() -> None:
    problem = cluster_problem()
    if problem:
        if in_ci():
            pytest.fail(f"the SLURM test cluster must be up in CI: {problem}")
        pytest.skip(problem)


def launch(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def submit(*args: str, env: dict | None = None) -> str:
    proc = launch("--cluster", "local", *args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    match = re.search(r"submitted job (\d+)", proc.stdout)
    assert match, proc.stdout
    return match.group(1)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def job_fields(job_id: str) -> dict:
    proc = subprocess.run(["scontrol", "show", "job", job_id, "-o"], capture_output=True, text=True)
    return dict(t.split("=", 1) for t in proc.stdout.split() if "=" in t)


def release_if_waiting(job_id: str) -> bool:
    """A requeued job waits ~2 minutes for its BeginTime; start it now. True if it was waiting."""
    fields = job_fields(job_id)
    if fields.get("JobState") == "PENDING" and fields.get("Reason") == "BeginTime":
        # slurmd revokes the old job credential at the requeue, with one-second resolution: a start
        # in that same second is killed ("Job credential revoked") and the job ends FAILED. The real
        # BeginTime delay avoids that; a short pause is enough here.
        time.sleep(3)
        subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"], check=True)
        return True
    return False


NOT_FINAL = ("PENDING", "RUNNING", "COMPLETING", "REQUEUED", "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED",
             "RESIZING", "SUSPENDED")


def final_state(job_id: str) -> str | None:
    """sacct's state once the job has ended for good (not pending/running/requeued).

    Both sources are checked: between a requeue and the next start, or when scontrol answers
    nothing under load, one of them may still show a non-final state."""
    fields = job_fields(job_id)
    if fields.get("JobState") in NOT_FINAL:
        return None
    proc = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    lines = proc.stdout.split("\n")
    states = [line.split()[0] for line in lines if line.strip()]  # "CANCELLED by 0" -> CANCELLED
    state = states[-1] if states else fields.get("JobState")
    return None if state in NOT_FINAL else state


def records(path: Path, **match) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if all(rec.get(k) == v for k, v in match.items()):
            out.append(rec)
    return out


def nodes_of(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%N"], capture_output=True, text=True).stdout.strip()


def node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-n", node, "-o", "%T"], capture_output=True, text=True).stdout.strip()


def resume_node(node: str) -> None:
    """Return a node set DOWN by a test to service (ReturnToService=2 may have done so already)."""
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, text=True)
    wait_for(lambda: re.match(r"idle|mixed|allocated", node_state(node)), 60, f"node {node} back in service")
