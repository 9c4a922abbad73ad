"""CMGAN's generator (Cao, Abdulatif & Yang, Interspeech 2022), checkpoint-compatible.

Two pieces:

* :class:`CMGANNet` -- the published network ("TSCNet" in the authors' code): compressed
  real/imag spectrum ``(B, 2, T, F)`` -> ``(real, imag)``, each ``(B, 1, T, F)``. A dense
  encoder over ``[|X|, Re X, Im X]`` halves the frequency axis, four two-stage conformer blocks
  (one conformer across time, then one across frequency) process it, and two decoders run in
  parallel: a magnitude-mask decoder whose mask multiplies the noisy magnitude (the noisy phase
  is kept) and a complex decoder whose real/imag output is added to that masked estimate.
  With the published sizes (``num_channel=64``, ``num_features=201``) it has 1,834,833
  parameters.
* :class:`CMGANGenerator` -- the toolkit's generator contract around it:
  ``forward(noisy_wave (B, T))`` -> ``{"wave", "spec", "mag"}`` (see its docstring).

Checkpoint layout. The attribute names and nesting below are dictated by the official
checkpoint (``src/best_ckpt/ckpt`` of ruizhecao96/CMGAN, a plain ``TSCNet.state_dict()``):
``CMGANNet().state_dict()`` has exactly the official keys and shapes, so such a file loads with
``load_state_dict(..., strict=True)`` unchanged. That is why some modules carry names such as
``TSCB_1``, ``ff1.fn.fn.net.0`` or ``conv.net.5`` -- do not rename them;
``tests_new/golden/cmgan_keys.txt`` pins the list. :class:`CMGANGenerator` holds the network
as ``self.net``, so its own keys are the network's keys prefixed with ``"net."``
(:data:`WRAPPER_PREFIX`); :func:`load_official_state_dict` adds the prefix.

Deviations from the reference code (numerically equivalent; see
``benchmarks/check_reference_equivalence.py`` for the measured differences):

* the conformer's tensor rearranges are plain ``permute``/``reshape`` (no ``einops``);
  the GLU/Swish activations are ``nn.GLU``/``nn.SiLU``;
* the relative-position attention is written with ``matmul``/``einsum`` on explicit head
  splits (agrees with the reference to ~1e-14 in float64);
* :class:`CMGANGenerator` does not split inputs longer than 16 s into pieces as the
  reference's ``enhance_one_track`` does (that is an inference policy for the caller);
* the magnitude decompression uses ``z * |z| ** (1/0.3 - 1)`` instead of the reference's
  ``polar(|z| ** (1/0.3), angle(z))``: the same function, but with a finite gradient at
  ``z = 0`` (``angle`` has none there).

Note on the mask activation: it is sometimes described as a learnable sigmoid, but in the
released code ``LearnableSigmoid`` (``src/utils.py``) serves only the discriminator; the
generator's mask ends with a per-frequency PReLU (``mask_decoder.prelu_out``, 201 slopes
initialised to -0.25), and the checkpoint holds its slopes. This module follows the code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "N_FFT",
    "HOP_LENGTH",
    "COMPRESS_FACTOR",
    "WRAPPER_PREFIX",
    "CMGANNet",
    "CMGANGenerator",
    "compressed_spectrum",
    "uncompress_to_wave",
    "load_official_state_dict",
]

N_FFT = 400
HOP_LENGTH = 100
COMPRESS_FACTOR = 0.3
#: Prefix of the network's keys inside :class:`CMGANGenerator`'s state dict.
WRAPPER_PREFIX = "net."


# --------------------------------------------------------------------------------------------
# Convolutional building blocks
# --------------------------------------------------------------------------------------------


class DilatedDenseBlock(nn.Module):
    """Densely connected stack of ``depth`` causal-in-time (2, 3) convolutions.

    Layer ``i`` (dilation ``2**i`` along time) sees the concatenation of the block input and
    every earlier layer's output, and returns ``channels`` maps; the block returns the last
    layer's output. Each layer: zero-pad (1 left/right in frequency, ``2**i`` before in time),
    conv, instance norm (affine), PReLU. Sub-module names ``conv{i}``, ``norm{i}``,
    ``prelu{i}`` (1-based) follow the checkpoint.
    """

    def __init__(self, depth: int = 4, channels: int = 64):
        super().__init__()
        self.depth = depth
        for i in range(depth):
            dilation = 2**i
            setattr(self, f"conv{i + 1}", nn.Conv2d(channels * (i + 1), channels, kernel_size=(2, 3),
                                                    dilation=(dilation, 1)))
            setattr(self, f"norm{i + 1}", nn.InstanceNorm2d(channels, affine=True))
            setattr(self, f"prelu{i + 1}", nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        out = x
        for i in range(1, self.depth + 1):
            dilation = 2 ** (i - 1)
            out = F.pad(features, (1, 1, dilation, 0))  # (F left, F right, T before, T after)
            out = getattr(self, f"conv{i}")(out)
            out = getattr(self, f"prelu{i}")(getattr(self, f"norm{i}")(out))
            features = torch.cat([out, features], dim=1)
        return out


class DenseEncoder(nn.Module):
    """1x1 conv -> dilated dense block -> stride-2 conv over frequency (F -> (F + 1) // 2)."""

    def __init__(self, in_channels: int = 3, channels: int = 64):
        super().__init__()
        self.conv_1 = nn.Sequential(nn.Conv2d(in_channels, channels, (1, 1), (1, 1)),
                                    nn.InstanceNorm2d(channels, affine=True), nn.PReLU(channels))
        self.dilated_dense = DilatedDenseBlock(depth=4, channels=channels)
        self.conv_2 = nn.Sequential(nn.Conv2d(channels, channels, (1, 3), (1, 2), padding=(0, 1)),
                                    nn.InstanceNorm2d(channels, affine=True), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(self.dilated_dense(self.conv_1(x)))


class SubPixelConv2d(nn.Module):
    """Frequency up-sampling by ``factor`` with a sub-pixel convolution.

    A (1, k) convolution (input zero-padded by one bin on each side of the frequency axis)
    produces ``factor * out_channels`` maps, which are interleaved along frequency: output bin
    ``factor * w + r`` comes from map group ``r`` at bin ``w``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], factor: int = 1):
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(in_channels, out_channels * factor, kernel_size=kernel_size, stride=(1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(F.pad(x, (1, 1, 0, 0)))
        b, c, t, f = y.shape
        r = self.factor
        # (B, r, C/r, T, F) -> (B, C/r, T, F, r) -> (B, C/r, T, F * r)
        return y.reshape(b, r, c // r, t, f).permute(0, 2, 3, 4, 1).reshape(b, c // r, t, f * r)


# --------------------------------------------------------------------------------------------
# Conformer (Gulati et al. 2020), as used by CMGAN: macaron feed-forwards, relative-position
# self-attention (Shaw et al.), depthwise-conv module, final LayerNorm.
# --------------------------------------------------------------------------------------------


class _Scale(nn.Module):
    """``fn(x) * scale`` (the half-step of the macaron feed-forward). Child name ``fn`` is fixed."""

    def __init__(self, scale: float, fn: nn.Module):
        super().__init__()
        self.scale = scale
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale


class _PreNorm(nn.Module):
    """``fn(LayerNorm(x))``. Child names ``norm`` and ``fn`` are fixed by the checkpoint."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn  # registered before ``norm``: the checkpoint's key order
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class FeedForward(nn.Module):
    """Linear(dim, mult*dim) -> Swish -> dropout -> Linear(mult*dim, dim) -> dropout."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.SiLU(), nn.Dropout(dropout),
                                 nn.Linear(dim * mult, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class RelPosSelfAttention(nn.Module):
    """Multi-head self-attention with Shaw-style learned relative-position embeddings.

    The logit of query ``i`` and key ``j`` in a head is ``(q_i . k_j + q_i . e_{i-j}) / sqrt(d)``
    with ``e`` a learned table indexed by the distance ``i - j`` clipped to
    ``[-max_pos_emb, max_pos_emb]``. Dropout applies to the output projection only.
    Input and output: ``(batch, seq, dim)``.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
                 max_pos_emb: int = 512):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.dim_head = dim_head
        self.max_pos_emb = max_pos_emb
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        self.rel_pos_emb = nn.Embedding(2 * max_pos_emb + 1, dim_head)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)  # (B, H, N, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        k, v = self.to_kv(x).chunk(2, dim=-1)
        q, k, v = self._split_heads(self.to_q(x)), self._split_heads(k), self._split_heads(v)
        scale = self.dim_head**-0.5

        pos = torch.arange(n, device=x.device)
        distance = (pos[:, None] - pos[None, :]).clamp(-self.max_pos_emb, self.max_pos_emb) + self.max_pos_emb
        rel = self.rel_pos_emb(distance).to(q.dtype)  # (N, N, D)
        # Positional logits: pos[b, h, i, j] = q[b, h, i] . rel[i, j]
        pos_logits = torch.einsum("bhid,ijd->bhij", q, rel)

        logits = torch.matmul(q, k.transpose(-1, -2)) * scale + pos_logits * scale
        out = torch.matmul(logits.softmax(dim=-1), v)  # (B, H, N, D)
        out = out.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)
        return self.dropout(self.to_out(out))


class _SwapLastAxes(nn.Module):
    """(B, N, C) <-> (B, C, N)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2)


class _DepthwiseConv1d(nn.Module):
    """Depthwise 1-D convolution with explicit (left, right) zero padding; child ``conv``."""

    def __init__(self, channels: int, kernel_size: int, padding: tuple[int, int]):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv1d(channels, channels, kernel_size, groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ConvModule(nn.Module):
    """Conformer convolution module on ``(B, N, C)``.

    LayerNorm -> pointwise conv to ``2 * expansion * C`` -> GLU -> depthwise conv ("same"
    padding) -> BatchNorm -> Swish -> pointwise conv back to ``C`` -> dropout. The indices
    inside ``net`` (0 LayerNorm, 2 and 7 pointwise convs, 4 depthwise, 5 BatchNorm) are part of
    the checkpoint's key names.
    """

    def __init__(self, dim: int, expansion: int = 2, kernel_size: int = 31, dropout: float = 0.0):
        super().__init__()
        inner = dim * expansion
        same = (kernel_size // 2, kernel_size // 2 - (kernel_size + 1) % 2)
        self.net = nn.Sequential(
            nn.LayerNorm(dim),                                         # 0
            _SwapLastAxes(),                                           # 1: (B, C, N)
            nn.Conv1d(dim, 2 * inner, 1),                              # 2
            nn.GLU(dim=1),                                             # 3
            _DepthwiseConv1d(inner, kernel_size, same),                # 4
            nn.BatchNorm1d(inner),                                     # 5
            nn.SiLU(),                                                 # 6
            nn.Conv1d(inner, dim, 1),                                  # 7
            _SwapLastAxes(),                                           # 8: (B, N, C)
            nn.Dropout(dropout),                                       # 9
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConformerBlock(nn.Module):
    """``x + ff1/2``, ``+ attention``, ``+ conv``, ``+ ff2/2``, then LayerNorm; on ``(B, N, C)``."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, ff_mult: int = 4,
                 conv_expansion: int = 2, conv_kernel_size: int = 31, attn_dropout: float = 0.0,
                 ff_dropout: float = 0.0, conv_dropout: float = 0.0):
        super().__init__()
        self.ff1 = _Scale(0.5, _PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout)))
        self.attn = _PreNorm(dim, RelPosSelfAttention(dim, heads=heads, dim_head=dim_head, dropout=attn_dropout))
        self.conv = ConvModule(dim, conv_expansion, conv_kernel_size, conv_dropout)
        self.ff2 = _Scale(0.5, _PreNorm(dim, FeedForward(dim, ff_mult, ff_dropout)))
        self.post_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ff1(x)
        x = x + self.attn(x)
        x = x + self.conv(x)
        x = x + self.ff2(x)
        return self.post_norm(x)


class TwoStageConformer(nn.Module):
    """CMGAN's TSCB: a residual conformer across time, then one across frequency.

    ``(B, C, T, F)`` -> same shape. The time stage treats every (batch, frequency) pair as a
    sequence of ``T`` frames; the frequency stage every (batch, frame) pair as a sequence of
    ``F`` bins.
    """

    def __init__(self, channels: int = 64, dropout: float = 0.2):
        super().__init__()

        def conformer() -> ConformerBlock:
            return ConformerBlock(dim=channels, dim_head=channels // 4, heads=4, conv_kernel_size=31,
                                  attn_dropout=dropout, ff_dropout=dropout)

        self.time_conformer = conformer()
        self.freq_conformer = conformer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.permute(0, 3, 2, 1).reshape(b * f, t, c)
        x = self.time_conformer(x) + x
        x = x.reshape(b, f, t, c).transpose(1, 2).reshape(b * t, f, c)
        x = self.freq_conformer(x) + x
        return x.reshape(b, t, f, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Decoders and the network
# --------------------------------------------------------------------------------------------


class MaskDecoder(nn.Module):
    """Magnitude mask ``(B, 1, T, F)`` from the encoded ``(B, C, T, F')`` features.

    Dense block -> sub-pixel up-sampling to ``2 F'`` bins -> (1, 2) conv to one map (``2F' - 1``
    = ``F`` bins) -> instance norm + PReLU -> 1x1 conv -> per-frequency PReLU (``prelu_out``,
    ``num_features`` slopes; the released code's mask activation).
    """

    def __init__(self, num_features: int, channels: int = 64, out_channels: int = 1):
        super().__init__()
        self.dense_block = DilatedDenseBlock(depth=4, channels=channels)
        self.sub_pixel = SubPixelConv2d(channels, channels, (1, 3), 2)
        self.conv_1 = nn.Conv2d(channels, out_channels, (1, 2))
        self.norm = nn.InstanceNorm2d(out_channels, affine=True)
        self.prelu = nn.PReLU(out_channels)
        self.final_conv = nn.Conv2d(out_channels, out_channels, (1, 1))
        self.prelu_out = nn.PReLU(num_features, init=-0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_1(self.sub_pixel(self.dense_block(x)))
        x = self.final_conv(self.prelu(self.norm(x)))  # (B, 1, T, F)
        # The PReLU's channel axis is frequency: (B, 1, T, F) -> (B, F, T) -> back.
        return self.prelu_out(x[:, 0].transpose(1, 2)).transpose(1, 2).unsqueeze(1)


class ComplexDecoder(nn.Module):
    """Complex refinement ``(B, 2, T, F)`` (real, imag) from the encoded features."""

    def __init__(self, channels: int = 64):
        super().__init__()
        self.dense_block = DilatedDenseBlock(depth=4, channels=channels)
        self.sub_pixel = SubPixelConv2d(channels, channels, (1, 3), 2)
        self.prelu = nn.PReLU(channels)
        self.norm = nn.InstanceNorm2d(channels, affine=True)
        self.conv = nn.Conv2d(channels, 2, (1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_pixel(self.dense_block(x))
        return self.conv(self.prelu(self.norm(x)))


class CMGANNet(nn.Module):
    """The CMGAN generator network (the authors' ``TSCNet``), state-dict compatible with it.

    ``forward(x)``: ``x`` is ``(B, 2, T, F)``, the power-law-compressed real and imaginary parts
    of the noisy STFT (frames along ``T``, ``F = num_features`` bins); returns ``(real, imag)``,
    each ``(B, 1, T, F)``: the compressed complex estimate ``mask * |X| * e^{i angle X} +
    complex_residual``.
    """

    def __init__(self, num_channel: int = 64, num_features: int = N_FFT // 2 + 1):
        super().__init__()
        self.dense_encoder = DenseEncoder(in_channels=3, channels=num_channel)
        self.TSCB_1 = TwoStageConformer(num_channel)
        self.TSCB_2 = TwoStageConformer(num_channel)
        self.TSCB_3 = TwoStageConformer(num_channel)
        self.TSCB_4 = TwoStageConformer(num_channel)
        self.mask_decoder = MaskDecoder(num_features, channels=num_channel, out_channels=1)
        self.complex_decoder = ComplexDecoder(channels=num_channel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, imag = x[:, 0:1], x[:, 1:2]
        mag = torch.sqrt(real**2 + imag**2)
        phase = torch.atan2(imag, real)
        h = self.dense_encoder(torch.cat([mag, x], dim=1))
        for block in (self.TSCB_1, self.TSCB_2, self.TSCB_3, self.TSCB_4):
            h = block(h)
        out_mag = self.mask_decoder(h) * mag
        residual = self.complex_decoder(h)
        return out_mag * torch.cos(phase) + residual[:, 0:1], out_mag * torch.sin(phase) + residual[:, 1:2]


# --------------------------------------------------------------------------------------------
# STFT front-end (CMGAN conventions) and the generator wrapper
# --------------------------------------------------------------------------------------------


def _hamming(device: torch.device) -> torch.Tensor:
    return torch.hamming_window(N_FFT, periodic=True, dtype=torch.float32, device=device)


def compressed_spectrum(wave: torch.Tensor) -> torch.Tensor:
    """CMGAN's analysis: complex64 ``(B, F, N)`` with magnitude ``|X| ** 0.3`` and the phase of X.

    ``X`` is ``torch.stft`` of ``wave`` (B, T) with a periodic Hamming window of 400, hop 100,
    ``center=True`` with reflect padding, one-sided: ``N = T // 100 + 1`` frames. Same values
    as the reference's ``power_compress(stft(...))`` (polar form, so exact zeros stay zero).
    Runs in fp32 with autocast disabled.
    """
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        spec = torch.stft(wave, N_FFT, HOP_LENGTH, window=_hamming(wave.device), center=True,
                          pad_mode="reflect", onesided=True, return_complex=True)
        return torch.polar(spec.abs() ** COMPRESS_FACTOR, spec.angle())


def uncompress_to_wave(spec: torch.Tensor, length: int | None = None) -> torch.Tensor:
    """CMGAN's synthesis: undo the compression of ``spec`` (complex B, F, N) and inverse-STFT.

    The magnitude becomes ``|z| ** (1 / 0.3)`` (computed as ``z * |z| ** (1/0.3 - 1)``, which
    has a finite gradient at ``z = 0``), then ``torch.istft`` with the analysis window. Without
    ``length`` the result has ``(N - 1) * 100`` samples, as the reference's. fp32, autocast off.
    """
    with torch.autocast(device_type=spec.device.type, enabled=False):
        spec = spec.to(torch.complex64)
        spec = spec * spec.abs() ** (1.0 / COMPRESS_FACTOR - 1.0)
        return torch.istft(spec, N_FFT, HOP_LENGTH, window=_hamming(spec.device), center=True,
                           onesided=True, length=length)


def _pad_to_hop_multiple(wave: torch.Tensor) -> torch.Tensor:
    """Append the wave's first samples until its length is a multiple of the hop (reference)."""
    length = wave.shape[-1]
    padded = math.ceil(length / HOP_LENGTH) * HOP_LENGTH
    extra = padded - length
    if extra == 0:
        return wave
    if extra > length:
        raise ValueError(f"CMGAN: a wave of {length} samples is too short (needs at least {extra})")
    return torch.cat([wave, wave[..., :extra]], dim=-1)


class CMGANGenerator(nn.Module):
    """CMGAN behind the toolkit's generator contract.

    ``forward(noisy_wave)`` with ``noisy_wave`` float ``(B, T)`` (already scaled to unit RMS by
    the caller, as the reference does with ``c = sqrt(T / sum(x**2))``) returns

    * ``wave``: float32 ``(B, T)``, the enhanced signal, same length as the input;
    * ``spec``: complex64 ``(B, F, N)``, the compressed complex estimate (``F = 201``);
    * ``mag``: float32 ``(B, F, N)``, its magnitude (the compressed magnitude, ``est_mag`` of
      the reference's training code).

    Pipeline, as the reference's ``enhance_one_track`` (without its >16 s chunking): the input
    is extended to a multiple of 100 samples by appending its own first samples, analysed with
    :func:`compressed_spectrum` (so ``N = ceil(T / 100) + 1``), passed through :class:`CMGANNet`,
    resynthesised with :func:`uncompress_to_wave` and cut back to ``T``. A clean target for the
    spectral losses must be analysed the same way: use :meth:`analyze`. STFT, compression and
    iSTFT run in fp32 with autocast disabled; the network runs under the caller's autocast.

    Its parameters are the network's only; state-dict keys are ``"net." + <official key>``.
    """

    def __init__(self, num_channel: int = 64, num_features: int = N_FFT // 2 + 1):
        super().__init__()
        self.net = CMGANNet(num_channel=num_channel, num_features=num_features)

    @staticmethod
    def analyze(wave: torch.Tensor) -> torch.Tensor:
        """The compressed spectrum ``(B, F, N)`` of ``wave`` (B, T) exactly as ``forward`` sees it."""
        return compressed_spectrum(_pad_to_hop_multiple(wave))

    def forward(self, noisy_wave: torch.Tensor) -> dict[str, torch.Tensor]:
        if noisy_wave.dim() != 2:
            raise ValueError(f"CMGANGenerator: expected a (batch, samples) wave, got {tuple(noisy_wave.shape)}")
        length = noisy_wave.shape[-1]
        noisy = self.analyze(noisy_wave)                                   # (B, F, N) complex64
        x = torch.view_as_real(noisy).permute(0, 3, 2, 1)                  # (B, 2, N, F)
        real, imag = self.net(x)                                           # each (B, 1, N, F)
        with torch.autocast(device_type=noisy_wave.device.type, enabled=False):
            est = torch.complex(real[:, 0].float(), imag[:, 0].float()).transpose(1, 2)  # (B, F, N)
            wave = uncompress_to_wave(est)[:, :length]
            return {"wave": wave, "spec": est, "mag": est.abs()}


def load_official_state_dict(generator: CMGANGenerator, state_dict: dict[str, torch.Tensor],
                             strict: bool = True):
    """Load an official CMGAN checkpoint (a plain ``TSCNet`` state dict) into ``generator``."""
    return generator.load_state_dict({WRAPPER_PREFIX + k: v for k, v in state_dict.items()}, strict=strict)
