"""The task registry: a third model family defined here, in the test, trains through the unchanged loop."""

import ast
import dataclasses

import pytest
import torch
from torch import nn

from trainer.core.config import CheckpointConfig, ConfigError, load_config
from trainer.core.registry import TaskSpec, register_generator, register_task, task_names
from trainer.core.runstate import read_metrics, read_state
from trainer.core.settings import TRAJECTORY, Section, setting
from trainer.core.task import Task
from trainer.data.demo import ensure_demo_corpus


@dataclasses.dataclass(kw_only=True)
class GainModelConfig(Section):
    name: str = setting("gain", "the only generator", choices=("gain",), resume=TRAJECTORY)
    init: float = setting(1.0, "initial gain", min=0.0, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class NoDiscriminatorConfig(Section):
    width: int = setting(1, "width of the critic", min=1, resume=TRAJECTORY)


@dataclasses.dataclass(kw_only=True)
class GainLossConfig(Section):
    w_gan: float = setting(0.0, "no GAN term", min=0.0, resume=TRAJECTORY)
    gan_start_fraction: float = setting(0.0, "unused", min=0.0, max=1.0, resume=TRAJECTORY)
    gan_ramp_epochs: int = setting(0, "unused", min=0, resume=TRAJECTORY)


class Gain(nn.Module):
    def __init__(self, init: float):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(init))

    def forward(self, noisy):
        return {"wave": self.gain * noisy}


@register_generator("gain")
def build_gain(cfg):
    return Gain(cfg.model.init)


class GainTask(Task):
    """Learn one gain that maps noisy to clean (L1); the critic learns the mean level."""

    def build_models(self):
        return build_gain(self.cfg), nn.Linear(1, self.cfg.discriminator.width)

    def generator_step(self, generator, discriminator, batch, gan_weight):
        clean, noisy = batch["clean"].to(self.device), batch["noisy"].to(self.device)
        out = generator(noisy)
        loss = (out["wave"] - clean).abs().mean()
        return loss, {"l1": loss.detach()}, {"level": out["wave"].detach().abs().mean(dim=1, keepdim=True)}

    def discriminator_step(self, discriminator, context):
        loss = discriminator(context["level"]).square().mean()
        return loss, {}

    def validate_item(self, generator, discriminator, batch):
        out = generator(batch["noisy"].to(self.device))
        return {"name": batch["names"][0], "loss": float((out["wave"] - batch["clean"]).abs().mean())}


SPEC = TaskSpec(name="gain_test", sections={"model": GainModelConfig, "discriminator": NoDiscriminatorConfig,
                                            "loss": GainLossConfig, "checkpoint": CheckpointConfig},
                task=GainTask, models=__name__, demo=ensure_demo_corpus, architecture_keys=("model.name",),
                checkpoint_metrics=("loss",))


@pytest.fixture(scope="module")
def gain_task():
    register_task(SPEC)
    return SPEC


def test_a_task_defined_in_a_test_trains_two_steps_through_the_loop(gain_task, tmp_path, repo_root,
                                                                     monkeypatch, one_torch_thread):
    from trainer.train import main

    monkeypatch.chdir(repo_root)  # the demo corpus lives under logs/
    assert "gain_test" in task_names()
    run_dir, config = tmp_path / "gain", tmp_path / "gain.yaml"
    config.write_text("task: gain_test\n")
    sets = ["data.demo=true", "data.num_workers=0", "data.batch_size=2", "data.crop_seconds=0.5",
            "train.epochs=1", "train.max_steps_per_epoch=2", "train.log_every=1", "valid.max_utterances=2",
            "checkpoint.every_steps=0", "model.init=0.5"]
    assert main(["--run-dir", str(run_dir), "--config", str(config),
                 *[a for s in sets for a in ("--set", s)]]) == 0
    steps = [r for r in read_metrics(run_dir) if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2] and all("l1" in r and "grad_norm_g" in r for r in steps)
    epoch = [r for r in read_metrics(run_dir) if r["kind"] == "epoch"][0]
    assert epoch["valid_loss"] > 0 and epoch["checkpoints"] == ["last", "best_loss"]
    assert read_state(run_dir)["status"] == "finished"


def test_a_tasks_sections_replace_the_others(gain_task):
    cfg = load_config(None, ["task=gain_test", "data.demo=true", "model.init=2"])
    assert cfg.model.init == 2.0 and not hasattr(cfg.loss, "w_ri")
    with pytest.raises(ConfigError, match="unknown key model.num_channels; valid keys in model: init, name"):
        load_config(None, ["task=gain_test", "data.demo=true", "model.num_channels=8"])
    with pytest.raises(ConfigError, match="task: 'nope' is not a registered task; valid tasks: .*speech_enhancement"):
        load_config(None, ["task=nope"])


def test_core_gets_its_loaders_through_the_data_kind_registry(repo_root):
    """core/ imports nothing from data/, tasks/ or metrics/; the paired kind builds a default config's loaders."""
    from trainer.core.registry import data_kind, data_loaders

    for path in sorted((repo_root / "trainer/core").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                assert not name.startswith(("trainer.data", "trainer.tasks", "trainer.metrics")), (path, name)
    cfg = load_config("configs/smoke.yaml")
    assert data_kind(cfg) == "paired"
    assert data_loaders(cfg).__name__ == "trainer.data.shards"


def _code_without_docstrings(source: str) -> str:
    """The module's code as Python sees it: no comments (ast drops them), no docstrings."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def test_core_names_no_pesq_outside_docstrings_and_comments(repo_root):
    """The PESQ label rate and pool belong to the speech task (its epoch counters, record extras and
    warnings, its ``train.pesq_workers``): no name, key or message of the core's code mentions PESQ."""
    for path in sorted((repo_root / "trainer/core").glob("*.py")):
        code = _code_without_docstrings(path.read_text())
        assert "pesq" not in code.lower(), (path, [line for line in code.splitlines() if "pesq" in line.lower()])
