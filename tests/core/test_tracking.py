"""The TensorBoard tracker: what it writes, read back with tensorboard's own readers.

No training here (tests/test_tensorboard.py trains, interrupts and resumes): records and media are
handed to the tracker directly, as the loop does.
"""

import io
import logging
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest
import torch
from torch import nn

from trainer.core.config import ConfigError, load_config
from trainer.core.task import Media
from trainer.core.tracking import (
    NullTracker,
    TensorBoardTracker,
    build_tracker,
    event_files,
    record_values,
    truncate_events,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SR = 16000


def accumulate(log_dir):
    """Everything the log holds, as TensorBoard shows it (purges honoured)."""
    from tensorboard.backend.event_processing.event_accumulator import (
        STORE_EVERYTHING_SIZE_GUIDANCE,
        EventAccumulator,
    )

    acc = EventAccumulator(str(log_dir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def raw_steps(log_dir) -> dict[str, list[int]]:
    """{tag: steps} straight from the files, in file order (no purge logic: what is on disk)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps: dict[str, list[int]] = {}
    for path in event_files(log_dir):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps.setdefault(value.tag, []).append(event.step)
    return steps


def cfg_with(*overrides):
    return load_config(None, ["data.demo=true", *overrides])


def step_record(step, loss):
    return {"kind": "step", "step": step, "epoch": (step - 1) // 4, "loss": loss, "d_loss": 0.5 * loss,
            "lr_g": 1e-3, "pesq_valid_rate": 1.0, "grad_norm_g": float("nan"), "alert": "output mixes both sources"}


def epoch_record(step, epoch, pesq):
    return {"kind": "epoch", "epoch": epoch, "step": step, "pesq_valid_rate": 0.75, "valid_loss": 0.25,
            "valid_pesq": pesq, "valid_stoi": None, "checkpoints": ["last", "best_pesq"]}


class FixedTask:
    """Media of a fake model: the enhanced wave is the noisy one times the generator's gain."""

    def __init__(self, draw_random=False):
        self.draw_random = draw_random
        self.calls = 0

    def media(self, generator, batch):
        self.calls += 1
        if self.draw_random:  # a careless task: the tracker must keep the training's RNG where it was
            torch.rand(3)
            np.random.rand(3)
        noisy = batch["noisy"][0].numpy()
        enhanced = (generator.gain * batch["noisy"][0]).numpy()
        return Media(sample_rate=SR, audio={"enhanced": enhanced},
                     reference_audio={"noisy": noisy, "clean": batch["clean"][0].numpy()},
                     images={"spectrogram_enhanced": np.full((10, 30, 3), 200, np.uint8)},
                     reference_images={"spectrogram_noisy": np.zeros((10, 30, 3), np.uint8)},
                     scalars={"gain": float(generator.gain)}, text={"note": "fine"})


class Gain(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(0.5))


def batches(num=2, length=SR // 2):
    t = np.arange(length) / SR
    out = []
    for i in range(num):
        clean = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)
        out.append({"noisy": torch.tensor(clean + 0.1 * np.cos(2 * np.pi * 3000 * t), dtype=torch.float32)[None],
                    "clean": torch.tensor(clean, dtype=torch.float32)[None], "names": [f"spk{i}/utt {i}"],
                    "lengths": torch.tensor([length])})
    return out


def tracker(run_dir, *overrides, num=2):
    return TensorBoardTracker(cfg_with(f"valid.num_audio_samples={num}", *overrides), run_dir,
                              media_batches=batches(num))


def test_record_values_group_metrics_jsonl_names():
    scalars, texts = record_values(step_record(4, 0.75))
    assert scalars == {"train/epoch": 0.0, "train/loss": 0.75, "train/d_loss": 0.375, "train/lr_g": 1e-3,
                       "train/pesq_valid_rate": 1.0}  # the NaN norm is null in metrics.jsonl: left out
    assert texts == {"train/alert": "output mixes both sources"}
    scalars, texts = record_values(epoch_record(8, 1, 2.5))
    assert scalars == {"epoch/epoch": 1.0, "epoch/pesq_valid_rate": 0.75, "valid/loss": 0.25, "valid/pesq": 2.5}
    assert texts == {"epoch/checkpoints": "last, best_pesq"}


def test_scalars_equal_the_records_at_their_steps(tmp_path):
    t = tracker(tmp_path)
    t.start(0)
    records = [step_record(s, 1.0 / s) for s in range(1, 9)] + [epoch_record(4, 0, 1.5), epoch_record(8, 1, 2.125)]
    for record in sorted(records, key=lambda r: r["step"]):
        t.write(record)
    t.close()
    acc = accumulate(tmp_path / "tensorboard")
    for record in records:
        scalars, _ = record_values(record)
        for tag, value in scalars.items():
            [event] = [e for e in acc.Scalars(tag) if e.step == record["step"]]
            assert event.value == float(np.float32(value)), (tag, record["step"])  # a float32 in the event
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 9))
    assert [e.step for e in acc.Scalars("valid/pesq")] == [4, 8]
    assert "train/grad_norm_g" not in acc.Tags()["scalars"]
    text = acc.Tensors("train/alert/text_summary")
    assert len(text) == 8 and text[0].tensor_proto.string_val[0] == b"output mixes both sources"


def test_media_audio_and_images_with_their_sample_rate_and_shape(tmp_path):
    t, task, generator = tracker(tmp_path), FixedTask(), Gain()
    t.start(0)
    t.validation(task, generator, step=4)
    with torch.no_grad():
        generator.gain.fill_(0.25)
    t.validation(task, generator, step=8)
    t.close()
    acc = accumulate(tmp_path / "tensorboard")
    tags = acc.Tags()
    label = "0_spk0_utt_0"  # position and a tag-safe name
    assert f"audio/{label}/enhanced" in tags["audio"] and len(tags["audio"]) == 6
    for tag in tags["audio"]:
        events = acc.Audio(tag)
        assert [e.step for e in events] == ([4, 8] if tag.endswith("/enhanced") else [4]), tag  # references once
        for event in events:
            assert event.sample_rate == SR and event.length_frames == SR // 2 and event.content_type == "audio/wav"
            with wave.open(io.BytesIO(event.encoded_audio_string)) as wav:
                assert (wav.getframerate(), wav.getnframes(), wav.getnchannels()) == (SR, SR // 2, 1)
    # the last enhanced audio of utterance 1 is the quieter model's output, as 16-bit PCM
    with wave.open(io.BytesIO(acc.Audio("audio/1_spk1_utt_1/enhanced")[-1].encoded_audio_string)) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert np.array_equal(pcm, (0.25 * batches()[1]["noisy"][0].numpy() * 32767).astype("<i2"))
    assert sorted(tags["images"]) == sorted(f"image/{i}_spk{i}_utt_{i}/spectrogram_{s}"
                                            for i in (0, 1) for s in ("enhanced", "noisy"))
    for tag in tags["images"]:
        events = acc.Images(tag)
        assert [e.step for e in events] == ([4, 8] if tag.endswith("enhanced") else [4])
        assert all((e.width, e.height) == (30, 10) for e in events)
    assert [(e.step, e.value) for e in acc.Scalars(f"utterance/{label}/gain")] == [(4, 0.5), (8, 0.25)]
    assert len(acc.Tensors(f"utterance/{label}/note/text_summary")) == 2


def test_media_leave_the_training_rng_and_the_generator_mode_as_they_were(tmp_path):
    t, generator = tracker(tmp_path), Gain()
    t.start(0)
    generator.train()
    torch.manual_seed(123)
    before = torch.get_rng_state()
    t.validation(FixedTask(draw_random=True), generator, step=1)
    assert torch.equal(torch.get_rng_state(), before) and generator.training
    t.close()


def test_num_audio_samples_zero_writes_no_media(tmp_path):
    t, task = tracker(tmp_path, num=0), FixedTask()
    t.start(0)
    t.validation(task, Gain(), step=4)
    t.close()
    assert task.calls == 0 and not accumulate(tmp_path / "tensorboard").Tags()["audio"]


def write_session(run_dir, start_step, steps, media_steps):
    t, task, generator = tracker(run_dir), FixedTask(), Gain()
    dropped = t.start(start_step)
    for step in steps:
        t.write(step_record(step, 1.0 / step))
        if step in media_steps:
            t.validation(task, generator, step)
            t.write(epoch_record(step, step // 4 - 1, 1.0 + step / 10))
    t.close()
    return dropped


def assert_one_increasing_history(log_dir):
    acc = accumulate(log_dir)
    for kind, read in (("scalars", acc.Scalars), ("audio", acc.Audio), ("images", acc.Images),
                       ("tensors", acc.Tensors)):
        for tag in acc.Tags()[kind]:
            steps = [e.step for e in read(tag)]
            assert steps == sorted(set(steps)), (tag, steps)
    for tag, steps in raw_steps(log_dir).items():  # the files themselves, no purge logic
        assert steps == sorted(set(steps)), (tag, steps)
    return acc


def test_restart_drops_the_events_after_the_checkpoint_and_keeps_the_references(tmp_path):
    log_dir = tmp_path / "tensorboard"
    write_session(tmp_path, 0, range(1, 11), media_steps={4, 8})  # interrupted at 10; checkpoint at 6
    assert write_session(tmp_path, 6, range(7, 13), media_steps={8, 12}) > 0
    on_disk = raw_steps(log_dir)
    assert on_disk["train/loss"] == list(range(1, 13))
    assert on_disk["audio/0_spk0_utt_0/noisy"] == [4]  # written by the first session, not again
    assert on_disk["audio/0_spk0_utt_0/enhanced"] == [4, 8, 12]
    acc = assert_one_increasing_history(log_dir)
    assert [e.step for e in acc.Scalars("valid/pesq")] == [4, 8, 12]
    assert [e.value for e in acc.Scalars("train/loss")] == [float(np.float32(1.0 / s)) for s in range(1, 13)]


def test_restart_before_the_first_validation_writes_the_references_once(tmp_path):
    log_dir = tmp_path / "tensorboard"
    write_session(tmp_path, 0, range(1, 6), media_steps={4})
    write_session(tmp_path, 3, range(4, 9), media_steps={4, 8})  # step 4 is redone, its media too
    assert raw_steps(log_dir)["audio/1_spk1_utt_1/clean"] == [4]
    acc = assert_one_increasing_history(log_dir)
    assert [e.step for e in acc.Audio("audio/1_spk1_utt_1/clean")] == [4]


def test_fresh_start_drops_everything_old(tmp_path):
    log_dir = tmp_path / "tensorboard"
    write_session(tmp_path, 0, range(1, 9), media_steps={4, 8})
    old = event_files(log_dir)
    write_session(tmp_path, 0, range(1, 3), media_steps=set())
    assert not set(old) & set(event_files(log_dir))
    assert raw_steps(log_dir) == {k: [1, 2] for k in record_values(step_record(1, 1.0))[0]} | \
        {"train/alert/text_summary": [1, 2]}


def test_a_record_cut_by_a_crash_is_removed(tmp_path):
    log_dir = tmp_path / "tensorboard"
    write_session(tmp_path, 0, range(1, 5), media_steps=set())
    [path] = event_files(log_dir)
    with open(path, "ab") as fh:
        fh.write(b"\x30\x00\x00\x00\x00\x00\x00\x00partial")
    size = path.stat().st_size
    dropped, tags = truncate_events(log_dir, 4)
    assert dropped == 0 and "train/loss" in tags and path.stat().st_size == size - 15


def test_off_switch_and_other_ranks_get_a_null_tracker(tmp_path):
    assert isinstance(build_tracker(cfg_with("train.tensorboard=false"), tmp_path, True), NullTracker)
    assert isinstance(build_tracker(cfg_with(), tmp_path, False), NullTracker)
    assert isinstance(build_tracker(cfg_with(), tmp_path, True), TensorBoardTracker)
    assert not (tmp_path / "tensorboard").exists()  # nothing written before start()


def test_off_switch_never_imports_tensorboard(repo_root, tmp_path):
    code = ("import sys; from trainer.core.config import load_config; from trainer.core.tracking import "
            "build_tracker; import trainer.core.loop\n"
            "t = build_tracker(load_config(None, ['data.demo=true', 'train.tensorboard=false']), "
            f"{str(tmp_path)!r}, True)\n"
            "t.start(0); t.write({'kind': 'step', 'step': 1, 'loss': 1.0}); t.close()\n"
            "assert not [m for m in sys.modules if 'tensorboard' in m], sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (tmp_path / "tensorboard").exists()


def test_missing_package_is_one_config_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install tensorboard \(or set train.tensorboard=false\)"):
        build_tracker(cfg_with(), tmp_path, True)
    with pytest.raises(ConfigError, match="pip install tensorboard"):  # every rank stops alike
        build_tracker(cfg_with(), tmp_path, False)
    assert isinstance(build_tracker(cfg_with("train.tensorboard=false"), tmp_path, True), NullTracker)


def test_missing_package_stops_training_with_exit_2(monkeypatch, tmp_path, repo_root, capsys):
    from trainer.train import main

    monkeypatch.chdir(repo_root)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    code = main(["--config", "configs/smoke.yaml", "--run-dir", str(tmp_path / "run"),
                 "--set", "data.num_workers=0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "pip install tensorboard" in err and "Traceback" not in err


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_log_folder_removed_during_the_run_starts_a_new_log_with_one_warning(tmp_path):
    """Issue 22 item 8: deleting RUN_DIR/tensorboard mid-run crashed the training (FileNotFoundError)."""
    t, task, generator = tracker(tmp_path), FixedTask(), Gain()
    t.start(0)
    for step in range(1, 5):
        t.write(step_record(step, 1.0 / step))
    shutil.rmtree(tmp_path / "tensorboard")
    logger, collect = logging.getLogger("segan.tracking"), Collect()
    logger.addHandler(collect)
    try:
        for step in range(5, 9):
            t.write(step_record(step, 1.0 / step))
        t.validation(task, generator, 8)
        t.close()
    finally:
        logger.removeHandler(collect)
    warnings = collect.messages
    assert len(warnings) == 1 and "was removed during the run" in warnings[0], warnings
    acc = accumulate(tmp_path / "tensorboard")
    assert [e.step for e in acc.Scalars("train/loss")][-3:] == [6, 7, 8]
    assert "audio/0_spk0_utt_0/noisy" in acc.Tags()["audio"]  # the references go into the new log again
