"""The resume rule (trainer/core/changes.py): trajectory settings refused, free ones recorded."""

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from trainer.core.changes import diff_configs, resume_changes
from trainer.core.config import config_class, load_config, save_config
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_FINISHED, EXIT_REQUEUE
from trainer.core.registry import task_names
from trainer.core.runstate import read_metrics
from trainer.core.settings import TRAJECTORY, ConfigError, Section, resume_classes, setting

TINY = ["train.max_steps_per_epoch=4", "train.log_every=1", "valid.max_utterances=2", "valid.stoi_every=100",
        "train.pesq_workers=0", "checkpoint.every_steps=0", "data.batch_size=2", "data.num_workers=0",
        "loss.gan_start_fraction=0.0", "loss.gan_ramp_epochs=0", "train.tensorboard=false"]


def train_cmd(run_dir, *overrides, allow=()):
    sets = [arg for item in (*TINY, *overrides) for arg in ("--set", item)]
    allows = [arg for key in allow for arg in ("--allow-change", key)]
    return [sys.executable, "-m", "trainer.train", "--config", "configs/smoke.yaml", "--run-dir", str(run_dir),
            *sets, *allows]


def train(repo_root, run_dir, *overrides, allow=()):
    return subprocess.run(train_cmd(run_dir, *overrides, allow=allow), cwd=repo_root, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})


def files_of(run_dir):
    """Every file of the run directory with its content hash and modification time."""
    return {str(p.relative_to(run_dir)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_every_training_setting_declares_its_resume_class():
    for task in task_names():
        classes = resume_classes(config_class(task))
        assert classes and all(kind in ("trajectory", "free") for kind in classes.values()), task
        assert classes["run.seed"] == classes["data.batch_size"] == classes["optim.lr"] == TRAJECTORY
        assert classes["valid.every_epochs"] == classes["train.epochs"] == classes["train.log_every"] == "free"


def test_a_setting_without_a_resume_class_is_a_programming_error(monkeypatch):
    @dataclasses.dataclass(kw_only=True)
    class Undeclared(Section):
        width: int = setting(3, "a new setting that forgot its class")

    from trainer.core import config, registry

    spec = registry.task_spec("speech_enhancement")
    monkeypatch.setattr(config, "task_spec", lambda task: dataclasses.replace(
        spec, sections={**spec.sections, "model": Undeclared}))
    config_class.cache_clear()
    try:
        with pytest.raises(TypeError, match="model.width"):
            config_class("speech_enhancement")
    finally:
        monkeypatch.undo()
        config_class.cache_clear()


def test_diff_names_both_values_and_the_class(tmp_path):
    frozen = load_config("configs/smoke.yaml")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints/last.pt").write_bytes(b"")
    save_config(frozen, tmp_path / "config.yaml")
    now = load_config("configs/smoke.yaml", ["optim.lr=0.002", "run.seed=7", "valid.every_epochs=3"])
    assert [(c.key, c.old, c.new, c.trajectory) for c in diff_configs({"run": {"seed": 0}}, now)] == [
        ("run.seed", 0, 7, True)]  # 2.0e-3 == 0.002: the same value, however written
    with pytest.raises(ConfigError, match=r"run.seed: 0 in the run, 7 now.*--allow-change run.seed"):
        resume_changes(now, tmp_path)
    changes = resume_changes(now, tmp_path, ["run.seed"])
    assert {(c.key, c.trajectory) for c in changes} == {("run.seed", True), ("valid.every_epochs", False)}
    with pytest.raises(ConfigError, match="--allow-change run.sed: not a setting"):
        resume_changes(now, tmp_path, ["run.sed"])
    (tmp_path / "checkpoints/last.pt").unlink()
    assert resume_changes(now, tmp_path) == []  # no checkpoint yet: a new run, any config


def stop_after_first_step(repo_root, run_dir):
    """Start a 2-epoch run and stop it (SIGUSR2: save and exit 42) once a step record exists."""
    proc = subprocess.Popen(train_cmd(run_dir, "train.epochs=2"), cwd=repo_root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if any(r.get("kind") == "step" for r in read_metrics(run_dir)):
            os.killpg(proc.pid, signal.SIGUSR2)
            break
        time.sleep(0.05)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == EXIT_REQUEUE, err[-3000:]
    return torch.load(run_dir / "checkpoints/last.pt", weights_only=True)["step"]


@pytest.mark.slow
def test_resume_refuses_trajectory_changes_and_records_the_others(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    step = stop_after_first_step(repo_root, run_dir)
    assert 1 <= step < 8
    before = files_of(run_dir)
    # 4: the mid-epoch case
    for change, old, new in (("run.seed=7", "0", "7"), ("data.batch_size=4", "2", "4")):
        refused = train(repo_root, run_dir, "train.epochs=2", change)
        assert refused.returncode == EXIT_BAD_INPUT, refused.stderr[-3000:]
        key = change.split("=")[0]
        assert f"{key}: {old} in the run, {new} now" in refused.stderr and f"--allow-change {key}" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "Traceback" not in refused.stderr
        assert files_of(run_dir) == before  # nothing written: checkpoint, config, logs, state as they were

    allowed = train(repo_root, run_dir, "train.epochs=2", "valid.every_epochs=2")
    assert allowed.returncode == EXIT_FINISHED, allowed.stderr[-3000:]
    assert f"config change at step {step}: valid.every_epochs: 1 -> 2 (free setting)" in allowed.stderr
    assert "valid.every_epochs: 1 -> 2" in (run_dir / "train.log").read_text()
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert saved["config_changes"] == [{"key": "valid.every_epochs", "old": 1, "new": 2, "step": step,
                                        "class": "free", "allowed_by": "free setting"}]

    extended = train(repo_root, run_dir, "train.epochs=3", "valid.every_epochs=2", "run.seed=7", allow=["run.seed"])
    assert extended.returncode == EXIT_FINISHED, extended.stderr[-3000:]
    assert "config change at step 8: run.seed: 0 -> 7 (--allow-change)" in extended.stderr
    saved = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert [(c["key"], c["step"], c["allowed_by"]) for c in saved["config_changes"]] == [
        ("valid.every_epochs", step, "free setting"), ("run.seed", 8, "--allow-change"),
        ("train.epochs", 8, "free setting")]
    assert saved["config"]["run"]["seed"] == 7 and saved["step"] == 12
