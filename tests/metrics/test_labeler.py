"""The metric pools' helper processes survive SLURM's stop signals (trainer/metrics/labeler.py)."""

import subprocess
import sys

SCRIPT = r"""
import os, signal, subprocess, time
from trainer.metrics.labeler import process_pool
pool = process_pool(1)
assert pool.submit(sum, [1, 2]).result() == 3
children = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True,
                          text=True, check=True).stdout.splitlines()
trackers = [int(line.split()[0]) for line in children if "resource_tracker" in line]
assert len(trackers) == 2, children  # loky's and multiprocessing's
for pid in trackers:
    os.kill(pid, signal.SIGUSR2)
time.sleep(0.5)
states = [open(f"/proc/{pid}/stat").read().split()[2] for pid in trackers]
assert pool.submit(sum, [3, 4]).result() == 7
pool.shutdown(wait=True)
print("tracker states after SIGUSR2:", states)
"""


def test_resource_trackers_survive_a_sigusr2(repo_root):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    states = proc.stdout.split("tracker states after SIGUSR2:")[1]
    assert "Z" not in states and "'" in states, proc.stdout  # alive: not zombies
    assert "died unexpectedly" not in proc.stderr and "KeyError" not in proc.stderr, proc.stderr


BOOTING_SCRIPT = r"""
import os, signal, subprocess, sys
from trainer.core import signals
from trainer.metrics.labeler import process_pool
signals.install()  # as in a rank: the trainer's flag handler, so the workers are told to ignore the stop signals
pool = process_pool(2)
future = pool.submit(sum, [1, 2])  # starts the workers: fresh interpreters, still importing
workers_ps = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(os.getpid())],
                            capture_output=True, text=True, check=True).stdout.splitlines()
children = [line.split(None, 1) for line in workers_ps]  # a worker may be forked but not yet exec'd: not by name
workers = [int(pid) for pid, args in children if "resource_tracker" not in args and not args.startswith("ps ")]
assert len(workers) == 2, workers_ps
for pid in workers:  # SLURM's --signal reaches every process of the step, booting workers too
    os.kill(pid, signal.SIGUSR2)
assert future.result(timeout=60) == 3
assert [pool.submit(sum, [i, 1]).result(timeout=60) for i in range(4)] == [1, 2, 3, 4]
pool.shutdown(wait=True)
print("stop requested in the parent:", signals.stop_requested())
"""


def test_workers_survive_a_sigusr2_while_they_start(repo_root):
    """A worker gets the signal before its initializer has set SIG_IGN (CI: a validation pool started at
    the moment of a requeue's USR2 crashed the rank with exit 1 instead of a save and exit 42)."""
    proc = subprocess.run([sys.executable, "-c", BOOTING_SCRIPT], cwd=repo_root, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stop requested in the parent: False" in proc.stdout, proc.stdout
