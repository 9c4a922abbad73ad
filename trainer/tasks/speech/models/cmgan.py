"""CMGAN's generator (Cao, Abdulatif & Yang, Interspeech 2022), checkpoint-compatible: ``model.name: cmgan``.

Two pieces:

* :class:`CMGANNet` -- the published network ("TSCNet" in the authors' code): compressed
  real/imag spectrum ``(B, 2, T, F)`` -> ``(real, imag)``, each ``(B, 1, T, F)``. A dense
  encoder over ``[|X|, Re X, Im X]`` halves the frequency axis, ``num_blocks`` (4) two-stage
  conformer blocks (:mod:`.cmgan_conformer`: one conformer across time, then one across
  frequency) process it, and two decoders run in parallel: a magnitude-mask decoder whose mask
  multiplies the noisy magnitude (the noisy phase is kept) and a complex decoder whose
  real/imag output is added to that masked estimate. With the published sizes
  (``num_channel=64``, ``num_features=201``, 4 blocks) it has 1,834,833 parameters.
* :class:`CMGANGenerator` -- the toolkit's generator contract around it:
  ``forward(noisy_wave (B, T))`` -> ``{"wave", "spec", "mag"}`` (see its docstring). Sizes come
  from ``model.num_channels`` (dense channels, 64) and ``model.num_layers`` (two-stage blocks, 4),
  the STFT from ``stft.*`` (the preset ``configs/cmgan.yaml``: Hamming 400/100, compression 0.3).

Checkpoint layout. The attribute names and nesting are dictated by the official checkpoint
(``src/best_ckpt/ckpt`` of ruizhecao96/CMGAN, a plain ``TSCNet.state_dict()``):
``CMGANNet().state_dict()`` has exactly the official keys and shapes, so such a file loads with
``load_state_dict(..., strict=True)`` unchanged. That is why some modules carry names such as
``TSCB_1``, ``ff1.fn.fn.net.0`` or ``conv.net.5`` -- do not rename them;
``tests/golden/cmgan_keys.txt`` pins the list. :class:`CMGANGenerator` holds the network as
``self.net``, so its own keys are the network's keys prefixed with ``"net."``
(:data:`WRAPPER_PREFIX`); :func:`load_official_state_dict` adds the prefix
(``python -m trainer.import_checkpoint --format cmgan`` uses it).

Deviations from the reference code (numerically equivalent; see
``benchmarks/check_reference_equivalence.py`` for the measured differences):

* the conformer's tensor rearranges are plain ``permute``/``reshape`` (no ``einops``); the
  relative-position attention is written with ``matmul``/``einsum`` on explicit head splits;
* :class:`CMGANGenerator` does not split inputs longer than 16 s into a batch of pieces as the
  reference's ``enhance_one_track`` does (``trainer.enhance`` chunks long files its own way);
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

from trainer.core.config import Config, StftConfig
from trainer.core.registry import register_generator
from trainer.tasks.speech.models.analysis import Analysis
from trainer.tasks.speech.models.cmgan_conformer import TwoStageConformer
from trainer.tasks.speech.models.layers import SubPixelConv2d, window

__all__ = ["WRAPPER_PREFIX", "CMGAN_STFT", "CMGANNet", "CMGANGenerator", "compressed_spectrum",
           "uncompress_to_wave", "load_official_state_dict", "analysis"]

#: Prefix of the network's keys inside :class:`CMGANGenerator`'s state dict.
WRAPPER_PREFIX = "net."
#: CMGAN's published STFT (train.py: n_fft 400, hop 100, ``torch.hamming_window``; utils.py: ``mag ** 0.3``).
CMGAN_STFT = StftConfig(n_fft=400, hop_length=100, window="hamming", compress_factor=0.3)


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
    complex_residual``. Blocks are ``TSCB_1`` ... ``TSCB_<num_blocks>`` (the checkpoint's names).
    """

    def __init__(self, num_channel: int = 64, num_features: int = 201, num_blocks: int = 4):
        super().__init__()
        self.num_blocks = num_blocks
        self.dense_encoder = DenseEncoder(in_channels=3, channels=num_channel)
        for i in range(num_blocks):
            setattr(self, f"TSCB_{i + 1}", TwoStageConformer(num_channel))
        self.mask_decoder = MaskDecoder(num_features, channels=num_channel, out_channels=1)
        self.complex_decoder = ComplexDecoder(channels=num_channel)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real, imag = x[:, 0:1], x[:, 1:2]
        mag = torch.sqrt(real**2 + imag**2)
        phase = torch.atan2(imag, real)
        h = self.dense_encoder(torch.cat([mag, x], dim=1))
        for i in range(self.num_blocks):
            h = getattr(self, f"TSCB_{i + 1}")(h)
        out_mag = self.mask_decoder(h) * mag
        residual = self.complex_decoder(h)
        return out_mag * torch.cos(phase) + residual[:, 0:1], out_mag * torch.sin(phase) + residual[:, 1:2]


# --------------------------------------------------------------------------------------------
# STFT front-end (CMGAN conventions) and the generator wrapper
# --------------------------------------------------------------------------------------------


def compressed_spectrum(wave: torch.Tensor, stft: StftConfig = CMGAN_STFT) -> torch.Tensor:
    """CMGAN's analysis: complex64 ``(B, F, N)`` with magnitude ``|X| ** compress_factor`` and the phase of X.

    ``X`` is ``torch.stft`` of ``wave`` (B, T) with the periodic ``stft.window`` of ``n_fft``,
    ``hop_length``, ``center=True`` with reflect padding, one-sided: ``N = T // hop + 1`` frames.
    Same values as the reference's ``power_compress(stft(...))`` (polar form, so exact zeros stay
    zero). Runs in fp32 with autocast disabled.
    """
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        spec = torch.stft(wave, stft.n_fft, stft.hop_length, window=window(stft.window, stft.n_fft, wave.device),
                          center=True, pad_mode="reflect", onesided=True, return_complex=True)
        return torch.polar(spec.abs() ** stft.compress_factor, spec.angle())


def uncompress_to_wave(spec: torch.Tensor, stft: StftConfig = CMGAN_STFT, length: int | None = None) -> torch.Tensor:
    """CMGAN's synthesis: undo the compression of ``spec`` (complex B, F, N) and inverse-STFT.

    The magnitude becomes ``|z| ** (1 / compress_factor)`` (computed as ``z * |z| ** (1/c - 1)``,
    which has a finite gradient at ``z = 0``), then ``torch.istft`` with the analysis window.
    Without ``length`` the result has ``(N - 1) * hop`` samples, as the reference's. fp32, autocast off.
    """
    with torch.autocast(device_type=spec.device.type, enabled=False):
        spec = spec.to(torch.complex64)
        spec = spec * spec.abs() ** (1.0 / stft.compress_factor - 1.0)
        return torch.istft(spec, stft.n_fft, stft.hop_length, window=window(stft.window, stft.n_fft, spec.device),
                           center=True, onesided=True, length=length)


def pad_to_hop_multiple(wave: torch.Tensor, hop: int) -> torch.Tensor:
    """Append the wave's first samples until its length is a multiple of ``hop`` (the reference's
    ``enhance_one_track``: ``noisy = cat([noisy, noisy[:, :padding_len]])``)."""
    length = wave.shape[-1]
    extra = math.ceil(length / hop) * hop - length
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
    * ``spec``: complex64 ``(B, F, N)``, the compressed complex estimate;
    * ``mag``: float32 ``(B, F, N)``, its magnitude (``est_mag`` of the reference's train.py).

    Pipeline, as the reference's ``enhance_one_track`` (without its >16 s split): the input is
    extended to a multiple of the hop by appending its own first samples, analysed with
    :func:`compressed_spectrum` (so ``N = ceil(T / hop) + 1``), passed through :class:`CMGANNet`,
    resynthesised with :func:`uncompress_to_wave` and cut back to ``T``. A clean target for the
    spectral losses must be analysed the same way: :meth:`analyze` (and :func:`analysis`).
    STFT, compression and iSTFT run in fp32 with autocast disabled; the network runs under the
    caller's autocast. Its parameters are the network's only; keys are ``"net." + <official key>``.
    """

    def __init__(self, num_channel: int = 64, num_blocks: int = 4, stft: StftConfig = CMGAN_STFT):
        super().__init__()
        self.stft = stft
        self.net = CMGANNet(num_channel=num_channel, num_features=stft.n_fft // 2 + 1, num_blocks=num_blocks)

    def analyze(self, wave: torch.Tensor) -> torch.Tensor:
        """The compressed spectrum ``(B, F, N)`` of ``wave`` (B, T) exactly as ``forward`` sees it."""
        return compressed_spectrum(pad_to_hop_multiple(wave, self.stft.hop_length), self.stft)

    def forward(self, noisy_wave: torch.Tensor) -> dict[str, torch.Tensor]:
        if noisy_wave.dim() != 2:
            raise ValueError(f"CMGANGenerator: expected a (batch, samples) wave, got {tuple(noisy_wave.shape)}")
        length = noisy_wave.shape[-1]
        noisy = self.analyze(noisy_wave)                                   # (B, F, N) complex64
        x = torch.view_as_real(noisy).permute(0, 3, 2, 1)                  # (B, 2, N, F)
        real, imag = self.net(x)                                           # each (B, 1, N, F)
        with torch.autocast(device_type=noisy_wave.device.type, enabled=False):
            est = torch.complex(real[:, 0].float(), imag[:, 0].float()).transpose(1, 2)  # (B, F, N)
            wave = uncompress_to_wave(est, self.stft)[:, :length]
            return {"wave": wave, "spec": est, "mag": est.abs()}


def load_official_state_dict(generator: CMGANGenerator, state_dict: dict[str, torch.Tensor], strict: bool = True):
    """Load an official CMGAN checkpoint (a plain ``TSCNet`` state dict) into ``generator``."""
    return generator.load_state_dict({WRAPPER_PREFIX + k: v for k, v in state_dict.items()}, strict=strict)


def analysis(cfg: Config) -> Analysis:
    """CMGAN's targets (train.py lines 81-103): the clean wave analysed like the noisy one
    (:meth:`CMGANGenerator.analyze`); the discriminator compares compressed magnitudes of the
    clean target and of the generator's estimate (``est_mag``, line 127)."""
    stft = cfg.stft

    def spectra(wave: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = compressed_spectrum(pad_to_hop_multiple(wave, stft.hop_length), stft)
        return {"spec": spec, "mag": spec.abs()}

    return Analysis(n_fft=stft.n_fft, hop_length=stft.hop_length, spectra=spectra,
                    magnitude=lambda wave: spectra(wave)["mag"])


@register_generator("cmgan")
def build_cmgan(cfg: Config) -> CMGANGenerator:
    return CMGANGenerator(num_channel=cfg.model.num_channels, num_blocks=cfg.model.num_layers, stft=cfg.stft)
