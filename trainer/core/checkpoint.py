"""Complete, atomic, validated checkpoints.

A checkpoint holds everything needed to continue a run exactly: both models, both optimizers,
epoch/step and the sampler position, the RNG states of every rank (Python,
NumPy, torch, CUDA), best-so-far trackers, the resolved config and library versions.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the old file,
so the previous ``last`` stays valid until the new one is complete. Loading uses
``torch.load(weights_only=True)``: only tensors and plain containers are stored (NumPy states
are converted to tensors).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainer.core import dist
from trainer.core.config import Config, config_from_dict, to_dict
from trainer.core.errors import BadInput
from trainer.core.io import atomic_write
from trainer.core.log import get_logger
from trainer.core.registry import build_generator, task_spec

log = get_logger("checkpoint")

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "generator", "discriminator", "opt_g", "opt_d", "epoch", "step",
                 "batches_done", "sampler", "rng", "best", "versions")


class CheckpointError(BadInput):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "python": platform.python_version()}


def code_version() -> dict | None:
    """The code this process runs, as the launcher recorded it at submission (``SEGAN_CODE``: git
    revision, dirty flag, snapshot path; see jobs/snapshot.py); None outside such a job."""
    try:
        value = json.loads(os.environ.get("SEGAN_CODE") or "null")
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {key: value.get(key) for key in ("revision", "dirty", "snapshot")
            if isinstance(value.get(key), (str, bool, type(None)))}


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, rename."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def copy_atomic(src: str | Path, dst: str | Path) -> None:
    """Copy a finished checkpoint (e.g. last -> best_pesq) without a half-written window."""
    with open(src, "rb") as source:
        atomic_write(dst, lambda fh: shutil.copyfileobj(source, fh, 16 * 2**20))


def load(path: str | Path) -> dict[str, Any]:
    """Load and validate a checkpoint on the CPU; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong file type, unsafe pickle
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}); use another one, e.g. best_*.pt") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (top level is {type(state).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a complete training checkpoint; missing keys: {', '.join(missing)}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {state['format_version']} is not supported "
                              f"(this toolkit reads version {FORMAT_VERSION})")
    return state


def architecture_mismatches(saved: dict, current: dict) -> list[str]:
    """Architecture keys (the task's ``TaskSpec.architecture_keys``, plus ``task``) whose values
    differ between two config dicts: a resume may not change them."""
    if saved.get("task") != current.get("task"):
        return [f"task: checkpoint {saved.get('task')!r}, config {current.get('task')!r}"]
    diffs = []
    for pattern in task_spec(current["task"]).architecture_keys:
        section, key = pattern.split(".", 1)
        old, new = saved.get(section) or {}, current.get(section) or {}
        keys = sorted(set(old) | set(new)) if key == "*" else [key]
        diffs += [f"{section}.{k}: checkpoint {old.get(k)!r}, config {new.get(k)!r}"
                  for k in keys if old.get(k) != new.get(k)]
    return diffs


def load_module_state(module: torch.nn.Module, state: dict, what: str, path: str | Path) -> None:
    """Strict load (never partial): names the missing/unexpected/mis-shaped parameters."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:5])}")
        if shapes:
            parts.append(f"different shapes {', '.join(shapes[:5])}")
        raise CheckpointError(f"{path}: the {what} does not match this architecture ({'; '.join(parts)})")
    module.load_state_dict(state, strict=True)


@dataclasses.dataclass
class Progress:
    """Where a run stands: what a checkpoint must restore besides weights, optimizers and RNGs."""

    epoch: int = 0
    step: int = 0
    batches_done: int = 0  # of the current epoch, in this run's layout
    best: dict[str, float] = dataclasses.field(default_factory=dict)
    num_nonfinite_total: int = 0


def training_state(cfg: Config, parts: dict[str, Any], sampler, progress: Progress, extra: dict) -> dict:
    """The complete state to continue exactly (a collective: every rank contributes its RNG state).

    ``parts``: the modules and optimizers by name (generator, discriminator, opt_g, opt_d).
    """
    return {
        "format_version": FORMAT_VERSION,
        "config": to_dict(cfg),
        **{name: part.state_dict() for name, part in parts.items()},
        "epoch": progress.epoch,
        "step": progress.step,
        "batches_done": progress.batches_done,
        "sampler": sampler.state_dict(progress.batches_done) if progress.batches_done else {},
        "rng": dist.all_gather_objects(capture_rng()),
        "best": dict(progress.best),
        "num_nonfinite_total": progress.num_nonfinite_total,
        "versions": versions(),
        "code": code_version(),  # optional: older checkpoints lack it
        **extra,
    }


def restore_training_state(state: dict, path: Path, parts: dict[str, Any], sampler, env) -> Progress:
    """Load ``state`` into the parts and the sampler; returns the run's progress."""
    for name, part in parts.items():
        if isinstance(part, torch.nn.Module):
            load_module_state(part, state[name], name, path)
        else:
            part.load_state_dict(state[name])
    progress = Progress(epoch=state["epoch"], step=state["step"], batches_done=state["batches_done"],
                        best=dict(state["best"]), num_nonfinite_total=state.get("num_nonfinite_total", 0))
    if state["sampler"]:  # the batch to continue at, in this run's layout (world size may differ)
        progress.batches_done = sampler.load_state_dict(state["sampler"])
    if len(state["rng"]) == env.world_size:
        restore_rng(state["rng"][env.rank])
    else:
        log.warning("checkpoint was written by %d ranks, this run has %d: random streams restart "
                    "(the data order is still exact)", len(state["rng"]), env.world_size)
    return progress


def init_weights_from(path: str | Path, cfg: Config, generator: torch.nn.Module,
                      discriminator: torch.nn.Module) -> str:
    """Fine-tuning: load a checkpoint's generator (and its discriminator, when it has one) into a new
    run's networks. The task and the architecture keys must match; returns what was loaded."""
    state = load(path)
    diffs = architecture_mismatches(state["config"], to_dict(cfg))
    if diffs:
        raise CheckpointError(f"train.init_from: {path} has another architecture: " + "; ".join(diffs))
    load_module_state(generator, state["generator"], "generator", path)
    if not state["discriminator"]:  # e.g. an imported official generator-only checkpoint
        return "generator (the checkpoint has no discriminator: it starts fresh)"
    load_module_state(discriminator, state["discriminator"], "discriminator", path)
    return "generator and discriminator"


def save_run_checkpoints(state: dict, folder: Path, improved: tuple[str, ...]) -> list[str]:
    """Write ``last`` and copy it to ``best_<metric>`` for each improved metric; returns the names."""
    save_atomic(state, folder / "last.pt")
    for metric in improved:
        copy_atomic(folder / "last.pt", folder / f"best_{metric}.pt")
    return ["last", *(f"best_{metric}" for metric in improved)]


def kept_checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """A run's checkpoints by name: ``best_*`` in the order of the run's ``checkpoint.keep_best``
    (others after them, sorted), then ``last``."""
    folder = Path(run_dir) / "checkpoints"
    try:
        order = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["checkpoint"]["keep_best"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        order = []
    rank = {f"best_{metric}": i for i, metric in enumerate(order)}
    best = sorted(folder.glob("best_*.pt"), key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    found = {p.stem: p for p in best}
    if (folder / "last.pt").is_file():
        found["last"] = folder / "last.pt"
    return found


def load_generator(path: str | Path, device: str | torch.device = "cpu", *,
                   task: str | None = None, other_tool: str = "") -> tuple[torch.nn.Module, Config, dict]:
    """(generator in eval mode, its config, {epoch, step, best}) from a training checkpoint; the
    generator is rebuilt from the config stored in the checkpoint (a checkpoint is self-contained).

    ``task``: refuse a checkpoint of another model family (before building anything), pointing to
    ``other_tool`` for it.
    """
    state = load(path)
    cfg = config_from_dict(state["config"])
    if task is not None and cfg.task != task:
        raise CheckpointError(f"{path}: a {cfg.task!r} checkpoint, but this command needs {task!r} checkpoints"
                              + (f" (use {other_tool})" if other_tool else ""))
    generator = build_generator(cfg)
    load_module_state(generator, state["generator"], "generator", path)
    generator.to(device).eval()
    return generator, cfg, {"epoch": state["epoch"], "step": state["step"], "best": dict(state["best"])}
