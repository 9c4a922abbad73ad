"""BSRNN-style generator: a band-split RNN over the compressed complex STFT.

After Luo & Yu, "Music source separation with band-split RNN" (2023) and Yu et al., "High
fidelity speech enhancement with band-split RNN" (Interspeech 2023); our own code.

    noisy wave -> STFT (fp32) -> power-law compression -> X (B, F, N) complex
    band split:  per band k, GroupNorm + Linear over its (re, im) bins -> (B, C, K, N)
    num_layers x [ time-axis BLSTM per band (+ residual), band-axis BLSTM per frame (+ residual) ]
    mask estimation: per band, GroupNorm + MLP (tanh, GLU) -> complex mask M and residual R
    estimate S = (1 + M) * X + R (compressed domain) -> decompress -> iSTFT (fp32) -> wave

M and R start at zero (the GLU's value half is zero-initialised), so an untrained model returns
its input: training starts from the noisy signal's quality rather than from noise.

Band layout: the default splits the spectrum into 100 Hz bands up to 1 kHz, 250 Hz to 4 kHz,
500 Hz to 8 kHz, 1 kHz to 16 kHz, 2 kHz to 20 kHz and one band above (30 bands for 16 kHz with
n_fft 400, i.e. 201 bins of 40 Hz); ``model.num_bands = N`` gives N bands of nearly equal width.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.audio import spectral
from trainer.core.config import Config, ConfigError, StftConfig
from trainer.core.registry import register_generator

__all__ = ["BSRNN", "band_widths", "default_band_widths"]

# (upper edge in Hz, band width in Hz) of the default layout; above the last: one band.
_DEFAULT_LAYOUT_HZ = ((1000, 100), (4000, 250), (8000, 500), (16000, 1000), (20000, 2000))


def default_band_widths(sample_rate: int, n_fft: int) -> list[int]:
    """Bin counts of the default band layout (see the module docstring); they sum to n_fft//2+1."""
    num_bins = n_fft // 2 + 1
    nyquist = sample_rate / 2
    edges_hz = [0.0]
    for upper, width in _DEFAULT_LAYOUT_HZ:
        while edges_hz[-1] + width <= min(upper, nyquist) + 1e-9:
            edges_hz.append(edges_hz[-1] + width)
    edges = [math.floor(f * n_fft / sample_rate + 0.5) for f in edges_hz]
    edges = sorted(set(e for e in edges if e < num_bins - 1)) + [num_bins]  # Nyquist bin joins the last band
    return [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]


def band_widths(num_bands: int, sample_rate: int, n_fft: int) -> list[int]:
    """The band layout for ``model.num_bands`` (0 = default), validated to cover every bin once."""
    num_bins = n_fft // 2 + 1
    if num_bands == 0:
        widths = default_band_widths(sample_rate, n_fft)
    else:
        if num_bands > num_bins:
            raise ConfigError(f"model.num_bands: {num_bands} exceeds the {num_bins} frequency bins of "
                              f"stft.n_fft={n_fft}; use at most {num_bins} (or 0 for the default layout)")
        base, extra = divmod(num_bins, num_bands)
        widths = [base + 1] * extra + [base] * (num_bands - extra)
    if sum(widths) != num_bins or min(widths) < 1:
        raise ConfigError(f"model.num_bands: layout {widths} does not cover the {num_bins} bins of "
                          f"stft.n_fft={n_fft} exactly once")
    return widths


class _BandRNN(nn.Module):
    """Norm -> bidirectional LSTM along one axis -> Linear back to C features, as a residual."""

    def __init__(self, num_channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, num_channels)
        self.lstm = nn.LSTM(num_channels, 2 * num_channels, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(4 * num_channels, num_channels)

    def forward(self, z: torch.Tensor, along_time: bool) -> torch.Tensor:
        # z: (B, C, K, N). Sequences run over N (frames) per band, or over K (bands) per frame.
        batch, channels, num_bands, num_frames = z.shape
        y = self.norm(z)
        if along_time:
            y = y.permute(0, 2, 3, 1).reshape(batch * num_bands, num_frames, channels)
        else:
            y = y.permute(0, 3, 2, 1).reshape(batch * num_frames, num_bands, channels)
        y = self.proj(self.lstm(y)[0])
        if along_time:
            y = y.reshape(batch, num_bands, num_frames, channels).permute(0, 3, 1, 2)
        else:
            y = y.reshape(batch, num_frames, num_bands, channels).permute(0, 3, 2, 1)
        return z + y


class _ChannelsLast(nn.Module):
    """(B, C, N) -> (B, N, C) so that the Linear layers act on the channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class BSRNN(nn.Module):
    """Band-split RNN enhancer: ``forward(noisy (B, T))`` -> ``{"wave", "spec", "mag"}`` (see module doc)."""

    def __init__(self, stft_cfg: StftConfig, *, sample_rate: int, num_channels: int, num_layers: int,
                 num_bands: int = 0):
        super().__init__()
        self.stft_cfg = stft_cfg
        self.widths = band_widths(num_bands, sample_rate, stft_cfg.n_fft)
        c = num_channels
        self.split_norms = nn.ModuleList(nn.GroupNorm(1, 2 * w) for w in self.widths)
        self.split_fcs = nn.ModuleList(nn.Linear(2 * w, c) for w in self.widths)
        self.time_rnns = nn.ModuleList(_BandRNN(c) for _ in range(num_layers))
        self.band_rnns = nn.ModuleList(_BandRNN(c) for _ in range(num_layers))
        # Per band: 4 outputs per bin (mask re/im, residual re/im), doubled for the GLU gate.
        self.mask_heads = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, c), _ChannelsLast(), nn.Linear(c, 4 * c), nn.Tanh(),
                          nn.Linear(4 * c, 2 * 4 * w), nn.GLU(dim=-1))
            for w in self.widths)
        # Start as the identity: the value half of the GLU input is zero, so M = R = 0 and the
        # estimate equals the (compressed) noisy input until the heads learn otherwise.
        for head in self.mask_heads:
            last = head[-2]
            half = last.out_features // 2
            with torch.no_grad():
                last.weight[:half].zero_()
                last.bias[:half].zero_()

    def forward(self, noisy: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.stft_cfg
        length = noisy.shape[-1]
        x = spectral.compress(spectral.stft(noisy, cfg), cfg.compress_factor, cfg.eps)  # (B, F, N)
        batch, _, num_frames = x.shape
        x_ri = torch.view_as_real(x)  # (B, F, N, 2)

        bands, start = [], 0
        for width, norm, fc in zip(self.widths, self.split_norms, self.split_fcs, strict=True):
            band = x_ri[:, start:start + width].permute(0, 1, 3, 2).reshape(batch, 2 * width, num_frames)
            bands.append(fc(norm(band).transpose(1, 2)))  # (B, N, C)
            start += width
        z = torch.stack(bands, dim=1).permute(0, 3, 1, 2)  # (B, C, K, N)

        for time_rnn, band_rnn in zip(self.time_rnns, self.band_rnns, strict=True):
            z = band_rnn(time_rnn(z, along_time=True), along_time=False)

        heads = [head(z[:, :, k]) for k, head in enumerate(self.mask_heads)]  # each (B, N, 4 * width)
        m = torch.cat([h.reshape(batch, num_frames, -1, 4) for h in heads], dim=2)  # (B, N, F, 4)
        with torch.autocast(device_type=noisy.device.type, enabled=False):
            m = m.float().permute(0, 2, 1, 3)  # (B, F, N, 4)
            mask = torch.complex(1.0 + m[..., 0], m[..., 1])
            residual = torch.complex(m[..., 2], m[..., 3])
            est = mask * x + residual
            wave = spectral.istft(spectral.decompress(est, cfg.compress_factor, cfg.eps), cfg, length)
            return {"wave": wave, "spec": est, "mag": est.abs()}


@register_generator("bsrnn")
def build_bsrnn(cfg: Config) -> BSRNN:
    m = cfg.model
    return BSRNN(cfg.stft, sample_rate=cfg.data.sample_rate, num_channels=m.num_channels,
                 num_layers=m.num_layers, num_bands=m.num_bands)
