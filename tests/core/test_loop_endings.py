"""The trainer loop: its end-of-run decision on a stop request, and epoch records across a resume
(real signals, real handlers)."""

import os
import signal

import pytest

from trainer import train
from trainer.core import loop, signals
from trainer.core.exitcodes import EXIT_FINISHED, EXIT_REQUEUE
from trainer.core.runstate import read_metrics, read_state
from trainer.core.step import TrainingStep

TINY = ["train.max_steps_per_epoch=2", "train.log_every=1", "valid.max_utterances=1", "valid.stoi_every=100",
        "train.pesq_workers=0", "checkpoint.every_steps=0", "data.batch_size=2", "train.epochs=2"]


def epoch_records(run_dir):
    """Whole epoch records, all but their timings (tests/test_train.py's rule: ESTOI to 12 decimals)."""
    from tests.test_train import epoch_records as whole_epoch_records

    return whole_epoch_records(run_dir)


@pytest.fixture
def restore_signals():
    previous = {s: signal.getsignal(s) for s in signals.STOP_SIGNALS}
    yield
    signals.reset()
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@pytest.fixture
def usr2_during_validation(monkeypatch, repo_root, one_torch_thread, restore_signals):
    """Every validation receives SIGUSR2 (as Slurm's --signal sends it) before it computes anything."""
    real = loop.run_validation

    def validation_with_stop_request(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "run_validation", validation_with_stop_request)
    monkeypatch.chdir(repo_root)


def test_a_stop_during_the_last_validation_finishes_instead_of_requeueing(tmp_path, usr2_during_validation):
    argv = ["--config", "configs/smoke.yaml", "--run-dir", str(tmp_path / "run"),
            *[a for item in TINY for a in ("--set", item)]]
    # epoch 0's validation: an epoch is left, so the run saves and asks for a requeue
    assert train.main(argv) == EXIT_REQUEUE
    assert (read_state(tmp_path / "run")["status"], read_state(tmp_path / "run")["epoch"]) == ("checkpointed", 1)
    signals.reset()
    # epoch 1's (the last) validation: all epochs are trained, the run finishes (exit 0, no requeue)
    assert train.main(argv) == EXIT_FINISHED
    state = read_state(tmp_path / "run")
    assert (state["status"], state["epoch"], state["step"]) == ("finished", 2, 4)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run") if r.get("kind") == "epoch"] == [0, 1]


def test_a_resume_exactly_at_an_epoch_end_writes_the_uninterrupted_epoch_record(
        tmp_path, monkeypatch, repo_root, one_torch_thread, restore_signals):
    """SIGUSR2 during the epoch's last step: the run saves before the epoch's end and resumes there.
    The epoch's PESQ label counts come from the checkpoint, so its record equals the straight run's."""
    monkeypatch.chdir(repo_root)
    sets = [a for item in [*TINY, "train.epochs=1"] for a in ("--set", item)]
    straight = ["--config", "configs/smoke.yaml", "--run-dir", str(tmp_path / "straight"), *sets]
    assert train.main(straight) == EXIT_FINISHED
    real = TrainingStep.__call__

    def stop_during_the_last_step(self, batch, weight, progress, *args, **kwargs):
        if progress.step + 1 == 2:  # the epoch's last step (max_steps_per_epoch=2)
            os.kill(os.getpid(), signal.SIGUSR2)
        return real(self, batch, weight, progress, *args, **kwargs)

    monkeypatch.setattr(TrainingStep, "__call__", stop_during_the_last_step)
    resumed = ["--config", "configs/smoke.yaml", "--run-dir", str(tmp_path / "resumed"), *sets]
    assert train.main(resumed) == EXIT_REQUEUE
    assert (read_state(tmp_path / "resumed")["step"], read_state(tmp_path / "resumed")["epoch"]) == (2, 0)
    monkeypatch.setattr(TrainingStep, "__call__", real)
    signals.reset()
    assert train.main(resumed) == EXIT_FINISHED
    records = epoch_records(tmp_path / "resumed")
    assert records == epoch_records(tmp_path / "straight")
    assert records[0]["pesq_valid_rate"] == 1.0  # the two steps' labels, counted before the save
