"""The creative-agent variant through the real training core: packed pairs, diagnostics, resume."""

import subprocess
import sys

import pytest
import soundfile as sf
import torch

from tests.test_train import interrupt_and_resume, step_losses
from trainer import creative
from trainer.exitcodes import EXIT_FINISHED
from trainer.prepare import prepare
from trainer.runstate import read_metrics, read_state

SR = 8000
TINY = ["data.sample_rate=8000", "data.crop_seconds=0.5", "data.valid_max_seconds=0.5", "data.batch_size=2",
        "data.num_workers=0", "stft.n_fft=128", "stft.hop_length=64", "model.dim=16", "model.num_heads=2",
        "model.num_transformer_layers=1", "model.num_stages=2", "discriminator.num_channels=4",
        "loss.mel_bins=20", "train.epochs=2", "train.max_steps_per_epoch=3", "train.log_every=1",
        "checkpoint.every_steps=0", "optim.lr=1e-3"]


@pytest.fixture(scope="module")
def packed_pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("creative_pairs")
    inputs, targets = creative.synthetic_pairs(10, 1.0, SR, seed=3)
    for folder, waves in (("input", inputs), ("target", targets)):
        (root / folder).mkdir()
        for k, wave in enumerate(waves):
            sf.write(root / folder / f"{'v' if k >= 8 else 't'}{k}_piece.wav", wave.numpy(), SR)
    prepare(root / "target", root / "input", root / "packed", signals=("target", "input"), sample_rate=SR,
            valid_speakers=("v8", "v9"), progress=False)
    return root / "packed"


def creative_args(packed, *extra):
    sets = [*TINY, f"data.train_dir={packed / 'train'}", f"data.valid_dir={packed / 'valid'}", *extra]
    return [arg for item in sets for arg in ("--set", item)]


def test_creative_run_logs_diagnostics_and_keeps_its_checkpoints(repo_root, tmp_path, packed_pairs):
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "trainer.train", "--config", "configs/creative_agent.yaml",
                           "--run-dir", str(run_dir), *creative_args(packed_pairs)], cwd=repo_root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    steps = [r for r in read_metrics(run_dir) if r.get("kind") == "step"]
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    assert len(steps) == 6 and len(epochs) == 2
    for key in ("mask_input_mean", "mask_target_mean", "balance_raw", "corr_input", "corr_target",
                "complementarity_pct", "temporal_diversity", "real_acc", "fake_acc", "grad_norm_g", "d_loss"):
        assert all(isinstance(r[key], float) for r in steps), key
    assert all(r["alert"] in (creative.ALERT_TARGET, creative.ALERT_INPUT, creative.ALERT_MIX) for r in steps)
    assert "pesq_valid_rate" not in steps[0]
    assert all(e["valid_alert"] in (creative.ALERT_TARGET, creative.ALERT_INPUT, creative.ALERT_MIX) for e in epochs)
    assert 0.0 <= epochs[-1]["valid_complementarity"] <= 100.0
    kept = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert kept == ["best_complementarity.pt", "best_loss.pt", "last.pt"]
    assert read_state(run_dir)["status"] == "finished"
    plots = subprocess.run([sys.executable, "-m", "trainer.plot", str(run_dir)], cwd=repo_root,
                           capture_output=True, text=True)
    assert plots.returncode == 0 and "creative.png" in plots.stdout


@pytest.mark.slow
def test_creative_resume_is_bit_exact(repo_root, tmp_path, packed_pairs, monkeypatch):
    import tests.test_train as core

    monkeypatch.setattr(core, "TINY", [])
    monkeypatch.setattr(core, "train_cmd", lambda run_dir, *overrides, nproc=1: [
        sys.executable, "-m", "trainer.train", "--config", "configs/creative_agent.yaml", "--run-dir", str(run_dir),
        *creative_args(packed_pairs, *overrides)])
    straight = core.run_train(repo_root, tmp_path / "straight")
    assert straight.returncode == EXIT_FINISHED, straight.stderr[-3000:]
    interrupt_and_resume(repo_root, tmp_path / "resumed", after_step=2)
    assert step_losses(tmp_path / "resumed") == step_losses(tmp_path / "straight")
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])
