"""The training loop's record of where a run stands (trainer/core/loop.py), end to end."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_train import step_losses, train_cmd
from trainer.core import checkpoint as ckpt
from trainer.core.exitcodes import EXIT_INTERRUPTED, EXIT_REQUEUE
from trainer.core.runstate import read_state

LONG_EPOCH = ("train.epochs=2", "train.max_steps_per_epoch=40", "data.batch_size=1")  # 40 steps before a save


def start(repo_root, run_dir):
    return subprocess.Popen(train_cmd(run_dir, *LONG_EPOCH), cwd=repo_root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def signal_after_step(proc, run_dir, after: int, signum) -> int:
    """Send ``signum`` to the run once a step after ``after`` is recorded; returns the last step seen."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [s for s, *_ in step_losses(run_dir)]
        if steps and max(steps) > after:
            os.killpg(proc.pid, signum)
            return max(steps)
        time.sleep(0.02)
    raise AssertionError(f"the run ended (exit {proc.poll()}) or never passed step {after}")


@pytest.mark.slow
def test_after_a_double_ctrl_c_state_and_status_name_the_checkpoint_step(repo_root, tmp_path):
    """Issue 22 item 17: state.json and `launch.py status` said step 3 while last.pt held step 2."""
    run_dir = tmp_path / "run"
    first = start(repo_root, run_dir)
    signal_after_step(first, run_dir, 0, signal.SIGUSR2)  # save mid-epoch, exit 42
    err = first.communicate(timeout=600)[1]
    assert first.returncode == EXIT_REQUEUE, err[-3000:]
    saved = ckpt.load(run_dir / "checkpoints/last.pt")["step"]
    assert 1 <= saved < 40

    second = start(repo_root, run_dir)  # the next periodic save would be at step 40 (every_steps=0)
    seen = signal_after_step(second, run_dir, saved, signal.SIGINT)
    # a second Ctrl-C once the first has surely been handled (a step recorded since): two signals
    # sent at once would reach the process as one
    signal_after_step(second, run_dir, seen, signal.SIGINT)
    err = second.communicate(timeout=600)[1]
    assert second.returncode == EXIT_INTERRUPTED, err[-3000:]
    checkpoint_step = ckpt.load(run_dir / "checkpoints/last.pt")["step"]
    state = read_state(run_dir)
    assert (state["status"], state["step"], state["epoch"]) == ("stopped", checkpoint_step, 0), (state, checkpoint_step)
    assert state["step_reached"] >= checkpoint_step  # where it stopped, for the launcher's attempt records
    status = subprocess.run([sys.executable, "launch.py", "status", str(run_dir)], cwd=repo_root,
                            capture_output=True, text=True, timeout=120)
    assert f"step {saved} " in status.stdout, status.stdout + status.stderr
