"""Layers shared by the CMGAN and MP-SENet generators (both descend from the same dense U-shaped
time-frequency design), and the STFT windows they name."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SubPixelConv2d", "window"]


class SubPixelConv2d(nn.Module):
    """Frequency up-sampling by ``factor`` with a sub-pixel convolution.

    A (1, k) convolution (input zero-padded by one bin on each side of the frequency axis)
    produces ``factor * out_channels`` maps, which are interleaved along frequency: output bin
    ``factor * w + r`` comes from map group ``r`` at bin ``w``. Child ``conv`` (a checkpoint key)
    is the reference's ``SPConvTranspose2d.conv`` in both models.
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


def window(name: str, length: int, device: torch.device) -> torch.Tensor:
    """The periodic analysis/synthesis window ``name`` (``hann`` or ``hamming``), float32: torch's
    default windows, i.e. what ``torch.hann_window(n)``/``torch.hamming_window(n)`` give the references."""
    make = {"hann": torch.hann_window, "hamming": torch.hamming_window}[name]
    return make(length, periodic=True, dtype=torch.float32, device=device)
