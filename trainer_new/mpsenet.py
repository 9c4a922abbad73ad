"""MP-SENet's generator (Lu, Ai & Ling, Interspeech 2023 / the 2024 extension), checkpoint-compatible.

This follows the repository's *current* code (yxlu-0102/MP-SENet, ``models/model.py``: ``MPNet``
built from ``models/transformer.py``'s ``TransformerBlock``), which is what the released
checkpoints ``best_ckpt/g_best_vb`` / ``g_best_dns`` belong to -- not the conformer version of
the Interspeech paper. With ``config.json``'s sizes (dense_channel 64, 4 TS blocks, beta 2.0,
n_fft 400) it has 2,263,372 parameters.

Two pieces:

* :class:`MPSENetNet` -- the network: compressed magnitude and phase ``(B, F, T)`` ->
  ``(amp, pha, com)``: the masked compressed magnitude, the phase from the parallel phase
  estimator (``atan2`` of two pseudo real/imag maps), and ``com = stack(amp cos pha,
  amp sin pha, dim=-1)`` ``(B, F, T, 2)``.
* :class:`MPSENetGenerator` -- the toolkit's generator contract around it (see its docstring).

Checkpoint layout. Attribute names and nesting are those of the reference ``MPNet``, so
``MPSENetNet().state_dict()`` has exactly the keys and shapes of a checkpoint's ``"generator"``
entry and loads it with ``strict=True``; ``tests_new/golden/mpsenet_keys.txt`` pins the list.
:class:`MPSENetGenerator` holds the network as ``self.net``: its keys are the official ones
prefixed with ``"net."`` (:data:`WRAPPER_PREFIX`); :func:`load_official_state_dict` adds it.

Faithfully reproduced quirk (do not "fix" it without retraining): the reference's
``TransformerBlock`` uses ``nn.MultiheadAttention`` and ``nn.GRU`` with their default
``batch_first=False`` on tensors laid out ``(batch * other_axis, seq_axis, C)``. So the
"time" transformer actually attends and recurs along the *first* axis -- batch x frequency --
and treats frames as the batch; the "frequency" transformer runs along batch x frames. Two
consequences (both upstream issues: yxlu-0102/MP-SENet#21, #64): with batch size 1 the
stages operate over frequency, then time (the reverse of their names), and with batch size >
1 the items of a batch influence each other. The released weights were trained this way, so
:class:`SequenceFirstTransformer` keeps the same axis convention.

Deviations from the reference code (numerically equivalent; see
``benchmarks/check_reference_equivalence.py``):

* the attention is called with ``need_weights=False``, so ``nn.MultiheadAttention`` takes its
  ``scaled_dot_product_attention`` path instead of materialising (and head-averaging) the
  attention matrix; with the reference's layout that matrix is large (the "frequency" stage
  attends over batch x frames). Outputs agree to float rounding (~1e-13 in float64);
* ``GRU.flatten_parameters()`` is not called in ``forward`` (``Module.to``/``cuda`` already
  compacts the weights);
* the wrapper's iSTFT returns the input's length (see :class:`MPSENetGenerator`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "N_FFT",
    "HOP_LENGTH",
    "WIN_LENGTH",
    "COMPRESS_FACTOR",
    "WRAPPER_PREFIX",
    "MPSENetNet",
    "MPSENetGenerator",
    "mag_pha_stft",
    "mag_pha_istft",
    "load_official_state_dict",
]

N_FFT = 400
HOP_LENGTH = 100
WIN_LENGTH = 400
COMPRESS_FACTOR = 0.3
#: Prefix of the network's keys inside :class:`MPSENetGenerator`'s state dict.
WRAPPER_PREFIX = "net."


# --------------------------------------------------------------------------------------------
# Convolutional building blocks
# --------------------------------------------------------------------------------------------


class DenseBlock(nn.Module):
    """Densely connected stack of ``depth`` (2, 3) convolutions, dilation ``2**i`` along time.

    Layer ``i`` sees the block input concatenated with all earlier layers' outputs and is
    ``Sequential(zero-pad (1, 1 in frequency; 2**i before in time), conv, instance norm,
    PReLU)`` -- the indices 1, 2, 3 inside each layer are part of the checkpoint keys. Returns
    the last layer's output.
    """

    def __init__(self, channels: int = 64, kernel_size: tuple[int, int] = (2, 3), depth: int = 4):
        super().__init__()
        self.depth = depth
        self.dense_block = nn.ModuleList(
            nn.Sequential(
                nn.ZeroPad2d((1, 1, 2**i, 0)),
                nn.Conv2d(channels * (i + 1), channels, kernel_size, dilation=(2**i, 1)),
                nn.InstanceNorm2d(channels, affine=True),
                nn.PReLU(channels),
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = x
        for layer in self.dense_block:
            x = layer(features)
            features = torch.cat([x, features], dim=1)
        return x


class DenseEncoder(nn.Module):
    """1x1 conv -> dense block -> stride-2 conv along frequency (F -> (F + 1) // 2)."""

    def __init__(self, channels: int = 64, in_channels: int = 2):
        super().__init__()
        self.dense_conv_1 = nn.Sequential(nn.Conv2d(in_channels, channels, (1, 1)),
                                          nn.InstanceNorm2d(channels, affine=True), nn.PReLU(channels))
        self.dense_block = DenseBlock(channels, depth=4)
        self.dense_conv_2 = nn.Sequential(nn.Conv2d(channels, channels, (1, 3), (1, 2), padding=(0, 1)),
                                          nn.InstanceNorm2d(channels, affine=True), nn.PReLU(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense_conv_2(self.dense_block(self.dense_conv_1(x)))


class SubPixelConv2d(nn.Module):
    """Frequency up-sampling by ``factor``: a (1, k) conv to ``factor * C`` maps, interleaved.

    The input is zero-padded by one bin on each side of the frequency axis; output bin
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
        return y.reshape(b, r, c // r, t, f).permute(0, 2, 3, 4, 1).reshape(b, c // r, t, f * r)


class LearnableSigmoid2d(nn.Module):
    """``beta * sigmoid(slope * x)`` on ``(B, F, T)`` with one learnable slope per bin (``(F, 1)``)."""

    def __init__(self, num_features: int, beta: float = 2.0):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(num_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


# --------------------------------------------------------------------------------------------
# Transformer block (attention + bidirectional-GRU feed-forward)
# --------------------------------------------------------------------------------------------


class GRUFeedForward(nn.Module):
    """Bi-GRU (hidden ``2 * C``) -> LeakyReLU -> dropout -> Linear(4C, C); sequence-first input."""

    def __init__(self, d_model: int, bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.gru = nn.GRU(d_model, d_model * 2, 1, bidirectional=bidirectional)
        self.linear = nn.Linear(d_model * 2 * (2 if bidirectional else 1), d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.gru(x)
        return self.linear(self.dropout(F.leaky_relu(x)))


class SequenceFirstTransformer(nn.Module):
    """Pre-norm block: ``x + MHA(LN x)``, ``x + GRUFFN(LN x)``, then LayerNorm.

    The input is ``(L, N, C)`` with the **first** axis as the sequence (``batch_first=False``
    for both the attention and the GRU), exactly like the reference ``TransformerBlock`` --
    see the module docstring for what that means for MP-SENet's two-stage blocks.
    """

    def __init__(self, d_model: int, n_heads: int, bidirectional: bool = True, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = GRUFeedForward(d_model, bidirectional=bidirectional)
        self.dropout2 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h, _ = self.attention(h, h, h, need_weights=False)
        x = x + self.dropout1(h)
        x = x + self.dropout2(self.ffn(self.norm2(x)))
        return self.norm3(x)


class TSTransformerBlock(nn.Module):
    """Two-stage block on ``(B, C, T, F)``: a residual "time" then "frequency" transformer.

    The tensors are laid out ``(B*F, T, C)`` and ``(B*T, F, C)`` as in the reference; because
    the transformers are sequence-first, the sequences are actually the B*F and B*T axes.
    """

    def __init__(self, channels: int = 64, n_heads: int = 4):
        super().__init__()
        self.time_transformer = SequenceFirstTransformer(d_model=channels, n_heads=n_heads)
        self.freq_transformer = SequenceFirstTransformer(d_model=channels, n_heads=n_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        x = x.permute(0, 3, 2, 1).reshape(b * f, t, c)
        x = self.time_transformer(x) + x
        x = x.reshape(b, f, t, c).transpose(1, 2).reshape(b * t, f, c)
        x = self.freq_transformer(x) + x
        return x.reshape(b, t, f, c).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------
# Decoders and the network
# --------------------------------------------------------------------------------------------


class MaskDecoder(nn.Module):
    """Magnitude mask ``(B, F, T)`` in ``(0, beta)``: dense block -> sub-pixel up-sampling ->
    norm/PReLU -> (1, 2) conv -> per-bin learnable sigmoid."""

    def __init__(self, channels: int = 64, num_features: int = N_FFT // 2 + 1, beta: float = 2.0,
                 out_channels: int = 1):
        super().__init__()
        self.dense_block = DenseBlock(channels, depth=4)
        self.mask_conv = nn.Sequential(
            SubPixelConv2d(channels, channels, (1, 3), 2),
            nn.InstanceNorm2d(channels, affine=True),
            nn.PReLU(channels),
            nn.Conv2d(channels, out_channels, (1, 2)),
        )
        self.lsigmoid = LearnableSigmoid2d(num_features, beta=beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mask_conv(self.dense_block(x))  # (B, 1, T, F)
        return self.lsigmoid(x[:, 0].transpose(1, 2))


class PhaseDecoder(nn.Module):
    """Phase ``(B, F, T)`` by parallel estimation: ``atan2(conv_i(h), conv_r(h))``."""

    def __init__(self, channels: int = 64, out_channels: int = 1):
        super().__init__()
        self.dense_block = DenseBlock(channels, depth=4)
        self.phase_conv = nn.Sequential(
            SubPixelConv2d(channels, channels, (1, 3), 2),
            nn.InstanceNorm2d(channels, affine=True),
            nn.PReLU(channels),
        )
        self.phase_conv_r = nn.Conv2d(channels, out_channels, (1, 2))
        self.phase_conv_i = nn.Conv2d(channels, out_channels, (1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.phase_conv(self.dense_block(x))
        phase = torch.atan2(self.phase_conv_i(h), self.phase_conv_r(h))  # (B, 1, T, F)
        return phase[:, 0].transpose(1, 2)


class MPSENetNet(nn.Module):
    """MP-SENet's ``MPNet`` (current repository version), state-dict compatible with it.

    ``forward(noisy_amp, noisy_pha)``, both ``(B, F, T)`` (compressed magnitude and phase),
    returns ``(amp, pha, com)``: ``amp = noisy_amp * mask`` (B, F, T), ``pha`` (B, F, T) in
    ``[-pi, pi]`` and ``com = stack(amp cos pha, amp sin pha, -1)`` (B, F, T, 2).
    """

    def __init__(self, dense_channel: int = 64, num_tsblocks: int = 4, beta: float = 2.0, n_fft: int = N_FFT):
        super().__init__()
        self.num_tscblocks = num_tsblocks
        self.dense_encoder = DenseEncoder(dense_channel, in_channels=2)
        self.TSTransformer = nn.ModuleList(TSTransformerBlock(dense_channel) for _ in range(num_tsblocks))
        self.mask_decoder = MaskDecoder(dense_channel, num_features=n_fft // 2 + 1, beta=beta)
        self.phase_decoder = PhaseDecoder(dense_channel)

    def forward(self, noisy_amp: torch.Tensor, noisy_pha: torch.Tensor):
        x = torch.stack((noisy_amp, noisy_pha), dim=1).transpose(2, 3)  # (B, 2, T, F)
        x = self.dense_encoder(x)
        for block in self.TSTransformer:
            x = block(x)
        amp = noisy_amp * self.mask_decoder(x)
        pha = self.phase_decoder(x)
        com = torch.stack((amp * torch.cos(pha), amp * torch.sin(pha)), dim=-1)
        return amp, pha, com


# --------------------------------------------------------------------------------------------
# STFT front-end (MP-SENet conventions) and the generator wrapper
# --------------------------------------------------------------------------------------------


def _hann(device: torch.device) -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32, device=device)


def mag_pha_stft(wave: torch.Tensor, compress_factor: float = COMPRESS_FACTOR):
    """MP-SENet's analysis of ``wave`` (B, T): ``(mag, pha, com)``, each from ``(B, F, N)``.

    Hann 400 / hop 100, ``center=True`` with reflect padding (``N = T // 100 + 1``);
    ``mag = sqrt(re^2 + im^2 + 1e-9) ** compress_factor``,
    ``pha = atan2(im + 1e-10, re + 1e-5)``, ``com = stack(mag cos pha, mag sin pha, -1)``
    (B, F, N, 2) -- the reference's epsilons and formulas. fp32 with autocast disabled.
    """
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        spec = torch.view_as_real(torch.stft(wave, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                                             window=_hann(wave.device), center=True, pad_mode="reflect",
                                             normalized=False, onesided=True, return_complex=True))
        re, im = spec[..., 0], spec[..., 1]
        mag = torch.sqrt(re**2 + im**2 + 1e-9) ** compress_factor
        pha = torch.atan2(im + 1e-10, re + 1e-5)
        com = torch.stack((mag * torch.cos(pha), mag * torch.sin(pha)), dim=-1)
        return mag, pha, com


def mag_pha_istft(mag: torch.Tensor, pha: torch.Tensor, compress_factor: float = COMPRESS_FACTOR,
                  length: int | None = None) -> torch.Tensor:
    """MP-SENet's synthesis: ``mag ** (1 / compress_factor)`` with phase ``pha`` -> iSTFT (Hann 400/100).

    Without ``length`` the output has ``(N - 1) * 100`` samples (for a wave analysed by
    :func:`mag_pha_stft`, ``(T // 100) * 100``), as the reference. With ``length`` it is passed
    to ``torch.istft``, which keeps the overlap-add beyond the last frame centre (the tail
    frames cover it) and zero-fills only what no frame covers. fp32 with autocast disabled.
    """
    with torch.autocast(device_type=mag.device.type, enabled=False):
        mag = mag.float() ** (1.0 / compress_factor)
        pha = pha.float()
        spec = torch.complex(mag * torch.cos(pha), mag * torch.sin(pha))
        return torch.istft(spec, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=_hann(spec.device),
                           center=True, onesided=True, length=length)


class MPSENetGenerator(nn.Module):
    """MP-SENet behind the toolkit's generator contract.

    ``forward(noisy_wave)`` with ``noisy_wave`` float ``(B, T)`` (already scaled to unit RMS by
    the caller, as the reference's ``norm_factor = sqrt(T / sum(x**2))``) returns

    * ``wave``: float32 ``(B, T)``, the enhanced signal, same length as the input;
    * ``spec``: complex64 ``(B, F, N)``, the compressed complex estimate (``com`` as complex);
    * ``mag``: float32 ``(B, F, N)``, the compressed magnitude (= ``amp``);
    * ``amp``: the compressed magnitude ``(B, F, N)`` (the reference's ``mag_g``);
    * ``pha``: the phase ``(B, F, N)`` (``pha_g``);
    * ``com``: ``(B, F, N, 2)`` real tensor, the reference's ``com_g`` layout.

    with ``N = T // 100 + 1`` (:func:`mag_pha_stft`). Length: the reference's iSTFT returns
    ``(T // 100) * 100`` samples (up to 99 fewer than the input). Here the iSTFT is asked for
    exactly ``T`` samples (``torch.istft(length=T)``): the first ``(T // 100) * 100`` are the
    reference's samples, and the at most 99 extra ones are the overlap-add of the last frames
    (not zeros). When ``T`` is a multiple of 100 (e.g. the 32000-sample training segments),
    the output is the reference's output. STFT/iSTFT in fp32, autocast disabled; the network
    runs under the caller's autocast.

    Its parameters are the network's only; state-dict keys are ``"net." + <official key>``.
    """

    def __init__(self, dense_channel: int = 64, num_tsblocks: int = 4, beta: float = 2.0):
        super().__init__()
        self.net = MPSENetNet(dense_channel=dense_channel, num_tsblocks=num_tsblocks, beta=beta, n_fft=N_FFT)

    @staticmethod
    def analyze(wave: torch.Tensor):
        """``(mag, pha, com)`` of ``wave`` exactly as ``forward`` computes them (for targets)."""
        return mag_pha_stft(wave)

    def forward(self, noisy_wave: torch.Tensor) -> dict[str, torch.Tensor]:
        if noisy_wave.dim() != 2:
            raise ValueError(f"MPSENetGenerator: expected a (batch, samples) wave, got {tuple(noisy_wave.shape)}")
        length = noisy_wave.shape[-1]
        noisy_amp, noisy_pha, _ = mag_pha_stft(noisy_wave)
        amp, pha, com = self.net(noisy_amp, noisy_pha)
        with torch.autocast(device_type=noisy_wave.device.type, enabled=False):
            amp, pha, com = amp.float(), pha.float(), com.float()
            wave = mag_pha_istft(amp, pha, length=length)
            spec = torch.complex(com[..., 0], com[..., 1])
            return {"wave": wave, "spec": spec, "mag": amp, "amp": amp, "pha": pha, "com": com}


def load_official_state_dict(generator: MPSENetGenerator, checkpoint: dict, strict: bool = True):
    """Load an official MP-SENet checkpoint into ``generator``.

    ``checkpoint`` is either the file's dict (with a ``"generator"`` entry, as ``g_best_vb``)
    or that entry itself (a plain ``MPNet`` state dict).
    """
    state = checkpoint.get("generator", checkpoint)
    return generator.load_state_dict({WRAPPER_PREFIX + k: v for k, v in state.items()}, strict=strict)
