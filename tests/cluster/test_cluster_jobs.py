"""End-to-end tests on the real one-machine SLURM cluster (tests/cluster/up.sh).

They skip when the cluster is down, but fail under CI=true so CI never skips them silently.
A requeued job waits ~2 minutes for its BeginTime; the tests start it at once.
"""

import json
import os
import subprocess
import sys

import pytest
import yaml
from cluster_helpers import (
    ROOT,
    cluster_for_one_test,
    final_state,
    launch,
    records,
    release_if_waiting,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

# 4 ranks share 2 CPU cores: a tiny smoke run (5 steps of batch 1, one validation utterance).
SMOKE = ["--config", "configs/smoke.yaml", "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=5",
         "--set", "train.log_every=1", "--set", "data.batch_size=1", "--set", "data.crop_seconds=0.5",
         "--set", "train.pesq_workers=1", "--set", "valid.max_utterances=1", "--set", "checkpoint.every_steps=0"]


@pytest.fixture(autouse=True)
def cluster():
    yield from cluster_for_one_test()


@pytest.fixture
def env(tmp_path):
    return {"SEGAN_JOB_INDEX": str(tmp_path / "submissions.jsonl")}


def step_losses(run_dir):
    return [(r["step"], r["loss"]) for r in records(run_dir / "metrics.jsonl")
            if "loss" in r and r.get("kind") == "step"]


def test_preempted_smoke_job_requeues_and_matches_an_uninterrupted_run(tmp_path, env):
    preempted, reference = tmp_path / "preempted", tmp_path / "reference"
    # A whole epoch of the demo corpus (40 pairs / 4 ranks): the USR2 must land mid-run on a fast machine too
    run = [*SMOKE, "--set", "train.max_steps_per_epoch=10"]
    job = submit(*run, "--run-dir", str(preempted), "--name", "e2e-preempt", env=env)
    frozen = yaml.safe_load((preempted / "slurm/submitted_config.yaml").read_text())  # what every attempt trains
    assert frozen["train"]["max_steps_per_epoch"] == 10 and frozen["data"]["batch_size"] == 1
    follow = subprocess.Popen([sys.executable, "launch.py", "logs", job, "--follow"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **env})
    try:
        wait_for(lambda: step_losses(preempted), 600, "the first training step", poll=0.05)
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        # the uninterrupted run: the same 4-rank job, here under torchrun (no SLURM)
        ref = subprocess.Popen([sys.executable, "launch.py", "--cluster", "local", *run, "--local",
                                "--gpus-per-node", "4", "--run-dir", str(reference)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first = wait_for(lambda: records(preempted / "attempts.jsonl", event="end"), 300, "the save after USR2")[0]
        assert (first["exit_code"], first["action"]) == (42, "requeue"), first
        assert 0 < first["step_end"] < 10
        wait_for(lambda: release_if_waiting(job), 120, "the requeued job to wait for its BeginTime")
        assert wait_for(lambda: final_state(job), 900, "the requeued job to finish") == "COMPLETED"
        out, err = follow.communicate(timeout=120)
        assert ref.wait(timeout=900) == 0, ref.stderr.read()
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert f"===== attempt 1 of job {job} · rank 0/4" in out and f"===== attempt 2 of job {job} · rank 0/4" in out
    ends = records(preempted / "attempts.jsonl", event="end")
    assert [(e["exit_code"], e["action"]) for e in ends] == [(42, "requeue"), (0, "finish")]
    second_start = records(preempted / "attempts.jsonl", event="start")[1]
    assert second_start["step"] == first["step_end"]  # resumed at the exact step it saved
    state = json.loads((preempted / "state.json").read_text())
    ref_state = json.loads((reference / "state.json").read_text())
    assert (state["status"], state["step"], state["world_size"]) == ("finished", 10, 4)
    assert ref_state["step"] == state["step"]
    losses, ref_losses = step_losses(preempted), step_losses(reference)
    assert [s for s, _ in losses] == list(range(1, 11))
    assert losses == [(s, pytest.approx(v, rel=1e-6)) for s, v in ref_losses]
    status = launch("status", job, env=env)
    assert "finished step 10" in status.stdout and "attempts: 2" in status.stdout


def test_time_limit_signal_saves_requeues_and_a_cancelled_job_stays_cancelled(tmp_path, env):
    run_dir = tmp_path / "timeout"
    probe = {**env, "SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"}
    job = submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                 "--time", "00:02:00", "--signal-lead", "60", "--gpus-per-node", "2", env=probe)
    # Slurm itself sends USR2 60 s before the 2-minute limit (nobody else signals this job)
    first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 240, "the time-limit save")[0]
    assert (first["exit_code"], first["action"]) == (42, "requeue") and first["step_end"] > 0, first
    wait_for(lambda: release_if_waiting(job), 120, "the requeued job to wait for its BeginTime")
    starts = wait_for(lambda: records(run_dir / "attempts.jsonl", event="start")[1:], 120, "the second attempt")
    assert starts[0]["step"] == first["step_end"] and starts[0]["restart"] == 1
    wait_for(lambda: json.loads((run_dir / "state.json").read_text())["step"] > first["step_end"], 60, "progress")

    cancelled = launch("cancel", job, env=probe)
    assert cancelled.returncode == 0, cancelled.stderr
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"
    last = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end")[1:], 60, "the second end record")[0]
    assert last["action"] == "stop" and "cancelled" in last["reason"]
    assert not release_if_waiting(job) and final_state(job) == "CANCELLED"  # not requeued


def test_crash_loop_stops_at_the_crash_budget(tmp_path, env):
    run_dir = tmp_path / "crash"
    job = submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                 "--gpus-per-node", "2", env={**env, "SEGAN_PROBE_CRASH": "1"})
    budget = 2  # configs/clusters/local.yaml: max_crash_requeues

    def ended():
        release_if_waiting(job)
        return final_state(job)

    assert wait_for(ended, 300, "the crash loop to stop", poll=2) == "FAILED"
    ends = records(run_dir / "attempts.jsonl", event="end")
    assert [e["exit_code"] for e in ends] == [1] * (budget + 1)
    assert [e["action"] for e in ends] == ["requeue"] * budget + ["stop"]
    assert f"crashed {budget + 1} times" in ends[-1]["reason"]
    log = (run_dir / "slurm" / f"{job}_0_log.err").read_text()
    assert log.count("RuntimeError: jobs.probe: crashing on purpose") == budget + 1
    assert all(f"===== attempt {n} of job {job} · rank 0/2" in log for n in range(1, budget + 2))
    status = launch("status", job, env=env)
    assert "FAILED" in status.stdout and f"crashed {budget + 1} times" in status.stdout


def test_missing_or_unknown_account_is_refused_with_our_message(tmp_path, env):
    no_default = tmp_path / "noaccount.yaml"
    no_default.write_text(f"base: {ROOT / 'configs' / 'clusters' / 'local.yaml'}\nname: noaccount\naccount: null\n")
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    missing = launch("--cluster", str(no_default), "--config", "configs/smoke.yaml", "--run-dir",
                     str(tmp_path / "a"), env=env)
    assert missing.returncode == 2 and "--account is required on cluster 'noaccount'" in missing.stderr
    unknown = launch("--cluster", "local", "--account", "nosuchproject", "--config", "configs/smoke.yaml",
                     "--run-dir", str(tmp_path / "b"), env=env)
    assert unknown.returncode == 2, unknown.stdout
    assert unknown.stderr.startswith("launch.py: error: --account 'nosuchproject' may not submit to partition 'gpu'")
    assert len(unknown.stderr.strip().splitlines()) == 1
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()
    assert set(after) <= set(before)  # nothing was submitted
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_check_reports_the_cluster(tmp_path):
    proc = launch("check", "--cluster", "local", "--run-dir", str(tmp_path / "run"), timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for expected in ("[ok  ] SLURM controller", "[ok  ] partition: gpu time limit 12:00:00",
                     "[ok  ] account: testacct accepted", "[ok  ] import submitit", "[ok  ] signal lead vs save"):
        assert expected in proc.stdout
    bad = launch("check", "--cluster", "local", "--account", "nosuchproject", timeout=180)
    assert bad.returncode == 1 and "[FAIL] account: 'nosuchproject' refused" in bad.stdout


def test_plain_sbatch_template_saves_and_requeues(tmp_path, env):
    """The --emit-sbatch script (srun + torchrun, no submitit): USR2 to the batch shell -> the ranks
    save -> the shell requeues; the torchrun agent survives the signal it is not meant to handle. Both
    attempts run the code snapshot taken when the script was printed."""
    run_dir = tmp_path / "plain"
    emitted = launch("--cluster", "local", "--emit-sbatch", "--config", "configs/smoke.yaml", "--entry",
                     "jobs.probe", "--run-dir", str(run_dir), "--gpus-per-node", "2", env=env)
    assert emitted.returncode == 0, emitted.stderr
    script = tmp_path / "job.sbatch"
    script.write_text(emitted.stdout)
    probe_env = {**os.environ, "SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"}
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, env=probe_env)
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]
    log = run_dir / "slurm" / f"{job}_sbatch.out"
    state = run_dir / "state.json"
    try:
        wait_for(lambda: state.is_file() and json.loads(state.read_text())["step"] >= 3, 180, "the first steps")
        subprocess.run(["scancel", "--batch", "--signal=USR2", job], check=True)  # as --signal=B:USR2@LEAD does
        wait_for(lambda: release_if_waiting(job), 120, "the requeue")
        saved = json.loads(state.read_text())
        assert saved["status"] == "checkpointed"
        wait_for(lambda: f"===== attempt 2 of job {job}" in log.read_text(), 120, "the second attempt")
        wait_for(lambda: json.loads(state.read_text())["step"] > saved["step"], 120, "progress after the requeue")
    finally:
        subprocess.run(["scancel", job])
    text = log.read_text()
    # the batch shell ran the requeue policy of jobs/injob/requeue.py: same records, same words as the submitit path
    first = records(run_dir / "attempts.jsonl", event="end")[0]
    assert (first["exit_code"], first["action"], first["step_end"]) == (42, "requeue", saved["step"]), first
    assert first["reason"] == "stop requested (timeout or preemption); requeue 1 of 5"
    assert f"step 0 -> {saved['step']}; requeue: stop requested (timeout or preemption); requeue 1 of 5" in text
    assert "batch shell: USR2 received" in text
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"
    # the batch shell writes its last line after Slurm reports CANCELLED (it waits for the ranks first)
    last = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end")[1:], 60, "the second end record")[0]
    assert (last["action"], last["ending"]) == ("stop", "cancelled"), last
    assert last["reason"] == "cancelled with scancel (sacct CANCELLED by 0); not requeued"
    wait_for(lambda: f"stop: {last['reason']} =====" in log.read_text(), 60, "the batch shell's not-requeued line")
    assert not release_if_waiting(job)
    starts = records(run_dir / "attempts.jsonl", event="start")
    assert [(s["restart"], s["step"]) for s in starts] == [(0, 0), (1, saved["step"])]
    status = launch("status", str(run_dir), env=env)
    assert status.returncode == 0, status.stderr
    assert f"job {job}  run directory" in status.stdout and "  state:  cancelled" in status.stdout
    assert emitted.stderr.startswith(f"code snapshot: {run_dir}/slurm/code  revision "), emitted.stderr
    assert json.loads(state.read_text())["source"] == str(run_dir / "slurm" / "code" / "jobs" / "injob" / "probe.py")


def test_plain_sbatch_template_stops_a_crash_loop_at_the_crash_budget(tmp_path, env):
    """Crash budget in the plain template too: torchrun exits 1 for any failed rank, the trainer wrote
    nothing, so jobs.requeue counts a crash; 2 requeues (configs/clusters/local.yaml), then stop."""
    run_dir = tmp_path / "plain_crash"
    emitted = launch("--cluster", "local", "--emit-sbatch", "--config", "configs/smoke.yaml", "--entry",
                     "jobs.probe", "--run-dir", str(run_dir), "--gpus-per-node", "1", env=env)
    assert emitted.returncode == 0, emitted.stderr
    script = tmp_path / "crash.sbatch"
    script.write_text(emitted.stdout)
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                          env={**os.environ, "SEGAN_PROBE_CRASH": "1"})
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip().split(";")[0]

    def ended():
        release_if_waiting(job)
        return final_state(job)

    try:
        assert wait_for(ended, 300, "the crash loop to stop", poll=2) == "FAILED"
    finally:
        subprocess.run(["scancel", job])
    ends = records(run_dir / "attempts.jsonl", event="end")
    assert [(e["exit_code"], e["action"]) for e in ends] == [(1, "requeue"), (1, "requeue"), (1, "stop")], ends
    assert "crashed 3 times (crash budget 2 requeues)" in ends[-1]["reason"]
    assert len(records(run_dir / "attempts.jsonl", event="start")) == 3


def test_plain_scancel_is_not_requeued(tmp_path, env):
    """scancel sends SIGTERM: the ranks save and ask for a requeue, but the job is COMPLETING and
    sacct says CANCELLED (by uid 0), so rank 0 records a stop instead."""
    run_dir = tmp_path / "scancel"
    job = submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                 "--gpus-per-node", "2", env={**env, "SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"})
    state = run_dir / "state.json"
    wait_for(lambda: state.is_file() and json.loads(state.read_text())["step"] >= 2, 120, "the first steps")
    subprocess.run(["scancel", job], check=True)
    assert wait_for(lambda: final_state(job), 120, "the cancellation") == "CANCELLED"
    last = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 60, "the end record")[-1]
    assert (last["exit_code"], last["action"], last["ending"]) == (42, "stop", "cancelled"), last
    assert last["reason"] == "cancelled with scancel (sacct CANCELLED by 0); not requeued"
    assert json.loads(state.read_text())["status"] == "checkpointed"
    assert not release_if_waiting(job)


def test_creative_agent_job_is_preempted_requeued_and_finishes(tmp_path, env):
    """The second model family through the same launcher: 2 ranks on the creative demo pairs."""
    run_dir = tmp_path / "creative"
    sets = ["train.epochs=3", "train.log_every=1", "data.batch_size=1"]  # 24 pairs / 2 ranks: 12 steps an epoch
    job = submit("--config", "configs/creative_smoke.yaml", "--gpus-per-node", "2", "--run-dir", str(run_dir),
                 *[a for item in sets for a in ("--set", item)], env=env)
    wait_for(lambda: step_losses(run_dir), 600, "the first creative training step")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 300, "the save after USR2")[0]
    assert (first["exit_code"], first["action"]) == (42, "requeue"), first
    wait_for(lambda: release_if_waiting(job), 120, "the requeued job to wait for its BeginTime")
    assert wait_for(lambda: final_state(job), 900, "the requeued job to finish") == "COMPLETED"
    second_start = records(run_dir / "attempts.jsonl", event="start")[1]
    assert second_start["step"] == first["step_end"]
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["status"], state["step"], state["world_size"]) == ("finished", 36, 2)
    assert [s for s, _ in step_losses(run_dir)] == list(range(1, 37))
    epochs = records(run_dir / "metrics.jsonl", kind="epoch")
    assert [e["epoch"] for e in epochs] == [0, 1, 2] and all("valid_alert" in e for e in epochs)


def test_two_node_job_is_preempted_requeued_and_finishes(tmp_path, env):
    """2 nodes x 2 GPUs: MASTER_ADDR is the first node's name, both nodes' ranks save and resume."""
    run_dir = tmp_path / "two_nodes"
    # a whole epoch (40 pairs / 4 ranks) and a quick poll: the USR2 must land mid-run on a fast machine too
    job = submit(*SMOKE, "--set", "train.max_steps_per_epoch=10", "--nodes", "2", "--gpus-per-node", "2",
                 "--run-dir", str(run_dir), env=env)
    wait_for(lambda: step_losses(run_dir), 600, "the first training step", poll=0.05)
    nodes = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True).stdout.strip()
    assert nodes in ("n[1-2]", "n1,n2"), nodes
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 300, "the save after USR2")[0]
    assert (first["exit_code"], first["action"]) == (42, "requeue"), first
    assert 0 < first["step_end"] < 10
    wait_for(lambda: release_if_waiting(job), 120, "the requeued job to wait for its BeginTime")
    assert wait_for(lambda: final_state(job), 900, "the requeued job to finish") == "COMPLETED"
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["status"], state["step"], state["world_size"]) == ("finished", 10, 4)
    assert [s for s, _ in step_losses(run_dir)] == list(range(1, 11))
    assert records(run_dir / "attempts.jsonl", event="start")[1]["step"] == first["step_end"]
