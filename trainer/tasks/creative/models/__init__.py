"""The creative agent (registers "creative_agent" on import) and its real/fake critic."""

from trainer.tasks.creative.models import agent  # noqa: F401  (registers "creative_agent")
from trainer.tasks.creative.models.discriminator import CreativeDiscriminator


def build_discriminator(cfg) -> CreativeDiscriminator:
    return CreativeDiscriminator(num_channels=cfg.discriminator.num_channels)
