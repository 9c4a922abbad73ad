"""Complete, atomic, validated checkpoints.

A checkpoint holds everything needed to continue a run exactly: both models, both optimizers,
the AMP scaler, epoch/step and the sampler position, the RNG states of every rank (Python,
NumPy, torch, CUDA), best-so-far trackers, the resolved config and library versions.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the old file,
so the previous ``last`` stays valid until the new one is complete. Loading uses
``torch.load(weights_only=True)``: only tensors and plain containers are stored (NumPy states
are converted to tensors).
"""

from __future__ import annotations

import platform
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.configbase import atomic_write

FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "config", "generator", "discriminator", "opt_g", "opt_d", "epoch", "step",
                 "batches_done", "sampler", "rng", "best", "versions")
# Config sections whose values define the network shapes: a resume with different values fails.
ARCHITECTURE_KEYS = ("task", "model", "discriminator", "stft")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def versions() -> dict[str, str]:
    return {"torch": str(torch.__version__), "numpy": str(np.__version__), "python": platform.python_version()}


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
    """Dotted keys whose values differ between two config dicts in the architecture sections."""
    diffs = []
    for section in ARCHITECTURE_KEYS:
        old, new = saved.get(section), current.get(section)
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    diffs.append(f"{section}.{key}: checkpoint {old.get(key)!r}, config {new.get(key)!r}")
        elif old != new:
            diffs.append(f"{section}: checkpoint {old!r}, config {new!r}")
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
