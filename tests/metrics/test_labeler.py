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
