"""The model registry: generators chosen by ``model.name``, and the MetricGAN discriminator.

A generator module registers a factory ``factory(cfg: Config) -> nn.Module`` with
``@register_generator("name")``. The built-in ``bsrnn`` lives in ``trainer/models/bsrnn.py``;
the creative-agent variant registers ``creative_agent`` from ``trainer/models/creative.py``
when that module is present in the checkout. A generator's ``forward(noisy_wave (B, T))``
returns a dict with ``wave`` (B, T), ``spec`` (compressed complex, B x F x N) and ``mag``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from torch import nn

from trainer.config import Config, ConfigError

__all__ = ["GENERATORS", "register_generator", "build_generator", "build_discriminator"]

GeneratorFactory = Callable[[Config], nn.Module]
GENERATORS: dict[str, GeneratorFactory] = {}


def register_generator(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator: register ``factory(cfg) -> nn.Module`` as the generator called ``name``."""

    def decorate(factory: GeneratorFactory) -> GeneratorFactory:
        if name in GENERATORS and GENERATORS[name] is not factory:
            raise ValueError(f"generator {name!r} is already registered by "
                             f"{GENERATORS[name].__module__}; pick another name")
        GENERATORS[name] = factory
        return factory

    return decorate


def build_generator(cfg: Config) -> nn.Module:
    """The generator named by ``cfg.model.name``, built from ``cfg``."""
    name = cfg.model.name
    if name not in GENERATORS:
        hint = ""
        if _OPTIONAL_IMPORT_ERRORS:
            hint = "".join(f" ({module} failed to import: {exc!r})" for module, exc in _OPTIONAL_IMPORT_ERRORS.items())
        elif name == "creative_agent" and importlib.util.find_spec("trainer.models.creative") is None:
            hint = " (trainer/models/creative.py is not in this checkout)"
        raise ConfigError(f"model.name: {name!r} is not a registered generator{hint}; valid names: "
                          f"{', '.join(sorted(GENERATORS)) or 'none'}")
    return GENERATORS[name](cfg)


def build_discriminator(cfg: Config) -> nn.Module:
    """The CMGAN-style MetricGAN discriminator sized by ``cfg.discriminator``."""
    from trainer.models.discriminator import MetricDiscriminator

    d = cfg.discriminator
    return MetricDiscriminator(num_channels=d.num_channels, dropout=d.dropout, sigmoid_beta=d.sigmoid_beta)


# Built-in generators register themselves on import (after the registry above exists).
from trainer.models import bsrnn  # noqa: E402,F401

# Optional generator modules: a broken one must not stop the others from training; its import
# error is reported when its name is asked for.
_OPTIONAL_IMPORT_ERRORS: dict[str, BaseException] = {}
for _module in ("trainer.models.creative",):
    if importlib.util.find_spec(_module) is not None:
        try:
            importlib.import_module(_module)
        except Exception as exc:  # noqa: BLE001 - reported by build_generator
            _OPTIONAL_IMPORT_ERRORS[_module] = exc
