"""A full disk while saving (issue item 7), on a real small tmpfs (needs root; skipped with the reason
otherwise): one line naming the file and the bytes it needed, ``last`` intact, state.json listing only
best values whose checkpoints exist, and EXIT_DISK_FULL (not 1: the requeue logic retries crashes)."""

import errno
import os
import subprocess

import pytest
import torch

from tests.test_train import run_train
from trainer.core import checkpoint as ckpt
from trainer.core.exitcodes import EXIT_DISK_FULL, EXIT_FINISHED
from trainer.core.runstate import read_state


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MiB tmpfs mounted at tmp_path/disk."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {proc.stderr.strip() or proc.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder, leave_bytes):
    """Fill the file system of ``folder`` until ENOSPC, then free ``leave_bytes``."""
    filler = folder / "filler.bin"
    block = b"\0" * 2**16
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(block)
                fh.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    os.truncate(filler, max(0, filler.stat().st_size - leave_bytes))
    return filler


def test_checkpoint_save_on_a_full_disk_keeps_last_and_names_the_bytes(small_disk):
    from tests.core.test_checkpoint import full_state
    from trainer.core.io import DiskFull

    folder = small_disk / "checkpoints"
    ckpt.save_run_checkpoints(full_state(step=1), folder, ())
    fill(small_disk, 256 * 1024)
    big = full_state(step=2, generator={"w": torch.randn(2_000_000)})  # 8 MB
    with pytest.raises(DiskFull) as err:
        ckpt.save_run_checkpoints(big, folder, ("pesq",))
    message = str(err.value)
    assert str(folder) in message and "bytes" in message and "\n" not in message
    assert ckpt.load(folder / "last.pt")["step"] == 1
    assert not (folder / "best_pesq.pt").exists() and not list(folder.glob(".*"))


@pytest.mark.slow
@pytest.mark.parametrize("tensorboard", [False, True])
def test_training_on_a_full_disk_exits_with_the_do_not_requeue_code(repo_root, small_disk, tensorboard):
    """With TensorBoard on, its validation audio takes the last free bytes before the checkpoint
    save: it turns itself off with one warning, the save names the full disk, and state.json may
    be impossible to write (then the exit code alone says it)."""
    run_dir = small_disk / "run"
    tb = f"train.tensorboard={str(tensorboard).lower()}"
    one_step = "train.max_steps_per_epoch=1"  # what matters is the epoch's save, not its steps
    first = run_train(repo_root, run_dir, "train.epochs=1", tb, one_step)
    assert first.returncode == EXIT_FINISHED, first.stderr[-3000:]
    before = ckpt.load(run_dir / "checkpoints/last.pt")
    filler = fill(small_disk, 128 * 1024)  # room for log lines and state.json, not for a checkpoint
    proc = run_train(repo_root, run_dir, "train.epochs=2", tb, one_step)
    assert proc.returncode == EXIT_DISK_FULL, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "bytes" in errors[0] and str(run_dir / "checkpoints") in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and "Logging error" not in proc.stderr
    assert ckpt.load(run_dir / "checkpoints/last.pt")["step"] == before["step"] == 1
    state = read_state(run_dir)
    if tensorboard:
        assert "tensorboard: No space left on device" in proc.stderr
    else:
        assert state["status"] == "failed" and state["exit_code"] == EXIT_DISK_FULL  # for the launcher behind torchrun
    for metric, value in state["best"].items():  # every best value listed has its checkpoint
        assert ckpt.load(run_dir / f"checkpoints/best_{metric}.pt")["best"][metric] == value
    assert not list(run_dir.rglob("*.tmp"))
    filler.unlink()
    again = run_train(repo_root, run_dir, "train.epochs=2", tb, one_step)
    assert again.returncode == EXIT_FINISHED, again.stderr[-3000:]
