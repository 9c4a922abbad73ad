"""Creative-agent variant: loss terms, diagnostics and alerts, the model's contract, presets."""

from __future__ import annotations

import pytest
import torch

from trainer.core import steplog
from trainer.core.config import load_config
from trainer.core.registry import build_generator
from trainer.data import synth
from trainer.tasks.creative import diagnostics, losses
from trainer.tasks.creative.models import build_discriminator as build_creative_discriminator

SR = 8000
TINY = ["task=creative_agent", "model.name=creative_agent", "data.demo=true", f"data.sample_rate={SR}",
        "stft.n_fft=128", "stft.hop_length=64", "model.dim=16", "model.num_heads=2",
        "model.num_transformer_layers=1", "model.num_stages=2", "loss.mel_bins=20",
        "discriminator.num_channels=4"]


def tiny_config(*extra: str):
    return load_config(None, TINY + list(extra))


@pytest.fixture(scope="module")
def pairs():
    return synth.synthetic_pairs(3, 0.5, SR, seed=1)


def constant_masks(batch: int, value_in: float, value_tgt: float, shape=(65, 63)):
    return (torch.full((batch, *shape), value_in), torch.full((batch, *shape), value_tgt))


def test_synthetic_pairs_are_deterministic_equal_rms_and_distinct(pairs):
    again = synth.synthetic_pairs(3, 0.5, SR, seed=1)
    assert torch.equal(pairs[0], again[0]) and torch.equal(pairs[1], again[1])
    inputs, targets = pairs
    assert inputs.shape == targets.shape == (3, 4000)
    rms_in, rms_tgt = inputs.pow(2).mean(1).sqrt(), targets.pow(2).mean(1).sqrt()
    torch.testing.assert_close(rms_in, rms_tgt, rtol=1e-4, atol=0)
    assert float(torch.maximum(inputs.abs().amax(1), targets.abs().amax(1)).min()) == pytest.approx(0.9)
    # a click track and a chord are nearly uncorrelated
    assert diagnostics.pearson(inputs, targets).abs().max() < 0.2


@pytest.mark.parametrize("source, alert", [("target", diagnostics.ALERT_TARGET), ("input", diagnostics.ALERT_INPUT),
                                           ("mix", diagnostics.ALERT_MIX)])
def test_alerts_on_constructed_outputs(pairs, source, alert):
    inputs, targets = pairs
    wave = {"target": targets, "input": inputs, "mix": 0.5 * (inputs + targets)}[source]
    m_in, m_tgt = constant_masks(3, 0.5, 0.5)
    diag = diagnostics.creative_diagnostics({"wave": wave, "mask_input": m_in, "mask_target": m_tgt},
                                         inputs, targets)
    assert diag["alert"] == alert
    if source == "target":
        assert diag["corr_target"] == pytest.approx(1.0, abs=1e-5) and diag["corr_input"] < 0.2
    if source == "mix":
        assert 0.5 < diag["corr_input"] < 0.9 and 0.5 < diag["corr_target"] < 0.9


def test_copy_alert_rule_uses_absolute_values_and_a_strict_factor_two():
    assert diagnostics.copy_alert(0.3, 0.61) == diagnostics.ALERT_TARGET
    assert diagnostics.copy_alert(0.3, 0.6) == diagnostics.ALERT_MIX  # exactly 2x is not "more than 2x"
    assert diagnostics.copy_alert(-0.9, 0.1) == diagnostics.ALERT_INPUT  # an inverted copy is still a copy
    assert diagnostics.copy_alert(0.0, 0.0) == diagnostics.ALERT_MIX


def test_complementarity_counts_cells_where_exactly_one_mask_is_above_half():
    m_in = torch.tensor([[[0.9, 0.9, 0.1, 0.6]]])
    m_tgt = torch.tensor([[[0.1, 0.8, 0.2, 0.4]]])
    assert float(diagnostics.complementarity_percent(m_in, m_tgt)) == pytest.approx(50.0)
    assert float(diagnostics.complementarity_percent(m_in, 1 - m_in)) == pytest.approx(100.0)


def test_loss_terms_are_scalars_and_vanish_where_they_should(pairs):
    cfg = tiny_config("loss.temporal_target=0.1")
    inputs, targets = pairs
    half = constant_masks(3, 0.5, 0.5)

    def terms_for(wave, masks):
        out = {"wave": wave, "mask_input": masks[0], "mask_target": masks[1]}
        return losses.creative_generator_loss(out, inputs, targets, cfg, None)[1]

    terms = terms_for(0.5 * (inputs + targets), half)
    assert set(terms) == {"input", "target", "spectral", "mel", "mask_reg", "balance", "novelty", "temporal"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    for zero in ("spectral", "mel", "mask_reg", "balance"):
        assert float(terms[zero]) == pytest.approx(0.0, abs=1e-6), zero
    # constant masks do not vary over time: each mask misses the 0.1 target completely
    assert float(terms["temporal"]) == pytest.approx(2 * 0.1 ** 2)
    assert float(terms_for(inputs, half)["input"]) == pytest.approx(0.0, abs=1e-7)
    assert float(terms_for(targets, half)["target"]) == pytest.approx(0.0, abs=1e-7)
    assert float(terms_for(torch.zeros_like(inputs), half)["novelty"]) == 0.0
    assert float(terms_for(targets, half)["novelty"]) == pytest.approx(0.5 * (1 + float(
        diagnostics.pearson(targets, inputs).pow(2).mean())), rel=1e-4)
    extreme = constant_masks(3, 0.0, 1.0)
    ex = terms_for(targets, extreme)
    assert float(ex["balance"]) == pytest.approx(0.5) and float(ex["mask_reg"]) == pytest.approx(1.0)
    frames = torch.arange(63) % 2 * 0.4 + 0.3  # alternates 0.3 / 0.7: std over time about 0.2
    varying = (frames.expand(3, 65, 63).clone(), frames.expand(3, 65, 63).clone())
    assert float(terms_for(targets, varying)["temporal"]) == 0.0


def test_total_is_the_weighted_sum_and_zero_weights_are_not_added(pairs):
    inputs, targets = pairs
    cfg = tiny_config("loss.w_target=1.0", "loss.w_balance=5.0", "loss.w_mask_reg=0.1", "loss.w_novelty=0.5",
                      "loss.w_gan=0.1")
    disc = build_creative_discriminator(cfg)
    masks = constant_masks(3, 0.3, 0.8)
    out = {"wave": targets.clone().requires_grad_(True), "mask_input": masks[0], "mask_target": masks[1]}
    total, terms = losses.creative_generator_loss(out, inputs, targets, cfg, disc)
    expected = (terms["target"] + 5.0 * terms["balance"] + 0.1 * terms["mask_reg"] + 0.5 * terms["novelty"]
                + 0.1 * terms["gan"])
    assert float(total.detach()) == pytest.approx(float(expected), rel=1e-5)
    no_gan_total, no_gan = losses.creative_generator_loss(out, inputs, targets, cfg, disc, gan_weight=0.0)
    assert "gan" not in no_gan
    assert float(no_gan_total.detach()) == pytest.approx(float(expected - 0.1 * terms["gan"]), rel=1e-5)
    total.backward()
    assert out["wave"].grad is not None and torch.isfinite(out["wave"].grad).all()


def test_discriminator_loss_reports_accuracy_and_leaves_the_generator_alone(pairs):
    inputs, targets = pairs
    cfg = tiny_config()
    disc = build_creative_discriminator(cfg)
    wave = (0.5 * (inputs + targets)).requires_grad_(True)
    out = {"wave": wave}
    loss, info = losses.creative_discriminator_loss(disc, out, inputs, targets, cfg)
    assert loss.dim() == 0 and set(info) == {"d_real", "d_fake", "real_acc", "fake_acc"}
    assert all(0.0 <= float(info[k]) <= 1.0 for k in ("real_acc", "fake_acc"))
    loss.backward()
    assert wave.grad is None
    assert all(p.grad is not None for p in disc.parameters() if p.requires_grad)


def test_model_contract_masks_stages_and_anti_cheating_noise(pairs):
    inputs, targets = pairs
    torch.manual_seed(0)
    model = build_generator(tiny_config("model.num_stages=3"))
    with torch.no_grad():  # give the refining stages a non-zero effect
        for stage in model.stages:
            stage.delta_input.weight.normal_(0, 0.5)
    out = model(inputs, targets)
    assert out["wave"].shape == inputs.shape
    assert out["mask_input"].shape == out["mask_target"].shape == (3, 65, 4000 // 64 + 1)
    assert len(out["stage_masks"]) == 3
    for mask in (out["mask_input"], out["mask_target"]):
        assert float(mask.detach().min()) >= 0.0 and float(mask.detach().max()) <= 1.0
    model.eval()
    with torch.no_grad():
        first, second = model(inputs, targets), model(inputs, targets)
        torch.manual_seed(1)
        model.train()
        noisy = model(inputs, targets)
    assert torch.equal(first["wave"], second["wave"])  # no noise at evaluation
    assert not torch.allclose(noisy["mask_input"], first["mask_input"])  # noise enters stages 2+
    torch.testing.assert_close(noisy["stage_masks"][0][0], first["stage_masks"][0][0])  # not stage 1
    with pytest.raises(ValueError, match="input and target"):
        model(inputs, targets[:, :-1])


def test_grad_norm_alert():
    assert steplog.grad_norm_alert("generator", 150.0, 100.0) is not None
    assert steplog.grad_norm_alert("generator", 50.0, 100.0) is None
    assert steplog.grad_norm_alert("generator", float("nan"), 100.0) is not None
    assert steplog.grad_norm_alert("generator", 1e6, 0.0) is None  # 0 = off


def test_presets_load_with_the_users_recipes(repo_root):
    plain = load_config(repo_root / "configs/creative_agent.yaml")
    fixed = load_config(repo_root / "configs/creative_agent_fixed.yaml")
    assert plain.task == fixed.task == "creative_agent" and plain.model.name == "creative_agent"
    assert (plain.loss.w_target, plain.loss.w_spectral, plain.loss.w_mel, plain.loss.w_gan,
            plain.loss.w_mask_reg, plain.loss.w_balance) == (0.0, 0.0, 0.0, 0.1, 0.1, 5.0)
    assert (plain.optim.name, plain.optim.lr, plain.optim.weight_decay, plain.data.batch_size) == (
        "adamw", 1e-4, 0.01, 16)
    assert (plain.data.sample_rate, plain.data.crop_seconds) == (24000, 16.0)
    assert (plain.model.dim, plain.model.num_heads, plain.model.num_transformer_layers,
            plain.model.num_stages, plain.model.anti_cheat_noise) == (128, 8, 6, 3, 0.9)
    assert (fixed.loss.w_input, fixed.loss.w_target, fixed.loss.w_balance, fixed.loss.w_novelty,
            fixed.loss.w_gan) == (0.0, 0.0, 10.0, 0.5, 0.1)
    assert plain.run_dir() != fixed.run_dir()
