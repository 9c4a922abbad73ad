"""The creative discriminator: a small real/fake critic over the compressed STFT magnitude,
trained least-squares style (:func:`trainer.tasks.creative.losses.creative_discriminator_loss`)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class CreativeDiscriminator(nn.Module):
    """Real/fake critic over the compressed STFT magnitude of one clip: (B, F, N) -> score (B,).

    Four strided spectral-norm conv layers with LeakyReLU, a 1-channel conv and a mean over the
    remaining time-frequency patches; trained least squares (real -> 1, fake -> 0).
    """

    def __init__(self, num_channels: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for i in range(4):
            out_ch = num_channels * 2 ** i
            layers += [spectral_norm(nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        layers.append(spectral_norm(nn.Conv2d(in_ch, 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        return self.net(magnitude.unsqueeze(1)).mean(dim=(1, 2, 3))
