"""One owner per run directory (trainer/core/lock.py): real processes, real signals, real squeue."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from trainer.core.env import DistEnv
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_REQUEUE

LOCK_FILE = "train.lock"  # trainer.core.lock.LOCK_FILE (a test below checks the two agree)


@pytest.fixture
def log_text(capsys):
    """The toolkit's log lines of this test (the logger is rebound to this test's captured stderr)."""
    from trainer.core.log import setup_logging

    setup_logging(0)
    yield lambda: capsys.readouterr().err
    setup_logging(0)  # not bound to this test's stream any more


def acquire(*args, **kwargs):
    from trainer.core.lock import acquire as real

    return real(*args, **kwargs)


def lock_held():
    from trainer.core.lock import LockHeld

    return LockHeld


HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from trainer.core.env import DistEnv
from trainer.core.lock import acquire
lock = acquire({run_dir!r}, DistEnv(job_id={job_id!r}))
print("locked", flush=True)
time.sleep(600)
"""


def start_holder(repo_root, run_dir, job_id=None):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(repo_root), run_dir=str(run_dir),
                                                                 job_id=job_id)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_owner_refused_naming_the_holder_then_dead_holder_taken_over(repo_root, tmp_path, log_text):
    holder = start_holder(repo_root, tmp_path, job_id="4711")
    try:
        with pytest.raises(lock_held()) as err:
            acquire(tmp_path, DistEnv())
        message = str(err.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "4711" in message
        assert "\n" not in message
    finally:
        holder.kill()  # kill -9: no chance to release
        holder.wait()
    assert (tmp_path / LOCK_FILE).exists()
    lock = acquire(tmp_path, DistEnv())
    err = log_text()
    assert "stale" in err and f"pid {holder.pid}" in err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()


def _foreign_lock(run_dir, **fields):
    record = {"host": "no-such-node-42", "pid": 12345, "job_id": None, "restart_count": 0,
              "started": "2026-01-01T00:00:00+00:00", "token": "x"} | fields
    (run_dir / LOCK_FILE).write_text(json.dumps(record))


def test_lock_file_name():
    from trainer.core.lock import LOCK_FILE as real

    assert real == LOCK_FILE


def test_lock_of_another_host_without_slurm_is_refused_without_hanging(tmp_path, monkeypatch):
    _foreign_lock(tmp_path)
    with pytest.raises(lock_held(), match=r"no-such-node-42.*pid 12345"):
        acquire(tmp_path, DistEnv())
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no squeue on this "login node"
    _foreign_lock(tmp_path, job_id="123")
    with pytest.raises(lock_held(), match=r"SLURM job 123"):
        acquire(tmp_path, DistEnv())


@pytest.mark.skipif(shutil.which("squeue") is None, reason="no squeue on PATH (no SLURM here)")
def test_lock_of_a_slurm_job_that_no_longer_runs_is_taken_over(tmp_path, log_text):
    probe = subprocess.run(["squeue", "-h", "-j", "999999999", "-o", "%T"], capture_output=True, text=True,
                           timeout=30)
    if "Invalid job id" not in probe.stderr and probe.stdout.strip():
        pytest.skip(f"squeue does not answer for an unknown job here: {probe.stderr.strip()[:200]}")
    _foreign_lock(tmp_path, job_id="999999999")
    acquire(tmp_path, DistEnv()).release()
    err = log_text()
    assert "SLURM job 999999999 is no longer running" in err and "stale" in err


def test_earlier_attempt_of_the_same_requeued_job_is_stale(tmp_path, log_text):
    _foreign_lock(tmp_path, job_id="555", restart_count=0)
    acquire(tmp_path, DistEnv(job_id="555", restart_count=1)).release()
    assert "earlier attempt" in log_text()


@pytest.mark.slow
def test_two_trainings_on_one_run_directory(repo_root, tmp_path):
    """Issue item 2: the same command started twice at once; the second is refused in one line."""
    from tests.test_train import run_train, step_losses, train_cmd

    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 400 steps: the first run is still training when the second starts, however fast the machine;
    # the SIGTERM below ends it.
    long_run = "train.epochs=100"
    first = subprocess.Popen(train_cmd(run_dir, long_run), cwd=repo_root, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        while not step_losses(run_dir) and first.poll() is None:
            time.sleep(0.1)
        second = run_train(repo_root, run_dir, long_run)
        assert second.returncode == EXIT_BAD_INPUT, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use" in lines[0] and f"pid {first.pid}" in lines[0], second.stderr
        assert socket.gethostname() in lines[0]
    finally:
        os.killpg(first.pid, signal.SIGTERM)
        _, err = first.communicate(timeout=600)
    assert first.returncode == EXIT_REQUEUE, err[-3000:]
    assert not (run_dir / LOCK_FILE).exists()
    steps = [s for s, *_ in step_losses(run_dir)]
    assert steps == sorted(set(steps))
    assert "in use" not in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_ddp_ranks_share_rank0_verdict(repo_root, tmp_path):
    """Both ranks of a torchrun job refuse a held run directory; none waits in a collective."""
    from tests.test_train import torchrun_cmd

    holder = start_holder(repo_root, tmp_path / "run")
    try:
        proc = subprocess.run(torchrun_cmd(tmp_path / "run", "train.epochs=1"), cwd=repo_root,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                              timeout=600)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    refusals = [line for line in proc.stderr.splitlines() if "in use by another training" in line]
    assert len(refusals) == 1 and f"pid {holder.pid}" in refusals[0], proc.stderr[-3000:]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
