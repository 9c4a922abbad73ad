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
    with pytest.raises(ckpt.CheckpointError,
                       match=r"x\.pt: not a complete training checkpoint; missing keys: opt_d, rng"):
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
    with pytest.raises(ckpt.CheckpointError,
                       match=r"generator does not match this architecture \(different shapes weight"):
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


def _save_in_progress(folder) -> bool:
    """True while a temporary ``.last.pt.*.tmp`` holds some bytes (it may be renamed at any moment)."""
    for path in folder.glob(".last.pt.*.tmp"):
        try:
            if path.stat().st_size:
                return True
        except FileNotFoundError:
            pass
    return False


def test_killed_during_save_leaves_loadable_last(tmp_path, repo_root):
    path = tmp_path / "last.pt"
    good = full_state(step=7)
    ckpt.save_atomic(good, path)
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(repo_root), path=str(path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 300  # ~160 MB per save: wait until one is being written, then kill
    while not _save_in_progress(tmp_path):
        assert time.monotonic() < deadline and proc.poll() is None, "no save was ever seen in progress"
        time.sleep(0.001)
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
        ckpt.save_atomic(full_state(), tmp_path / "best_pesq.pt")
    finally:
        os.umask(old)
    for name in ("config.yaml", "last.pt", "best_pesq.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


# ---------------------------------------------------------------- integrity: checksums, finiteness, our own words

def _trained_parts(seed=0):
    """A real module and a real Adam optimizer that took one step (non-empty optimizer state)."""
    torch.manual_seed(seed)
    module = torch.nn.Linear(8, 4)
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    module(torch.randn(3, 8)).sum().backward()
    opt.step()
    return module, opt


def _real_state(step=10):
    from trainer.data.sampler import ResumableBatchSampler

    module, opt = _trained_parts()
    sampler = ResumableBatchSampler(16, 2, 0, 1, seed=0)
    sampler.set_epoch(1)
    return full_state(generator=module.state_dict(), discriminator=module.state_dict(), opt_g=opt.state_dict(),
                      opt_d=opt.state_dict(), sampler=sampler.state_dict(3), batches_done=3, step=step)


def _offset_of(data: bytes, needle: bytes) -> int:
    where = data.find(needle)
    assert where >= 0 and data.find(needle, where + 1) < 0
    return where


def test_flipped_weight_byte_is_refused_by_name(tmp_path):
    """Issue item 1: one weight's exponent byte set so that it becomes ~1.6e38 (finite)."""
    path = tmp_path / "last.pt"
    state = _real_state()
    ckpt.save_atomic(state, path)
    weight = state["generator"]["weight"]
    data = bytearray(path.read_bytes())
    where = _offset_of(bytes(data), weight.numpy().tobytes()[:16]) + 4  # the second float of the tensor
    data[where + 3], data[where + 2] = 0x7F, data[where + 2] & 0x7F  # exponent 0xFE: ~1.7e38, still finite
    path.write_bytes(bytes(data))
    assert torch.isfinite(torch.load(path, weights_only=True)["generator"]["weight"]).all()  # torch sees nothing
    with pytest.raises(ckpt.CheckpointError, match=r"last\.pt: .*checksum") as err:
        ckpt.load(path)
    assert "\n" not in str(err.value)


def test_non_finite_tensor_is_refused_by_name(tmp_path):
    """A checkpoint whose checksum is right but which holds NaN weights (e.g. written by other code)."""
    state = _real_state()
    state["generator"]["weight"][0, 0] = float("nan")
    with pytest.raises(ckpt.NonFiniteState, match=r"generator\.weight"):
        ckpt.save_atomic(state, tmp_path / "last.pt")
    assert not (tmp_path / "last.pt").exists()


def test_empty_and_unsafe_files_are_refused_in_our_own_words(tmp_path):
    empty = tmp_path / "last.pt"
    empty.write_bytes(b"")
    with pytest.raises(ckpt.CheckpointError, match=r"last\.pt: .*empty file"):
        ckpt.load(empty)
    unsafe = tmp_path / "pickled.pt"
    torch.save({"format_version": 2, "object": ValueError("not a tensor")}, unsafe)
    with pytest.raises(ckpt.CheckpointError, match=r"pickled\.pt: ") as err:
        ckpt.load(unsafe)
    message = str(err.value)
    assert "weights_only" not in message and "Re-running" not in message and "\n" not in message


@pytest.mark.parametrize("part, damage", [
    ("opt_g", {"state": {}, "param_groups": "not a list"}),
    ("opt_g", {"state": {0: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(3),
                             "exp_avg_sq": torch.zeros(3)}}, "param_groups": None}),
    ("opt_d", {}),
    ("sampler", {"epoch": 1, "batches_done": 3}),
    ("sampler", "three"),
    ("rng", [{"python": (3, "abc", None), "numpy": {}, "torch": torch.zeros(3, dtype=torch.uint8)}]),
    ("rng", [{"python": "x"}]),
    ("epoch", "one"),
    ("best", {"loss": "low"}),
])
def test_malformed_training_state_is_a_clear_error(tmp_path, part, damage):
    """Issue item 9: malformed optimizer, sampler or RNG state inside a (checksummed) checkpoint."""
    from trainer.core.env import DistEnv
    from trainer.data.sampler import ResumableBatchSampler

    path = tmp_path / "last.pt"
    state = _real_state()
    if part == "opt_g" and damage["param_groups"] is None:  # right keys, wrong shapes
        damage["param_groups"] = state["opt_g"]["param_groups"]
    state[part] = damage
    ckpt.save_atomic(state, path)
    module, opt = _trained_parts(seed=1)
    parts = {"generator": module, "discriminator": module, "opt_g": opt, "opt_d": opt}
    with pytest.raises(ckpt.CheckpointError, match=rf"last\.pt: .*\b{part}\b") as err:
        loaded = ckpt.load(path)
        ckpt.restore_training_state(loaded, path, parts, ResumableBatchSampler(16, 2, 0, 1, seed=0), DistEnv())
    assert "\n" not in str(err.value)
