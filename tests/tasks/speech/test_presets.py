"""configs/cmgan.yaml and configs/mpsenet.yaml: the published recipes (each value's source is cited in the
file), their schedules, and one real training step + validation of the full-size networks on the CPU."""

import math
import os
import subprocess
import sys

import pytest

from trainer.core.config import ConfigError, load_config
from trainer.core.exitcodes import EXIT_FINISHED
from trainer.core.runstate import read_metrics
from trainer.core.schedules import lr_factor


def test_cmgan_preset_is_the_published_recipe():
    cfg = load_config("configs/cmgan.yaml")
    assert (cfg.model.name, cfg.model.num_channels, cfg.model.num_layers) == ("cmgan", 64, 4)
    assert (cfg.stft.n_fft, cfg.stft.hop_length, cfg.stft.window,
            cfg.stft.compress_factor) == (400, 100, "hamming", 0.3)
    loss = cfg.loss
    assert (loss.w_ri, loss.w_mag, loss.w_time, loss.w_gan, loss.w_phase,
            loss.w_consistency) == (0.1, 0.9, 0.2, 0.05, 0, 0)
    assert loss.gan_start_fraction == 0.0 and loss.gan_ramp_epochs == 0
    optim = cfg.optim
    assert (optim.name, optim.lr, optim.disc_lr_ratio, optim.betas,
            optim.weight_decay) == ("adamw", 5e-4, 2.0, [0.9, 0.999], 0.01)
    assert optim.grad_clip == 0.0 and cfg.train.epochs == 120
    assert (cfg.data.batch_size, cfg.data.crop_seconds) == (4, 2.0)
    assert [lr_factor(cfg, e) for e in (0, 29, 30, 59, 60, 119)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.125]
    assert (cfg.data.train_dir, cfg.data.valid_dir) == ("data/vbd/train", "data/vbd/valid")


def test_mpsenet_preset_is_the_published_recipe():
    cfg = load_config("configs/mpsenet.yaml")
    assert (cfg.model.name, cfg.model.num_channels, cfg.model.num_layers) == ("mpsenet", 64, 4)
    assert (cfg.stft.n_fft, cfg.stft.hop_length, cfg.stft.window, cfg.stft.compress_factor) == (400, 100, "hann", 0.3)
    loss = cfg.loss
    assert (loss.w_mag, loss.w_phase, loss.w_ri, loss.w_consistency, loss.w_gan,
            loss.w_time) == (0.9, 0.3, 0.1, 0.1, 0.05, 0.2)
    optim = cfg.optim
    assert (optim.name, optim.lr, optim.disc_lr_ratio, optim.betas) == ("adamw", 5e-4, 1.0, [0.8, 0.99])
    assert optim.scheduler == "exponential" and optim.grad_clip == 0.0 and cfg.train.epochs == 400
    assert (cfg.data.batch_size, cfg.data.crop_seconds) == (4, 2.0)
    assert lr_factor(cfg, 0) == 1.0 and math.isclose(lr_factor(cfg, 100), 0.99**100)


def test_attention_models_need_channels_divisible_by_the_heads():
    with pytest.raises(ConfigError, match="model.num_channels: 10 must be a multiple of 4 for mpsenet"):
        load_config("configs/mpsenet.yaml", ["model.num_channels=10"])
    assert load_config("configs/smoke.yaml", ["model.num_channels=10"]).model.num_channels == 10  # bsrnn: any


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cmgan", "mpsenet"])
def test_full_size_preset_trains_a_step_and_validates_on_cpu(repo_root, tmp_path, preset):
    """The published network sizes and losses end to end. At batch 1 x 1 s: the presets' batch 4 x 2 s
    step needs more CPU memory than a test machine has (CMGAN: killed at 23.7 GB; its time attention
    runs over 4 x 101 sequences of 321 frames); benchmarks/gpu_acceptance.py runs that on a GPU."""
    overrides = ["data.demo=true", "data.train_dir=", "data.valid_dir=", "data.batch_size=1", "data.crop_seconds=1.0",
                 "data.valid_max_seconds=1.0", "data.num_workers=0", "train.epochs=1", "train.max_steps_per_epoch=1",
                 "train.log_every=1", "train.pesq_workers=0", "valid.max_utterances=1", "checkpoint.every_steps=0"]
    sets = [a for item in overrides for a in ("--set", item)]
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", f"configs/{preset}.yaml", "--run-dir",
                           str(tmp_path / "run"), *sets], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "2"}, timeout=1800)
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    records = read_metrics(tmp_path / "run")
    step = next(r for r in records if r.get("kind") == "step")
    epoch = next(r for r in records if r.get("kind") == "epoch")
    terms = {"ri", "mag", "time", "gan"} | ({"phase", "consistency"} if preset == "mpsenet" else set())
    assert terms <= set(step) and all(math.isfinite(step[t]) for t in terms) and step["gan_weight"] == 0.05
    assert math.isfinite(epoch["valid_loss"]) and epoch["valid_pesq"] is not None
