"""Losses, per-batch diagnostics and alerts of the creative-agent variant (pure tensor code).

``out`` is the dict of :class:`trainer.models.creative.CreativeAgent`: ``wave`` (B, T),
``mask_input`` / ``mask_target`` (B, C, N) in [0, 1]. Every loss term has its weight in
``cfg.loss``; a term whose weight is 0 is still reported (for the logs) but not added.

Terms (each a scalar, before weighting):

- ``input`` / ``target``: L1 between compressed STFT magnitudes of the output and the input /
  the target (phase-insensitive reconstruction towards one source);
- ``spectral``: spectral convergence ``||(|Y| - |M|)||_F / ||M||_F`` to the even mix
  ``M = (input + target) / 2``;
- ``mel``: L1 between log-mel spectrograms (torchaudio filterbank) of the output and ``M``;
- ``gan``: least-squares generator term ``mean((D(output) - 1)^2)`` of the real/fake critic;
- ``mask_reg``: ``mean((2 m - 1)^2)`` over both masks (pulls masks away from the 0/1 extremes);
- ``balance``: ``(mean(m_in) - 0.5)^2 + (mean(m_tgt) - 0.5)^2`` (means over batch and cells);
- ``novelty``: ``mean((r_in^2 + r_tgt^2) / 2)``, ``r`` the per-item Pearson correlation of the
  output waveform with the input / the target;
- ``temporal``: ``sum over both masks of relu(temporal_target - s)^2``, ``s`` the mask's std over
  frames averaged over batch and channels (masks should vary over time; target 0.10).

Diagnostics (:func:`creative_diagnostics`) and the alert rule: see the README section
"The creative-agent variant".
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio

from trainer import spectral
from trainer.config import Config

__all__ = ["creative_generator_loss", "creative_discriminator_loss", "creative_diagnostics", "diagnostic_tensors",
           "summarize_diagnostics", "copy_alert", "grad_norm_alert", "complementarity_percent",
           "pearson", "synthetic_pairs", "ALERT_TARGET", "ALERT_INPUT", "ALERT_MIX"]

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


def _magnitude(wave: torch.Tensor, cfg: Config) -> torch.Tensor:
    spec = spectral.stft(wave, cfg.stft)
    return spectral.compressed_magnitude(spec, cfg.stft.compress_factor, cfg.stft.eps)


@functools.lru_cache(maxsize=8)
def _mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    return torchaudio.functional.melscale_fbanks(n_freqs, 0.0, sample_rate / 2, n_mels, sample_rate,
                                                 norm="slaney", mel_scale="slaney")


def _log_mel(wave: torch.Tensor, cfg: Config) -> torch.Tensor:
    power = spectral.stft(wave, cfg.stft).abs().pow(2)  # (B, F, N)
    fbank = _mel_filterbank(power.shape[1], cfg.loss.mel_bins, cfg.data.sample_rate).to(power.device)
    return torch.log(torch.einsum("bfn,fm->bmn", power, fbank) + 1e-5)


def creative_generator_loss(out: dict, input_wave: torch.Tensor, target_wave: torch.Tensor, cfg: Config,
                            disc: torch.nn.Module | None, gan_weight: float | None = None):
    """Weighted sum of the creative loss terms -> (total, {term: detached unweighted value}).

    ``gan_weight`` overrides ``cfg.loss.w_gan`` (the loop passes its scheduled value); with
    ``disc`` None or a zero weight the GAN term is neither computed nor added.
    """
    w = cfg.loss
    gan_weight = w.w_gan if gan_weight is None else gan_weight
    wave, m_in, m_tgt = out["wave"], out["mask_input"], out["mask_target"]
    mag_out = _magnitude(wave, cfg)
    even_mix = 0.5 * (input_wave + target_wave)
    mag_mix = _magnitude(even_mix, cfg)
    r_in, r_tgt = pearson(wave, input_wave), pearson(wave, target_wave)
    terms = {
        "input": (mag_out - _magnitude(input_wave, cfg)).abs().mean(),
        "target": (mag_out - _magnitude(target_wave, cfg)).abs().mean(),
        "spectral": (mag_out - mag_mix).norm() / (mag_mix.norm() + 1e-8),
        "mel": (_log_mel(wave, cfg) - _log_mel(even_mix, cfg)).abs().mean(),
        "mask_reg": mask_regularisation(m_in, m_tgt),
        "balance": balance_loss(m_in, m_tgt),
        "novelty": (0.5 * (r_in ** 2 + r_tgt ** 2)).mean(),
        "temporal": (torch.relu(w.temporal_target - temporal_std(m_in)) ** 2
                     + torch.relu(w.temporal_target - temporal_std(m_tgt)) ** 2),
    }
    weights = {"input": w.w_input, "target": w.w_target, "spectral": w.w_spectral, "mel": w.w_mel,
               "mask_reg": w.w_mask_reg, "balance": w.w_balance, "novelty": w.w_novelty,
               "temporal": w.w_temporal}
    if disc is not None and gan_weight > 0:
        terms["gan"] = ((disc(mag_out) - 1.0) ** 2).mean()
        weights["gan"] = gan_weight
    total = wave.new_zeros((), dtype=torch.float32)
    for name, value in terms.items():
        if weights[name] > 0:
            total = total + weights[name] * value
    return total, {name: value.detach() for name, value in terms.items()}


def creative_discriminator_loss(disc: torch.nn.Module, out: dict, input_wave: torch.Tensor,
                                target_wave: torch.Tensor, cfg: Config):
    """Least-squares real/fake loss: both source pieces are real (-> 1), the output is fake (-> 0).

    Returns (loss, {"d_real", "d_fake": mean scores, "real_acc", "fake_acc": share of real items
    scored > 0.5 / fake items scored < 0.5}). The output is detached here.
    """
    real = torch.cat([_magnitude(input_wave, cfg), _magnitude(target_wave, cfg)])
    fake = _magnitude(out["wave"].detach(), cfg)
    d_real, d_fake = disc(real).float(), disc(fake).float()
    loss = ((d_real - 1.0) ** 2).mean() + (d_fake ** 2).mean()
    info = {"d_real": d_real.mean().detach(), "d_fake": d_fake.mean().detach(),
            "real_acc": (d_real > 0.5).float().mean(), "fake_acc": (d_fake < 0.5).float().mean()}
    return loss, info


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


def summarize_diagnostics(records: list[dict]) -> dict:
    """Epoch aggregate of :func:`creative_diagnostics` records: numeric means, the alert of the
    mean correlations, and how many batches raised each alert (``alert_<kind>_batches``)."""
    if not records:
        return {}
    numeric = [k for k, v in records[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary = {k: float(np.mean([r[k] for r in records])) for k in numeric}
    summary["alert"] = copy_alert(summary["corr_input"], summary["corr_target"])
    for kind, text in (("copy_target", ALERT_TARGET), ("copy_input", ALERT_INPUT), ("mix", ALERT_MIX)):
        summary[f"alert_{kind}_batches"] = sum(r["alert"] == text for r in records)
    return summary


def grad_norm_alert(name: str, norm: float, threshold: float) -> str | None:
    """A warning line when a gradient norm is non-finite or above the safety threshold, else None."""
    if not math.isfinite(norm):
        return f"{name} gradient norm is {norm} (non-finite)"
    if threshold > 0 and norm > threshold:
        return f"{name} gradient norm {norm:.1f} exceeds the alert threshold {threshold:g}"
    return None


def synthetic_pairs(num: int, seconds: float, sr: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` (input, target) pairs for tests: a rhythmic click track (decaying noise bursts on a
    beat grid, 90-150 BPM, accented downbeats) and a chord tone (a major or minor triad of
    harmonic tones with a slow swell), at equal RMS within a pair. Returns two float32 tensors (num, round(seconds * sr))."""
    rng = np.random.default_rng(seed)
    length = int(round(seconds * sr))
    t = np.arange(length) / sr
    inputs, targets = np.zeros((num, length), np.float32), np.zeros((num, length), np.float32)
    click_len = max(1, int(0.08 * sr))
    decay = np.exp(-np.arange(click_len) / (0.015 * sr))
    for i in range(num):
        beat = 60.0 / rng.uniform(90, 150)
        for k, start in enumerate(np.arange(rng.uniform(0, min(beat, seconds) / 2), seconds, beat / 2)):
            begin = int(start * sr)
            end = min(length, begin + click_len)
            gain = 1.0 if k % 4 == 0 else 0.5
            inputs[i, begin:end] += gain * decay[:end - begin] * rng.standard_normal(end - begin)
        root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
        third = 4 if rng.random() < 0.5 else 3
        chord = np.zeros(length)
        for semitones in (0, third, 7):
            f0 = root * 2 ** (semitones / 12)
            for harmonic in range(1, 4):
                if harmonic * f0 < sr / 2:
                    chord += np.sin(2 * np.pi * harmonic * f0 * t + rng.uniform(0, 2 * np.pi)) / harmonic
        swell = 0.6 + 0.4 * np.sin(2 * np.pi * t / max(seconds, 1e-3) + rng.uniform(0, 2 * np.pi))
        targets[i] = chord * swell
    # equal RMS per pair (so an even mix correlates equally with both), then a common gain that
    # keeps every peak at or below 0.9
    inputs /= np.sqrt((inputs ** 2).mean(axis=1, keepdims=True)) + 1e-8
    targets /= np.sqrt((targets ** 2).mean(axis=1, keepdims=True)) + 1e-8
    peak = np.maximum(np.abs(inputs).max(axis=1, keepdims=True), np.abs(targets).max(axis=1, keepdims=True))
    inputs *= 0.9 / peak
    targets *= 0.9 / peak
    return torch.from_numpy(inputs), torch.from_numpy(targets)
