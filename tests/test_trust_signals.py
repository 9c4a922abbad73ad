"""Signals and deaths during a training, end to end through ``trainer.train`` (real processes, real
signals): Ctrl-C, a second Ctrl-C, kill -9 before the first checkpoint. Each waits for a step record
before it acts (docs/testing.md, the speed-independence rule). Split from tests/test_trust.py, whose
tests share one module-scoped run and so run on one worker."""

import os
import signal
import subprocess
import time

import pytest

from tests.test_train import run_train, step_losses, train_cmd
from trainer.core import checkpoint as ckpt
from trainer.core.exitcodes import EXIT_FINISHED, EXIT_INTERRUPTED
from trainer.core.runstate import read_metrics, read_state


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
