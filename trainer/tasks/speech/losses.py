"""Generator and discriminator losses of the metric-GAN speech-enhancement task.

Generator: ``w_ri * RI + w_mag * MAG + w_time * TIME + gan_weight * GAN [+ w_phase * PHASE
+ w_consistency * CONSISTENCY]`` with
- RI: MSE of the real parts plus MSE of the imaginary parts of the compressed complex spectra
  (MP-SENet's "complex loss" ``mse(com) * 2`` is this term);
- MAG: MSE of the compressed magnitudes;
- TIME: L1 of the waveforms;
- GAN: MSE of D(clean_mag, est_mag) to 1 (the estimate should score the best PESQ);
- PHASE (when ``w_phase > 0``): MP-SENet's anti-wrapping phase loss, instantaneous phase +
  group delay (phase difference along frequency) + instantaneous angular frequency (along time),
  each the mean of ``|x - 2 pi round(x / 2 pi)|`` of the estimate-minus-target difference;
- CONSISTENCY (when ``w_consistency > 0``): the RI distance between the estimate's compressed
  spectrum and the analysis of its own output wave (MP-SENet's STFT consistency loss).
The two extra terms appear in ``terms`` only when their weight is positive.

Targets come from the generator's own analysis (``trainer.tasks.speech.models.analysis_for``):
CMGAN's Hamming/``|X| ** 0.3`` spectra, MP-SENet's ``mag_pha_stft``, or the toolkit's STFT
front-end for BSRNN. The discriminator sees the generator's magnitude output (CMGAN, BSRNN) or
the analysis of the enhanced wave (MP-SENet's ``mag_g_hat``). With the presets' weights the total
is each paper's training loss (CMGAN train.py lines 124-151, MP-SENet train.py lines 164-181).

Padding: with ``lengths`` given (training passes the batch's), the waveform term averages over the
samples before each item's length and the spectral terms (RI, MAG, PHASE, CONSISTENCY) over the
STFT frames whose window ends within it (frame n is kept when ``n * hop + n_fft // 2 <= length``;
centred frames; the group delay per kept frame, the angular frequency per pair of kept frames), so
a zero-padded item's terms equal those of the same item unpadded; without it every sample and
frame counts. The GAN term always sees the whole (padded) spectra, as the discriminator does.

Discriminator: MSE(D(clean, clean), 1) over every item plus the MSE of D(clean, estimate) to the
normalised PESQ over the items whose PESQ was computed. Items whose PESQ failed get weight 0,
never the whole batch dropped: the loss stays a function of every parameter, so all DDP ranks
run the same backward and the same all-reduces even when one rank has no valid item.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.core.config import Config
from trainer.tasks.speech.models import analysis_for

__all__ = ["generator_loss", "discriminator_loss", "discriminator_scores", "discriminator_loss_from_scores",
           "anti_wrapping", "phase_losses"]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (B, ...) over the entries where ``mask`` (broadcastable) is true."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """``|x - round(x / 2 pi) * 2 pi|``: the distance of ``x`` to the nearest multiple of 2 pi."""
    return torch.abs(x - torch.round(x / (2 * math.pi)) * (2 * math.pi))


def phase_losses(ref: torch.Tensor, est: torch.Tensor, frame_mask: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MP-SENet's ``(ip, gd, iaf)`` of phases ``(B, F, N)`` (``models/model.py`` ``phase_losses``):
    instantaneous phase, group delay (``diff`` along frequency) and instantaneous angular frequency
    (``diff`` along frames), anti-wrapped. ``frame_mask`` (B, 1, N) keeps the real frames."""
    ip = _masked_mean(anti_wrapping(ref - est), frame_mask)
    gd = _masked_mean(anti_wrapping(torch.diff(ref, dim=1) - torch.diff(est, dim=1)), frame_mask)
    iaf = _masked_mean(anti_wrapping(torch.diff(ref, dim=2) - torch.diff(est, dim=2)),
                       None if frame_mask is None else frame_mask[..., 1:])
    return ip, gd, iaf


def _phase(spectra: dict[str, torch.Tensor]) -> torch.Tensor:
    """A model's own phase (``pha``) or, without one, the compressed spectrum's phase with MP-SENet's
    epsilons (a finite gradient at silence)."""
    if "pha" in spectra:
        return spectra["pha"].float()
    spec = spectra["spec"]
    return torch.atan2(spec.imag + 1e-10, spec.real + 1e-5)


def _ri(diff: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return _masked_mean(diff.real.square(), mask) + _masked_mean(diff.imag.square(), mask)


def generator_loss(out: dict, clean_wave: torch.Tensor, cfg: Config, gan_weight: float,
                   disc: nn.Module | None, *, lengths: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total generator loss and its (detached) terms ``ri``, ``mag``, ``time``, ``gan`` (and ``phase``,
    ``consistency`` when weighted).

    ``out`` is the generator's output dict (``wave`` (B, T), ``spec`` compressed complex (B, F, N),
    ``mag`` (B, F, N), optionally ``pha`` (B, F, N)). The GAN term is computed only when
    ``gan_weight > 0`` and ``disc`` is given (else it is a zero tensor). ``lengths`` (B,)
    optionally excludes zero padding.
    """
    w = cfg.loss
    analysis = analysis_for(cfg)
    est_wave = out["wave"].float()
    clean_wave = clean_wave.float()
    if est_wave.shape != clean_wave.shape:
        raise ValueError(f"generator_loss: estimate {tuple(est_wave.shape)} and clean "
                         f"{tuple(clean_wave.shape)} waves differ in shape")
    clean = analysis.spectra(clean_wave)
    clean_spec, clean_mag = clean["spec"], clean["mag"]
    est_spec = out["spec"].to(torch.complex64)
    est_mag = out["mag"].float()

    sample_mask = frame_mask = None
    if lengths is not None:
        lengths = lengths.to(clean_wave.device)
        sample_mask = torch.arange(clean_wave.shape[-1], device=clean_wave.device)[None, :] < lengths[:, None]
        frame_ends = torch.arange(clean_spec.shape[-1], device=clean_wave.device) * analysis.hop_length \
            + analysis.n_fft // 2
        frame_mask = (frame_ends[None, :] <= lengths[:, None])[:, None, :]  # (B, 1, N)

    ri = _ri(est_spec - clean_spec, frame_mask)
    mag = _masked_mean((est_mag - clean_mag).square(), frame_mask)
    time = _masked_mean((est_wave - clean_wave).abs(), sample_mask)
    use_gan = gan_weight > 0 and disc is not None
    resynth = None
    if w.w_consistency > 0 or (use_gan and analysis.discriminator_on_resynthesis):
        resynth = analysis.spectra(est_wave)  # the enhanced wave seen by the model's analysis
    if use_gan:
        judged = resynth["mag"] if analysis.discriminator_on_resynthesis else est_mag
        gan = (disc(clean_mag, judged).float() - 1.0).square().mean()
    else:
        gan = torch.zeros((), device=est_wave.device)
    total = w.w_ri * ri + w.w_mag * mag + w.w_time * time + gan_weight * gan
    terms = {"ri": ri.detach(), "mag": mag.detach(), "time": time.detach(), "gan": gan.detach()}
    if w.w_phase > 0:
        phase = sum(phase_losses(_phase(clean), _phase(out), frame_mask))
        total = total + w.w_phase * phase
        terms["phase"] = phase.detach()
    if w.w_consistency > 0:
        consistency = _ri(est_spec - resynth["spec"], frame_mask)
        total = total + w.w_consistency * consistency
        terms["consistency"] = consistency.detach()
    return total, terms


def discriminator_loss(disc: nn.Module, clean_mag: torch.Tensor, est_mag: torch.Tensor,
                       pesq_target: torch.Tensor, valid: torch.Tensor
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MetricGAN discriminator loss with failed PESQ items masked (see the module docstring).

    ``clean_mag``/``est_mag``: compressed magnitudes (B, F, N), the estimate detached;
    ``pesq_target``: normalised PESQ (B,) float (any value, NaN included, where invalid);
    ``valid``: (B,) bool. Returns the loss and detached tensors ``clean_loss``, ``estimate_loss``,
    ``d_clean`` and ``d_estimate`` (batch means), ``num_valid`` and ``num_items``.
    """
    return discriminator_loss_from_scores(discriminator_scores(disc, clean_mag, est_mag), pesq_target, valid)


def discriminator_scores(disc: nn.Module, clean_mag: torch.Tensor, est_mag: torch.Tensor) -> torch.Tensor:
    """The discriminator's forward pass of :func:`discriminator_loss`: (2B,) float scores of (clean, clean)
    then (clean, estimate), in one call (one power iteration per step). Needs no labels, so it can run
    while they are computed."""
    return disc(torch.cat([clean_mag, clean_mag]), torch.cat([clean_mag, est_mag.detach()])).float()


def discriminator_loss_from_scores(both: torch.Tensor, pesq_target: torch.Tensor, valid: torch.Tensor
                                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`discriminator_loss` given the scores of :func:`discriminator_scores`."""
    num_items = both.shape[0] // 2
    valid = valid.to(device=both.device, dtype=torch.bool)
    if pesq_target.shape != (num_items,) or valid.shape != (num_items,):
        raise ValueError(f"discriminator_loss: pesq_target {tuple(pesq_target.shape)} and valid "
                         f"{tuple(valid.shape)} must both be ({num_items},)")
    d_clean, d_estimate = both[:num_items], both[num_items:]
    clean_loss = (d_clean - 1.0).square().mean()
    # where() keeps a NaN target of a failed item out of the graph (NaN * 0 would still be NaN).
    target = torch.where(valid, pesq_target.to(d_estimate), torch.zeros_like(d_estimate))
    weights = valid.to(d_estimate.dtype)
    num_valid = weights.sum()
    estimate_loss = ((d_estimate - target).square() * weights).sum() / num_valid.clamp_min(1.0)
    info = {"clean_loss": clean_loss.detach(), "estimate_loss": estimate_loss.detach(),
            "d_clean": d_clean.detach().mean(), "d_estimate": d_estimate.detach().mean(),
            "num_valid": num_valid.detach().long(),
            "num_items": torch.tensor(num_items, device=both.device)}
    return clean_loss + estimate_loss, info
