"""launch.py compare (jobs/report/compare.py): the config diff, the best validation values with their epochs,
the sort order, test scores, --csv and --plot, all without torch."""

import csv
import json
import os
import subprocess
import sys

import pytest

from jobs.report import compare

OFFLINE = {"PATH": "/nonexistent"}


def make_run(folder, name, lr, pesq_curve, status="finished", extra_config="", test=None, loss_curve=None):
    run_dir = folder / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"run:\n  name: {name}\n  dir: {run_dir}\noptim:\n  lr: {lr}\n"
                                         f"  betas: [0.8, 0.99]\ntrain:\n  epochs: {len(pesq_curve)}\n{extra_config}")
    lines = []
    for epoch, pesq in enumerate(pesq_curve):
        lines += [json.dumps({"kind": "step", "step": 10 * epoch + k, "loss": 1.0}) for k in range(1, 4)]
        record = {"kind": "epoch", "epoch": epoch, "step": 10 * epoch + 3, "valid_pesq": pesq,
                  "valid_stoi": 0.9 - 0.01 * epoch, "valid_ssnr": None, "valid_composite": pesq / 10,
                  "valid_loss": (loss_curve or [1.0] * len(pesq_curve))[epoch]}
        lines.append(json.dumps(record))
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (run_dir / "state.json").write_text(json.dumps({"status": status, "epochs": len(pesq_curve)}))
    if test:
        (run_dir / "test_scores.json").write_text(json.dumps({"summaries": test}))
    return run_dir


def launch(repo_root, *args):
    return subprocess.run([sys.executable, "launch.py", *args], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, **OFFLINE, "SEGAN_JOB_INDEX": os.devnull}, timeout=120)


def test_only_the_keys_that_differ_are_columns():
    configs = [{"optim.lr": 1e-3, "optim.betas": [0.8, 0.99], "run.dir": "/a", "train.epochs": 4},
               {"optim.lr": 2e-3, "optim.betas": [0.8, 0.99], "run.dir": "/b", "train.epochs": 4, "loss.w_gan": 0.1}]
    assert compare.differing_keys(configs) == ["optim.lr", "loss.w_gan"]  # run.dir is left out
    assert compare.differing_keys([configs[0], dict(configs[0])]) == []
    assert compare.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}


def test_best_values_with_their_epochs_and_the_sort_order(tmp_path):
    runs = [compare.load_run(make_run(tmp_path, name, 1e-3, curve, loss_curve=loss))
            for name, curve, loss in (("a", [1.2, 1.9, 1.7], [0.5, 0.4, 0.3]), ("b", [2.1, 2.0], [0.6, 0.2]),
                                      ("c", [], None))]
    for run in runs:
        run.label = run.run_dir.name
    assert runs[0].best("pesq") == (1.9, 1) and runs[1].best("pesq") == (2.1, 0)
    assert runs[0].best("loss") == (0.3, 2) and runs[1].best("loss") == (0.2, 1)  # lower is better
    assert runs[0].best("ssnr") is None and runs[2].best("pesq") is None  # null values, no epoch records
    assert [r.label for r in compare.sort_runs(runs, "pesq")] == ["b", "a", "c"]  # without the metric: last
    assert [r.label for r in compare.sort_runs(runs, "loss")] == ["b", "a", "c"]
    assert [r.label for r in compare.sort_runs(runs, "stoi")] == ["a", "b", "c"]
    assert runs[0].last_epoch == 2 and runs[2].last_epoch is None


def test_labels_are_the_shortest_distinct_path_suffixes(tmp_path):
    paths = [tmp_path / "s1" / "lr=1", tmp_path / "s2" / "lr=1", tmp_path / "s2" / "lr=2"]
    assert compare.labels(paths) == ["s1/lr=1", "s2/lr=1", "lr=2"]


def test_compare_command_table_test_scores_csv_and_plot(repo_root, tmp_path):
    test = {"noisy": {"pesq": 1.97}, "best_pesq": {"pesq": 2.41, "stoi": 0.93, "ssnr": 8.5, "csig": 3.5},
            "last": {"pesq": 2.3}}
    make_run(tmp_path, "slow", "0.001", [1.1, 1.4], test=test)
    make_run(tmp_path, "fast", "0.002", [1.5, 1.6, 1.55], status="checkpointed", extra_config="loss:\n  w_gan: 0.3\n")
    out_csv, out_png = tmp_path / "t.csv", tmp_path / "t.png"
    proc = launch(repo_root, "compare", str(tmp_path / "slow"), str(tmp_path / "fast"), "--csv", str(out_csv),
                  "--plot", str(out_png))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("2 run(s), sorted by best validation pesq (higher is better")
    header = lines[1].split()
    assert header[:5] == ["RUN", "run.name", "optim.lr", "train.epochs", "loss.w_gan"]
    assert header[-4:] == ["TEST_CKPT", "TEST_PESQ", "TEST_STOI", "TEST_SSNR"]
    fast, slow = lines[2].split(), lines[3].split()
    # epochs counted from 1, as status and list count them (issue 22 item 19): index 1 is epoch 2
    assert fast[:8] == ["fast", "fast", "0.002", "3", "0.3", "1.600", "(2)", "0.900"]
    assert fast[-6:] == ["3", "checkpointed", "-", "-", "-", "-"]
    assert slow[:5] == ["slow", "slow", "0.001", "2", "-"] and slow[-4:] == ["best_pesq", "2.410", "0.930", "8.500"]
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["run"] for r in rows] == ["fast", "slow"]
    assert rows[1]["best_pesq"] == "1.4" and rows[1]["epoch_pesq"] == "2" and rows[1]["test_csig"] == "3.5"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_loss = launch(repo_root, "compare", str(tmp_path / "slow"), str(tmp_path / "fast"), "--metric", "loss")
    assert "LOSS (ep)" in by_loss.stdout.splitlines()[1] and "lower is better" in by_loss.stdout


def test_a_run_without_a_config_is_noted_not_diffed(repo_root, tmp_path):
    """Issue 22 item 19: a run lacking config.yaml listed every key as differing."""
    make_run(tmp_path, "a", "0.001", [1.0, 1.2])
    make_run(tmp_path, "b", "0.002", [1.1])
    (make_run(tmp_path, "bare", "0.001", [1.3]) / "config.yaml").unlink()
    proc = launch(repo_root, "compare", *(str(tmp_path / n) for n in ("a", "b", "bare")))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[1].split()[:3] == ["RUN", "run.name", "optim.lr"] and "train.epochs" in lines[1].split()
    assert "optim.betas" not in lines[1]  # the same in every run that has a config
    bare = next(line.split() for line in lines[2:] if line.startswith("bare "))
    assert bare[1:4] == ["-", "-", "-"]
    assert lines[-1] == "(bare: no config.yaml or slurm/submitted_config.yaml: its config is not compared)"


@pytest.mark.parametrize("args,expected", [
    (["--metric", "nosuch"], "--metric 'nosuch': no run has validation values valid_nosuch (they have: "),
    (["--metric", "PESQ;rm"], "--metric 'PESQ;rm': give a validation metric name"),
])
def test_compare_refusals_are_one_line(repo_root, tmp_path, args, expected):
    make_run(tmp_path, "a", "0.001", [1.0])
    proc = launch(repo_root, "compare", str(tmp_path / "a"), *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and expected in proc.stderr


def test_compare_does_not_import_torch_or_matplotlib_without_plot(repo_root, tmp_path):
    make_run(tmp_path, "a", "0.001", [1.0])
    code = ("import sys, runpy\nsys.argv = ['launch.py', 'compare', sys.argv[1]]\n"
            "try:\n    runpy.run_path('launch.py', run_name='__main__')\nexcept SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code\n"
            "assert 'torch' not in sys.modules and 'matplotlib' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a")], cwd=repo_root, capture_output=True,
                          text=True, env={**os.environ, **OFFLINE, "SEGAN_JOB_INDEX": os.devnull})
    assert proc.returncode == 0, proc.stderr
