"""Helper processes end with their training, whichever way it ends (kill -9 included)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.core.runstate import read_metrics


def session_members(session: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live process of the session ``session`` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
            if int(fields[3]) == session and fields[0] != "Z":
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_a_training_leaves_no_helper_process(repo_root, tmp_path):
    """The PESQ pool worker, the resource trackers and the loader workers go with their training."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--run-dir", str(run_dir),
           *[a for s in ("train.epochs=50", "train.log_every=1", "train.pesq_workers=1", "data.num_workers=1",
                         "data.batch_size=2", "train.tensorboard=false", "checkpoint.every_steps=0")
             for a in ("--set", s)]]
    proc = subprocess.Popen(cmd, cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 600
        helpers: list = []
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r.get("kind") == "step" for r in read_metrics(run_dir)):
                helpers = [m for m in session_members(proc.pid) if m[0] != proc.pid]
                if any("loky" in cmd for _, cmd in helpers):  # the PESQ pool is running
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the training ended before it could be killed"
        assert any("loky" in cmd for _, cmd in helpers), helpers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 120
        left = session_members(proc.pid)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = session_members(proc.pid)
        assert left == [], f"helpers outlived their training: {left}"
    finally:
        for pid, _ in session_members(proc.pid):  # never leave them to the next test
            os.kill(pid, signal.SIGKILL)
