"""Inductor's compile workers (train.compile) survive SLURM's USR2 (trainer/core/runtime.py)."""

import subprocess
import sys

import pytest

SCRIPT = r"""
import os, signal, subprocess, time
import torch._inductor.config as inductor_config
from trainer.core import signals
from trainer.core.runtime import start_compile_workers
from torch._inductor.async_compile import AsyncCompile

signals.install()  # the rank's flag handlers, as in training
inductor_config.compile_threads = 2  # a pool of worker processes whatever this machine's core count
start_compile_workers()
AsyncCompile.wait_pool_ready(600)  # hang guards only: 253 s for this test at load ~20

def descendants():
    rows = [line.split(None, 2) for line in subprocess.run(["ps", "-e", "-o", "pid=,ppid=,args="],
                                                          capture_output=True, text=True).stdout.splitlines()]
    found, grew = {os.getpid()}, True
    while grew:
        grew = False
        for pid, ppid, args in ((int(r[0]), int(r[1]), r[2] if len(r) > 2 else "") for r in rows):
            if ppid in found and pid not in found and not args.startswith("ps "):
                found.add(pid)
                grew = True
    return sorted(found - {os.getpid()})

pool = descendants()
assert len(pool) >= 2, pool  # the sidecar and its workers
def blocked(pid):
    line = [l for l in open(f"/proc/{pid}/status") if l.startswith("SigBlk:")][0]
    return int(line.split()[1], 16)
masks = {pid: blocked(pid) for pid in pool}
for pid in pool:
    os.kill(pid, signal.SIGUSR2)  # SLURM's --signal reaches every process of the step
time.sleep(2)
alive = [pid for pid in pool if os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"]
print("alive", len(alive), "of", len(pool))
print("usr2 blocked", all(m >> (signal.SIGUSR2 - 1) & 1 for m in masks.values()))
print("term blocked", any(m >> (signal.SIGTERM - 1) & 1 for m in masks.values()))
print("stop requested in the rank", signals.stop_requested())
"""


@pytest.mark.slow  # inductor's worker pool: about 17 s
def test_compile_workers_survive_a_sigusr2_and_still_stop_on_sigterm(repo_root):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=repo_root, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    alive = proc.stdout.split("alive ", 1)[1].split()
    assert alive[0] == alive[2], proc.stdout  # every process of the pool
    assert "usr2 blocked True" in proc.stdout and "term blocked False" in proc.stdout, proc.stdout
    assert "stop requested in the rank False" in proc.stdout, proc.stdout
    assert "unclean exit" not in proc.stderr, proc.stderr[-3000:]
