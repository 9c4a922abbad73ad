"""Fault injection and corruption sweeps (issue item 11), the way trusted systems test themselves.

(a) kill -9 a training (checkpoints every step, the tiny smoke setup) once in each phase of its life,
    each moment found from an event the run itself shows (see ``MOMENTS``), and check after each kill
    and resume that ``last`` loads and verifies, state.json and metrics.jsonl are whole, no step is
    logged twice and no temporary file piles up; the final per-step losses must equal an
    uninterrupted run's.
(b) flip bytes at 20 seeded random offsets of a checkpoint and of a shard: every flip is either harmless
    (identical loaded values) or refused naming the file, never loaded silently.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

from tests.test_train import run_train, step_losses, train_cmd
from trainer.core import checkpoint as ckpt
from trainer.core.exitcodes import EXIT_FINISHED
from trainer.core.runstate import read_metrics

FAULT_RUN = ("train.epochs=5", "checkpoint.every_steps=1", "valid.max_utterances=1")
STEPS_PER_EPOCH, FAULT_STEPS = 4, 20  # TINY's train.max_steps_per_epoch=4
# A hang guard only: with both cores loaded by stress-ng on top of a load of ~22, a 44-step run took
# 10-19 s a step (about 1 s idle) and the straight run passed run_train's 900 s default.
FAULT_RUN_TIMEOUT = 3600


def temporaries(run_dir):
    return [p for p in run_dir.rglob(".*.tmp")]


def check_at_rest(run_dir, whole=False):
    """What must hold whenever no process works on the run directory (``whole``: also no record cut
    short at the end of metrics.jsonl, which a resume drops)."""
    last = run_dir / "checkpoints/last.pt"
    if last.exists():
        ckpt.load(last)  # verified: checksum, finiteness, keys
    if (run_dir / "state.json").exists():
        json.loads((run_dir / "state.json").read_text())
    if (run_dir / "metrics.jsonl").exists():
        text = (run_dir / "metrics.jsonl").read_text()
        for line in text.split("\n")[:-1]:  # every complete line is one JSON object
            json.loads(line)
        assert not whole or text.endswith("\n") or not text
    steps = [s for s, *_ in step_losses(run_dir)]
    assert steps == sorted(set(steps)), f"a step logged twice: {steps}"
    # at most the one write cut short by the kill (a checkpoint group's temporaries are links to one file)
    assert len({p.stat().st_ino for p in temporaries(run_dir)}) <= 1, temporaries(run_dir)


class Attempt:
    """One start of the faulted run; a thread collects its log lines so that the test can wait for one."""

    def __init__(self, repo_root, run_dir, config):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.proc = subprocess.Popen(train_cmd(run_dir, *FAULT_RUN, config=config), cwd=repo_root, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)

    def logged(self, *texts) -> bool:
        return any(text in line for line in list(self.lines) for text in texts)

    def finish(self, kill: bool) -> str:
        if kill:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        self.reader.join()
        return "".join(self.lines)


def _last_steps(run_dir):
    return max([s for s, *_ in step_losses(run_dir)], default=0)


def _epochs_logged(run_dir):
    return sum(1 for r in read_metrics(run_dir) if r.get("kind") == "epoch")


def _saved(run_dir):
    """(step, epoch) of checkpoints/last.pt by its sidecar (written once the checkpoint is in place)."""
    try:
        facts = json.loads((run_dir / "checkpoints/last.json").read_text())
        return facts["step"], facts["epoch"]
    except (OSError, ValueError, KeyError):
        return 0, 0


def _lock_taken(attempt, run_dir, start):
    try:
        return json.loads((run_dir / "train.lock").read_text())["pid"] == attempt.proc.pid
    except (OSError, ValueError, KeyError):
        return False


def _mid_epoch_step_saved(attempt, run_dir, start):
    step, epoch = _saved(run_dir)
    return step > start["step"] and step % STEPS_PER_EPOCH != 0


def _in_validation(attempt, run_dir, start):
    step, epoch = _saved(run_dir)  # the epoch's last step saved, its epoch-end save not yet
    return step > start["step"] and step % STEPS_PER_EPOCH == 0 and epoch == step // STEPS_PER_EPOCH - 1


def _saving(attempt, run_dir, start):
    """A checkpoint being written (best effort: a save of the tiny model is short; if the next step
    is logged first, the kill comes then, between a step record and its save)."""
    return any((run_dir / "checkpoints").glob(".*.tmp")) or _last_steps(run_dir) > start["step"] + 1


# Each moment: (name, condition on the running attempt), each found from what the run shows (its lock
# file, its log lines, metrics.jsonl, the checkpoint's sidecar). A moment advances the run by at most
# 0 (start-up), 1 (step logged), 2 (saving, mid-epoch step saved) or 4 steps (validation, next epoch),
# so each schedule below (18 and 13 steps at most) ends before the run's 20 steps.
MOMENTS = {
    "lock taken": _lock_taken,  # nothing else done yet: the next start takes over a stale lock
    "trainer built": lambda a, d, s: a.logged("code: "),  # before the resume and its log truncation
    "resumed": lambda a, d, s: a.logged("resumed ", "new run in "),  # before the first step
    "step logged": lambda a, d, s: _last_steps(d) > s["step"],  # its record written, its save maybe not
    "saving": _saving,
    "mid-epoch step saved": _mid_epoch_step_saved,  # computing the next step
    "validation": _in_validation,  # the epoch's validation (after its last step's save)
    "next epoch": lambda a, d, s: _epochs_logged(d) > s["epochs"],  # the epoch record written
}
SCHEDULES = {  # the start-up moments with one data path (they do not depend on it); the loop's with both
    "configs/smoke.yaml": ["lock taken", "step logged", "saving", "mid-epoch step saved", "validation",
                           "next epoch", "trainer built", "resumed", "step logged", "validation"],
    "configs/smoke_mixing.yaml": ["step logged", "mid-epoch step saved", "validation", "next epoch", "saving"],
}


@pytest.mark.slow
@pytest.mark.parametrize("config", list(SCHEDULES))
def test_kill_9_in_every_phase_then_resume_is_exact(repo_root, tmp_path, config):
    straight = run_train(repo_root, tmp_path / "straight", *FAULT_RUN, config=config, timeout=FAULT_RUN_TIMEOUT)
    assert straight.returncode == EXIT_FINISHED, straight.stderr[-3000:]
    run_dir, left_behind = tmp_path / "faulted", []
    for moment in SCHEDULES[config]:
        start = {"step": _last_steps(run_dir), "epochs": _epochs_logged(run_dir)}
        attempt, deadline = Attempt(repo_root, run_dir, config), time.monotonic() + FAULT_RUN_TIMEOUT
        while not (reached := MOMENTS[moment](attempt, run_dir, start)):
            if attempt.proc.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        err = attempt.finish(kill=True)
        assert reached and attempt.proc.returncode == -signal.SIGKILL, f"no '{moment}' before: {err[-3000:]}"
        if attempt.logged("resumed ", "new run in "):  # got past its start: the previous kill's leftovers are gone
            assert not [p for p in left_behind if p.exists()], (moment, left_behind, err[-2000:])
        check_at_rest(run_dir)
        left_behind = temporaries(run_dir)
        print(f"killed at '{moment}': steps logged {_last_steps(run_dir)}, saved {_saved(run_dir)}, "
              f"temporaries {[p.name for p in left_behind]}")  # shown with -s: which moments were hit
    final = run_train(repo_root, run_dir, *FAULT_RUN, config=config, timeout=FAULT_RUN_TIMEOUT)
    assert final.returncode == EXIT_FINISHED, final.stderr[-3000:]
    check_at_rest(run_dir, whole=True)
    assert not temporaries(run_dir) and not (run_dir / "train.lock").exists()
    assert step_losses(run_dir) == step_losses(tmp_path / "straight")
    assert ckpt.load(run_dir / "checkpoints/last.pt")["step"] == FAULT_STEPS


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (a != a and b != b))


def _flips(path, count, seed):
    """(offset, new byte) pairs at seeded random offsets; each changes the byte."""
    rng = random.Random(seed)
    size = path.stat().st_size
    return [(offset, rng.randrange(1, 256)) for offset in (rng.randrange(size) for _ in range(count))]


def _write_flipped(path, original: bytes, offset: int, xor: int) -> None:
    data = bytearray(original)
    data[offset] ^= xor
    path.write_bytes(bytes(data))


@pytest.mark.slow
def test_flipped_checkpoint_bytes_are_harmless_or_refused_by_name(tmp_path):
    from tests.core.test_checkpoint import _real_state

    path = tmp_path / "last.pt"
    ckpt.save_atomic(_real_state(), path)
    original, reference = path.read_bytes(), ckpt.load(path)
    outcomes = []
    for offset, xor in _flips(path, 20, seed=1):
        _write_flipped(path, original, offset, xor)
        try:
            loaded = ckpt.load(path)
        except ckpt.CheckpointError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc), exc
            outcomes.append("refused")
            continue
        assert _same(loaded, reference), f"byte {offset} ^ {xor:#x} changed what was loaded"
        outcomes.append("harmless")
    assert outcomes.count("refused") >= 10, outcomes  # most of a checkpoint is data and structure


@pytest.mark.slow
def test_flipped_shard_bytes_are_harmless_or_refused_by_name(tmp_path):
    from tests.test_prepare import corpus
    from trainer.data.format import DataError
    from trainer.data.pack import prepare
    from trainer.data.shards import ShardDataset, ShardIndex, _verified

    clean_dir, noisy_dir = corpus(tmp_path / "wav", speakers=("p226",))
    prepare(clean_dir, noisy_dir, tmp_path / "out", progress=False)
    shard = tmp_path / "out" / "shard-00000.h5"

    def read_all():
        index = ShardIndex(tmp_path / "out")
        dataset = ShardDataset(index, train=False, crop_samples=None, normalize=False)
        return [(index.names[i], dataset[i]["clean"], dataset[i]["noisy"]) for i in range(len(dataset))]

    reference, original = read_all(), shard.read_bytes()
    for offset, xor in _flips(shard, 20, seed=2):
        _write_flipped(shard, original, offset, xor)
        _verified.clear()  # a new file each time: hash it again
        try:
            got = read_all()
        except DataError as exc:
            assert str(shard) in str(exc) and "\n" not in str(exc), exc
            continue
        assert len(got) == len(reference) and all(
            a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
            for a, b in zip(got, reference, strict=True)), f"byte {offset} ^ {xor:#x} changed what was read"
    shutil.rmtree(tmp_path / "out")
