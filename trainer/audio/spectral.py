"""The STFT front-end shared by the generator, the losses and the discriminator.

Everything here runs in fp32 with autocast disabled, whatever the caller's autocast state or
input dtype: bf16 phases and overlap-add are not precise enough for PESQ-level quality.

Power-law compression (``factor`` 0.3, CMGAN/BSRNN convention) keeps the phase and maps the
magnitude ``m`` to ``m * (m + eps) ** (factor - 1)``, i.e. ``m ** factor`` for ``m >> eps``,
exactly 0 at ``m = 0`` and with a finite gradient everywhere (a plain ``m ** 0.3`` has an
infinite gradient at silence).
"""

from __future__ import annotations

import torch

from trainer.core.config import StftConfig

__all__ = ["stft", "istft", "compress", "decompress", "compressed_magnitude"]


def _window(stft_cfg: StftConfig, device: torch.device) -> torch.Tensor:
    make = {"hann": torch.hann_window, "hamming": torch.hamming_window}[stft_cfg.window]
    return make(stft_cfg.n_fft, periodic=True, dtype=torch.float32, device=device)


def stft(wave: torch.Tensor, stft_cfg: StftConfig) -> torch.Tensor:
    """Complex one-sided STFT of ``wave`` (B, T): complex64 (B, n_fft // 2 + 1, T // hop + 1)."""
    if wave.dim() != 2:
        raise ValueError(f"stft: expected a (batch, samples) wave, got shape {tuple(wave.shape)}")
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        return torch.stft(wave, n_fft=stft_cfg.n_fft, hop_length=stft_cfg.hop_length,
                          win_length=stft_cfg.n_fft, window=_window(stft_cfg, wave.device),
                          center=True, pad_mode="reflect", normalized=False, onesided=True,
                          return_complex=True)


def istft(spec: torch.Tensor, stft_cfg: StftConfig, length: int) -> torch.Tensor:
    """Inverse of :func:`stft`: complex (B, F, N) -> float32 wave (B, length)."""
    if spec.dim() != 3 or not spec.is_complex():
        raise ValueError(f"istft: expected a complex (batch, freq, frames) spectrum, got "
                         f"{spec.dtype} {tuple(spec.shape)}")
    with torch.autocast(device_type=spec.device.type, enabled=False):
        spec = spec.to(torch.complex64)
        return torch.istft(spec, n_fft=stft_cfg.n_fft, hop_length=stft_cfg.hop_length,
                           win_length=stft_cfg.n_fft, window=_window(stft_cfg, spec.device),
                           center=True, normalized=False, onesided=True, length=length)


def compress(spec: torch.Tensor, factor: float, eps: float) -> torch.Tensor:
    """Compressed complex spectrum: magnitude ``m * (m + eps) ** (factor - 1)``, phase kept."""
    with torch.autocast(device_type=spec.device.type, enabled=False):
        spec = spec.to(torch.complex64)
        return spec * (spec.abs() + eps) ** (factor - 1.0)


def decompress(spec: torch.Tensor, factor: float, eps: float) -> torch.Tensor:
    """Inverse of :func:`compress` (exact up to a relative error of order ``eps / m``)."""
    with torch.autocast(device_type=spec.device.type, enabled=False):
        spec = spec.to(torch.complex64)
        return spec * (spec.abs() + eps) ** (1.0 / factor - 1.0)


def compressed_magnitude(spec: torch.Tensor, factor: float, eps: float) -> torch.Tensor:
    """``abs(compress(spec))`` as a float32 tensor: the magnitude the losses and D compare."""
    with torch.autocast(device_type=spec.device.type, enabled=False):
        mag = spec.to(torch.complex64).abs()
        return mag * (mag + eps) ** (factor - 1.0)
