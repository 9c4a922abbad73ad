"""The launcher's word on the real test cluster (tests/cluster/up.sh): a job that died without an end
record, a cancel of a job that has already ended, a job submitted with plain ``sbatch``.

Each test acts on observable events (state.json steps, attempt records, Slurm's job states)."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from cluster_helpers import (
    cluster_for_one_test,
    final_state,
    launch,
    records,
    release_if_waiting,
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
    return {"SEGAN_JOB_INDEX": str(tmp_path / "submissions.jsonl")}


def rank_processes(job_id: str) -> list[int]:
    """The pids of the job's rank processes (submitit's in-job python, not srun or the batch shell)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (f"SLURM_JOB_ID={job_id}".encode() in environ and Path(argv[0].decode()).name != "srun"
                and b"submitit.core._submit" in argv):
            pids.append(int(proc.name))
    return pids


def run_step(run_dir):
    state = run_dir / "state.json"
    try:
        return json.loads(state.read_text())["step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_a_job_killed_without_an_end_record_is_said_so_and_a_cancel_after_its_end_changes_nothing(tmp_path, env):
    """Attempt 1 saves and is requeued (USR2); attempt 2 is SIGKILLed, so it writes no end record:
    status must not show attempt 1's "requeue 1 of N" as the reason, nor state.json's "running" as the
    truth. Then `cancel` of the ended job says so, writes no marker and exits 1."""
    run_dir = tmp_path / "killed"
    job = submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                 "--gpus-per-node", "1", env={**env, **PROBE})
    wait_for(lambda: run_step(run_dir) >= 2, 300, "the first steps")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 240, "attempt 1's end record")[0]
    assert first["action"] == "requeue", first
    wait_for(lambda: release_if_waiting(job), 120, "the requeued job to wait for its BeginTime")
    wait_for(lambda: records(run_dir / "attempts.jsonl", event="start")[1:], 180, "attempt 2")
    wait_for(lambda: run_step(run_dir) > first["step_end"], 180, "attempt 2's progress")
    for pid in wait_for(lambda: rank_processes(job), 60, "the rank's process"):
        os.kill(pid, signal.SIGKILL)  # as the OOM killer would: no end record
    ended = wait_for(lambda: final_state(job), 180, "the killed job to end")
    assert len(records(run_dir / "attempts.jsonl", event="end")) == 1  # attempt 2 wrote none
    assert json.loads((run_dir / "state.json").read_text())["status"] == "running"

    status = launch("status", job, env=env)
    assert status.returncode == 0, status.stderr
    headline = next(line for line in status.stdout.splitlines() if line.startswith("  state:"))
    assert "attempt 2 ended without an end record" in headline, status.stdout
    assert "requeue 1 of" not in headline and ended.lower() in headline
    assert "state.json still says running" in status.stdout

    cancel = launch("cancel", job, env=env)
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr
    assert f"job {job} had already ended (sacct {ended}" in cancel.stdout
    assert not (run_dir / "slurm" / f"{job}.cancelled").exists()


def test_a_job_submitted_with_plain_sbatch_is_found_by_list_status_logs_and_cancel(tmp_path, env):
    run_dir = tmp_path / "plain"
    emitted = launch("--cluster", "local", "--emit-sbatch", "--config", "configs/smoke.yaml", "--entry",
                     "jobs.probe", "--run-dir", str(run_dir), "--gpus-per-node", "1", env=env)
    assert emitted.returncode == 0, emitted.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(emitted.stdout)
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                          env={**os.environ, **env, "SEGAN_PROBE_STEPS": "3", "SEGAN_PROBE_STEP_SECONDS": "0.2"})
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    try:
        pending = launch("status", job, env=env)  # queued or running: Slurm knows its log, hence its run directory
        assert pending.returncode == 0 and f"job {job}  run directory {run_dir}" in pending.stdout, pending.stderr
        assert wait_for(lambda: final_state(job), 300, "the plain job to finish") == "COMPLETED"
    finally:
        subprocess.run(["scancel", job])
    listed = launch("list", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next((line for line in listed.stdout.splitlines() if line.startswith(job + " ")), "")
    assert "finished" in row and str(run_dir) in row, listed.stdout
    status = launch("status", job, env=env)
    assert status.returncode == 0, status.stderr
    assert "  state:  finished" in status.stdout, status.stdout
    for target in (job, str(run_dir)):
        logs = launch("logs", target, env=env)
        assert logs.returncode == 0, logs.stderr
        assert f"===== attempt 1 of job {job}" in logs.stdout
    cancel = launch("cancel", job, env=env)
    assert cancel.returncode == 1 and "had already ended (sacct COMPLETED" in cancel.stdout, cancel.stdout


def test_a_stop_request_during_the_last_validation_finishes_the_run_without_a_requeue(tmp_path, env):
    """USR2 once the last training step is recorded: the job is then validating (8 utterances with
    PESQ and STOI) and saving; all epochs are trained, so it finishes (exit 0), spends no requeue."""
    run_dir = tmp_path / "last_epoch"
    sets = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.log_every=1", "data.batch_size=1",
            "data.crop_seconds=0.5", "train.pesq_workers=1", "valid.max_utterances=8", "checkpoint.every_steps=0"]
    job = submit("--config", "configs/smoke.yaml", "--run-dir", str(run_dir), "--gpus-per-node", "1",
                 *[a for item in sets for a in ("--set", item)], env=env)
    wait_for(lambda: records(run_dir / "metrics.jsonl", kind="step", step=2), 900, "the last step record", poll=0.05)
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    assert wait_for(lambda: final_state(job), 900, "the job to end") == "COMPLETED"
    ends = records(run_dir / "attempts.jsonl", event="end")
    assert [(e["exit_code"], e["action"]) for e in ends] == [(0, "finish")], ends
    log = (run_dir / "slurm" / f"{job}_0_log.err").read_text()
    # the premise: the signal arrived before the run ended (during the last validation or its save)
    assert "stop requested (SIGUSR2) after the last epoch: the run has finished, no requeue" in log, log[-3000:]
    assert json.loads((run_dir / "state.json").read_text())["status"] == "finished"
    assert not release_if_waiting(job) and len(records(run_dir / "attempts.jsonl", event="start")) == 1


def test_the_same_emitted_script_submitted_twice_locks_the_second_job_out_without_a_retry(tmp_path, env):
    """The second job's trainer is refused the run directory (exit 2, which torchrun reports as 1): not a
    crash, not requeued, and `status RUN_DIR` headlines the job that trains. The real trainer (it takes
    the run directory's lock), with epochs enough to train until the test cancels it."""
    run_dir = tmp_path / "twice"
    sets = ["train.epochs=100", "train.max_steps_per_epoch=2", "train.log_every=1", "data.batch_size=1",
            "data.crop_seconds=0.5", "train.pesq_workers=1", "valid.max_utterances=1", "valid.every_epochs=100"]
    emitted = launch("--cluster", "local", "--emit-sbatch", "--config", "configs/smoke.yaml", "--run-dir",
                     str(run_dir), "--gpus-per-node", "1", *[a for item in sets for a in ("--set", item)], env=env)
    assert emitted.returncode == 0, emitted.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(emitted.stdout)

    def sbatch():
        proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                              env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().split(";")[0]

    first = sbatch()
    second = None
    try:
        wait_for(lambda: records(run_dir / "metrics.jsonl", kind="step"), 600, "the first job's first step")
        second = sbatch()
        end = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end", job_id=second), 600,
                       "the second job's end record")[0]
        assert (end["action"], end.get("locked_out_by")) == ("stop", first), end
        assert f"job {first} trains" in end["reason"] and "crashed" not in end["reason"]
        assert wait_for(lambda: final_state(second), 120, "the second job to end") != "REQUEUED"
        assert not release_if_waiting(second)
        assert len(records(run_dir / "attempts.jsonl", event="start", job_id=second)) == 1
        status = launch("status", str(run_dir), env=env)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"job {first}  run directory") and "  state:  running" in status.stdout
    finally:
        subprocess.run(["scancel", first, *([second] if second else [])])
