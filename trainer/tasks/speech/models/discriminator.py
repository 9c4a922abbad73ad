"""The MetricGAN discriminator in the CMGAN style: it predicts the normalised PESQ of an estimate.

Input: the compressed magnitudes of (clean, estimate), stacked as two channels (B, 2, F, N).
Four spectral-norm convolutions (kernel 4, stride 2, padding 1, no bias), each followed by an
affine InstanceNorm and a PReLU, double the channels from ``num_channels`` to 8x; a global max
over (F, N); spectral-norm Linear(8c -> 4c), dropout, PReLU, spectral-norm Linear(4c -> 1); and
a learnable sigmoid ``beta * sigmoid(slope * x)`` (slope learned, initialised to 1).

The global max is ``amax`` rather than ``AdaptiveMaxPool2d(1)``: the same value, but its backward
is deterministic on CUDA (the training loop runs with deterministic algorithms).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["MetricDiscriminator", "LearnableSigmoid"]


class LearnableSigmoid(nn.Module):
    """``beta * sigmoid(slope * x)`` with a learned per-feature slope."""

    def __init__(self, num_features: int, beta: float = 1.0):
        super().__init__()
        self.beta = beta
        self.slope = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * torch.sigmoid(self.slope * x)


class MetricDiscriminator(nn.Module):
    def __init__(self, num_channels: int = 16, dropout: float = 0.3, sigmoid_beta: float = 1.0):
        super().__init__()
        c = num_channels
        layers: list[nn.Module] = []
        for c_in, c_out in ((2, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)):
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, kernel_size=4, stride=2, padding=1, bias=False)),
                       nn.InstanceNorm2d(c_out, affine=True),
                       nn.PReLU(c_out)]
        self.convs = nn.Sequential(*layers)
        self.head = nn.Sequential(spectral_norm(nn.Linear(8 * c, 4 * c)), nn.Dropout(dropout), nn.PReLU(4 * c),
                                  spectral_norm(nn.Linear(4 * c, 1)), LearnableSigmoid(1, beta=sigmoid_beta))

    def forward(self, clean_mag: torch.Tensor, est_mag: torch.Tensor) -> torch.Tensor:
        """``clean_mag``, ``est_mag``: compressed magnitudes (B, F, N) -> predicted normalised PESQ (B,)."""
        if clean_mag.shape != est_mag.shape or clean_mag.dim() != 3:
            raise ValueError(f"discriminator: expected two (batch, freq, frames) magnitudes of one shape, "
                             f"got {tuple(clean_mag.shape)} and {tuple(est_mag.shape)}")
        x = torch.stack([clean_mag, est_mag], dim=1)
        x = self.convs(x).amax(dim=(2, 3))
        return self.head(x).squeeze(1)
