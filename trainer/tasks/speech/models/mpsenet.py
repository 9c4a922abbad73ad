"""MP-SENet's generator (Lu, Ai & Ling, Interspeech 2023 / the 2025 extension), checkpoint-compatible:
``model.name: mpsenet``.

This follows the repository's *current* code (yxlu-0102/MP-SENet, ``models/model.py``: ``MPNet``
built from ``models/transformer.py``'s ``TransformerBlock``), which is what the released
checkpoints ``best_ckpt/g_best_vb`` / ``g_best_dns`` belong to -- not the conformer version of
the Interspeech paper. With ``config.json``'s sizes (dense_channel 64, 4 TS blocks, beta 2.0,
n_fft 400) it has 2,263,372 parameters.

Two pieces:

* :class:`MPSENetNet` -- the network: compressed magnitude and phase ``(B, F, T)`` ->
  ``(amp, pha, com)``: the masked compressed magnitude (mask ``beta * sigmoid(slope * x)`` in
  ``(0, 2)``), the phase from the parallel phase estimator (``atan2`` of two pseudo real/imag
  maps), and ``com = stack(amp cos pha, amp sin pha, dim=-1)`` ``(B, F, T, 2)``. Its two-stage
  blocks are :mod:`.mpsenet_transformer`'s -- read its docstring: **items of a batch influence
  each other** (faithfully reproduced from the released code).
* :class:`MPSENetGenerator` -- the toolkit's generator contract around it (see its docstring).
  Sizes from ``model.num_channels`` (dense channels, 64) and ``model.num_layers`` (TS blocks, 4);
  the STFT from ``stft.*`` (``configs/mpsenet.yaml``: Hann 400/100, compression 0.3); the mask's
  beta is the published 2.0 (:data:`MASK_BETA`, config.json).

Checkpoint layout. Attribute names and nesting are those of the reference ``MPNet``, so
``MPSENetNet().state_dict()`` has exactly the keys and shapes of a checkpoint's ``"generator"``
entry and loads it with ``strict=True``; ``tests/golden/mpsenet_keys.txt`` pins the list.
:class:`MPSENetGenerator` holds the network as ``self.net``: its keys are the official ones
prefixed with ``"net."`` (:data:`WRAPPER_PREFIX`); :func:`load_official_state_dict` adds it.

Deviations from the reference code (numerically equivalent; see
``benchmarks/check_reference_equivalence.py``): ``GRU.flatten_parameters()`` is not called in
``forward`` (``Module.to``/``cuda`` already compacts the weights); the wrapper's iSTFT returns the
input's length (see :class:`MPSENetGenerator`).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.core.config import Config, StftConfig
from trainer.core.registry import register_generator
from trainer.tasks.speech.models.analysis import Analysis
from trainer.tasks.speech.models.layers import SubPixelConv2d, window
from trainer.tasks.speech.models.mpsenet_transformer import TSTransformerBlock

__all__ = ["WRAPPER_PREFIX", "MASK_BETA", "MPSENET_STFT", "MPSENetNet", "MPSENetGenerator", "mag_pha_stft",
           "mag_pha_istft", "load_official_state_dict", "analysis"]

#: Prefix of the network's keys inside :class:`MPSENetGenerator`'s state dict.
WRAPPER_PREFIX = "net."
#: The mask's learnable-sigmoid range (config.json ``beta``).
MASK_BETA = 2.0
#: MP-SENet's published STFT (config.json: n_fft 400, hop_size 100, win_size 400, compress_factor 0.3;
#: dataset.py: ``torch.hann_window``).
MPSENET_STFT = StftConfig(n_fft=400, hop_length=100, window="hann", compress_factor=0.3)


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


class LearnableSigmoid2d(nn.Module):
    """``beta * sigmoid(slope * x)`` on ``(B, F, T)`` with one learnable slope per bin (``(F, 1)``)."""

    def __init__(self, num_features: int, beta: float = 2.0):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(num_features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


class MaskDecoder(nn.Module):
    """Magnitude mask ``(B, F, T)`` in ``(0, beta)``: dense block -> sub-pixel up-sampling ->
    norm/PReLU -> (1, 2) conv -> per-bin learnable sigmoid."""

    def __init__(self, channels: int = 64, num_features: int = 201, beta: float = 2.0,
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

    def __init__(self, dense_channel: int = 64, num_tsblocks: int = 4, beta: float = 2.0, n_fft: int = 400):
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


def _stft_args(stft: StftConfig, device: torch.device) -> dict:
    return {"n_fft": stft.n_fft, "hop_length": stft.hop_length, "win_length": stft.n_fft,
            "window": window(stft.window, stft.n_fft, device), "center": True, "onesided": True}


def mag_pha_stft(wave: torch.Tensor, stft: StftConfig = MPSENET_STFT):
    """MP-SENet's analysis (dataset.py) of ``wave`` (B, T): ``(mag, pha, com)``, each from ``(B, F, N)``.

    ``center=True`` with reflect padding (``N = T // hop + 1``);
    ``mag = sqrt(re^2 + im^2 + 1e-9) ** compress_factor``, ``pha = atan2(im + 1e-10, re + 1e-5)``,
    ``com = stack(mag cos pha, mag sin pha, -1)`` (B, F, N, 2) -- the reference's epsilons and
    formulas. fp32 with autocast disabled.
    """
    with torch.autocast(device_type=wave.device.type, enabled=False):
        wave = wave.float()
        spec = torch.view_as_real(torch.stft(wave, pad_mode="reflect", normalized=False, return_complex=True,
                                             **_stft_args(stft, wave.device)))
        re, im = spec[..., 0], spec[..., 1]
        mag = torch.sqrt(re**2 + im**2 + 1e-9) ** stft.compress_factor
        pha = torch.atan2(im + 1e-10, re + 1e-5)
        com = torch.stack((mag * torch.cos(pha), mag * torch.sin(pha)), dim=-1)
        return mag, pha, com


def mag_pha_istft(mag: torch.Tensor, pha: torch.Tensor, stft: StftConfig = MPSENET_STFT,
                  length: int | None = None) -> torch.Tensor:
    """MP-SENet's synthesis: ``mag ** (1 / compress_factor)`` with phase ``pha`` -> iSTFT.

    Without ``length`` the output has ``(N - 1) * hop`` samples (for a wave analysed by
    :func:`mag_pha_stft`, ``(T // hop) * hop``), as the reference. With ``length`` it is passed to
    ``torch.istft``, which keeps the overlap-add beyond the last frame centre (the tail frames
    cover it) and zero-fills only what no frame covers. fp32 with autocast disabled.
    """
    with torch.autocast(device_type=mag.device.type, enabled=False):
        mag = mag.float() ** (1.0 / stft.compress_factor)
        pha = pha.float()
        spec = torch.complex(mag * torch.cos(pha), mag * torch.sin(pha))
        return torch.istft(spec, length=length, **_stft_args(stft, spec.device))


class MPSENetGenerator(nn.Module):
    """MP-SENet behind the toolkit's generator contract.

    ``forward(noisy_wave)`` with ``noisy_wave`` float ``(B, T)`` (already scaled to unit RMS by
    the caller, as the reference's ``norm_factor = sqrt(T / sum(x**2))``) returns

    * ``wave``: float32 ``(B, T)``, the enhanced signal, same length as the input;
    * ``spec``: complex64 ``(B, F, N)``, the compressed complex estimate (``com`` as complex);
    * ``mag``: float32 ``(B, F, N)``, the compressed magnitude (= ``amp``, the reference's ``mag_g``);
    * ``amp``: the same tensor as ``mag`` (the reference's name);
    * ``pha``: the phase ``(B, F, N)`` (``pha_g``);
    * ``com``: ``(B, F, N, 2)`` real tensor, the reference's ``com_g`` layout;

    with ``N = T // hop + 1`` (:func:`mag_pha_stft`). Length: the reference's iSTFT returns
    ``(T // hop) * hop`` samples (up to 99 fewer than the input). Here the iSTFT is asked for
    exactly ``T`` samples: the first ``(T // hop) * hop`` are the reference's samples, and the at
    most ``hop - 1`` extra ones are the overlap-add of the last frames (not zeros). When ``T`` is a
    multiple of the hop (e.g. the 32000-sample training segments), the output is the reference's.
    STFT/iSTFT in fp32, autocast disabled; the network runs under the caller's autocast.

    ``couples_batch_items``: an item's output depends on the other items of its batch (see
    :mod:`.mpsenet_transformer`); ``trainer.enhance`` therefore enhances one item per call.
    """

    couples_batch_items = True

    def __init__(self, dense_channel: int = 64, num_tsblocks: int = 4, stft: StftConfig = MPSENET_STFT,
                 beta: float = MASK_BETA):
        super().__init__()
        self.stft = stft
        self.net = MPSENetNet(dense_channel=dense_channel, num_tsblocks=num_tsblocks, beta=beta, n_fft=stft.n_fft)

    def analyze(self, wave: torch.Tensor):
        """``(mag, pha, com)`` of ``wave`` exactly as ``forward`` computes them (for targets)."""
        return mag_pha_stft(wave, self.stft)

    def forward(self, noisy_wave: torch.Tensor) -> dict[str, torch.Tensor]:
        if noisy_wave.dim() != 2:
            raise ValueError(f"MPSENetGenerator: expected a (batch, samples) wave, got {tuple(noisy_wave.shape)}")
        length = noisy_wave.shape[-1]
        noisy_amp, noisy_pha, _ = mag_pha_stft(noisy_wave, self.stft)
        amp, pha, com = self.net(noisy_amp, noisy_pha)
        with torch.autocast(device_type=noisy_wave.device.type, enabled=False):
            amp, pha, com = amp.float(), pha.float(), com.float()
            wave = mag_pha_istft(amp, pha, self.stft, length=length)
            return {"wave": wave, "spec": torch.complex(com[..., 0], com[..., 1]), "mag": amp, "amp": amp,
                    "pha": pha, "com": com}


def load_official_state_dict(generator: MPSENetGenerator, checkpoint: dict, strict: bool = True):
    """Load an official MP-SENet checkpoint into ``generator``.

    ``checkpoint`` is either the file's dict (with a ``"generator"`` entry, as ``g_best_vb``)
    or that entry itself (a plain ``MPNet`` state dict).
    """
    state = checkpoint.get("generator", checkpoint)
    return generator.load_state_dict({WRAPPER_PREFIX + k: v for k, v in state.items()}, strict=strict)


def analysis(cfg: Config) -> Analysis:
    """MP-SENet's targets (train.py lines 121-127): ``mag_pha_stft`` of the clean wave; the
    discriminator judges ``mag_pha_stft`` of the enhanced wave (``mag_g_hat``, lines 127 and 178)."""
    stft = cfg.stft

    def spectra(wave: torch.Tensor) -> dict[str, torch.Tensor]:
        mag, pha, com = mag_pha_stft(wave, stft)
        return {"spec": torch.complex(com[..., 0], com[..., 1]), "mag": mag, "pha": pha}

    return Analysis(n_fft=stft.n_fft, hop_length=stft.hop_length, spectra=spectra,
                    magnitude=lambda wave: mag_pha_stft(wave, stft)[0], discriminator_on_resynthesis=True)


@register_generator("mpsenet")
def build_mpsenet(cfg: Config) -> MPSENetGenerator:
    return MPSENetGenerator(dense_channel=cfg.model.num_channels, num_tsblocks=cfg.model.num_layers, stft=cfg.stft)
