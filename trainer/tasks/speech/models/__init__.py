"""The speech generators (each registers itself by name on import) and the MetricGAN discriminator.

To add a generator: a module here with ``@register_generator("name")`` on its factory, imported
below, and its name in ``GENERATORS`` of ``trainer/tasks/speech/config.py``.
"""

from trainer.tasks.speech.models import bsrnn  # noqa: F401  (registers "bsrnn")
from trainer.tasks.speech.models.discriminator import MetricDiscriminator


def build_discriminator(cfg) -> MetricDiscriminator:
    """The CMGAN-style MetricGAN discriminator sized by ``cfg.discriminator``."""
    d = cfg.discriminator
    return MetricDiscriminator(num_channels=d.num_channels, dropout=d.dropout, sigmoid_beta=d.sigmoid_beta)
