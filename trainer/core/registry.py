"""Plug-ins by name: tasks (model families) and generators.

A task is a folder under ``trainer/tasks/`` whose ``__init__.py`` calls :func:`register_task` with
a :class:`TaskSpec`; every folder there is found and imported on first use (no list to edit).
The spec and its config sections are torch-free, so login-node commands validate configs
without importing torch; the runtime parts (the task class, the generator modules, the demo
corpus) are named as ``"module:attribute"`` strings and imported only when a run builds them.

A data kind (how training batches are made: ``paired`` shards, on-the-fly ``mixing``) registers
with :func:`register_data_kind` the module that builds its loaders (``trainer/data/__init__.py``
registers the built-in ones; the package is imported on first use). The core receives its loaders
through :func:`data_loaders` and imports nothing from ``trainer.data`` itself.

A generator module registers ``factory(cfg) -> nn.Module`` with ``@register_generator("name")``;
the task's ``models`` package imports its generator modules. A generator's contract:
``forward(input_wave (B, T))`` returns a dict with at least ``wave`` (B, T) float32.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

from trainer.core.settings import ConfigError

__all__ = ["TaskSpec", "register_task", "register_data_kind", "data_kind", "data_loaders", "task_spec", "task_names",
           "resolve", "register_generator", "build_generator", "generator_names"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a model family brings to the training core (see ``trainer/core/task.py`` for the runtime
    contract of ``task``)."""

    name: str
    # Config sections the task owns or specialises, by section name (model, discriminator, loss,
    # and subclasses of the generic data/valid/checkpoint sections). Torch-free dataclasses.
    sections: dict[str, type]
    task: str | Callable  # "module:Class" of the runtime task (a trainer.core.task.Task)
    models: str  # the package whose import registers the task's generators
    demo: str | Callable  # "module:function(sample_rate) -> {train, valid, ...}" building the demo corpus
    # Dotted config keys a resume may not change (they define the networks and their inputs);
    # "section.*" means every key of the section.
    architecture_keys: tuple[str, ...]
    # Validation metrics a best_<metric> checkpoint may track.
    checkpoint_metrics: tuple[str, ...] = ("loss",)
    # Dotted keys older versions wrote into every frozen config and checkpoint of this task that it no
    # longer has (a setting that moved to another task): dropped when a config is read, so old runs resume.
    retired_keys: tuple[str, ...] = ()


_TASKS: dict[str, TaskSpec] = {}
_DISCOVERED = False


def register_task(spec: TaskSpec) -> TaskSpec:
    if spec.name in _TASKS and _TASKS[spec.name] != spec:
        raise ValueError(f"task {spec.name!r} is already registered; pick another name")
    _TASKS[spec.name] = spec
    return spec


def _discover() -> None:
    """Import every package under trainer/tasks once (each registers itself)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    package = importlib.import_module("trainer.tasks")
    for info in pkgutil.iter_modules(package.__path__):
        if info.ispkg:
            importlib.import_module(f"trainer.tasks.{info.name}")


def task_names() -> list[str]:
    _discover()
    return sorted(_TASKS)


def task_spec(name: str) -> TaskSpec:
    _discover()
    if name not in _TASKS:
        raise ConfigError(f"task: {name!r} is not a registered task; valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def resolve(ref: str | Callable) -> Any:
    """``"package.module:attribute"`` -> the attribute (imported now); a callable is returned as is."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)


_DATA_KINDS: dict[str, str] = {}


def register_data_kind(name: str, module: str) -> None:
    """``module`` (imported when a run builds loaders) provides
    ``build_train_loader(cfg, rank, world_size) -> (loader, sampler)`` and
    ``build_eval_loader(split_dir | None, cfg, rank, world_size, *, max_seconds=None,
    max_utterances=None, num_workers=None) -> loader`` (``None``: the config's validation split)."""
    if _DATA_KINDS.get(name, module) != module:
        raise ValueError(f"data kind {name!r} is already registered; pick another name")
    _DATA_KINDS[name] = module


def data_kind(cfg) -> str:
    """``mixing`` when the config sets ``mixing.speech`` or ``mixing.demo`` (mixtures made on the fly),
    else ``paired``."""
    mixing = getattr(cfg, "mixing", None)
    return "mixing" if mixing is not None and mixing.active else "paired"


def data_loaders(cfg) -> Any:
    """The module building the loaders of ``cfg``'s data kind (imports the data package)."""
    importlib.import_module("trainer.data")
    kind = data_kind(cfg)
    if kind not in _DATA_KINDS:
        raise ConfigError(f"data kind {kind!r} is not registered; valid kinds: {', '.join(sorted(_DATA_KINDS))}")
    return importlib.import_module(_DATA_KINDS[kind])


GeneratorFactory = Callable[[Any], Any]
_GENERATORS: dict[str, GeneratorFactory] = {}


def register_generator(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    """Decorator: register ``factory(cfg) -> nn.Module`` as the generator called ``name``."""

    def decorate(factory: GeneratorFactory) -> GeneratorFactory:
        if name in _GENERATORS and _GENERATORS[name] is not factory:
            raise ValueError(f"generator {name!r} is already registered by "
                             f"{_GENERATORS[name].__module__}; pick another name")
        _GENERATORS[name] = factory
        return factory

    return decorate


def generator_names(task: str) -> list[str]:
    """The generators defined under a task's models package (imports it)."""
    package = task_spec(task).models
    importlib.import_module(package)
    return sorted(name for name, factory in _GENERATORS.items()
                  if factory.__module__ == package or factory.__module__.startswith(package + "."))


def build_generator(cfg) -> Any:
    """The generator named by ``cfg.model.name``, built from ``cfg`` (imports the task's models)."""
    importlib.import_module(task_spec(cfg.task).models)
    name = cfg.model.name
    if name not in _GENERATORS:
        raise ConfigError(f"model.name: {name!r} is not a registered generator; valid names: "
                          f"{', '.join(sorted(_GENERATORS)) or 'none'}")
    return _GENERATORS[name](cfg)
