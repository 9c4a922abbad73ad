"""TensorBoard events of a real run that crashes, is stopped (SIGUSR2) and resumed twice, read back
with tensorboard's own readers: one increasing history per tag, equal to metrics.jsonl."""

import io
import os
import signal
import subprocess
import time
import wave

import numpy as np
import pytest

from tests.core.test_tracking import accumulate, raw_steps
from tests.test_train import interrupt_and_resume, train_cmd
from trainer.core.runstate import read_metrics
from trainer.core.tracking import record_values


def crash_after(repo_root, run_dir, step, *overrides):
    """Start a run and SIGKILL it once ``step`` is in metrics.jsonl (no save: a node failure)."""
    proc = subprocess.Popen(train_cmd(run_dir, *overrides), cwd=repo_root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.get("step", 0) >= step for r in read_metrics(run_dir)):
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_events_survive_a_crash_and_a_requeue_without_duplicates(repo_root, tmp_path):
    run_dir, log_dir = tmp_path / "run", tmp_path / "run/tensorboard"
    overrides = ("train.epochs=3", "valid.num_audio_samples=2")  # 4 steps per epoch, validation at 4, 8, 12
    crash_after(repo_root, run_dir, 6, *overrides)  # last.pt is at step 4 (epoch end)
    crashed_steps = raw_steps(log_dir)
    assert crashed_steps["valid/pesq"] == [4] and crashed_steps["train/loss"][-1] > 4  # work to throw away
    stopped_at = interrupt_and_resume(repo_root, run_dir, *overrides, after_step=9)
    assert 9 <= stopped_at < 12

    records = read_metrics(run_dir)
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 13))
    acc = accumulate(log_dir)
    tags = acc.Tags()
    for tag in tags["scalars"]:  # one history per tag, increasing: no step twice, none out of order
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), (tag, steps)
    for tag, steps in raw_steps(log_dir).items():  # the files too: the crashed run's steps 5.. are gone
        assert steps == sorted(set(steps)), (tag, steps)

    # every number of metrics.jsonl, at its step, under its name (train/..., valid/..., epoch/...)
    expected = {}
    for record in records:
        for tag, value in record_values(record)[0].items():
            expected.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    assert set(expected) == set(tags["scalars"]) - {t for t in tags["scalars"] if t.startswith("utterance/")}
    for tag, points in expected.items():
        assert [(e.step, e.value) for e in acc.Scalars(tag)] == points, tag
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 13))
    assert [e.step for e in acc.Scalars("valid/pesq")] == [4, 8, 12]

    # two fixed utterances: enhanced audio and spectrogram every validation, noisy and clean once
    labels = sorted({tag.split("/")[1] for tag in tags["audio"]})
    assert len(labels) == 2
    for label in labels:
        assert [e.step for e in acc.Audio(f"audio/{label}/enhanced")] == [4, 8, 12]
        for signal_name in ("noisy", "clean"):
            [event] = acc.Audio(f"audio/{label}/{signal_name}")
            assert event.step == 4 and event.sample_rate == 16000
            with wave.open(io.BytesIO(event.encoded_audio_string)) as wav:
                assert wav.getframerate() == 16000 and wav.getnframes() == event.length_frames > 16000
            assert [e.step for e in acc.Images(f"image/{label}/spectrogram_{signal_name}")] == [4]
        images = acc.Images(f"image/{label}/spectrogram_enhanced")
        assert [e.step for e in images] == [4, 8, 12]
        assert images[0].height == 101  # 201 STFT bins (n_fft 400), two rows a pixel
