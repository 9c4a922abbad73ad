"""The creative-agent variant through the real training core: demo pairs, diagnostics, resume."""

import subprocess
import sys

import pytest
import torch

from tests.test_train import interrupt_and_resume, step_losses
from trainer.core.exitcodes import EXIT_FINISHED
from trainer.core.runstate import read_metrics, read_state
from trainer.tasks.creative import diagnostics

CONFIG = "configs/creative_smoke.yaml"  # the built-in synthetic pairs (logs/demo_creative)
TINY = ["train.epochs=2", "train.max_steps_per_epoch=3", "train.log_every=1", "data.batch_size=2"]
ALERTS = (diagnostics.ALERT_TARGET, diagnostics.ALERT_INPUT, diagnostics.ALERT_MIX)


def creative_cmd(run_dir, *extra):
    sets = [arg for item in (*TINY, *extra) for arg in ("--set", item)]
    return [sys.executable, "-m", "trainer.train", "--config", CONFIG, "--run-dir", str(run_dir), *sets]


def test_creative_run_logs_diagnostics_and_keeps_its_checkpoints(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(creative_cmd(run_dir), cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == EXIT_FINISHED, proc.stderr[-3000:]
    steps = [r for r in read_metrics(run_dir) if r.get("kind") == "step"]
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    assert len(steps) == 6 and len(epochs) == 2
    for key in ("mask_input_mean", "mask_target_mean", "balance_raw", "corr_input", "corr_target",
                "complementarity_pct", "temporal_diversity", "real_acc", "fake_acc", "grad_norm_g", "d_loss"):
        assert all(isinstance(r[key], float) for r in steps), key
    assert all(r["alert"] in ALERTS for r in steps) and all(e["valid_alert"] in ALERTS for e in epochs)
    assert "pesq_valid_rate" not in steps[0]
    assert 0.0 <= epochs[-1]["valid_complementarity"] <= 100.0
    kept = sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))
    sidecars = sorted(p.name for p in (run_dir / "checkpoints").glob("*.json"))
    assert sidecars == [name.replace(".pt", ".json") for name in kept]  # trainer.core.ckptinfo
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == sorted(kept + sidecars)
    assert kept == ["best_complementarity.pt", "best_loss.pt", "last.pt"]
    assert read_state(run_dir)["status"] == "finished"
    plots = subprocess.run([sys.executable, "-m", "trainer.plot", str(run_dir)], cwd=repo_root,
                           capture_output=True, text=True)
    assert plots.returncode == 0 and "creative.png" in plots.stdout


@pytest.mark.slow
def test_creative_resume_is_bit_exact(repo_root, tmp_path, monkeypatch):
    import tests.test_train as core

    monkeypatch.setattr(core, "train_cmd",
                        lambda run_dir, *overrides, nproc=1, config=None: creative_cmd(run_dir, *overrides))
    straight = core.run_train(repo_root, tmp_path / "straight")
    assert straight.returncode == EXIT_FINISHED, straight.stderr[-3000:]
    interrupt_and_resume(repo_root, tmp_path / "resumed", after_step=2)
    assert step_losses(tmp_path / "resumed") == step_losses(tmp_path / "straight")
    a = torch.load(tmp_path / "straight/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.pt", weights_only=True)
    assert all(torch.equal(a["generator"][k], b["generator"][k]) for k in a["generator"])


@pytest.mark.slow
def test_a_run_frozen_by_an_older_version_with_train_pesq_workers_resumes(repo_root, tmp_path):
    """Until issue 18 every task's config had ``train.pesq_workers`` (now the speech task's own): a creative
    run directory whose frozen config and checkpoint hold it still loads and resumes."""
    import yaml

    from trainer.core import checkpoint as ckpt

    run_dir = tmp_path / "run"
    first = subprocess.run(creative_cmd(run_dir, "train.epochs=1", "train.max_steps_per_epoch=2"), cwd=repo_root,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == EXIT_FINISHED, first.stderr[-3000:]
    frozen = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert "pesq_workers" not in frozen["train"]
    frozen["train"]["pesq_workers"] = 2  # as an older version wrote it
    (run_dir / "config.yaml").write_text(yaml.safe_dump(frozen))
    state = ckpt.load(run_dir / "checkpoints/last.pt")
    state["config"]["train"]["pesq_workers"] = 2
    state["epoch_totals"] = {"num_valid": 0, "num_items": 0}
    ckpt.save_run_checkpoints(state, run_dir / "checkpoints", ())
    _, cfg, _ = ckpt.load_generator(run_dir / "checkpoints/last.pt")
    assert cfg.task == "creative_agent" and not hasattr(cfg.train, "pesq_workers")

    resumed = subprocess.run([sys.executable, "-m", "trainer.train", "--run-dir", str(run_dir), "--set",
                              "train.epochs=2"], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == EXIT_FINISHED, resumed.stderr[-3000:]
    epochs = [r for r in read_metrics(run_dir) if r.get("kind") == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1] and all("pesq_valid_rate" not in r for r in epochs)
    assert "train.pesq_workers is not a setting of task creative_agent" in resumed.stderr
