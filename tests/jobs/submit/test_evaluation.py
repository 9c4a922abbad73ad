"""--evaluate-after without a cluster (jobs/submit/evaluation.py): the checks before submission, the dependent
job's sbatch lines, what status says in each state Slurm reports, and the cancel on a final stop."""

import json
import os
import subprocess
import sys

import pytest

from jobs import runs
from jobs.injob import evaluation as evaluation_job
from jobs.report import evaluation as evaluation_status
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.submit import evaluation
from jobs.submit.profiles import load_profile

OFFLINE = {"PATH": "/nonexistent"}


@pytest.fixture
def test_dir(tmp_path):
    folder = tmp_path / "test"
    for sub in ("clean", "noisy"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "a.wav").write_bytes(b"RIFF")
    return folder


def test_plan_checks_the_test_folder_and_the_task(tmp_path, test_dir):
    profile = load_profile("local")
    plan = evaluation.plan(str(test_dir), "speech_enhancement", "run", profile)
    assert (plan.clean_dir, plan.noisy_dir, plan.gpus, plan.cpus, plan.name) == (
        test_dir / "clean", test_dir / "noisy", 0, 2, "run-eval")
    with pytest.raises(LaunchError, match="not a folder"):
        evaluation.plan(str(tmp_path / "none"), "speech_enhancement", "run", profile)
    (test_dir / "noisy" / "a.wav").unlink()
    (test_dir / "noisy").rmdir()
    with pytest.raises(LaunchError, match="no noisy/ folder in it"):
        evaluation.plan(str(test_dir), "speech_enhancement", "run", profile)
    (test_dir / "noisy").mkdir()
    (test_dir / "clean" / "a.wav").unlink()
    with pytest.raises(LaunchError, match="no .wav file under"):
        evaluation.plan(str(test_dir), "speech_enhancement", "run", profile)
    (test_dir / "clean" / "a.wav").write_bytes(b"")
    with pytest.raises(LaunchError, match="trains task 'creative_agent'"):
        evaluation.plan(str(test_dir), "creative_agent", "run", profile)


def test_dry_run_shows_the_dependent_cpu_only_job(repo_root, tmp_path, test_dir):
    proc = subprocess.run([sys.executable, "launch.py", "--cluster", "local", "--config", "configs/smoke.yaml",
                           "--run-dir", str(tmp_path / "run"), "--evaluate-after", str(test_dir), "--dry-run"],
                          cwd=repo_root, capture_output=True, text=True, env={**os.environ, **OFFLINE})
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout.split("# ---- evaluation job")[1]
    for line in ("#SBATCH --dependency=afterok:JOBID", "#SBATCH --kill-on-invalid-dep=yes", "#SBATCH --cpus-per-task=2",
                 "#SBATCH --ntasks-per-node=1", "#SBATCH --account=testacct", "#SBATCH --partition=gpu",
                 f"export PYTHONPATH={tmp_path / 'run'}/slurm/code"):
        assert line in script
    assert "--gpus-per-node" not in script  # the local profile's evaluate_gpus: 0
    assert (f"--clean-dir {test_dir}/clean --noisy-dir {test_dir}/noisy "
            f"--json {tmp_path / 'run'}/test_scores.json" in script)
    levante = subprocess.run([sys.executable, "launch.py", "--cluster", "levante", "--account", "ab1234", "--config",
                              "configs/smoke.yaml", "--run-dir", str(tmp_path / "run"), "--evaluate-after",
                              str(test_dir), "--dry-run"], cwd=repo_root, capture_output=True, text=True,
                             env={**os.environ, **OFFLINE})
    assert "#SBATCH --gpus-per-node=1" in levante.stdout.split("# ---- evaluation job")[1]


@pytest.mark.parametrize("mode", ["--local", "--emit-sbatch"])
def test_evaluate_after_needs_a_submission(repo_root, tmp_path, test_dir, mode):
    proc = subprocess.run([sys.executable, "launch.py", "--cluster", "local", "--config", "configs/smoke.yaml",
                           "--run-dir", str(tmp_path / "run"), "--evaluate-after", str(test_dir), mode],
                          cwd=repo_root, capture_output=True, text=True, env={**os.environ, **OFFLINE})
    assert proc.returncode == 2 and "--evaluate-after submits a dependent Slurm job" in proc.stderr
    assert not (tmp_path / "run").exists()


def evaluated_run(tmp_path, test_dir, after="100"):
    run_dir = tmp_path / "run"
    (run_dir / "slurm").mkdir(parents=True)
    plan = evaluation.plan(str(test_dir), "speech_enhancement", "run", load_profile("local"))
    evaluation.write_record(run_dir, "101", after, plan)
    return run_dir


@pytest.mark.parametrize("queue,acct,word,words", [
    (("PENDING", "Dependency"), None, "waiting", "waits for training job 100 to finish for good"),
    (("PENDING", "DependencyNeverSatisfied"), None, "never", "will never start: training job 100 did not complete "
                                                            "successfully (squeue PENDING, DependencyNeverSatisfied)"),
    (("RUNNING", "None"), None, "running", "is scoring every kept checkpoint"),
    (None, {"State": "COMPLETED", "ExitCode": "0:0"}, "done", "job 101 done"),
    (None, {"State": "CANCELLED", "Reason": "Dependency", "ExitCode": "0:0", "NodeList": "None assigned",
            "Start": "None"}, "cancelled", "training job 100 did not complete successfully, so its afterok"),
    (None, {"State": "FAILED", "ExitCode": "2:0", "NodeList": "n1", "Start": "x"}, "failed", "ended FAILED (exit 2:0)"),
])
def test_status_says_where_the_evaluation_stands(tmp_path, test_dir, queue, acct, word, words):
    run_dir = evaluated_run(tmp_path, test_dir)
    got = evaluation_status.describe(run_dir, queue, acct, ask_slurm=False)
    assert got[0] == word and words in got[1], got


def test_a_failed_evaluation_shows_the_reason_from_its_error_log(tmp_path, test_dir):
    """The one-line reason of a failed evaluation is in its .err log: status shows it and how to read it."""
    run_dir = evaluated_run(tmp_path, test_dir)
    err = RunDir(run_dir).log_path("101", err=True)
    err.parent.mkdir(parents=True, exist_ok=True)
    err.write_text("===== attempt 1 =====\ntrainer.evaluate: error: /data/test: no such folder\n\n")
    got = evaluation_status.describe(run_dir, None, {"State": "FAILED", "ExitCode": "2:0", "NodeList": "n1",
                                                      "Start": "x"}, ask_slurm=False)
    assert got == ("failed", f"job 101 ended FAILED (exit 2:0): trainer.evaluate: error: /data/test: no such folder; "
                             f"see {err} (python launch.py logs 101 --err)")


def test_logs_of_a_failed_evaluation_end_with_its_error_log(tmp_path, test_dir, monkeypatch, capsys):
    """`logs EVALJOB` shows the job's log and then the last lines of its error log, where the evaluation
    wrote why it failed; a training job's logs stay as they were."""
    from jobs.report import monitor

    monkeypatch.setenv("SEGAN_JOB_INDEX", str(tmp_path / "submissions.jsonl"))
    monkeypatch.setenv("PATH", "/nonexistent")  # Slurm is not asked
    run_dir = evaluated_run(tmp_path, test_dir)
    runs.record_submission("101", run_dir, "run", "local", kind="evaluation")
    runs.record_submission("100", run_dir, "run", "local")
    folder = RunDir(run_dir).job_folder("101")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "101_0_log.out").write_text("===== evaluation of 2 checkpoints =====\n")
    err = RunDir(run_dir).log_path("101", err=True)
    reason = "trainer.evaluate: error: /data/test: no such folder"
    err.write_text("".join(f"warning {i}\n" for i in range(30)) + reason + "\n")
    assert monitor.logs("101", follow=False, rank=0, err=False) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["===== evaluation of 2 checkpoints =====",
                       f"===== the evaluation's error log {err} (its last 20 lines; all of it: python launch.py logs "
                       "101 --err) ====="]
    assert out[2:] == [f"warning {i}" for i in range(11, 30)] + [reason]
    (RunDir(run_dir).job_folder("100") / "100_0_log.out").write_text("training\n")
    (RunDir(run_dir).job_folder("100") / "100_0_log.err").write_text("a training warning\n")
    assert monitor.logs("100", follow=False, rank=0, err=False) == 0
    assert capsys.readouterr().out == "training\n"


def test_a_final_stop_cancels_the_evaluation_and_status_says_why(tmp_path, test_dir):
    run_dir = evaluated_run(tmp_path, test_dir)
    assert evaluation_job.cancel_dependent(run_dir, "99", "whatever") is None  # another training job's evaluation
    line = evaluation_job.cancel_dependent(run_dir, "100", "requeue budget spent (5 requeues); resubmit to continue")
    assert line == ("===== evaluation job 101 cancelled: training ended for good without finishing (requeue budget "
                    "spent (5 requeues); resubmit to continue) =====")
    record = [a for a in RunDir(run_dir).attempts() if a["event"] == "evaluation_cancelled"][0]
    assert record["job_id"] == "101" and record["after"] == "100"
    got = evaluation_status.describe(run_dir, None, {"State": "CANCELLED by 0", "Reason": "None"}, ask_slurm=False)
    assert got == ("cancelled", "job 101 cancelled: training ended for good without finishing (requeue budget spent "
                                "(5 requeues); resubmit to continue)")


def test_the_requeue_cli_cancels_the_evaluation_on_a_final_stop(repo_root, tmp_path, test_dir):
    run_dir = evaluated_run(tmp_path, test_dir, after="4242")
    proc = subprocess.run([sys.executable, "-m", "jobs.requeue", "--run-dir", str(run_dir), "--job-id", "4242", "end",
                           "--exit-code", "3", "--max-requeues", "2", "--max-crash-requeues", "1",
                           "--max-stalled-restarts", "1"], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, **OFFLINE})
    assert proc.returncode == 3, proc.stderr
    assert "===== evaluation job 101 cancelled: training ended for good without finishing (exit code 3" in proc.stdout
    assert [a["event"] for a in RunDir(run_dir).attempts()] == ["end", "evaluation_cancelled"]
    assert json.loads((run_dir / "slurm" / "evaluation.json").read_text())["after"] == "4242"
