"""MP-SENet's training losses, as pure functions (from the reference ``train.py``).

Every function returns a scalar tensor and matches the reference expression cited in its
docstring (yxlu-0102/MP-SENet, ``train.py`` lines 134-181 and ``models/model.py``'s
``phase_losses``/``anti_wrapping_function``). Layouts follow the reference: magnitudes and
phases ``(B, F, T)``, ``com`` either the reference's real ``(B, F, T, 2)`` or a complex
``(B, F, T)`` tensor (both give the same value), waves ``(B, T)``.

The generator objective (``train.py`` line 181)::

    loss_gen_all = loss_mag * 0.9 + loss_pha * 0.3 + loss_com * 0.1 + loss_stft * 0.1
                   + loss_metric * 0.05 + loss_time * 0.2

with ``loss_pha = ip + gd + iaf`` (line 170) and ``loss_com``/``loss_stft`` already including a
factor 2 (lines 172 and 174). :data:`GENERATOR_LOSS_WEIGHTS` holds those weights and
:func:`generator_loss` combines the terms. The discriminator objective (lines 136-144) is
:func:`metric_discriminator_loss`.

Where each term's inputs come from in the reference's step (``mag_pha_stft`` with the
compression of the generator's front-end, e.g. :func:`trainer_new.mpsenet.mag_pha_stft`)::

    clean_mag, clean_pha, clean_com = mag_pha_stft(clean)
    mag_g, pha_g, com_g = generator(noisy_mag, noisy_pha)
    audio_g = mag_pha_istft(mag_g, pha_g)
    mag_g_hat, pha_g_hat, com_g_hat = mag_pha_stft(audio_g)   # for consistency and metric D
    metric_r = D(clean_mag, clean_mag); metric_g = D(clean_mag, mag_g_hat)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "GENERATOR_LOSS_WEIGHTS",
    "anti_wrapping",
    "instantaneous_phase_loss",
    "group_delay_loss",
    "instantaneous_angular_frequency_loss",
    "phase_losses",
    "phase_loss",
    "magnitude_loss",
    "complex_loss",
    "consistency_loss",
    "time_loss",
    "metric_generator_loss",
    "metric_discriminator_loss",
    "normalize_pesq",
    "generator_loss",
]

#: Weights of the generator's terms in MP-SENet's ``train.py`` line 181.
GENERATOR_LOSS_WEIGHTS: dict[str, float] = {
    "magnitude": 0.9,
    "phase": 0.3,
    "complex": 0.1,
    "consistency": 0.1,
    "metric": 0.05,
    "time": 0.2,
}

_TWO_PI = 2.0 * math.pi


def anti_wrapping(x: torch.Tensor) -> torch.Tensor:
    """``|x - round(x / 2 pi) * 2 pi|``: the distance of ``x`` to the nearest multiple of 2 pi."""
    return torch.abs(x - torch.round(x / _TWO_PI) * _TWO_PI)


def instantaneous_phase_loss(phase_ref: torch.Tensor, phase_est: torch.Tensor) -> torch.Tensor:
    """IP loss: ``mean(anti_wrapping(phase_ref - phase_est))`` (``phase_losses``' ``ip_loss``)."""
    return torch.mean(anti_wrapping(phase_ref - phase_est))


def group_delay_loss(phase_ref: torch.Tensor, phase_est: torch.Tensor) -> torch.Tensor:
    """GD loss: anti-wrapped difference of the phase derivatives along frequency (dim 1 of B, F, T)."""
    return torch.mean(anti_wrapping(torch.diff(phase_ref, dim=1) - torch.diff(phase_est, dim=1)))


def instantaneous_angular_frequency_loss(phase_ref: torch.Tensor, phase_est: torch.Tensor) -> torch.Tensor:
    """IAF loss: anti-wrapped difference of the phase derivatives along time (dim 2 of B, F, T)."""
    return torch.mean(anti_wrapping(torch.diff(phase_ref, dim=2) - torch.diff(phase_est, dim=2)))


def phase_losses(phase_ref: torch.Tensor, phase_est: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ip, gd, iaf)`` as the reference's ``models/model.py`` ``phase_losses(phase_r, phase_g)``."""
    return (instantaneous_phase_loss(phase_ref, phase_est), group_delay_loss(phase_ref, phase_est),
            instantaneous_angular_frequency_loss(phase_ref, phase_est))


def phase_loss(phase_ref: torch.Tensor, phase_est: torch.Tensor) -> torch.Tensor:
    """``loss_pha = ip + gd + iaf`` (``train.py`` lines 169-170)."""
    ip, gd, iaf = phase_losses(phase_ref, phase_est)
    return ip + gd + iaf


def magnitude_loss(mag_ref: torch.Tensor, mag_est: torch.Tensor) -> torch.Tensor:
    """``loss_mag = mse(clean_mag, mag_g)`` on compressed magnitudes (line 167)."""
    return F.mse_loss(mag_ref, mag_est)


def _as_real(com: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(com) if com.is_complex() else com


def complex_loss(com_ref: torch.Tensor, com_est: torch.Tensor) -> torch.Tensor:
    """``loss_com = mse(clean_com, com_g) * 2`` on compressed spectra (line 172)."""
    return F.mse_loss(_as_real(com_ref), _as_real(com_est)) * 2


def consistency_loss(com_est: torch.Tensor, com_resynth: torch.Tensor) -> torch.Tensor:
    """STFT consistency: ``loss_stft = mse(com_g, com_g_hat) * 2`` (line 174).

    ``com_resynth`` is the compressed spectrum of the resynthesised wave (``mag_pha_stft`` of
    ``mag_pha_istft(mag_g, pha_g)``); the gradient flows through both arguments, as in the
    reference.
    """
    return F.mse_loss(_as_real(com_est), _as_real(com_resynth)) * 2


def time_loss(wave_ref: torch.Tensor, wave_est: torch.Tensor) -> torch.Tensor:
    """``loss_time = l1(clean_audio, audio_g)`` (line 176); both waves must have the same length."""
    return F.l1_loss(wave_ref, wave_est)


def metric_generator_loss(metric_est: torch.Tensor) -> torch.Tensor:
    """Metric-GAN generator term: ``mse(D(clean_mag, mag_g_hat).flatten(), 1)`` (lines 178-179)."""
    metric_est = metric_est.flatten()
    return F.mse_loss(metric_est, torch.ones_like(metric_est))


def metric_discriminator_loss(metric_ref: torch.Tensor, metric_est: torch.Tensor,
                              pesq_target: torch.Tensor | None) -> torch.Tensor:
    """Metric discriminator objective (lines 134-144).

    ``mse(1, D(clean_mag, clean_mag).flatten()) + mse(pesq_target, D(clean_mag, mag_g_hat.detach()).flatten())``;
    ``pesq_target`` is the batch's normalised PESQ (:func:`normalize_pesq`). When it is
    ``None`` (the reference's ``batch_pesq`` returns None if any item's PESQ failed) the second
    term is 0, as in the reference. The caller detaches ``metric_est``'s input.
    """
    metric_ref = metric_ref.flatten()
    loss = F.mse_loss(torch.ones_like(metric_ref), metric_ref)
    if pesq_target is not None:
        metric_est = metric_est.flatten()
        loss = loss + F.mse_loss(pesq_target.to(metric_est), metric_est)
    return loss


def normalize_pesq(scores) -> torch.Tensor | None:
    """PESQ scores of a batch -> the discriminator's target ``(pesq - 1) / 3.5`` (float32).

    Mirrors ``models/discriminator.py``'s ``batch_pesq``: ``None`` when any score is -1 (the
    marker for a failed PESQ computation).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if np.any(scores == -1):
        return None
    return torch.from_numpy((scores - 1.0) / 3.5).float()


def generator_loss(terms: dict[str, torch.Tensor], weights: dict[str, float] | None = None) -> torch.Tensor:
    """Weighted sum of the terms named as in :data:`GENERATOR_LOSS_WEIGHTS` (missing terms count 0).

    ``terms`` maps ``"magnitude"``, ``"phase"``, ``"complex"``, ``"consistency"``, ``"metric"``,
    ``"time"`` to the values of the functions above; unknown names are an error.
    """
    weights = GENERATOR_LOSS_WEIGHTS if weights is None else weights
    unknown = set(terms) - set(weights)
    if unknown:
        raise KeyError(f"generator_loss: unknown terms {sorted(unknown)}; known: {sorted(weights)}")
    if not terms:
        raise ValueError("generator_loss: no terms")
    return sum(weights[name] * value for name, value in terms.items())
