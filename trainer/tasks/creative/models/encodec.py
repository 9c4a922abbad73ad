"""A frozen EnCodec 24 kHz front-end for the creative agent, read from a local weights file.

Neither torchaudio 2.11 nor any other installed package ships EnCodec, and compute nodes have
no internet, so this is our own implementation of the architecture of the 24 kHz EnCodec model
(Défossez et al. 2022): a causal SEANet encoder (strides 2, 4, 5, 8 -> 75 frames/s, 128-dim
latents), a residual vector quantizer with 1024-entry codebooks, and the mirrored decoder.

It reads the state dict of the official ``encodec_24khz-d7cc33bc.th`` (plain tensors, old-style
weight norm ``weight_g``/``weight_v`` pairs, codebooks at ``quantizer.vq.layers.<i>._codebook.embed``)
and folds the weight norm once at load time. At 6 kbps it uses the first 8 codebooks
(8 x log2(1024) bits x 75 frames/s = 6 kbps). Widths (``n_filters``, latent dimension, codebook
size) are read from the file, so a small randomly initialised file exercises the same code.

Everything is frozen (``requires_grad=False``); gradients still flow *through* the decoder to
whatever is mixed in latent space.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from trainer.core.config import ConfigError

__all__ = ["FrozenEncodec", "load_encodec", "write_random_encodec_weights", "SAMPLE_RATE"]

SAMPLE_RATE = 24000
RATIOS = (8, 5, 4, 2)  # decoder order; the encoder downsamples by 2, 4, 5, 8
KBPS_PER_CODEBOOK = 0.75  # log2(1024) bits x 75 frames/s


def _pad_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works when the signal is shorter than the padding."""
    extra = 0
    if x.shape[-1] <= max(left, right):
        extra = max(left, right) - x.shape[-1] + 1
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., :padded.shape[-1] - extra]


class CausalConv(nn.Module):
    """Conv1d padded on the left (causal) plus enough on the right for a full last window."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size, stride, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride = self.conv.stride[0]
        kernel = (self.conv.kernel_size[0] - 1) * self.conv.dilation[0] + 1
        pad_total = kernel - stride
        num_frames = (x.shape[-1] - kernel + pad_total) / stride + 1
        extra = (math.ceil(num_frames) - 1) * stride + kernel - pad_total - x.shape[-1]
        return self.conv(_pad_reflect(x, pad_total, extra))


class CausalConvTranspose(nn.Module):
    """ConvTranspose1d with its ``kernel - stride`` overhang trimmed on the right (causal)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int):
        super().__init__()
        self.convtr = nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.convtr(x)
        trim = self.convtr.kernel_size[0] - self.convtr.stride[0]
        return y[..., :y.shape[-1] - trim]


class ResBlock(nn.Module):
    """SEANet residual block: ELU, conv k3, ELU, conv k1 (half width inside); 1x1 conv skip."""

    def __init__(self, ch: int):
        super().__init__()
        self.block = nn.Sequential(nn.ELU(), CausalConv(ch, ch // 2, 3), nn.ELU(), CausalConv(ch // 2, ch, 1))
        self.shortcut = CausalConv(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.block(x)


class SkipLSTM(nn.Module):
    """Two-layer LSTM over frames with a residual connection, in conv layout (B, C, N)."""

    def __init__(self, ch: int):
        super().__init__()
        self.lstm = nn.LSTM(ch, ch, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.permute(2, 0, 1)
        y, _ = self.lstm(frames)
        return (y + frames).permute(1, 2, 0)


class Seanet(nn.Module):
    """Holds the layer stack as ``model`` (the official key prefix is ``encoder.model.<i>``)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _encoder(n_filters: int, dimension: int) -> Seanet:
    layers: list[nn.Module] = [CausalConv(1, n_filters, 7)]
    mult = 1
    for ratio in reversed(RATIOS):
        ch = mult * n_filters
        layers += [ResBlock(ch), nn.ELU(), CausalConv(ch, 2 * ch, 2 * ratio, stride=ratio)]
        mult *= 2
    layers += [SkipLSTM(mult * n_filters), nn.ELU(), CausalConv(mult * n_filters, dimension, 7)]
    return Seanet(layers)


def _decoder(n_filters: int, dimension: int) -> Seanet:
    mult = 2 ** len(RATIOS)
    layers: list[nn.Module] = [CausalConv(dimension, mult * n_filters, 7), SkipLSTM(mult * n_filters)]
    for ratio in RATIOS:
        ch = mult * n_filters
        layers += [nn.ELU(), CausalConvTranspose(ch, ch // 2, 2 * ratio, ratio), ResBlock(ch // 2)]
        mult //= 2
    layers += [nn.ELU(), CausalConv(n_filters, 1, 7)]
    return Seanet(layers)


class FrozenEncodec(nn.Module):
    """Encoder + residual VQ + decoder; ``encode`` (B, T) -> (B, C, N), ``decode`` -> (B, T)."""

    hop_length = math.prod(RATIOS)

    def __init__(self, n_filters: int = 32, dimension: int = 128, num_codebooks: int = 8, bins: int = 1024):
        super().__init__()
        self.encoder = _encoder(n_filters, dimension)
        self.decoder = _decoder(n_filters, dimension)
        self.register_buffer("codebooks", torch.zeros(num_codebooks, bins, dimension))
        self.dimension = dimension

    @torch.no_grad()
    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """Quantized latents (B, dimension, ceil(T / 320)); no gradient (the encoder is frozen).
        Runs in fp32 even under autocast, so the codes do not depend on the AMP setting."""
        with torch.autocast(wave.device.type, enabled=False):
            latent = self.encoder(wave.float().unsqueeze(1)).transpose(1, 2)  # (B, N, C)
            residual, quantized = latent, torch.zeros_like(latent)
            for codebook in self.codebooks:
                # nearest codebook entry by Euclidean distance (the ||x||^2 term is constant per row)
                scores = 2 * residual @ codebook.t() - codebook.pow(2).sum(1)
                chosen = codebook[scores.argmax(-1)]
                quantized, residual = quantized + chosen, residual - chosen
        return quantized.transpose(1, 2)

    def decode(self, latent: torch.Tensor, length: int) -> torch.Tensor:
        return self.decoder(latent.float())[:, 0, :length]


def _official_key(key: str) -> str:
    """Our parameter name -> the official checkpoint's (one extra wrapper level per conv)."""
    return key.replace(".conv.", ".conv.conv.").replace(".convtr.", ".convtr.convtr.")


def _fold_weight_norm(state: dict, key: str) -> torch.Tensor:
    g, v = state[key + "_g"].float(), state[key + "_v"].float()
    norm = v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))
    return g * v / norm


def _check_published_hash(path: Path) -> None:
    """Official files are named ``<name>-<first 8 hex digits of their sha256>.th``: check a copy."""
    match = re.fullmatch(r"encodec_24khz-([0-9a-f]{8})\.th", path.name)
    if match is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(match.group(1)):
        raise ConfigError(f"model.encodec_weights: {str(path)!r} has sha256 {digest.hexdigest()[:8]}..., its "
                          f"name promises {match.group(1)}: the copy is damaged; stage it again")


def load_encodec(path: str | Path, bandwidth_kbps: float = 6.0) -> FrozenEncodec:
    """Build a frozen :class:`FrozenEncodec` from a local EnCodec 24 kHz state-dict file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model.encodec_weights: {str(path)!r} does not exist; stage "
                          "encodec_24khz-d7cc33bc.th on a filesystem the compute nodes see (README)")
    _check_published_hash(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"model.encodec_weights: {str(path)!r} is not a readable torch state dict "
                          f"({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    first = "encoder.model.0.conv.conv.weight_v"
    last = "encoder.model.15.conv.conv.weight_v"
    if not isinstance(state, dict) or first not in state or last not in state:
        raise ConfigError(f"model.encodec_weights: {str(path)!r} does not look like an EnCodec 24 kHz "
                          f"state dict (no {first!r} / {last!r})")
    n_filters, dimension = state[first].shape[0], state[last].shape[0]
    num_codebooks = int(round(bandwidth_kbps / KBPS_PER_CODEBOOK))
    embed_keys = [f"quantizer.vq.layers.{i}._codebook.embed" for i in range(num_codebooks)]
    missing = [k for k in embed_keys if k not in state]
    if missing:
        raise ConfigError(f"model.encodec_weights: {str(path)!r} lacks {missing[0]!r} "
                          f"({num_codebooks} codebooks are needed for {bandwidth_kbps} kbps)")
    bins = state[embed_keys[0]].shape[0]
    codec = FrozenEncodec(n_filters, dimension, num_codebooks, bins)
    ours = {}
    for key, param in codec.state_dict().items():
        if key == "codebooks":
            ours[key] = torch.stack([state[k].float() for k in embed_keys])
            continue
        official = _official_key(key)
        if key.endswith(".weight") and official + "_g" in state:
            ours[key] = _fold_weight_norm(state, official)
        elif official in state:
            ours[key] = state[official].float()
        else:
            raise ConfigError(f"model.encodec_weights: {str(path)!r} lacks {official!r}; "
                              "is it the 24 kHz EnCodec model?")
        if ours[key].shape != param.shape:
            raise ConfigError(f"model.encodec_weights: {official!r} has shape {tuple(ours[key].shape)}, "
                              f"the 24 kHz architecture needs {tuple(param.shape)}")
    codec.load_state_dict(ours)
    codec.requires_grad_(False)
    return codec.eval()


def write_random_encodec_weights(path: str | Path, *, n_filters: int = 32, dimension: int = 128,
                                 num_codebooks: int = 32, bins: int = 1024, seed: int = 0) -> None:
    """Write a RANDOMLY INITIALISED state dict in the official file layout (plumbing tests only:
    it exercises loading, shapes and gradients, not what a trained EnCodec sounds like)."""
    torch.manual_seed(seed)
    codec = FrozenEncodec(n_filters, dimension, num_codebooks, bins)
    state = {}
    for key, value in codec.state_dict().items():
        if key == "codebooks":
            for i, embed in enumerate(torch.randn_like(value)):
                state[f"quantizer.vq.layers.{i}._codebook.embed"] = embed.contiguous()
            continue
        official = _official_key(key)
        if key.endswith(".weight") and ".lstm." not in key:
            norm = value.flatten(1).norm(dim=1).view(-1, *([1] * (value.dim() - 1)))
            state[official + "_g"], state[official + "_v"] = norm.clone(), value.clone()
        else:
            state[official] = value.clone()
    torch.save(state, path)
