import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from trainer.core import checkpoint as ckpt


def full_state(**extra):
    state = {key: {} for key in ckpt.REQUIRED_KEYS}
    state.update(format_version=ckpt.FORMAT_VERSION, epoch=1, step=10, batches_done=0, rng=[ckpt.capture_rng()],
                 generator={"w": torch.arange(6.0)}, versions=ckpt.versions(),
                 config={"task": "speech_enhancement", "model": {"name": "bsrnn", "num_channels": 16}})
    state.update(extra)
    return state


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(full_state(), path)
    loaded = ckpt.load(path)
    assert torch.equal(loaded["generator"]["w"], torch.arange(6.0)) and loaded["step"] == 10
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_rng_capture_restore_is_exact():
    import random

    state = ckpt.capture_rng()
    first = (random.random(), np.random.rand(), torch.rand(3))
    ckpt.restore_rng(state)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])


def test_missing_keys_named(tmp_path):
    path = tmp_path / "x.pt"
    state = full_state()
    del state["opt_d"], state["rng"]
    torch.save(state, path)
    with pytest.raises(ckpt.CheckpointError, match=r"x\.pt: not a complete training checkpoint; missing keys: opt_d, rng"):
        ckpt.load(path)


def test_corrupted_file_named(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_atomic(full_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="last.pt: not a readable checkpoint"):
        ckpt.load(path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ckpt.CheckpointError, match="not a training checkpoint"):
        ckpt.load(path)
    with pytest.raises(ckpt.CheckpointError, match="checkpoint not found"):
        ckpt.load(tmp_path / "nope.pt")


def test_architecture_mismatch_lists_keys():
    saved = {"task": "speech_enhancement", "model": {"name": "bsrnn", "num_channels": 16}, "stft": {"n_fft": 400}}
    current = {"task": "speech_enhancement", "model": {"name": "bsrnn", "num_channels": 32}, "stft": {"n_fft": 400}}
    assert ckpt.architecture_mismatches(saved, current) == ["model.num_channels: checkpoint 16, config 32"]


def test_strict_module_load_names_problem(tmp_path):
    module = torch.nn.Linear(3, 2)
    other = torch.nn.Linear(4, 2).state_dict()
    with pytest.raises(ckpt.CheckpointError, match=r"generator does not match this architecture \(different shapes weight"):
        ckpt.load_module_state(module, other, "generator", tmp_path / "c.pt")
    before = module.weight.clone()
    with pytest.raises(ckpt.CheckpointError, match="missing bias"):
        ckpt.load_module_state(module, {"weight": torch.zeros(2, 3)}, "generator", tmp_path / "c.pt")
    assert torch.equal(module.weight, before)  # never a partial load


WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from trainer.core import checkpoint as ckpt
state = {{k: {{}} for k in ckpt.REQUIRED_KEYS}}
state.update(format_version=ckpt.FORMAT_VERSION, big=torch.randn(40_000_000), step=0)
print("ready", flush=True)
i = 0
while True:
    i += 1
    state["step"] = i
    ckpt.save_atomic(state, {path!r})
"""


def test_killed_during_save_leaves_loadable_last(tmp_path, repo_root):
    path = tmp_path / "last.pt"
    good = full_state(step=7)
    ckpt.save_atomic(good, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(repo_root), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)  # ~160 MB per save: the kill lands mid-write with high probability
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = torch.load(path, map_location="cpu", weights_only=True)  # whichever version: complete
    assert state["format_version"] == ckpt.FORMAT_VERSION


def test_written_files_follow_the_umask(tmp_path):
    """Run directories are shared on clusters: no owner-only files from mkstemp."""
    from trainer.core.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "config.yaml", "a: 1\n")
        ckpt.save_atomic(full_state(), tmp_path / "last.pt")
        ckpt.copy_atomic(tmp_path / "last.pt", tmp_path / "best_pesq.pt")
    finally:
        os.umask(old)
    for name in ("config.yaml", "last.pt", "best_pesq.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
