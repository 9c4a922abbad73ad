"""Losses of the creative-agent variant (pure tensor code; the diagnostics are :mod:`.diagnostics`).

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

"""

from __future__ import annotations

import functools

import torch
import torchaudio

from trainer.audio import spectral
from trainer.core.config import Config
from trainer.tasks.creative.diagnostics import balance_loss, mask_regularisation, pearson, temporal_std

__all__ = ["creative_generator_loss", "creative_discriminator_loss"]



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


