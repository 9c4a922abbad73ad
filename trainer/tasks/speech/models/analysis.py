"""How a generator looks at a wave: the spectra its loss terms and the discriminator compare.

Each published model computes its training targets with its own STFT conventions (CMGAN: Hamming
window, ``|X| ** 0.3``, the input padded to a multiple of the hop; MP-SENet: Hann window,
``sqrt(|X|^2 + 1e-9) ** 0.3`` and an epsilon-guarded phase), so the loss asks the generator's
:class:`Analysis` (``trainer.tasks.speech.models.analysis_for(cfg)``) rather than one shared
front-end. Generators without their own (BSRNN, generators registered by tests) use
:func:`spectral_analysis`, the toolkit's STFT front-end (``trainer/audio/spectral.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from trainer.audio import spectral
from trainer.core.config import Config

__all__ = ["Analysis", "spectral_analysis"]


@dataclasses.dataclass(frozen=True)
class Analysis:
    """A generator's analysis conventions.

    ``spectra(wave (B, T))`` -> ``{"spec": compressed complex64 (B, F, N), "mag": float32 (B, F, N)}``
    and, for a model with its own phase convention, ``"pha"`` (B, F, N): the targets of the
    spectral loss terms, with as many frames as the generator's own ``spec``.
    ``magnitude(wave)`` -> the compressed magnitude the discriminator sees for that wave.
    ``discriminator_on_resynthesis``: the discriminator judges the analysis of the enhanced *wave*
    (MP-SENet's ``mag_g_hat``) instead of the generator's own magnitude output (CMGAN's ``est_mag``).
    Frame ``n`` is centred on sample ``n * hop_length`` (``n_fft // 2`` on either side): the
    loss's padding mask keeps the frames whose window ends within the real signal.
    """

    n_fft: int
    hop_length: int
    spectra: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    magnitude: Callable[[torch.Tensor], torch.Tensor]
    discriminator_on_resynthesis: bool = False


def spectral_analysis(cfg: Config) -> Analysis:
    """The toolkit's STFT front-end (``stft.*``; BSRNN): ``compress(stft(wave))`` and its magnitude."""
    stft = cfg.stft

    def spectra(wave: torch.Tensor) -> dict[str, torch.Tensor]:
        spec = spectral.compress(spectral.stft(wave, stft), stft.compress_factor, stft.eps)
        return {"spec": spec, "mag": spec.abs()}

    def magnitude(wave: torch.Tensor) -> torch.Tensor:
        return spectral.compressed_magnitude(spectral.stft(wave, stft), stft.compress_factor, stft.eps)

    return Analysis(n_fft=stft.n_fft, hop_length=stft.hop_length, spectra=spectra, magnitude=magnitude)
