"""What the toolkit guarantees under faults and hostile input, end to end through ``trainer.train``
(real processes, real signals, real checkpoints). The fault-injection and corruption sweeps are
in tests/test_faults.py, a full disk in tests/test_disk_full.py, signals during a training in
tests/test_trust_signals.py."""

import os
import shutil
import subprocess
import time

import pytest
import torch

from tests.conftest import ROOT
from tests.test_train import run_train, train_cmd
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED
from trainer.core.runstate import read_state


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


def test_non_utf8_config_is_one_line(repo_root, tmp_path):
    """Issue item 9: a config file that is not UTF-8 crashed with UnicodeDecodeError."""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"base: " + str(repo_root / "configs/smoke.yaml").encode() + b"\nrun:\n  name: r\xe9sum\xe9\n")
    proc = subprocess.run([*train_cmd(tmp_path / "r")[:3], "--config", str(path), "--run-dir", str(tmp_path / "r")],
                          cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT
    assert len(proc.stderr.strip().splitlines()) == 1 and "c.yaml: not UTF-8" in proc.stderr
