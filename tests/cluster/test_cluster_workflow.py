"""The experiment workflow on the real test cluster: a sweep as one job array whose elements requeue on
their own, the code snapshot every attempt runs, and the evaluation chained after training.

The sweep and snapshot tests use jobs.probe (the trainer's contract without torch); the chained
evaluation needs real checkpoints, so it trains the smoke config for 4 steps."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from cluster_helpers import (
    ACCOUNT,
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


@pytest.fixture(autouse=True)
def cluster():
    yield from cluster_for_one_test()


@pytest.fixture
def env(tmp_path):
    return {"SEGAN_JOB_INDEX": str(tmp_path / "submissions.jsonl")}


def state(run_dir):
    path = run_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def step_records(run_dir):
    return [r for r in records(run_dir / "metrics.jsonl") if r.get("kind") == "step"]


def queue_of(job):
    return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], capture_output=True, text=True).stdout.split()


def test_a_2x2_sweep_is_one_array_whose_preempted_element_alone_requeues(tmp_path, env):
    """Four probe elements of 4 ranks (one node's GPUs each, at most 2 at once). Element 1 is asked to
    save (USR2, as before its time limit): the requeue policy of jobs/injob/requeue.py requeues that element
    alone (`scontrol requeue ARRAYID_1`). The node of element 0 is taken by an `urgent` job: Slurm
    preempts and requeues that element only (ARRAYID_0). Every element finishes at its exact step (no
    step twice, none lost), and status, list and compare show all four."""
    root = tmp_path / "sweep"
    probe = {**env, "SEGAN_PROBE_STEPS": "60", "SEGAN_PROBE_STEP_SECONDS": "0.5"}
    proc = launch("sweep", "--cluster", "local", "--config", "configs/smoke.yaml", "--entry", "jobs.probe",
                  "--grid", "loss.w_gan=0.05,0.1", "--grid", "loss.gan_start_fraction=0.5,0.6", "--name", "wf-sweep",
                  "--run-dir", str(root), "--gpus-per-node", "4", "--max-parallel", "2", env=probe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep = json.loads((root / "sweep.json").read_text())
    array = sweep["array_job_id"]
    assert proc.stdout.startswith(f"submitted sweep wf-sweep: job array {array} with 4 elements (at most 2 at once")
    assert "#SBATCH --array=0-3%2" in (root / "slurm" / f"{array}_submission.sh").read_text()
    elements = {e["index"]: e for e in sweep["elements"]}
    assert [e["job_id"] for e in elements.values()] == [f"{array}_{i}" for i in range(4)]
    assert [os.path.basename(e["run_dir"]) for e in elements.values()] == [
        "w_gan=0.05,gan_start_fraction=0.5", "w_gan=0.05,gan_start_fraction=0.6",
        "w_gan=0.1,gan_start_fraction=0.5", "w_gan=0.1,gan_start_fraction=0.6"]
    dirs = {i: root / os.path.basename(e["run_dir"]) for i, e in elements.items()}
    frozen = (dirs[3] / "slurm" / "submitted_config.yaml").read_text()
    assert "w_gan: 0.1\n" in frozen and "gan_start_fraction: 0.6\n" in frozen  # each element its own config

    first, second = f"{array}_0", f"{array}_1"
    wait_for(lambda: state(dirs[0]).get("step", 0) >= 3, 300, "element 0's first steps")
    wait_for(lambda: state(dirs[1]).get("step", 0) >= 3, 300, "element 1's first steps")
    node = subprocess.run(["squeue", "-h", "-j", first, "-o", "%N"], capture_output=True, text=True).stdout.strip()
    urgent = subprocess.run(["sbatch", "--parsable", "-p", "urgent", "-A", ACCOUNT, "-w", node, "--exclusive",
                             "-o", str(tmp_path / "urgent-%j.out"), "--wrap", "sleep 2"],
                            capture_output=True, text=True)
    assert urgent.returncode == 0, urgent.stderr
    urgent_job = urgent.stdout.strip().split(";")[0]
    # Our own requeue, element 1 only. Slurm 22.05's scancel --signal on an element of an array that
    # still has pending elements delivers the signal, then may retry for many seconds and exit non-zero
    # ("Job can not be altered now": the element is being requeued); the end record below is what
    # counts, so it runs in the background.
    signal = subprocess.Popen(["scancel", "--signal=USR2", second], stderr=subprocess.DEVNULL)
    try:
        end = wait_for(lambda: records(dirs[0] / "attempts.jsonl", event="end"), 180, "element 0's end record")[0]
        assert (end["job_id"], end["exit_code"], end["action"], end["ending"]) == (first, 42, "slurm-requeue",
                                                                                  "preempted"), end
        assert wait_for(lambda: final_state(urgent_job), 180, "the preempting job") == "COMPLETED"
    finally:
        subprocess.run(["scancel", urgent_job])
    own = wait_for(lambda: records(dirs[1] / "attempts.jsonl", event="end"), 180, "element 1's end record")[0]
    signal.wait(timeout=120)
    assert (own["job_id"], own["exit_code"], own["action"]) == (second, 42, "requeue"), own

    def all_done():
        release_if_waiting(first)
        release_if_waiting(second)
        return all(final_state(f"{array}_{i}") for i in range(4))

    wait_for(all_done, 900, "all four elements to finish", poll=2)
    for i, run_dir in dirs.items():
        assert final_state(f"{array}_{i}") == "COMPLETED"
        assert (state(run_dir)["status"], state(run_dir)["step"]) == ("finished", 60)
        assert [r["step"] for r in step_records(run_dir)] == list(range(1, 61)), f"element {i}"
        assert state(run_dir)["source"] == str(root / "slurm" / "code" / "jobs" / "injob" / "probe.py")
        ends = records(run_dir / "attempts.jsonl", event="end")
        if i in (0, 1):  # the preempted element and the one we requeued resumed where they saved
            saved = end if i == 0 else own
            assert [(e["action"], e["job_id"]) for e in ends] == [(saved["action"], saved["job_id"]),
                                                                  ("finish", saved["job_id"])]
            starts = records(run_dir / "attempts.jsonl", event="start")
            assert [s["step"] for s in starts] == [0, saved["step_end"]] and 0 < saved["step_end"] < 60
            assert [s["restart"] for s in starts] == [0, 1]  # that element's own restart count
        else:  # nobody else was requeued
            assert [(e["action"], e["job_id"], e["restart"]) for e in ends] == [("finish", f"{array}_{i}", 0)]

    status = launch("status", str(root), env=env).stdout.splitlines()
    assert status[0].startswith(f"sweep wf-sweep  array {array}  4 elements")
    rows = [line.split() for line in status if line.strip().startswith("w_gan=")]
    assert [(r[1], r[2], r[3], r[6]) for r in rows] == [(f"{array}_{i}", "finished", "60", "2" if i < 2 else "1")
                                                       for i in range(4)]
    listed = launch("list", env=env).stdout.splitlines()
    assert listed[1].startswith(f"sweep wf-sweep: array {array}, 4 runs (4 finished)")
    compared = launch("compare", "wf-sweep", env=env)
    assert compared.returncode == 0, compared.stderr
    table = compared.stdout.splitlines()
    assert table[1].split()[:3] == ["RUN", "loss.w_gan", "loss.gan_start_fraction"]
    assert sorted(line.split()[0] for line in table[2:]) == sorted(p.name for p in dirs.values())
    assert all(line.split()[-1] == "finished" for line in table[2:])


def test_a_resubmitted_sweep_continues_only_its_unfinished_elements(tmp_path, env):
    """Element 1 of a 2-element sweep is cancelled mid-run (saved, not requeued), element 0 finishes. The
    same sweep command again skips element 0 (it keeps its job id) and submits a new array of one task
    for element 1, which resumes at its saved step and finishes: every step once in each element."""
    root = tmp_path / "sweep"
    probe = {**env, "SEGAN_PROBE_STEPS": "30", "SEGAN_PROBE_STEP_SECONDS": "0.3"}
    command = ("sweep", "--cluster", "local", "--config", "configs/smoke.yaml", "--entry", "jobs.probe",
               "--set", "train.epochs=1", "--grid", "loss.w_gan=0.05,0.1", "--name", "wf-again", "--run-dir", str(root),
               "--gpus-per-node", "1")
    proc = launch(*command, env=probe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = json.loads((root / "sweep.json").read_text())["array_job_id"]
    dirs = [root / "w_gan=0.05", root / "w_gan=0.1"]
    wait_for(lambda: state(dirs[1]).get("step", 0) >= 3, 300, "element 1's first steps")
    assert launch("cancel", f"{first}_1", env=env).returncode == 0
    assert wait_for(lambda: final_state(f"{first}_1"), 180, "the cancellation") == "CANCELLED"
    assert wait_for(lambda: final_state(f"{first}_0"), 300, "element 0 to finish") == "COMPLETED"
    saved = records(dirs[1] / "attempts.jsonl", event="end")[-1]
    assert saved["action"] == "stop" and 0 < saved["step_end"] < 30, saved
    cancelled = launch("status", f"{first}_1", env=env).stdout  # continued by the sweep's command, not --run-dir
    assert "rerun the sweep's command, which skips its finished elements (python launch.py sweep " in cancelled
    assert "resubmit with the same --run-dir" not in cancelled, cancelled

    again = launch(*command, env=probe)
    assert again.returncode == 0, again.stdout + again.stderr
    sweep = json.loads((root / "sweep.json").read_text())
    second = sweep["array_job_id"]
    assert second != first and sweep["arrays"] == [first, second]
    # the one element left is a job of its own (submitit submits a batch of one as a plain job)
    assert again.stdout.startswith(f"submitted sweep wf-again: job {second} "
                                   "for its one unfinished element"), again.stdout
    assert "1 finished, skipped" in again.stdout and "finished its 1 epochs (step 30): skipped" in again.stdout
    assert [(e["job_id"], e.get("skipped")) for e in sweep["elements"]] == [(f"{first}_0", "finished"), (second, None)]
    assert wait_for(lambda: final_state(second), 300, "element 1 to finish") == "COMPLETED"
    assert f"===== attempt 1 of job {second}" in (dirs[1] / "slurm" / f"{second}_0_log.out").read_text()
    for run_dir in dirs:
        assert (state(run_dir)["status"], state(run_dir)["step"]) == ("finished", 30)
        assert [r["step"] for r in step_records(run_dir)] == list(range(1, 31)), run_dir.name
    assert [s["step"] for s in records(dirs[0] / "attempts.jsonl", event="start")] == [0]  # not run again
    assert [(s["job_id"], s["step"]) for s in records(dirs[1] / "attempts.jsonl", event="start")] == [
        (f"{first}_1", 0), (second, saved["step_end"])]
    rows = [line.split() for line in launch("status", str(root), env=env).stdout.splitlines()
            if line.strip().startswith("w_gan=")]
    assert [(r[1], r[2], r[3]) for r in rows] == [(f"{first}_0", "finished", "30"), (second, "finished", "30")]
    listed = launch("list", env=env).stdout.splitlines()
    assert listed[1].startswith(f"sweep wf-again: array {first} and job {second}, 2 runs (2 finished)"), listed
    assert [row.split()[0] for row in listed[2:4]] == [f"{first}_0", second]
    refused = launch(*command, env=probe)
    assert refused.returncode == 2 and "every element of sweep wf-again" in refused.stderr, refused.stderr


def test_a_resubmitted_sweep_never_replaces_the_code_under_a_queued_evaluation(tmp_path, env):
    """Issue 24 item 2: element 0 finishes while its chained evaluation is held in the queue; element 1 is
    cancelled. The same sweep command is refused, naming the evaluation job, and neither ROOT/slurm/code
    nor sweep.json changes; once that job has ended the resubmission goes through, sweep.json lists both
    evaluation arrays, and cancel SWEEP reaches both."""
    test_dir = tmp_path / "test"
    for sub in ("clean", "noisy"):
        (test_dir / sub).mkdir(parents=True)
        (test_dir / sub / "a.wav").write_bytes(b"")
    root = tmp_path / "sweep"
    probe = {**env, "SEGAN_PROBE_STEPS": "30", "SEGAN_PROBE_STEP_SECONDS": "0.3"}
    command = ("sweep", "--cluster", "local", "--config", "configs/smoke.yaml", "--entry", "jobs.probe",
               "--set", "train.epochs=1", "--grid", "loss.w_gan=0.05,0.1", "--name", "wf-evalheld",
               "--run-dir", str(root), "--gpus-per-node", "1", "--evaluate-after", str(test_dir))
    proc = launch(*command, env=probe)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sweep = json.loads((root / "sweep.json").read_text())
    first, evaluations = sweep["array_job_id"], sweep["evaluation"]["array_job_id"]
    subprocess.run(["scontrol", "hold", evaluations], check=True)  # held: still queued after its training ends
    dirs = [root / "w_gan=0.05", root / "w_gan=0.1"]
    wait_for(lambda: state(dirs[1]).get("step", 0) >= 3, 300, "element 1's first steps")
    assert launch("cancel", f"{first}_1", env=env).returncode == 0
    assert wait_for(lambda: final_state(f"{first}_1"), 180, "the cancellation") == "CANCELLED"
    assert wait_for(lambda: final_state(f"{first}_0"), 300, "element 0 to finish") == "COMPLETED"
    assert queue_of(f"{evaluations}_0")[:1] == ["PENDING"]
    code_record = (root / "slurm" / "code.json").read_text()
    refused = launch(*command, env=probe)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"evaluation job(s) {evaluations}_0" in refused.stderr and "still" in refused.stderr, refused.stderr
    assert json.loads((root / "sweep.json").read_text()) == sweep
    assert (root / "slurm" / "code.json").read_text() == code_record
    subprocess.run(["scancel", evaluations], check=True)
    assert wait_for(lambda: final_state(f"{evaluations}_0"), 180, "the evaluation's end") == "CANCELLED"
    again = launch(*command, env=probe)
    assert again.returncode == 0, again.stdout + again.stderr
    resubmitted = json.loads((root / "sweep.json").read_text())
    second_evaluation = resubmitted["evaluation"]["array_job_id"]
    assert resubmitted["evaluation_arrays"] == [evaluations, second_evaluation] and second_evaluation != evaluations
    cancelled = launch("cancel", "wf-evalheld", env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"evaluation array {evaluations} and job {second_evaluation}" in cancelled.stdout, cancelled.stdout
    assert wait_for(lambda: final_state(resubmitted["array_job_id"]), 300, "the cancelled resubmission") == "CANCELLED"


def checkout_copy(tmp_path):
    """The working tree as a fresh git checkout of its own (the tests must not edit the real one)."""
    copy = tmp_path / "checkout"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True,
                           text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "snapshot test"]):
        subprocess.run(["git", "-C", str(copy), *args], check=True, capture_output=True, env={**os.environ, **ident})
    head = subprocess.run(["git", "-C", str(copy), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return copy, head


def test_edits_to_the_checkout_change_neither_a_queued_job_nor_its_requeue(tmp_path, env):
    """Submit a probe job from a checkout and hold it in the queue; edit jobs/injob/probe.py (which the job
    imports) so that it would log negative losses and another source; release the job, requeue it:
    both attempts ran the code as submitted. A resubmission takes a new snapshot, and says so."""
    checkout, head = checkout_copy(tmp_path)
    run_dir = tmp_path / "run"
    probe_env = {**os.environ, **env, "SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"}

    def launch_here(*args):
        return subprocess.run([sys.executable, "launch.py", "--cluster", "local", *args], cwd=checkout,
                              capture_output=True, text=True, env=probe_env, timeout=120)

    proc = launch_here("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                       "--gpus-per-node", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.split("submitted job ", 1)[1].split()[0]
    subprocess.run(["scontrol", "hold", job], check=True)  # still queued while the checkout changes
    snapshot = run_dir / "slurm" / "code"
    assert f"code snapshot: {snapshot}  revision {head[:12]} (clean)" in proc.stdout
    code = json.loads((run_dir / "slurm" / "code.json").read_text())
    assert (code["revision"], code["dirty"]) == (head, False)

    probe = checkout / "jobs" / "injob" / "probe.py"
    original = probe.read_text()
    edited = original.replace('"loss": 1.0 / step', '"loss": -1.0').replace('"source": __file__', '"source": "EDITED"')
    assert edited != original
    probe.write_text(edited)
    try:
        subprocess.run(["scontrol", "release", job], check=True)
        wait_for(lambda: state(run_dir).get("step", 0) >= 3, 300, "the first steps")
        subprocess.run(["scancel", "--signal=USR2", job], check=True)  # save and requeue (our own requeue)
        first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 180, "the save after USR2")[0]
        assert (first["exit_code"], first["action"]) == (42, "requeue"), first
        wait_for(lambda: release_if_waiting(job), 180, "the requeued job to wait for its BeginTime")
        wait_for(lambda: state(run_dir).get("step", 0) > first["step_end"] + 2, 300, "progress after the requeue")
        assert len(records(run_dir / "attempts.jsonl", event="start")) == 2
        assert state(run_dir)["source"] == str(snapshot / "jobs" / "injob" / "probe.py")  # not "EDITED"
        assert all(r["loss"] > 0 for r in step_records(run_dir))  # no attempt ran the edited probe
        assert (snapshot / "jobs" / "injob" / "probe.py").read_text() == original
    finally:
        subprocess.run(["scancel", job])
    assert wait_for(lambda: final_state(job), 180, "the cancellation") == "CANCELLED"

    again = launch_here("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                        "--gpus-per-node", "1")
    assert again.returncode == 0, again.stdout + again.stderr
    second = again.stdout.split("submitted job ", 1)[1].split()[0]
    subprocess.run(["scancel", second])
    assert "(dirty: 1 changed, 0 untracked file(s) included)" in again.stdout
    assert "(a new snapshot: it replaced the one taken" in again.stdout
    assert (snapshot / "jobs" / "injob" / "probe.py").read_text() == edited
    assert json.loads((run_dir / "slurm" / "code.json").read_text())["dirty"] is True
    wait_for(lambda: final_state(second), 180, "the second job's cancellation")


SMOKE = ["--config", "configs/smoke.yaml", "--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=2",
         "--set", "valid.max_utterances=2", "--set", "data.crop_seconds=0.5", "--set", "train.pesq_workers=1",
         "--set", "valid.num_audio_samples=0", "--set", "checkpoint.every_steps=1", "--set", "train.log_every=1",
         "--set", "checkpoint.keep_best=[pesq]", "--gpus-per-node", "1"]


def demo_test_set() -> str:
    """The demo corpus's test set (logs/demo_corpus/test, built once, as the trainer would)."""
    subprocess.run([sys.executable, "-c", "from trainer.data.demo import ensure_demo_corpus; ensure_demo_corpus()"],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    return str(ROOT / "logs" / "demo_corpus" / "test")


def test_the_evaluation_runs_once_the_requeued_training_job_has_finished(tmp_path, env):
    """Training (4 steps of the smoke config, 1 rank) is requeued after its first step; the evaluation
    job, chained with afterok, keeps waiting through the requeue, then scores every kept checkpoint on
    the demo test set: test_scores.json, the table in its log, status and compare show it. Every
    checkpoint names the code revision it was trained with."""
    import torch

    run_dir = tmp_path / "run"
    proc = launch("--cluster", "local", *SMOKE, "--run-dir", str(run_dir), "--evaluate-after", demo_test_set(),
                  env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    job = proc.stdout.split("submitted job ", 1)[1].split()[0]
    evaluation = json.loads((run_dir / "slurm" / "evaluation.json").read_text())
    eval_job = evaluation["job_id"]
    assert (evaluation["after"] == job
            and f"evaluation:    job {eval_job} after training job {job} (CPU only" in proc.stdout)
    try:
        wait_for(lambda: step_records(run_dir), 900, "the first training step", poll=0.05)  # mid-run on a fast machine
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        first = wait_for(lambda: records(run_dir / "attempts.jsonl", event="end"), 600, "the save after USR2")[0]
        assert (first["exit_code"], first["action"]) == (42, "requeue"), first
        wait_for(lambda: queue_of(job) == ["PENDING", "BeginTime"], 120, "the requeued job to wait")
        assert queue_of(eval_job) == ["PENDING", "Dependency"]  # a requeue is not the end of training
        status = launch("status", job, env=env).stdout
        assert f"  evaluation: job {eval_job} waits for training job {job} to finish for good" in status
        wait_for(lambda: release_if_waiting(job), 120, "the requeued job's release")
        assert wait_for(lambda: final_state(job), 1200, "the requeued training to finish") == "COMPLETED"
        assert wait_for(lambda: final_state(eval_job), 1500, "the evaluation") == "COMPLETED"
    finally:
        subprocess.run(["scancel", job, eval_job])
    assert (state(run_dir)["status"], state(run_dir)["step"]) == ("finished", 4)
    assert len(records(run_dir / "attempts.jsonl", event="start")) == 2
    scores = json.loads((run_dir / "test_scores.json").read_text())
    assert set(scores["summaries"]) == {"noisy", "best_pesq", "last"}
    assert scores["summaries"]["last"]["num_valid"] > 0 and scores["checkpoints"]["last"]["step"] == 4
    log = (run_dir / "slurm" / f"{eval_job}_0_log.out").read_text()
    assert f"===== evaluation job {eval_job} of {run_dir} after training job {job}" in log
    assert "PESQ" in log and "best_pesq" in log  # the table
    assert records(run_dir / "attempts.jsonl", event="evaluation")[0]["exit_code"] == 0
    status = launch("status", job, env=env).stdout
    assert f"  evaluation: job {eval_job} done: test scores in {run_dir / 'test_scores.json'}" in status
    compared = launch("compare", str(run_dir), env=env).stdout.splitlines()
    assert compared[1].split()[-4:] == ["TEST_CKPT", "TEST_PESQ", "TEST_STOI", "TEST_SSNR"]
    assert compared[2].split()[-4] == "best_pesq"
    code = json.loads((run_dir / "slurm" / "code.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert checkpoint["code"] == {"revision": code["revision"], "dirty": code["dirty"],
                                  "snapshot": str(run_dir / "slurm" / "code")}


def test_a_run_that_ends_for_good_unfinished_cancels_its_evaluation(tmp_path, env):
    """A probe job with no requeue budget asks to be requeued (USR2): the decision is a final stop, the
    job itself completes in Slurm's eyes (afterok would be satisfied), so the end record cancels the
    evaluation explicitly; status says why."""
    test_dir = tmp_path / "test"
    for sub in ("clean", "noisy"):
        (test_dir / sub).mkdir(parents=True)
        (test_dir / sub / "a.wav").write_bytes(b"")
    run_dir = tmp_path / "run"
    job = submit("--config", "configs/smoke.yaml", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                 "--gpus-per-node", "1", "--max-requeues", "0", "--evaluate-after", str(test_dir),
                 env={**env, "SEGAN_PROBE_STEPS": "100000", "SEGAN_PROBE_STEP_SECONDS": "0.2"})
    eval_job = json.loads((run_dir / "slurm" / "evaluation.json").read_text())["job_id"]
    wait_for(lambda: state(run_dir).get("step", 0) >= 2, 300, "the first steps")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    assert wait_for(lambda: final_state(job), 300, "the job's end") == "COMPLETED"
    end = records(run_dir / "attempts.jsonl", event="end")[0]
    assert (end["exit_code"], end["action"]) == (42, "stop") and "requeue budget spent (0 requeues)" in end["reason"]
    cancelled = records(run_dir / "attempts.jsonl", event="evaluation_cancelled")
    assert [c["job_id"] for c in cancelled] == [eval_job]
    assert wait_for(lambda: final_state(eval_job), 180, "the evaluation's cancellation") == "CANCELLED"
    assert not (run_dir / "test_scores.json").exists()
    status = launch("status", job, env=env).stdout
    assert (f"  evaluation: job {eval_job} cancelled: training ended for good without finishing (requeue budget "
            "spent (0 requeues)") in status
    assert f"===== evaluation job {eval_job} cancelled" in (run_dir / "slurm" / f"{job}_0_log.err").read_text()
