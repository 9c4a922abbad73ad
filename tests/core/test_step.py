"""trainer/core/step.py: one step's record read to the host in one copy, and the skip rules of
non-finite losses and gradient norms (both networks' norms are read together)."""

import pytest
import torch
from torch import nn

from trainer.core.checkpoint import Progress
from trainer.core.config import load_config
from trainer.core.step import TrainingStep, scalars_to_host


def test_scalars_to_host_equals_float_of_each_tensor_and_keeps_the_rest():
    values = {"f32": torch.tensor(1 / 3), "bf16": torch.tensor(1 / 3, dtype=torch.bfloat16),
              "f64": torch.tensor(1 / 3, dtype=torch.float64), "long": torch.tensor(7), "one": torch.tensor([2.5]),
              "inf": torch.tensor(float("inf")), "count": 4, "seconds": 0.25, "vector": torch.ones(3)}
    host = scalars_to_host(values)
    assert list(host) == list(values)
    for key in ("f32", "bf16", "f64", "long", "one", "inf"):
        assert type(host[key]) is float and host[key] == float(values[key]), key
    assert host["count"] == 4 and type(host["count"]) is int and host["seconds"] == 0.25
    assert host["vector"] is values["vector"]  # only one-element tensors are read
    assert scalars_to_host([torch.tensor(2.0), torch.tensor(float("nan"))])[0] == 2.0


class SqrtTask:
    """Generator loss sqrt(w) (finite at w = 0, with an infinite gradient there) or w * scale;
    the discriminator's loss d ** 2 * scale."""

    def __init__(self, g_scale: float = 1.0, d_scale: float = 1.0, sqrt: bool = False):
        self.g_scale, self.d_scale, self.sqrt = g_scale, d_scale, sqrt

    def generator_step(self, generator, discriminator, batch, weight):
        w = generator.weight.sum()
        loss = w.sqrt() if self.sqrt else w * self.g_scale
        return loss, {"w": w.detach()}, {}

    def discriminator_step(self, discriminator, context):
        loss = discriminator.weight.square().sum() * self.d_scale
        return loss, {"d": loss.detach(), "seconds": 0.5}


def make_step(task, init_g: float = 1.0):
    cfg = load_config("configs/smoke.yaml", ["train.overlap_labels=false", "train.max_nonfinite_steps=5"])
    generator, discriminator = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        generator.weight.fill_(init_g)
        discriminator.weight.fill_(1.0)
    networks = {"generator": generator, "discriminator": discriminator, "g_ddp": generator, "d_ddp": discriminator,
                "opt_g": torch.optim.SGD(generator.parameters(), lr=0.1),
                "opt_d": torch.optim.SGD(discriminator.parameters(), lr=0.1)}
    return TrainingStep(cfg, task, torch.device("cpu"), False, networks, "/nonexistent"), generator, discriminator


def test_a_finite_step_updates_both_and_records_floats(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    step, generator, discriminator = make_step(SqrtTask(g_scale=2.0))
    flags, record = step({}, 0.0, Progress(), lambda: True)
    assert flags == [0.0, 0.0, 0.0, 1.0]
    assert record["loss"] == 2.0 and record["w"] == 1.0 and record["d_loss"] == 1.0 and record["seconds"] == 0.5
    assert record["grad_norm_g"] == pytest.approx(2.0) and record["grad_norm_d"] == pytest.approx(2.0)
    assert all(type(record[k]) is float for k in ("loss", "w", "d_loss", "d", "grad_norm_g", "grad_norm_d"))
    assert generator.weight.item() == pytest.approx(1.0 - 0.1 * 2.0)
    assert discriminator.weight.item() == pytest.approx(1.0 - 0.1 * 2.0)


def test_a_non_finite_generator_norm_skips_both_networks(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    step, generator, discriminator = make_step(SqrtTask(sqrt=True), init_g=0.0)
    progress = Progress()
    flags, record = step({}, 0.0, progress, lambda: False)
    assert flags[:2] == [0.0, 0.0] and record["loss"] == 0.0
    assert record["grad_norm_g"] == float("inf") and "grad_norm_d" not in record
    assert generator.weight.item() == 0.0 and generator.weight.grad is None
    assert discriminator.weight.item() == 1.0  # computed but not applied; the next step zeroes it
    assert progress.num_nonfinite_total == 1 and step.num_nonfinite_in_row == 1


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_a_non_finite_loss_skips_its_network_and_after(repo_root, monkeypatch, which):
    monkeypatch.chdir(repo_root)
    task = SqrtTask(g_scale=float("inf")) if which == "generator" else SqrtTask(d_scale=float("nan"))
    step, generator, discriminator = make_step(task)
    progress = Progress()
    flags, record = step({}, 0.0, progress, lambda: False)
    assert flags[:2] == ([1.0, 0.0] if which == "generator" else [0.0, 1.0])
    assert discriminator.weight.item() == 1.0 and "grad_norm_d" not in record
    assert generator.weight.item() == (1.0 if which == "generator" else pytest.approx(0.9))
    assert ("grad_norm_g" in record) == (which == "discriminator")
    assert progress.num_nonfinite_total == 1
