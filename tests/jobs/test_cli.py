"""launch.py on the login node: bad input before submission, dry-run, --local, and the
login-node commands (logs/status/list) reading a run directory, all without torch."""

import json
import os
import shutil
import subprocess
import sys

import pytest

OFFLINE = {"PATH": "/nonexistent"}  # no sbatch: checks fall back to the cluster profile


def launch(repo_root, *args, env=None, timeout=60):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "launch.py", *args], cwd=repo_root, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


SUBMIT = ["--cluster", "levante", "--config", "configs/smoke.yaml"]


@pytest.mark.parametrize("extra,expected", [
    ([], "--account is required on cluster 'levante'"),
    (["--account", "ab1234", "--partition", "cpu"], "--partition 'cpu' is not a partition of 'levante'"),
    (["--account", "ab1234", "--time", "12:00:01"], "over the 12:00:00 limit"),
    (["--account", "ab1234", "--time", "twelve"], "--time 'twelve': not a Slurm time"),
    (["--account", "ab1234", "--gpus-per-node", "8"], "a node of 'levante' has 4 GPUs"),
    (["--account", "ab1234", "--name", "my run"], "--name 'my run': use letters"),
    (["--account", "ab1234", "--name", "x;rm"], "--name 'x;rm'"),
    (["--account", "ab1234", "--set", "train.epoch=3"], "unknown key train.epoch"),
    (["--account", "ab1234", "--cluster", "mars"], "unknown cluster profile 'mars'"),
])
def test_bad_input_is_refused_in_one_line_before_submission(repo_root, extra, expected):
    err = one_line_error(launch(repo_root, *SUBMIT, "--dry-run", *extra, env=OFFLINE))
    assert expected in err


def test_unwritable_run_directory_is_refused(repo_root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = one_line_error(launch(repo_root, *SUBMIT, "--account", "ab1234", "--local", "--run-dir",
                                str(blocker / "run"), env=OFFLINE))
    assert str(blocker / "run") in err and "not writable" in err


def test_without_sbatch_submission_suggests_local(repo_root):
    err = one_line_error(launch(repo_root, *SUBMIT, "--account", "ab1234", env=OFFLINE))
    assert "no sbatch on PATH" in err and "--local" in err


def test_dry_run_prints_the_sbatch_script_and_the_resolved_config(repo_root, tmp_path):
    proc = launch(repo_root, *SUBMIT, "--account", "ab1234", "--dry-run", "--run-dir", str(tmp_path / "r"),
                  "--set", "optim.lr=1e-4", "--set", "data.train_dir=/d/a b;$(touch x)", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    for line in ("#SBATCH --account=ab1234", "#SBATCH --partition=gpu", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --gpus-per-node=4", "#SBATCH --signal=USR2@600", "#SBATCH --requeue",
                 "#SBATCH --time=720", "srun --unbuffered"):
        assert line in proc.stdout
    assert "lr: 0.0001" in proc.stdout  # the resolved config
    assert "--set 'data.train_dir=/d/a b;$(touch x)'" in proc.stdout
    assert not (repo_root / "x").exists() and not (tmp_path / "r").exists()  # nothing run, nothing made


def test_local_runs_the_job_here_in_the_foreground(repo_root, tmp_path):
    run_dir = tmp_path / "local-run"
    proc = launch(repo_root, *SUBMIT, "--local", "--entry", "jobs.probe", "--run-dir", str(run_dir),
                  env={"SEGAN_PROBE_STEPS": "3", "SEGAN_PROBE_STEP_SECONDS": "0"})
    assert proc.returncode == 0, proc.stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert (state["status"], state["step"]) == ("finished", 3)
    revision = subprocess.run(["git", "-C", str(repo_root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if revision.returncode == 0:  # the revision reaches the trainer, which puts it in every checkpoint
        assert state["code"]["revision"] == revision.stdout.strip() and state["code"]["snapshot"] is None
        assert f"code:          revision {state['code']['revision'][:12]}" in proc.stdout


def make_run(tmp_path, job_id="4242"):
    """A run directory as the trainer and the job wrapper leave it after one requeue."""
    run_dir = tmp_path / "runs" / "demo"
    (run_dir / "slurm").mkdir(parents=True)
    (run_dir / "state.json").write_text(json.dumps({
        "status": "finished", "step": 120, "epoch": 4, "epochs": 4, "best": {"pesq": 2.345},
        "updated": "2026-01-01T00:00:00+00:00", "job_id": job_id, "world_size": 4}))
    attempts = [
        {"event": "start", "job_id": job_id, "restart": 0, "step": 0},
        {"event": "end", "job_id": job_id, "restart": 0, "exit_code": 42, "step_start": 0, "step_end": 60,
         "action": "requeue", "reason": "stop requested"},
        {"event": "start", "job_id": job_id, "restart": 1, "step": 60},
        {"event": "end", "job_id": job_id, "restart": 1, "exit_code": 0, "step_start": 60, "step_end": 120,
         "action": "finish", "reason": "training finished"},
    ]
    (run_dir / "attempts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in attempts))
    (run_dir / "slurm" / f"{job_id}_0_log.out").write_text(
        f"===== attempt 1 of job {job_id} =====\nfirst\n===== attempt 2 of job {job_id} =====\nsecond\n")
    (run_dir / "slurm" / f"{job_id}_1_log.err").write_text("rank one stderr\n")
    index = tmp_path / "submissions.jsonl"
    index.write_text(json.dumps({"job_id": job_id, "run_dir": str(run_dir), "name": "demo",
                                 "cluster": "local", "submitted": "2026-01-01T00:00:00Z"}) + "\n")
    return run_dir, {"SEGAN_JOB_INDEX": str(index)}


def test_login_node_commands_read_the_run_directory_without_torch(repo_root, tmp_path):
    run_dir, env = make_run(tmp_path)
    code = ("import sys, runpy\n"
            "for argv in (['logs'], ['logs', '4242', '--follow'], ['logs', sys.argv[1], '--rank', '1', '--err'],\n"
            "             ['status'], ['list']):\n"
            "    sys.argv = ['launch.py', *argv]\n"
            "    try:\n"
            "        runpy.run_path('launch.py', run_name='__main__')\n"
            "    except SystemExit as exc:\n"
            "        assert exc.code == 0, (argv, exc.code)\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(run_dir)], cwd=repo_root, capture_output=True,
                          text=True, env={**os.environ, **env, **OFFLINE}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("===== attempt 1 of job 4242") == 2 and out.count("===== attempt 2 of job 4242") == 2
    assert "rank one stderr" in out
    assert "finished step 120 epoch 4/4 best pesq 2.345" in out  # status
    assert "step 0 -> 60, requeue" in out and "attempts: 2" in out
    list_row = next(line for line in out.splitlines() if line.startswith("4242 "))
    assert list_row.split()[:7] == ["4242", "demo", "finished", "120", "4/4", "2.345", "2"]


def test_logs_for_an_unknown_job_says_what_to_do(repo_root, tmp_path):
    _, env = make_run(tmp_path)
    err = one_line_error(launch(repo_root, "logs", "999", env={**env, **OFFLINE}))
    assert "job 999 was not submitted from here" in err and "run directory" in err


def test_check_off_cluster_reports_each_problem_on_its_own_line(repo_root, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    proc = launch(repo_root, "check", "--cluster", "levante", "--config", "configs/se_balanced.yaml",
                  "--set", f"data.train_dir={data}", "--set", f"data.valid_dir={tmp_path / 'missing'}",
                  "--run-dir", str(tmp_path / "run"), env=OFFLINE, timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"[FAIL] data.train_dir: {data}: no manifest.json" in proc.stdout
    assert "[ok  ] import submitit" in proc.stdout and "[ok  ] import torch, torchaudio" in proc.stdout
    assert "[ok  ] run directory" in proc.stdout and "[ok  ] signal lead vs save" in proc.stdout
    assert "[skip] SLURM: no sbatch on PATH" in proc.stdout


# ----- values Slurm would misread: refused in one line, nothing written (jobs/submit/validate.py) ----------------
MISREAD = [
    (["--constraint", "a\n#SBATCH --nodes=64"], r"--constraint 'a\n#SBATCH --nodes=64'"),
    (["--account", "ab1234\n#SBATCH --nodes=64"], r"--account 'ab1234\n#SBATCH --nodes=64'"),
    (["--partition", "gpu\n#SBATCH --nodes=64"], r"--partition 'gpu\n#SBATCH --nodes=64'"),
    (["--constraint", "a100 80"], "--constraint 'a100 80'"),
    (["--gpus-per-node", "0"], "--gpus-per-node 0: must be at least 1"),
    (["--cpus-per-task", "0"], "--cpus-per-task 0: must be at least 1"),
    (["--nodes", "0"], "--nodes 0: must be at least 1"),
    (["--signal-lead", "-5"], "--signal-lead -5: Slurm takes 1 to 65535 seconds"),
    (["--max-requeues", "-1"], "--max-requeues -1: must be at least 0"),
    (["--time", "99:99:99"], "--time '99:99:99': minutes must be 0-59"),
    (["--time", "11:59:60"], "--time '11:59:60': seconds must be 0-59"),
    (["--time", "0"], "--time '0': must be longer than 0"),
    (["--run-dir", "/tmp/my runs/a"], "--run-dir '/tmp/my runs/a': a space or newline"),
    (["--run-dir", "/tmp/runs/%j"], "--run-dir '/tmp/runs/%j': Slurm reads '%'"),
    (["--set", "optim.lr=1e-4\n#SBATCH --nodes=64"], r"--set 'optim.lr=1e-4\n#SBATCH --nodes=64': contains a control"),
]


@pytest.mark.parametrize("mode", ["--dry-run", "--emit-sbatch"])
@pytest.mark.parametrize("extra,expected", MISREAD, ids=[" ".join(e).replace("\n", "\\n") for e, _ in MISREAD])
def test_values_slurm_would_misread_are_refused_in_one_line(repo_root, tmp_path, mode, extra, expected):
    run_dir = ["--run-dir", str(tmp_path / "run")] if "--run-dir" not in extra else []
    proc = launch(repo_root, *SUBMIT, "--account", "ab1234", mode, *run_dir, *extra, env=OFFLINE)
    assert expected in one_line_error(proc)
    assert proc.stdout == "" and not (tmp_path / "run").exists()


def test_a_value_from_the_cluster_profile_is_named_as_such(repo_root, tmp_path):
    profile = tmp_path / "bad.yaml"
    profile.write_text(f"base: {repo_root / 'configs/clusters/local.yaml'}\n"
                       "name: bad\nconstraint: \"a\\n#SBATCH -N 9\"\n")
    err = one_line_error(launch(repo_root, "--cluster", str(profile), "--config", "configs/smoke.yaml", "--dry-run",
                                env=OFFLINE))
    assert r"constraint of cluster profile 'bad' 'a\n#SBATCH -N 9'" in err


@pytest.mark.parametrize("mode", ["--dry-run", "--emit-sbatch", "--local"])
def test_a_run_directory_that_is_a_file_is_refused(repo_root, tmp_path, mode):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = one_line_error(launch(repo_root, *SUBMIT, "--account", "ab1234", mode, "--run-dir", str(blocker),
                                env=OFFLINE))
    assert f"run directory {blocker} is a file, not a directory" in err
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("mode", ["--dry-run", "--emit-sbatch", "--local"])
def test_a_finished_run_is_not_resubmitted_unless_epochs_are_raised(repo_root, tmp_path, mode):
    run_dir, env = make_run(tmp_path)  # finished after 4 of 4 epochs (configs/smoke.yaml: 4 epochs)
    err = one_line_error(launch(repo_root, *SUBMIT, "--account", "ab1234", mode, "--entry", "jobs.probe",
                                "--run-dir", str(run_dir), env={**env, **OFFLINE}))
    assert f"run directory {run_dir} has already finished its 4 epochs (step 120)" in err
    assert "--set train.epochs=6" in err
    if mode != "--local":
        more = launch(repo_root, *SUBMIT, "--account", "ab1234", mode, "--run-dir", str(run_dir),
                      "--set", "train.epochs=6", env={**env, **OFFLINE})
        assert more.returncode == 0, more.stderr


def test_status_refuses_a_folder_that_is_not_a_run_directory(repo_root, tmp_path):
    _, env = make_run(tmp_path)
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    relative = os.path.relpath(plain / "sub" / "..", repo_root)  # resolved relative to the checkout
    err = one_line_error(launch(repo_root, "status", relative, env={**env, **OFFLINE}))
    assert f"{plain.resolve()} is not a run directory" in err


@pytest.mark.parametrize("text,problem", [("{not json", "is not valid JSON"),
                                          ("[1, 2]", "holds a JSON list, not an object"),
                                          ('"finished"', "holds a JSON str, not an object")])
def test_status_and_list_say_what_is_wrong_with_state_json(repo_root, tmp_path, text, problem):
    run_dir, env = make_run(tmp_path)
    (run_dir / "state.json").write_text(text)
    status = launch(repo_root, "status", str(run_dir), env={**env, **OFFLINE})
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr
    assert f"run:    {run_dir / 'state.json'} {problem}" in status.stdout
    assert "no state.json yet" not in status.stdout
    listed = launch(repo_root, "list", env={**env, **OFFLINE})
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert f"note: job 4242: {run_dir / 'state.json'} {problem}" in listed.stdout


@pytest.mark.parametrize("mode", ["--dry-run", "--emit-sbatch", "--local"])
def test_a_resume_that_changes_the_recipe_is_refused_before_submission(repo_root, tmp_path, mode):
    """Issue 22 item 4 on the login node: the trainer's resume rule, applied before anything is submitted."""
    from trainer.core.config import load_config, save_config

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints/last.pt").write_bytes(b"a checkpoint")  # only its presence counts here
    save_config(load_config(repo_root / "configs/smoke.yaml"), run_dir / "config.yaml")
    before = sorted(p.name for p in run_dir.rglob("*"))
    err = one_line_error(launch(repo_root, *SUBMIT, "--account", "ab1234", mode, "--run-dir", str(run_dir),
                                "--set", "run.seed=7", env=OFFLINE))
    assert "run.seed: 0 in the run, 7 now" in err and "--allow-change run.seed" in err
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # nothing frozen, nothing submitted
    if mode == "--local":
        return
    allowed = launch(repo_root, *SUBMIT, "--account", "ab1234", mode, "--run-dir", str(run_dir),
                     "--set", "run.seed=7", "--set", "valid.every_epochs=2", "--allow-change", "run.seed", env=OFFLINE)
    assert allowed.returncode == 0, allowed.stderr
    assert "--allow-change run.seed" in allowed.stdout  # every attempt of the job passes it on


def test_logs_refuses_a_rank_the_job_does_not_have(repo_root, tmp_path):
    run_dir, env = make_run(tmp_path)
    attempts = run_dir / "attempts.jsonl"
    attempts.write_text(attempts.read_text().replace('"restart": 1, "step": 60}', '"restart": 1, "step": 60, '
                                                     '"world_size": 2}'))
    for rank, expected in (("3", "--rank 3: job 4242 has 2 rank(s), 0 to 1"), ("-1", "--rank -1: a rank is 0 or more")):
        for follow in ([], ["--follow"]):
            err = one_line_error(launch(repo_root, "logs", "4242", "--rank", rank, *follow, env={**env, **OFFLINE}))
            assert expected in err


def test_logs_of_a_plain_sbatch_job_read_its_one_log(repo_root, tmp_path):
    """A job of the --emit-sbatch script writes RUN_DIR/slurm/JOB_sbatch.out (every rank), no submitit files."""
    run_dir, env = make_run(tmp_path, job_id="37")
    for name in ("37_0_log.out", "37_1_log.err"):
        (run_dir / "slurm" / name).unlink()
    (run_dir / "slurm" / "37_sbatch.out").write_text("===== attempt 1 of job 37 =====\nplain\n")
    for target in ("37", str(run_dir)):
        proc = launch(repo_root, "logs", target, env={**env, **OFFLINE})
        assert proc.returncode == 0 and proc.stdout.endswith("plain\n"), proc.stdout + proc.stderr


def test_list_into_a_closed_pipe_ends_quietly(repo_root, tmp_path):
    _, env = make_run(tmp_path)
    index = tmp_path / "submissions.jsonl"
    row = json.loads(index.read_text())
    index.write_text("".join(json.dumps({**row, "job_id": str(5000 + i), "run_dir": str(tmp_path / f"r{i}")}) + "\n"
                             for i in range(2000)))  # ~200 kB of rows: more than a pipe holds
    head = shutil.which("head")  # found before OFFLINE empties PATH
    proc = subprocess.run(f"{sys.executable} launch.py list --limit 2000 2>{tmp_path / 'err'} | {head} -3", shell=True,
                          cwd=repo_root, capture_output=True, text=True, env={**os.environ, **env, **OFFLINE},
                          timeout=60)
    assert len(proc.stdout.splitlines()) == 3
    assert (tmp_path / "err").read_text() == ""


def test_lists_step_is_where_the_run_resumes(repo_root, tmp_path):
    """STEP is the last save's step (the checkpoint's sidecar), not state.json's step reached: here the
    trainer saved at step 40 and was killed before state.json said so."""
    import torch

    from trainer.core import checkpoint as ckpt

    run_dir, env = make_run(tmp_path)
    state = {key: {} for key in ckpt.REQUIRED_KEYS}
    state.update(format_version=ckpt.FORMAT_VERSION, epoch=1, step=40, batches_done=0, rng=[ckpt.capture_rng()],
                 generator={"w": torch.zeros(3)}, versions=ckpt.versions(), config={"train": {"epochs": 4}})
    ckpt.save_run_checkpoints(state, run_dir / "checkpoints", ())
    (run_dir / "state.json").write_text(json.dumps({"status": "running", "step": 30, "step_reached": 37, "epoch": 1,
                                                    "epochs": 4}))
    listed = launch(repo_root, "list", env={**env, **OFFLINE}).stdout.splitlines()
    assert listed[0].split()[:4] == ["JOB", "NAME", "STATE", "STEP"]
    assert listed[1].split()[3] == "40", listed


def test_status_flags_validation_loss_improving_while_pesq_declines_and_ssnr_collapse(repo_root, tmp_path):
    """Issue 21 item 5: the seeds' problem, named with its epochs (counted from 1) by ``status``."""
    from trainer.core.runstate import MetricsLog

    run_dir, env = make_run(tmp_path)
    log = MetricsLog(run_dir)
    curve = zip([1.0, 0.9, 0.8, 0.7, 0.6, 0.5], [2.0, 2.2, 2.1, 2.0, 1.9, 2.0], [5.0, 8.0, 10.0, 9.0, 8.5, 7.5],
                strict=True)
    for epoch, (loss, pesq, ssnr) in enumerate(curve):
        log.write({"kind": "step", "step": 10 * epoch + 5, "epoch": epoch, "loss": 1.0})
        log.write({"kind": "epoch", "epoch": epoch, "step": 10 * epoch + 10, "valid_loss": loss, "valid_pesq": pesq,
                   "valid_stoi": 0.8 + 0.01 * epoch, "valid_ssnr": ssnr})
    log.close()
    status = launch(repo_root, "status", str(run_dir), env={**env, **OFFLINE})
    assert status.returncode == 0, status.stderr
    alerts = [line for line in status.stdout.splitlines() if line.startswith("  alert:  ")]
    assert len(alerts) == 2, status.stdout
    assert "validation loss improved while PESQ declined" in alerts[0] and "(epochs 3-5)" in alerts[0]
    assert "SSNR fell more than 20% from its best: 10.00 dB at epoch 3, 7.50 dB at epoch 6" in alerts[1]
