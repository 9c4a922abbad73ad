"""launch.py sweep without a cluster: the grid's expansion and the element names (jobs/submit/grid.py), the
checks that refuse a whole sweep before anything is written, --dry-run, and how status/list/compare
find a sweep and its elements (sweep.json, the index)."""

import json
import os
import subprocess
import sys

import pytest

from jobs import rundir, runs
from jobs.report import outcome
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.submit import grid

OFFLINE = {"PATH": "/nonexistent"}
SWEEP = ["sweep", "--cluster", "local", "--config", "configs/smoke.yaml"]


def launch(repo_root, *args, env=None):
    return subprocess.run([sys.executable, "launch.py", *args], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


# ----- grid expansion and naming (pure) ---------------------------------------------------------

def test_every_combination_in_order_first_axis_slowest():
    axes = grid.parse_grid(["loss.w_gan=0.05,0.1,0.3", "loss.gan_start_fraction=0.5,0.6"])
    elements = grid.expand(axes)
    assert [e.index for e in elements] == list(range(6))
    assert [e.name for e in elements] == [
        "w_gan=0.05,gan_start_fraction=0.5", "w_gan=0.05,gan_start_fraction=0.6",
        "w_gan=0.1,gan_start_fraction=0.5", "w_gan=0.1,gan_start_fraction=0.6",
        "w_gan=0.3,gan_start_fraction=0.5", "w_gan=0.3,gan_start_fraction=0.6"]
    assert elements[3].overrides == ("loss.w_gan=0.1", "loss.gan_start_fraction=0.6")


def test_values_with_commas_inside_brackets_or_quotes_stay_whole():
    assert grid.split_values("[0.8,0.99],[0.9,0.999]") == ["[0.8,0.99]", "[0.9,0.999]"]
    assert grid.split_values("'a,b',c") == ["'a,b'", "c"]
    axes = grid.parse_grid(["optim.betas=[0.8,0.99],[0.9,0.999]", "optim.lr=1e-4,2e-4"])
    names = [e.name for e in grid.expand(axes)]
    assert names[0] == "betas=0.8_0.99,lr=1e-4" and names[-1] == "betas=0.9_0.999,lr=2e-4"


def test_names_use_the_whole_key_where_two_keys_share_a_last_part():
    axes = grid.parse_grid(["model.num_channels=8,16", "discriminator.num_channels=4,8"])
    assert grid.expand(axes)[0].name == "model.num_channels=8,discriminator.num_channels=4"


def test_names_keep_only_safe_characters():
    assert grid.safe_value("/data/a b;$(x)") == "data_a_b_x"
    assert grid.safe_value("'quoted'") == "quoted"
    axes = grid.parse_grid(["data.train_dir=/d/a,/d/b", "optim.lr=1e-3,2e-3"])
    for element in grid.expand(axes):
        assert all(c.isalnum() or c in "._+-=," for c in element.name), element.name


@pytest.mark.parametrize("flags,fixed,expected", [
    ([], [], "a sweep needs at least one --grid"),
    (["loss.w_gan"], [], "expected section.key=v1,v2"),
    (["w_gan=0.1,0.2"], [], "expected section.key=v1,v2"),
    (["loss.w_gan=0.1,,0.2"], [], "an empty value"),
    (["loss.w_gan=0.1,0.1"], [], "value '0.1' is listed twice"),
    (["loss.w_gan=0.1", "loss.w_gan=0.2"], [], "given by two --grid flags"),
    (["loss.w_gan=0.1,0.2"], ["loss.w_gan=0.3"], "also set with --set"),
])
def test_bad_grid_flags_are_one_line(flags, fixed, expected):
    with pytest.raises(LaunchError, match=expected):
        grid.parse_grid(flags, fixed)


def test_values_that_give_the_same_name_are_refused():
    axes = grid.parse_grid(["data.train_dir=a/b,a_b"])
    with pytest.raises(LaunchError, match="give the same run directory name 'train_dir=a_b'"):
        grid.expand(axes)


# ----- the launcher: refused before anything is written, dry run --------------------------------

def test_a_bad_value_in_one_element_refuses_the_whole_sweep(repo_root, tmp_path):
    err = one_line_error(launch(repo_root, *SWEEP, "--grid", "loss.w_gan=0.1,-1", "--grid", "optim.lr=1e-3,2e-3",
                                "--run-dir", str(tmp_path / "sweep"), "--dry-run", env=OFFLINE))
    assert "sweep element 2 (w_gan=-1,lr=1e-3)" in err and "loss.w_gan" in err and "nothing was submitted" in err
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("extra,expected", [
    (["--grid", "loss.w_gan=0.1"], "the grid has one combination (w_gan=0.1)"),
    (["--grid", "loss.no_such_key=1,2"], "sweep element 0 (no_such_key=1): "),
    (["--grid", "loss.w_gan=0.1,0.2", "--max-parallel", "0"], "--max-parallel 0: must be at least 1"),
    (["--grid", "loss.w_gan=0.1,0.2", "--evaluate-after", "/nonexistent/test"],
     "--evaluate-after /nonexistent/test: not a folder"),
    (["--grid", "loss.w_gan=0.1,0.2", "--name", "a b"], "--name 'a b'"),
    # issue 22 item 13: a newline made the rest a YAML comment (0.2 silently) and a raw #SBATCH line
    (["--grid", "loss.w_gan=0.1,0.2\n#SBATCH --nodes=64"], "--grid 'loss.w_gan=0.1,0.2\\n#SBATCH --nodes=64': "
                                                           "contains a control character"),
    # duplicates judged by value once read, not by text
    (["--grid", "loss.w_gan=0.1,0.10"], "--grid: loss.w_gan=0.1 and 0.10 are the same value once read"),
    (["--grid", "loss.w_gan=0.1,1e-1", "--grid", "optim.lr=1e-3,2e-3"],
     "--grid: loss.w_gan=0.1 and 1e-1 are the same value once read: elements w_gan=0.1,lr=1e-3 and "
     "w_gan=1e-1,lr=1e-3 would train the same run"),
])
def test_sweep_refusals_are_one_line(repo_root, tmp_path, extra, expected):
    err = one_line_error(launch(repo_root, *SWEEP, "--run-dir", str(tmp_path / "sweep"), "--dry-run", *extra,
                                env=OFFLINE))
    assert expected in err
    assert not (tmp_path / "sweep").exists()


def test_sweep_dry_run_prints_the_combinations_and_one_array_script(repo_root, tmp_path):
    root = tmp_path / "sweep"
    proc = launch(repo_root, *SWEEP, "--grid", "loss.w_gan=0.05,0.1,0.3", "--grid", "loss.gan_start_fraction=0.5,0.6",
                  "--run-dir", str(root), "--max-parallel", "2", "--dry-run", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "6 elements (3 x 2)" in out
    assert "    3  w_gan=0.1,gan_start_fraction=0.6   --set loss.w_gan=0.1 --set loss.gan_start_fraction=0.6" in out
    assert "#SBATCH --array=0-5%2" in out and out.count("#SBATCH --array") == 1
    assert f"#SBATCH --output={root}/slurm/%A_%a_0_log.out" in out
    assert f"export PYTHONPATH={root}/slurm/code" in out and "PYTHONSAFEPATH=1" in out
    assert not root.exists()  # nothing written


def test_a_sweep_root_is_not_a_run_directory_and_another_grid_is_refused(repo_root, tmp_path):
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"name": "s", "grid": [{"key": "loss.w_gan", "values": ["0.1", "0.2"]}],
                                                 "elements": []}))
    err = one_line_error(launch(repo_root, *SWEEP, "--grid", "loss.w_gan=0.1,0.3", "--run-dir", str(root), "--dry-run",
                                env=OFFLINE))
    assert "holds a sweep with another grid (--grid loss.w_gan=0.1,0.2)" in err
    same = launch(repo_root, *SWEEP, "--grid", "loss.w_gan=0.1,0.2", "--run-dir", str(root), "--dry-run", env=OFFLINE)
    assert same.returncode == 0, same.stderr  # the same grid continues the sweep
    err = one_line_error(launch(repo_root, "--cluster", "local", "--config", "configs/smoke.yaml", "--run-dir",
                                str(root), "--dry-run", env=OFFLINE))
    assert "is the root of a sweep" in err


def test_a_resubmitted_sweep_skips_its_finished_elements(repo_root, tmp_path):
    """The same grid to the same root continues the sweep: a finished element is skipped (named, with its
    step) and the array holds only the others; when all have finished, one line says so."""
    root = tmp_path / "sweep"
    flags = [*SWEEP, "--grid", "loss.w_gan=0.1,0.2,0.3", "--run-dir", str(root), "--dry-run"]
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"name": "s", "grid": [{"key": "loss.w_gan",
                                                                          "values": ["0.1", "0.2", "0.3"]}],
                                                 "elements": []}))
    for name in ("w_gan=0.1", "w_gan=0.3"):
        (root / name).mkdir()
        (root / name / "state.json").write_text(json.dumps({"status": "finished", "step": 16, "epochs": 4}))
    out = launch(repo_root, *flags, env=OFFLINE)
    assert out.returncode == 0, out.stderr
    assert "2 finished, so one job (not an array) for the other; each element" in out.stdout
    assert "    0  w_gan=0.1  --set loss.w_gan=0.1   (finished its 4 epochs (step 16): skipped)" in out.stdout
    assert "    1  w_gan=0.2  --set loss.w_gan=0.2\n" in out.stdout
    assert "#SBATCH --array" not in out.stdout  # the one element left is a job of its own
    assert f"#SBATCH --output={root}/w_gan=0.2/slurm/%j_0_log.out" in out.stdout
    more = launch(repo_root, *flags, "--set", "train.epochs=5", env=OFFLINE)  # train the finished ones further
    assert more.returncode == 0 and "#SBATCH --array=0-2" in more.stdout and "skipped" not in more.stdout
    (root / "w_gan=0.3" / "state.json").unlink()  # two left: an array of the two, in element order
    two = launch(repo_root, *flags, env=OFFLINE)
    assert "1 finished, so one job array 0-1 of the other 2 (task i runs the i-th element not skipped)" in two.stdout
    assert "#SBATCH --array=0-1%2\n" in two.stdout
    (root / "w_gan=0.3" / "state.json").write_text(json.dumps({"status": "finished", "step": 16, "epochs": 4}))
    (root / "w_gan=0.2").mkdir()
    (root / "w_gan=0.2" / "state.json").write_text(json.dumps({"status": "finished", "step": 16, "epochs": 4}))
    err = one_line_error(launch(repo_root, *flags, env=OFFLINE))
    assert "every element of sweep" in err and "has finished its epochs" in err and "train.epochs" in err


# ----- a sweep on disk: status, list, logs, compare find it -------------------------------------

def fake_sweep(tmp_path, array="500", states=("finished", "running")):
    """A 2-element sweep as the launcher and the jobs leave it (no Slurm)."""
    root = tmp_path / "runs" / "lr"
    index = tmp_path / "submissions.jsonl"
    elements = []
    for i, (status, lr) in enumerate(zip(states, ("1e-3", "2e-3"), strict=True)):
        run_dir = root / f"lr={lr}"
        (run_dir / "slurm").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"run:\n  name: lr\noptim:\n  lr: {lr}\n  name: adamw\n")
        (run_dir / "state.json").write_text(json.dumps({"status": status, "step": 10 * (i + 1), "epoch": i + 1,
                                                        "epochs": 2, "best": {"pesq": 2.0 + i}}))
        (run_dir / "metrics.jsonl").write_text("".join(
            json.dumps({"kind": "epoch", "epoch": e, "step": 5 * (e + 1), "valid_pesq": 1.5 + i + 0.25 * e,
                        "valid_stoi": 0.8 - 0.01 * e}) + "\n" + json.dumps({"kind": "step", "step": 5 * (e + 1)}) + "\n"
            for e in range(2)))
        job = f"{array}_{i}"
        rundir.append_jsonl(index, {"job_id": job, "run_dir": str(run_dir), "name": "lr", "cluster": "local",
                                  "submitted": "x", "sweep": str(root)})
        (root / "slurm").mkdir(exist_ok=True)
        (root / "slurm" / f"{job}_0_log.out").write_text(f"log of element {i}\n")
        elements.append({"index": i, "name": run_dir.name, "run_dir": str(run_dir), "job_id": job,
                         "overrides": [f"optim.lr={lr}"]})
    (root / "sweep.json").write_text(json.dumps({"name": "lr", "root": str(root), "array_job_id": array,
                                                 "grid": [{"key": "optim.lr", "values": ["1e-3", "2e-3"]}],
                                                 "elements": elements}))
    return root, {"SEGAN_JOB_INDEX": str(index), **OFFLINE}


def test_job_files_and_folders_of_array_elements(tmp_path):
    assert rundir.job_of_file("500_1_0_log.out") == "500_1" and rundir.job_of_file("42_3_log.err") == "42"
    assert rundir.job_of_file("500_submission.sh") == "500" and rundir.job_of_file("500_2.cancelled") == "500_2"
    assert rundir.job_of_file("submitted_config.yaml") is None and rundir.job_of_file("code.json") is None
    root, _ = fake_sweep(tmp_path)
    element = root / "lr=1e-3"
    assert RunDir(element).log_path("500_0") == root / "slurm" / "500_0_0_log.out"
    assert RunDir(element).log_path("77") == element / "slurm" / "77_0_log.out"  # a job of its own


def test_status_list_logs_and_compare_of_a_sweep(repo_root, tmp_path):
    root, env = fake_sweep(tmp_path)
    for target in (str(root), "lr", "500"):
        status = launch(repo_root, "status", target, env=env)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith("sweep lr  array 500  2 elements")
        rows = [line.split() for line in lines if line.strip().startswith("lr=")]
        assert [r[:4] for r in rows] == [["lr=1e-3", "500_0", "finished", "10"], ["lr=2e-3", "500_1", "running", "20"]]
    listed = launch(repo_root, "list", env=env).stdout.splitlines()
    assert listed[1].startswith("sweep lr: array 500, 2 runs (")
    assert listed[2].split()[:3] == ["500_0", "lr=1e-3", "finished"]
    assert launch(repo_root, "logs", "500_1", env=env).stdout == "log of element 1\n"
    compare = launch(repo_root, "compare", "lr", env=env)
    assert compare.returncode == 0, compare.stderr
    rows = compare.stdout.splitlines()
    assert rows[1].split()[:2] == ["RUN", "optim.lr"]
    assert [r.split()[:4] for r in rows[2:]] == [["lr=2e-3", "2e-3", "2.750", "(2)"],
                                                 ["lr=1e-3", "1e-3", "1.750", "(2)"]]  # epochs 1-based


def test_the_index_is_read_again_once_it_changes(tmp_path, monkeypatch):
    """submissions() keeps the index's records while the file is unchanged (compare asks once per run),
    and a submission recorded meanwhile is seen at once."""
    monkeypatch.setenv("SEGAN_JOB_INDEX", str(tmp_path / "submissions.jsonl"))
    assert runs.submissions() == []
    runs.record_submission("11", tmp_path / "a", "a", "local")
    assert [s["job_id"] for s in runs.submissions()] == ["11"]
    runs.record_submission("12_0", tmp_path / "b", "b", "local", sweep=str(tmp_path))
    assert [s["job_id"] for s in runs.submissions()] == ["11", "12_0"]
    runs.submissions().clear()  # a caller changing its list does not change the next answer
    assert len(runs.submissions()) == 2


def test_a_resubmission_of_one_element_is_a_job_not_an_array():
    """A resubmitted sweep with one element left submits a plain job: list, status and cancel say 'job'."""
    first = {"arrays": ["500"], "evaluation_arrays": ["501"],
             "elements": [{"job_id": "500_0", "evaluation_job_id": "501_0"},
                          {"job_id": "500_1", "evaluation_job_id": "501_1"}]}
    assert runs.sweep_submissions(first) == "array 500"
    assert runs.sweep_submissions(first, "evaluation_arrays", "evaluation_job_id") == "array 501"
    again = {"arrays": ["500", "510"], "evaluation_arrays": ["501", "511"],
             "elements": [{"job_id": "500_0", "evaluation_job_id": "501_0", "skipped": "finished"},
                          {"job_id": "510", "evaluation_job_id": "511"}]}
    assert runs.sweep_submissions(again) == "array 500 and job 510"
    assert runs.sweep_submissions(again, "evaluation_arrays", "evaluation_job_id") == "array 501 and job 511"
    twice = {"arrays": ["500", "520"], "elements": [{"job_id": "520_0"}, {"job_id": "520_1"}]}
    assert runs.sweep_submissions(twice) == "arrays 500, 520"


def test_a_sweep_element_is_continued_by_the_sweep_command(tmp_path):
    """A cancelled (or timed-out, preempted) sweep element is continued by rerunning the sweep's command,
    which skips the finished elements, not by resubmitting its run directory alone."""
    root = tmp_path / "sweep"
    (root / "lr=1").mkdir(parents=True)
    (root / "sweep.json").write_text(json.dumps({
        "command": "python launch.py sweep --config c.yaml --grid optim.lr=1,2 --run-dir " + str(root),
        "elements": [{"run_dir": str(root / "lr=1"), "job_id": "500_0"}]}))
    assert runs.resubmit_advice(root / "lr=1") == (
        "rerun the sweep's command, which skips its finished elements (python launch.py sweep --config c.yaml "
        f"--grid optim.lr=1,2 --run-dir {root})")
    assert runs.resubmit_advice(tmp_path / "alone") == "resubmit with the same --run-dir"
    got = outcome.describe("500_0", None, None, {"State": "CANCELLED by 0", "Start": "2026-01-01T00:00:00"}, {}, [],
                           12, resubmit=runs.resubmit_advice(root / "lr=1"))
    assert got.headline.endswith(f"the run is saved at step 12: {runs.resubmit_advice(root / 'lr=1')} to continue")
