"""The speech generators (each registers itself by name on import), their analysis conventions and the
MetricGAN discriminator.

To add a generator: a module here with ``@register_generator("name")`` on its factory, imported
below, and its name in ``GENERATORS`` of ``trainer/tasks/speech/config.py``; if it computes its
spectra with its own conventions, its ``analysis(cfg)`` in ``_ANALYSES`` (else the losses use the
toolkit's STFT front-end).
"""

from trainer.tasks.speech.models import bsrnn, cmgan, mpsenet  # noqa: F401  (each registers its generator)
from trainer.tasks.speech.models.analysis import Analysis, spectral_analysis
from trainer.tasks.speech.models.discriminator import MetricDiscriminator

__all__ = ["analysis_for", "build_discriminator", "Analysis", "MetricDiscriminator"]

# Generators whose published training computes its targets with its own STFT conventions.
_ANALYSES = {"cmgan": cmgan.analysis, "mpsenet": mpsenet.analysis}


def analysis_for(cfg) -> Analysis:
    """How ``cfg.model.name`` analyses a wave: the targets of its loss terms and what its
    discriminator compares (``trainer/tasks/speech/models/analysis.py``)."""
    return _ANALYSES.get(cfg.model.name, spectral_analysis)(cfg)


def build_discriminator(cfg) -> MetricDiscriminator:
    """The CMGAN-style MetricGAN discriminator sized by ``cfg.discriminator`` (also MP-SENet's: the
    same layers, sizes and sigmoid; see the module docstring of ``discriminator.py``)."""
    d = cfg.discriminator
    return MetricDiscriminator(num_channels=d.num_channels, dropout=d.dropout, sigmoid_beta=d.sigmoid_beta)
