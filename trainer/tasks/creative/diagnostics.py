"""Diagnostics and the copy alert of the creative-agent variant (pure tensor code).

Per batch (:func:`diagnostic_tensors`, logged with every step record): mask means, the raw balance
loss, output->input and output->target correlation, complementarity, mask regularisation and
temporal diversity; each log window and epoch gets the :func:`copy_alert` of its mean
correlations. The rule and the thresholds: docs/creative.md.
"""

from __future__ import annotations

import torch

ALERT_TARGET = "output is copying the target"
ALERT_INPUT = "output is copying the input"
ALERT_MIX = "output mixes both sources"


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-item Pearson correlation of two (B, T) waves -> (B,); 0 for a silent item."""
    a = a.float() - a.float().mean(-1, keepdim=True)
    b = b.float() - b.float().mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def copy_alert(corr_input: float, corr_target: float) -> str:
    """The alert line: target correlation > 2x input correlation (absolute values) -> copying the
    target; the reverse -> copying the input; else the output mixes both sources."""
    corr_input, corr_target = abs(corr_input), abs(corr_target)
    if corr_target > 2 * corr_input:
        return ALERT_TARGET
    if corr_input > 2 * corr_target:
        return ALERT_INPUT
    return ALERT_MIX


def complementarity_percent(mask_input: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    """Share (in %) of representation cells (batch x channel x frame) where exactly one mask is
    above 0.5: one source passes while the other is attenuated."""
    return ((mask_input > 0.5) ^ (mask_target > 0.5)).float().mean() * 100.0


def balance_loss(mask_input: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    return (mask_input.mean() - 0.5) ** 2 + (mask_target.mean() - 0.5) ** 2


def mask_regularisation(mask_input: torch.Tensor, mask_target: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((2 * mask_input - 1) ** 2).mean() + 0.5 * ((2 * mask_target - 1) ** 2).mean()


def temporal_std(mask: torch.Tensor) -> torch.Tensor:
    """Std of a (B, C, N) mask over frames, averaged over batch and channels (0 for one frame)."""
    if mask.shape[-1] < 2:
        return mask.new_zeros(())
    return mask.std(dim=-1).mean()


@torch.no_grad()
def diagnostic_tensors(out: dict, input_wave: torch.Tensor, target_wave: torch.Tensor) -> dict:
    """Per-batch diagnostics as detached 0-dim tensors (no host sync; the loop averages them).
    The alert of a window or an epoch is :func:`copy_alert` of its mean correlations."""
    m_in, m_tgt = out["mask_input"].float(), out["mask_target"].float()
    return {
        "mask_input_mean": m_in.mean(),
        "mask_target_mean": m_tgt.mean(),
        "balance_raw": balance_loss(m_in, m_tgt),
        "corr_input": pearson(out["wave"], input_wave).mean(),
        "corr_target": pearson(out["wave"], target_wave).mean(),
        "complementarity_pct": complementarity_percent(m_in, m_tgt),
        "mask_reg": mask_regularisation(m_in, m_tgt),
        "temporal_diversity": 0.5 * (temporal_std(m_in) + temporal_std(m_tgt)),
    }


def creative_diagnostics(out: dict, input_wave: torch.Tensor, target_wave: torch.Tensor) -> dict:
    """:func:`diagnostic_tensors` as plain floats plus the ``alert`` string (for metrics.jsonl)."""
    diag = {k: float(v) for k, v in diagnostic_tensors(out, input_wave, target_wave).items()}
    diag["alert"] = copy_alert(diag["corr_input"], diag["corr_target"])
    return diag
