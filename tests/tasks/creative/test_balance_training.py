"""The balance loss on a short CPU run (synthetic click track + chord pairs, a tiny agent).

The masks start deliberately unbalanced (input ~0.2, target ~0.8) and a reconstruction loss
towards the target (weight 1.0) pulls them further apart, the setting in which the users saw the
output copy the target. With balance weight 5 both means end within 0.05 of 0.5 (and the output
still copies the target); with weight 0 the masks run to the extremes (input ~0, target ~1).
"""

from __future__ import annotations

import pytest
import torch

from trainer.core.config import load_config
from trainer.core.registry import build_generator
from trainer.data import synth
from trainer.tasks.creative import diagnostics, losses

SR = 8000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def train_briefly(w_balance: float, num_steps: int, *extra: str) -> dict:
    cfg = load_config(None, [
        "task=creative_agent", "model.name=creative_agent", "data.demo=true", f"data.sample_rate={SR}",
        "stft.n_fft=128", "stft.hop_length=64", "model.dim=16", "model.num_heads=2",
        "model.num_transformer_layers=1", "model.num_stages=2", "loss.mel_bins=20",
        "loss.w_target=1.0", "loss.w_mask_reg=0.0", "loss.w_gan=0.0", f"loss.w_balance={w_balance}", *extra])
    torch.manual_seed(0)
    model = build_generator(cfg)
    with torch.no_grad():
        model.agent.mask_input.bias.fill_(-1.5)
        model.agent.mask_target.bias.fill_(1.5)
    inputs, targets = synth.synthetic_pairs(4, 0.5, SR, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    start = None
    for _ in range(num_steps):
        out = model(inputs, targets)
        if start is None:
            start = diagnostics.creative_diagnostics(out, inputs, targets)
        total, _ = losses.creative_generator_loss(out, inputs, targets, cfg, None)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        end = diagnostics.creative_diagnostics(model(inputs, targets), inputs, targets)
    return {"start": start, "end": end}


def test_balance_weight_5_holds_both_mask_means_at_one_half():
    run = train_briefly(5.0, num_steps=100)
    assert run["start"]["mask_input_mean"] < 0.3 and run["start"]["mask_target_mean"] > 0.7
    assert abs(run["end"]["mask_input_mean"] - 0.5) < 0.05, run["end"]
    assert abs(run["end"]["mask_target_mean"] - 0.5) < 0.05, run["end"]
    # the users' lesson: balanced masks, yet the target reconstruction makes the output copy the
    # target (here corr_target ~0.91 against corr_input ~0.22 after 100 steps), and only the
    # correlations show it
    assert run["end"]["alert"] == diagnostics.ALERT_TARGET, run["end"]


def test_without_balance_the_target_reconstruction_unbalances_the_masks():
    run = train_briefly(0.0, num_steps=40)
    # not a law of nature, but what this setting does: the input mask closes, the target mask opens
    assert run["end"]["mask_input_mean"] < 0.45 and run["end"]["mask_target_mean"] > 0.55, run["end"]
    assert run["end"]["alert"] == diagnostics.ALERT_TARGET


def test_balance_gradient_points_towards_one_half():
    masks = torch.tensor([0.2, 0.9]).requires_grad_(True)
    diagnostics.balance_loss(masks[0], masks[1]).backward()
    assert masks.grad[0] < 0 < masks.grad[1]
