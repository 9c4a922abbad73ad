"""The creative agent: mixes an input piece and a target piece through learned masks.

``forward(input_wave (B, T), target_wave (B, T))`` returns a dict:

- ``wave`` (B, T): the new piece;
- ``mask_input``, ``mask_target`` (B, C, N) in [0, 1]: the final masks over the front-end's
  representation (C = n_fft // 2 + 1 frequency bins for STFT, C = 128 latent channels for
  EnCodec; N frames); the output representation is ``mask_input * X_input + mask_target * X_target``;
- ``stage_masks``: [(mask_input, mask_target)] per cascade stage, first to last.

Architecture: each source is encoded by the front-end, projected to ``dim`` and run through one
shared transformer (``num_transformer_layers``). The creative agent (one cross-attention each
way between the two sources) proposes both masks as logits. Stages 2..``num_stages`` each look
at the current mix (plus Gaussian "anti-cheating" noise of std ``anti_cheat_noise`` in training
mode, so a stage cannot just pass the previous stage's output through) and add a correction to
the mask logits.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainer.audio import spectral
from trainer.core.config import Config, ConfigError, StftConfig
from trainer.core.registry import register_generator

__all__ = ["CreativeAgent", "StftFrontEnd", "EncodecFrontEnd", "build"]


class StftFrontEnd(nn.Module):
    """Complex STFT in, masked complex STFT out; features are RMS-normalised compressed magnitudes."""

    def __init__(self, stft_cfg: StftConfig):
        super().__init__()
        self.stft_cfg = stft_cfg
        self.num_channels = stft_cfg.n_fft // 2 + 1

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return spectral.stft(wave, self.stft_cfg)

    def decode(self, rep: torch.Tensor, length: int) -> torch.Tensor:
        return spectral.istft(rep, self.stft_cfg, length)

    def features(self, rep: torch.Tensor) -> torch.Tensor:
        mag = spectral.compressed_magnitude(rep, self.stft_cfg.compress_factor, self.stft_cfg.eps)
        return _unit_rms(mag).transpose(1, 2)


class EncodecFrontEnd(nn.Module):
    """Frozen EnCodec 24 kHz at 6 kbps: quantized latents in, decoder out (gradient flows through)."""

    def __init__(self, weights_path: str, sample_rate: int):
        super().__init__()
        from trainer.tasks.creative.models.encodec import SAMPLE_RATE, load_encodec

        if sample_rate != SAMPLE_RATE:
            raise ConfigError(f"data.sample_rate: {sample_rate} does not fit the EnCodec front-end, "
                              f"which runs at {SAMPLE_RATE} Hz")
        self.codec = load_encodec(weights_path, bandwidth_kbps=6.0)
        self.num_channels = self.codec.dimension

    def train(self, mode: bool = True) -> EncodecFrontEnd:
        super().train(mode)
        self.codec.eval()  # frozen: always inference behaviour
        return self

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(wave)

    def decode(self, rep: torch.Tensor, length: int) -> torch.Tensor:
        return self.codec.decode(rep, length)

    def features(self, rep: torch.Tensor) -> torch.Tensor:
        return _unit_rms(rep).transpose(1, 2)


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    """Scale each item (B, C, N) to unit RMS so the anti-cheating noise std is in feature units."""
    return x / x.pow(2).mean(dim=(1, 2), keepdim=True).add(1e-8).sqrt()


def _sinusoids(num_frames: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_frames, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


def _transformer_layer(dim: int, num_heads: int, ff_mult: int = 4) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(dim, num_heads, ff_mult * dim, dropout=0.0, activation="gelu",
                                      batch_first=True, norm_first=True)


class MaskProposer(nn.Module):
    """The creative agent proper: each source attends to the other, then both mask logits."""

    def __init__(self, dim: int, num_heads: int, num_channels: int):
        super().__init__()
        self.norm_in, self.norm_tgt = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.input_attends_target = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.target_attends_input = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.mask_input = nn.Linear(dim, num_channels)
        self.mask_target = nn.Linear(dim, num_channels)

    def forward(self, h_in: torch.Tensor, h_tgt: torch.Tensor):
        a_in, a_tgt = self.norm_in(h_in), self.norm_tgt(h_tgt)
        h_in = h_in + self.input_attends_target(a_in, a_tgt, a_tgt, need_weights=False)[0]
        h_tgt = h_tgt + self.target_attends_input(a_tgt, a_in, a_in, need_weights=False)[0]
        context = self.fuse(torch.cat([h_in, h_tgt], dim=-1))
        return context, self.mask_input(context), self.mask_target(context)


class RefineStage(nn.Module):
    """A cascade stage: looks at the (noised) current mix and corrects both mask logits."""

    def __init__(self, dim: int, num_heads: int, num_channels: int):
        super().__init__()
        self.project = nn.Linear(num_channels, dim)
        self.block = _transformer_layer(dim, num_heads, ff_mult=2)
        self.delta_input = nn.Linear(dim, num_channels)
        self.delta_target = nn.Linear(dim, num_channels)
        for head in (self.delta_input, self.delta_target):  # start as the identity refinement
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, mix_features, context, logit_in, logit_tgt):
        h = self.block(context + self.project(mix_features))
        return logit_in + self.delta_input(h), logit_tgt + self.delta_target(h)


class CreativeAgent(nn.Module):
    """Transformer encoder + attention-based creative agent + cascade of refining stages."""

    def __init__(self, front_end: nn.Module, *, dim: int = 128, num_heads: int = 8,
                 num_transformer_layers: int = 6, num_stages: int = 3, anti_cheat_noise: float = 0.9):
        super().__init__()
        self.front_end = front_end
        num_channels = front_end.num_channels
        self.anti_cheat_noise = anti_cheat_noise
        self.project = nn.Linear(num_channels, dim)
        self.source_embedding = nn.Parameter(torch.zeros(2, dim))  # tells input from target
        self.encoder = nn.TransformerEncoder(_transformer_layer(dim, num_heads), num_transformer_layers,
                                             norm=nn.LayerNorm(dim), enable_nested_tensor=False)
        self.agent = MaskProposer(dim, num_heads, num_channels)
        self.stages = nn.ModuleList(RefineStage(dim, num_heads, num_channels) for _ in range(num_stages - 1))

    def forward(self, input_wave: torch.Tensor, target_wave: torch.Tensor) -> dict:
        if input_wave.shape != target_wave.shape or input_wave.dim() != 2:
            raise ValueError(f"creative agent: input and target must both be (batch, samples), got "
                             f"{tuple(input_wave.shape)} and {tuple(target_wave.shape)}")
        length = input_wave.shape[-1]
        rep_in, rep_tgt = self.front_end.encode(input_wave), self.front_end.encode(target_wave)
        feats = torch.cat([self.front_end.features(rep_in), self.front_end.features(rep_tgt)])
        batch, num_frames = input_wave.shape[0], feats.shape[1]
        source = self.source_embedding.repeat_interleave(batch, dim=0)[:, None, :]
        h = self.project(feats) + _sinusoids(num_frames, source.shape[-1], feats.device) + source
        h_in, h_tgt = self.encoder(h).split(batch)
        context, logit_in, logit_tgt = self.agent(h_in, h_tgt)

        stage_masks = []
        for index in range(len(self.stages) + 1):
            if index > 0:
                mix = _apply(stage_masks[-1], rep_in, rep_tgt)
                mix_features = self.front_end.features(mix)
                if self.training and self.anti_cheat_noise > 0:
                    mix_features = mix_features + self.anti_cheat_noise * torch.randn_like(mix_features)
                logit_in, logit_tgt = self.stages[index - 1](mix_features, context, logit_in, logit_tgt)
            stage_masks.append((torch.sigmoid(logit_in).transpose(1, 2).float(),
                                torch.sigmoid(logit_tgt).transpose(1, 2).float()))
        mask_in, mask_tgt = stage_masks[-1]
        wave = self.front_end.decode(_apply(stage_masks[-1], rep_in, rep_tgt), length)
        return {"wave": wave, "mask_input": mask_in, "mask_target": mask_tgt, "stage_masks": stage_masks}


def _apply(masks: tuple[torch.Tensor, torch.Tensor], rep_in: torch.Tensor, rep_tgt: torch.Tensor):
    mask_in, mask_tgt = masks
    return mask_in * rep_in + mask_tgt * rep_tgt


def build(cfg: Config) -> CreativeAgent:
    """The creative agent sized by ``cfg.model`` with the front-end ``cfg.model.front_end``."""
    m = cfg.model
    if m.front_end == "encodec":
        front_end: nn.Module = EncodecFrontEnd(m.encodec_weights, cfg.data.sample_rate)
    else:
        front_end = StftFrontEnd(cfg.stft)
    return CreativeAgent(front_end, dim=m.dim, num_heads=m.num_heads,
                         num_transformer_layers=m.num_transformer_layers, num_stages=m.num_stages,
                         anti_cheat_noise=m.anti_cheat_noise)


register_generator("creative_agent")(build)
