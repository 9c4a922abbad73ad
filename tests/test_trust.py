"""What the toolkit guarantees under faults and hostile input, end to end through ``trainer.train``
(real processes, real signals, real checkpoints). The fault-injection and corruption sweeps are
in tests/test_faults.py, a full disk in tests/test_disk_full.py."""

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from tests.conftest import ROOT
from tests.test_train import run_train, step_losses, train_cmd
from trainer.core import checkpoint as ckpt
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED, EXIT_INTERRUPTED
from trainer.core.runstate import read_metrics, read_state


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny finished run (1 epoch, 4 steps); tests work on copies of it."""
    run_dir = tmp_path_factory.mktemp("trust") / "run"
    proc = run_train(ROOT, run_dir, "train.epochs=1")
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


def start(repo_root, run_dir, *overrides):
    return subprocess.Popen(train_cmd(run_dir, *overrides), cwd=repo_root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_step(proc, run_dir, step):
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if any(s >= step for s, *_ in step_losses(run_dir)):
            return
        time.sleep(0.05)
    raise AssertionError(f"step {step} never logged: {proc.poll()}")


def test_flipped_checkpoint_byte_stops_the_resume_in_one_line(repo_root, run_copy):
    """Issue item 1: resuming from a last.pt with one weight set to ~1.6e38 exited 0."""
    path = run_copy / "checkpoints/last.pt"
    weight = next(t for t in torch.load(path, weights_only=True)["generator"].values() if t.numel() >= 8)
    data = bytearray(path.read_bytes())
    where = data.find(weight.numpy().tobytes()[:32]) + 4
    data[where + 3], data[where + 2] = 0x7F, data[where + 2] & 0x7F
    path.write_bytes(bytes(data))
    proc = run_train(repo_root, run_copy, "train.epochs=2")
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{path}: " in errors[0] and "checksum" in errors[0], proc.stderr[-3000:]
    assert path.read_bytes() == bytes(data)  # the evidence is kept
    assert read_state(run_copy)["step"] == 4


def test_empty_last_checkpoint_is_one_line(repo_root, run_copy):
    """Issue item 9: a 0-byte last.pt crashed with IndexError."""
    (run_copy / "checkpoints/last.pt").write_bytes(b"")
    proc = run_train(repo_root, run_copy, "train.epochs=2")
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr[-3000:]
    assert "last.pt: " in proc.stderr and "empty" in proc.stderr and "Traceback" not in proc.stderr


def test_stale_temporaries_of_a_killed_save_are_removed_at_start(repo_root, run_copy):
    """Issue item 10: kill -9 during a save leaves checkpoint-sized .last.pt.*.tmp files."""
    stale = [run_copy / "checkpoints/.last.pt.k1ll3d.tmp", run_copy / ".state.json.a8c2.tmp"]
    stale[0].write_bytes(os.urandom(2**20))
    stale[1].write_text("{")
    for path in stale:
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    unrelated = run_copy / "notes.tmp"
    unrelated.write_text("mine")
    proc = run_train(repo_root, run_copy, "train.epochs=2")
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    assert not any(p.exists() for p in stale) and unrelated.exists()
    assert "removed 2 stale temporary file(s)" in proc.stderr


def test_steps_are_not_logged_twice_after_a_death_before_the_first_checkpoint(repo_root, tmp_path):
    """Issue item 5: checkpoint.every_steps=0, kill -9 after step 2, run again: steps 1-2 appeared twice."""
    run_dir = tmp_path / "run"
    proc = start(repo_root, run_dir, "train.epochs=1")
    wait_for_step(proc, run_dir, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert not (run_dir / "checkpoints/last.pt").exists()
    again = run_train(repo_root, run_dir, "train.epochs=1")
    assert again.returncode == EXIT_FINISHED, again.stderr[-3000:]
    assert [s for s, *_ in step_losses(run_dir)] == [1, 2, 3, 4]
    assert [r["epoch"] for r in read_metrics(run_dir) if r["kind"] == "epoch"] == [0]


def test_ctrl_c_saves_at_the_next_step_boundary_and_is_not_a_requeue(repo_root, tmp_path):
    """Issue item 8: SIGINT gave a raw traceback, no checkpoint and state.json stuck at "running"."""
    run_dir = tmp_path / "run"
    proc = start(repo_root, run_dir, "train.epochs=2")
    wait_for_step(proc, run_dir, 2)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    state = read_state(run_dir)
    assert state["status"] == "stopped" and state["exit_code"] == EXIT_INTERRUPTED, state
    assert ckpt.load(run_dir / "checkpoints/last.pt")["step"] == state["step"] >= 2
    resumed = run_train(repo_root, run_dir, "train.epochs=2")
    assert resumed.returncode == EXIT_FINISHED, resumed.stderr[-3000:]
    assert [s for s, *_ in step_losses(run_dir)] == list(range(1, 9))


def test_second_ctrl_c_stops_at_once_and_state_is_final(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = start(repo_root, run_dir, "train.epochs=2")
    wait_for_step(proc, run_dir, 1)
    os.killpg(proc.pid, signal.SIGINT)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err
    assert read_state(run_dir)["status"] == "stopped"
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / "train.lock").exists()


def test_non_utf8_config_is_one_line(repo_root, tmp_path):
    """Issue item 9: a config file that is not UTF-8 crashed with UnicodeDecodeError."""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"base: " + str(repo_root / "configs/smoke.yaml").encode() + b"\nrun:\n  name: r\xe9sum\xe9\n")
    proc = subprocess.run([*train_cmd(tmp_path / "r")[:3], "--config", str(path), "--run-dir", str(tmp_path / "r")],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT
    assert len(proc.stderr.strip().splitlines()) == 1 and "c.yaml: not UTF-8" in proc.stderr
