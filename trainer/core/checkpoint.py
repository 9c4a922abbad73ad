"""Complete, atomic, validated checkpoints.

A checkpoint holds everything needed to continue a run exactly: both models, both optimizers,
epoch/step and the sampler position, the RNG states of every rank (Python,
NumPy, torch, CUDA), best-so-far trackers, the resolved config and library versions.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the old file,
so the previous ``last`` stays valid until the new one is complete; ``last`` and the ``best_*``
copies of one save are written all or nothing (a full disk changes none of them). Loading uses
``torch.load(weights_only=True)``: only tensors and plain containers are stored (NumPy states
are converted to tensors).

Integrity: every checkpoint (format 2) carries a content checksum (:mod:`trainer.core.integrity`)
that :func:`load` recomputes over what it loaded, and every floating tensor must be finite (a
state with NaN/Inf is not written, and not loaded). A damaged checkpoint is refused in one line
naming the file; it is never loaded. Format 1 files (written before checksums) still load, with a
warning that they cannot be verified.
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from trainer.core import ckptinfo, dist, integrity
from trainer.core.config import Config, config_from_dict, to_dict
from trainer.core.errors import BadInput
from trainer.core.io import DiskFull, atomic_write_bytes, atomic_write_group
from trainer.core.log import get_logger, warn_once
from trainer.core.registry import build_generator, task_spec
from trainer.core.revision import code_version

log = get_logger("checkpoint")

FORMAT_VERSION = 2
LEGACY_VERSIONS = (1,)  # written before content checksums: loaded unverified, with a warning
CHECKSUM_KEY = "checksum"
REQUIRED_KEYS = ("format_version", "config", "generator", "discriminator", "opt_g", "opt_d", "epoch", "step",
                 "batches_done", "sampler", "rng", "best", "versions")
USE_ANOTHER = "use another checkpoint (e.g. best_*.pt or an earlier copy)"


class CheckpointError(BadInput):
    """A checkpoint that cannot be used; the message names the file and the problem."""


class NonFiniteState(RuntimeError):
    """The state to save holds NaN/Inf values: it is not written (the last good checkpoint stays)."""


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


def serialize(state: dict[str, Any], path: str | Path) -> memoryview:
    """The bytes of a checkpoint of ``state`` (with its content checksum) for ``path``; raises
    NonFiniteState, writing nothing, when a floating tensor holds NaN/Inf."""
    state = {key: value for key, value in state.items() if key != CHECKSUM_KEY}  # e.g. a loaded state re-saved
    digest, nonfinite = integrity.digest(state)
    if nonfinite:
        raise NonFiniteState(f"{path}: not written: non-finite values in {_listed(nonfinite)} (the last good "
                             "checkpoint is kept; lower optim.lr or raise optim.grad_clip)")
    buffer = io.BytesIO()
    torch.save({**state, CHECKSUM_KEY: {"algorithm": integrity.ALGORITHM, "digest": digest}}, buffer)
    return buffer.getbuffer()


def save_atomic(state: dict[str, Any], path: str | Path) -> None:
    """Serialize (with checksum) and write to a temporary file beside ``path``, fsync, rename."""
    atomic_write_bytes(path, serialize(state, path))


def _listed(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _unreadable(exc: Exception) -> str:
    """Why torch could not read a file, in our words (torch's own advice is not for our users)."""
    if isinstance(exc, pickle.UnpicklingError):
        return "it holds data that a safe load refuses: corrupted, or not written by this toolkit"
    if isinstance(exc, (EOFError, RuntimeError, ValueError, OSError)) or "zip" in type(exc).__name__.lower():
        return f"the archive is truncated or corrupted ({type(exc).__name__})"
    return f"corrupted ({type(exc).__name__})"


def load(path: str | Path) -> dict[str, Any]:
    """Load, verify and validate a checkpoint on the CPU; raises CheckpointError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a readable checkpoint (an empty file: 0 bytes); {USE_ANOTHER}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, wrong file type, unsafe pickle, damaged records
        raise CheckpointError(f"{path}: not a readable checkpoint ({_unreadable(exc)}); {USE_ANOTHER}") from None
    check_state(state, path)
    return state


def check_state(state: Any, path: str | Path) -> None:
    """Verify a loaded checkpoint in place (its checksum is removed): checksum, finite tensors,
    keys and the types of the plain values. Raises CheckpointError naming the file and the problem."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a training checkpoint (top level is {type(state).__name__})")
    version = state.get("format_version")
    if "format_version" not in state:
        raise CheckpointError(f"{path}: not a toolkit checkpoint (no format_version; a bare network state dict, "
                              "e.g. an official CMGAN or MP-SENet file?): convert it first with python -m "
                              "trainer.import_checkpoint --format cmgan|mpsenet SRC --out DST.pt")
    if version not in (FORMAT_VERSION, *LEGACY_VERSIONS) or isinstance(version, bool):
        raise CheckpointError(f"{path}: format_version {version!r} is not supported "
                              f"(this toolkit reads version {FORMAT_VERSION} and older)")
    record = state.pop(CHECKSUM_KEY, None)
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not a complete training checkpoint; missing keys: {', '.join(missing)}")
    digest, nonfinite = integrity.digest(state)
    if record is not None or version == FORMAT_VERSION:
        if not isinstance(record, dict) or record.get("algorithm") != integrity.ALGORITHM:
            raise CheckpointError(f"{path}: its content checksum is missing or unreadable (damaged); {USE_ANOTHER}")
        if record.get("digest") != digest:
            raise CheckpointError(f"{path}: content checksum mismatch: the file changed after it was written "
                                  f"(corrupted on disk or in a copy); {USE_ANOTHER}")
    else:
        warn_once(log, f"legacy-{path}", f"{path}: format {version} has no content checksum; loading it unverified")
    if nonfinite:
        raise CheckpointError(f"{path}: non-finite values in {_listed(nonfinite)}; {USE_ANOTHER}")
    problems = [f"{key}: {state[key]!r} is not a count" for key in ("epoch", "step", "batches_done")
                if not isinstance(state[key], int) or isinstance(state[key], bool) or state[key] < 0]
    for key, kind in (("config", dict), ("generator", dict), ("discriminator", dict), ("opt_g", dict),
                      ("opt_d", dict), ("sampler", dict), ("best", dict), ("rng", list)):
        if not isinstance(state[key], kind):
            problems.append(f"{key}: a {type(state[key]).__name__}, not a {kind.__name__}")
    if isinstance(state["best"], dict):
        problems += [f"best: {k!r}: {v!r} is not a number" for k, v in state["best"].items()
                     if not isinstance(v, (int, float)) or isinstance(v, bool)]
    if problems:
        raise CheckpointError(f"{path}: malformed checkpoint: {problems[0]}; {USE_ANOTHER}")


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
    """Load ``state`` into the parts and the sampler; returns the run's progress. A malformed part
    (optimizer, sampler or RNG state) is a CheckpointError naming it."""
    for name, part in parts.items():
        if isinstance(part, torch.nn.Module):
            load_module_state(part, state[name], name, path)
        else:
            load_optimizer_state(part, state[name], name, path)
    progress = Progress(epoch=state["epoch"], step=state["step"], batches_done=state["batches_done"],
                        best=dict(state["best"]), num_nonfinite_total=int(state.get("num_nonfinite_total", 0)))
    if state["sampler"]:  # the batch to continue at, in this run's layout (world size may differ)
        try:
            progress.batches_done = sampler.load_state_dict(state["sampler"])
        except BadInput as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        except Exception as exc:
            raise CheckpointError(f"{path}: malformed sampler state ({_why(exc)}); {USE_ANOTHER}") from None
    if len(state["rng"]) == env.world_size:
        try:
            restore_rng(state["rng"][env.rank])
        except Exception as exc:
            raise CheckpointError(f"{path}: malformed rng state of rank {env.rank} ({_why(exc)}); "
                                  f"{USE_ANOTHER}") from None
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


def _why(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing {exc.args[0]!r}" if exc.args else "a missing key"
    return type(exc).__name__


def load_optimizer_state(opt: torch.optim.Optimizer, saved: Any, name: str, path: str | Path) -> None:
    """``opt.load_state_dict`` plus the checks torch leaves to the first step: per-parameter
    tensors of the parameter's shape and numeric hyper-parameters."""
    try:
        opt.load_state_dict(saved)
    except Exception as exc:
        raise CheckpointError(f"{path}: malformed {name} state ({_why(exc)}); {USE_ANOTHER}") from None
    for group in opt.param_groups:
        for key in ("lr", "eps", "weight_decay", "betas"):
            value = group.get(key, 0.0)
            values = value if isinstance(value, (tuple, list)) else [value]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise CheckpointError(f"{path}: malformed {name} state ({key} is {value!r}); {USE_ANOTHER}")
        for param in group["params"]:
            for key, value in opt.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise CheckpointError(f"{path}: malformed {name} state ({key} of shape {tuple(value.shape)} "
                                          f"for a parameter of shape {tuple(param.shape)}); {USE_ANOTHER}")


def save_run_checkpoints(state: dict, folder: Path, improved: tuple[str, ...]) -> list[str]:
    """Write ``last`` and a ``best_<metric>`` for each improved metric, all or nothing (one
    serialization, hard links); returns the names. Raises DiskFull or NonFiniteState, writing nothing."""
    names = [*(f"best_{metric}" for metric in improved), "last"]
    data = serialize(state, folder / "last.pt")
    paths = [folder / f"{name}.pt" for name in names]
    atomic_write_group(paths, data)
    try:
        ckptinfo.write(paths, ckptinfo.summary(state))
    except (OSError, DiskFull) as exc:  # the checkpoints are in place; a missing or stale sidecar reads "unknown"
        log.warning("could not write the JSON sidecars of %s (%s); launch.py will not know their step",
                    ", ".join(p.name for p in paths), exc)
    return [names[-1], *names[:-1]]


_RAISE_AS = {"disk_full": DiskFull, "nonfinite": NonFiniteState}


def save_collectively(state: dict, folder: Path, improved: tuple[str, ...], is_main: bool) -> list[str]:
    """Collective: rank 0 writes (:func:`save_run_checkpoints`) and tells every rank how it went, so
    that a failed save (a full disk) ends every rank the same way instead of leaving them waiting."""
    saved, failure = [], None
    if is_main:
        try:
            saved = save_run_checkpoints(state, folder, improved)
        except (DiskFull, NonFiniteState) as exc:
            failure = ("disk_full" if isinstance(exc, DiskFull) else "nonfinite", str(exc))
            if not dist.active():
                raise
        except Exception as exc:
            failure = ("crash", f"rank 0 could not save a checkpoint in {folder} ({type(exc).__name__}: {exc})")
            if not dist.active():
                raise
    failure = dist.broadcast_object(failure)
    if failure is not None:
        kind, message = failure
        raise _RAISE_AS.get(kind, RuntimeError)(message)
    return saved


def kept_checkpoints(run_dir: str | Path) -> dict[str, Path]:
    """A run's checkpoints by name: ``best_*`` in the order of the run's ``checkpoint.keep_best``
    (others after them, sorted), then ``last``."""
    folder = Path(run_dir) / "checkpoints"
    try:
        order = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())["checkpoint"]["keep_best"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):  # ValueError: e.g. not UTF-8
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
