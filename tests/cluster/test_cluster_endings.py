"""How a job ended, from Slurm's own records, on the real test cluster: node failure and preemption
(Slurm requeues the job itself), the time limit passing before a save, cancellation while the job
waits to be requeued, and a second submission to a run directory that a live job uses.

They use jobs.probe (the trainer's signal/exit-code contract without torch), so each takes seconds
of job time, not minutes."""

import json
import os
import signal
import subprocess

import pytest
from cluster_helpers import (
    ACCOUNT,
    STATE,
    cluster_for_one_test,
    daemon_pid,
    final_state,
    launch,
    nodes_of,
    records,
    release_if_waiting,
    resume_node,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

PROBE = {"SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"}


@pytest.fixture(autouse=True)
def cluster():
    yield from cluster_for_one_test()


@pytest.fixture
def env(tmp_path):
    return {"SEGAN_JOB_INDEX": str(tmp_path / "submissions.jsonl"), **PROBE}


def probe_job(run_dir, env, *extra):
    return submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir), *extra, env=env)


def step(run_dir):
    state = run_dir / "state.json"
    return json.loads(state.read_text()).get("step", 0) if state.is_file() else 0


def resumes_exactly(job, run_dir, saved_at):
    """Start the requeued job now; its next attempt starts at the saved step and makes progress."""
    wait_for(lambda: release_if_waiting(job), 180, "the requeued job to wait for its BeginTime")
    start = wait_for(lambda: records(run_dir / "attempts.jsonl", event="start")[1:], 120, "the next attempt")[-1]
    assert start["step"] == saved_at, start
    wait_for(lambda: step(run_dir) > saved_at, 60, "progress after the requeue")


def test_node_failure_is_reported_as_such_and_the_job_resumes(tmp_path, env):
    """A node of a 2-node job goes DOWN: Slurm kills the job (NODE_FAIL) and requeues it itself. Rank 0
    saved in time; its record says what happened instead of advice about the signal lead."""
    run_dir = tmp_path / "node_fail"
    job = probe_job(run_dir, env, "--nodes", "2", "--gpus-per-node", "1")
    wait_for(lambda: step(run_dir) >= 3, 120, "the first steps")
    assert nodes_of(job) in ("n[1-2]", "n1,n2")
    try:
        subprocess.run(["scontrol", "update", "nodename=n2", "state=down", "reason=segan-test-node-failure"],
                       check=True)
        first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 120, "rank 0's end record")[0]
    finally:
        resume_node("n2")
    assert (first["exit_code"], first["action"], first["ending"]) == (42, "slurm-requeue", "node_fail"), first
    assert "a node of the job failed (sacct NODE_FAIL" in first["reason"] and "signal lead" not in first["reason"]
    resumes_exactly(job, run_dir, first["step_end"])
    status = launch("status", job, env=env)
    assert "slurm-requeue: a node of the job failed (sacct NODE_FAIL" in status.stdout
    assert "[sacct NODE_FAIL]" in status.stdout and "signal lead" not in status.stdout
    assert "  state:  running" in status.stdout
    assert launch("cancel", job, env=env).returncode == 0
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"


def test_preemption_is_reported_the_job_resumes_and_a_cancel_while_pending_is_the_headline(tmp_path, env):
    """Partition `urgent` preempts (PreemptMode=REQUEUE, no grace time): Slurm requeues the job itself.
    Later the job asks for its own requeue and is cancelled while it waits: status and list say
    'cancelled', not the last attempt's 'requeue 1 of 5'."""
    run_dir = tmp_path / "preempted"
    job = probe_job(run_dir, env, "--gpus-per-node", "2")
    wait_for(lambda: step(run_dir) >= 3, 120, "the first steps")
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-A", ACCOUNT, "-w", nodes_of(job), "--exclusive",
                             "-o", str(tmp_path / "urgent-%j.out"), "--wrap", "sleep 2"],
                            capture_output=True, text=True)
    assert urgent.returncode == 0, urgent.stderr
    urgent_job = urgent.stdout.strip().split(";")[0]
    try:
        first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 120, "rank 0's end record")[0]
        assert (first["exit_code"], first["action"], first["ending"]) == (42, "slurm-requeue", "preempted"), first
        assert "preempted (sacct PREEMPTED): Slurm requeued the job itself" in first["reason"]
        assert wait_for(lambda: final_state(urgent_job), 120, "the preempting job") == "COMPLETED"
    finally:
        subprocess.run(["scancel", urgent_job])
    resumes_exactly(job, run_dir, first["step_end"])

    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # our own requeue: the first of the budget
    second = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end")[1:], 120, "the second end record")[0]
    assert (second["action"], second["reason"]) == ("requeue", "stop requested (timeout or preemption); requeue 1 of 5")
    wait_for(lambda: subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True,
                                    text=True).stdout.split() == ["PENDING", "BeginTime"],
             60, "the requeued job to wait")
    assert launch("cancel", job, env=env).returncode == 0
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"

    status = launch("status", job, env=env).stdout
    headline = next(line for line in status.splitlines() if line.startswith("  state:"))
    assert headline.startswith("  state:  cancelled while it waited to be requeued"), status
    assert f"saved at step {second['step_end']}" in headline
    assert "[sacct PREEMPTED]" in status
    assert status.rstrip().splitlines()[-1].endswith("sacct CANCELLED by 0 before it started, no attempt record "
                                                     "(not requeued by us)"), status
    row = next(line for line in launch("list", env=env).stdout.splitlines() if line.startswith(f"{job} "))
    assert row.split()[2] == "cancelled", row


def test_a_preemption_while_the_accounting_daemon_is_down_is_not_blamed_on_someone_else(tmp_path, env):
    """slurmctld tells slurmdbd how an attempt ended asynchronously: right after Slurm requeued a job,
    sacct can still show the attempt RUNNING or not answer (seen in CI: a preempted sweep element was
    recorded as 'requeued by someone else'). The end record waits a few seconds for sacct; here slurmdbd
    is down until the record is written, so it says that Slurm requeued the job and that sacct had not
    said why (not that someone else requeued it). Once slurmdbd is back, status shows PREEMPTED."""
    run_dir = tmp_path / "no_accounting"
    job = probe_job(run_dir, env, "--gpus-per-node", "2")
    wait_for(lambda: step(run_dir) >= 3, 120, "the first steps")
    dbd = daemon_pid("slurmdbd")
    assert dbd is not None, f"no live slurmdbd pid in {STATE / 'run'}"
    os.kill(dbd, signal.SIGTERM)
    try:
        wait_for(lambda: daemon_pid("slurmdbd") is None, 30, "slurmdbd to stop")
        urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-A", ACCOUNT, "-w", nodes_of(job),
                                 "--exclusive", "-o", str(tmp_path / "urgent-%j.out"), "--wrap", "sleep 2"],
                                capture_output=True, text=True)
        assert urgent.returncode == 0, urgent.stderr
        urgent_job = urgent.stdout.strip().split(";")[0]
        first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 120, "rank 0's end record")[0]
    finally:
        subprocess.run(["slurmdbd"], check=True)
        wait_for(lambda: subprocess.run(["sacctmgr", "-n", "list", "cluster"], capture_output=True).returncode == 0,
                 60, "slurmdbd to answer")
    try:
        assert (first["exit_code"], first["action"], first["ending"]) == (42, "slurm-requeue", "requeued"), first
        assert first["reason"].startswith("Slurm requeued the job itself; sacct had not recorded why within 8 s"), first
        assert "someone else" not in first["reason"]
        assert wait_for(lambda: final_state(urgent_job), 120, "the preempting job") == "COMPLETED"
    finally:
        subprocess.run(["scancel", urgent_job])
    resumes_exactly(job, run_dir, first["step_end"])
    wait_for(lambda: "[sacct PREEMPTED]" in launch("status", job, env=env).stdout, 120,
             "sacct's record of the preemption")
    assert launch("cancel", job, env=env).returncode == 0
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"


def test_a_save_that_misses_the_time_limit_is_reported_as_a_timeout(tmp_path, env):
    """The probe ignores USR2 (as if its save took longer than the lead) and saves on the SIGTERM that
    the time limit brings: sacct says TIMEOUT, and the record says to raise the signal lead."""
    run_dir = tmp_path / "timeout"
    job = probe_job(run_dir, {**env, "SEGAN_PROBE_IGNORE_USR2": "1"}, "--time", "00:01:00", "--signal-lead", "30",
                    "--gpus-per-node", "1")
    assert wait_for(lambda: final_state(job), 480, "the time limit") == "TIMEOUT"
    last = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 60, "rank 0's end record")[-1]
    assert (last["exit_code"], last["action"], last["ending"]) == (42, "stop", "timeout"), last
    assert "time limit passed before the save finished (sacct TIMEOUT)" in last["reason"]
    assert "raise --signal-lead" in last["reason"]
    status = launch("status", job, env=env).stdout
    assert "  state:  the time limit passed before a save and requeue (sacct TIMEOUT)" in status
    assert not release_if_waiting(job)


def test_a_second_job_on_a_run_directory_in_use_is_refused(tmp_path, env):
    """Two submissions of the same run directory would train in it at once. Found from Slurm itself
    (the job's log lies in RUN_DIR/slurm), whichever submission index or template submitted it."""
    run_dir = tmp_path / "busy"
    job = probe_job(run_dir, env, "--gpus-per-node", "1")
    other_index = {**env, "SEGAN_JOB_INDEX": str(tmp_path / "elsewhere.jsonl")}
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    try:
        for index in (env, other_index):
            again = launch("--cluster", "local", "--config", "configs/smoke.yaml", "--entry", "jobs.probe",
                           "--run-dir", str(run_dir), "--gpus-per-node", "1", env=index)
            assert again.returncode == 2, again.stdout
            assert again.stderr.startswith(f"launch.py: error: run directory {run_dir} is in use by job {job}, "
                                           "which is still ")
            assert f"python launch.py cancel {job} (or scancel {job})" in again.stderr
            assert len(again.stderr.strip().splitlines()) == 1
        local = launch("--cluster", "local", "--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--local",
                       "--run-dir", str(run_dir), env=env)
        assert local.returncode == 2 and f"is in use by job {job}" in local.stderr
        after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
        assert set(after) <= set(before)  # nothing was submitted

        # a plain sbatch job (--emit-sbatch), still pending, holds its run directory just the same
        plain_dir = tmp_path / "plain"
        emitted = launch("--cluster", "local", "--emit-sbatch", "--config", "configs/smoke.yaml", "--entry",
                         "jobs.probe", "--run-dir", str(plain_dir), "--gpus-per-node", "1", env=env)
        script = tmp_path / "plain.sbatch"
        script.write_text(emitted.stdout)
        plain = subprocess.run(["sbatch", "--parsable", "--begin=now+600", str(script)], capture_output=True,
                               text=True).stdout.strip().split(";")[0]
        refused = launch("--cluster", "local", "--config", "configs/smoke.yaml", "--run-dir", str(plain_dir), env=env)
        assert refused.returncode == 2 and f"is in use by job {plain}, which is still pending" in refused.stderr
        subprocess.run(["scancel", plain], check=True)
    finally:
        assert launch("cancel", job, env=env).returncode == 0
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"
    assert wait_for(lambda: final_state(plain), 120, "the plain job's cancellation") == "CANCELLED"
