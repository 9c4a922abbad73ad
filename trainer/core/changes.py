"""One rule for resume: a resume compares its resolved config with the run's frozen one.

Every training setting declares its class where it is defined (``setting(..., resume=...)``):
``TRAJECTORY`` settings (seed, data, batch size, crop, losses, optimizer, schedule, model, ...) change
what the run learns, so a resume that changes one is refused, naming each key with both values,
unless the user names it with ``--allow-change KEY``; ``FREE`` settings (logging, validation
cadence, workers, checkpoint cadence, ``train.epochs`` to extend a run, ...) may change. Every
change a resume accepts is recorded in the run's log and in its next checkpoint
(``config_changes``). The frozen config is ``RUN_DIR/config.yaml``, written by the trainer when
it starts; the rule applies once the run has a checkpoint to continue from. Torch-free: the
login-node launcher applies the same rule before it submits anything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.core.config import Config, to_dict
from trainer.core.settings import TRAJECTORY, ConfigError, read_yaml, resume_classes

FROZEN_CONFIG = "config.yaml"


@dataclasses.dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    trajectory: bool

    def record(self, step: int, allowed_by: str) -> dict:
        """What the run's next checkpoint keeps of this change (plain values only)."""
        return {"key": self.key, "old": _plain(self.old), "new": _plain(self.new), "step": int(step),
                "class": TRAJECTORY if self.trajectory else "free", "allowed_by": allowed_by}


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, (int, float)) and isinstance(new, (int, float)) and not isinstance(old, bool):
        return float(old) == float(new)  # YAML reads 1e-3 back as a float, 2.0 may come back as 2
    return _plain(old) == _plain(new)


def diff_configs(frozen: dict, cfg: Config) -> list[Change]:
    """The settings whose values differ between the frozen config dict and ``cfg``, with their class.
    A key the frozen config lacks (written by an older version) is not a change: its default applies."""
    classes = resume_classes(type(cfg))
    old, new = _flatten(frozen), _flatten(to_dict(cfg))
    return [Change(key, old[key], new[key], classes.get(key) != "free")
            for key in classes if key in old and key in new and not _same(old[key], new[key])]


def check_allowed_keys(cfg: Config, allowed: Sequence[str]) -> None:
    classes = resume_classes(type(cfg))
    for key in allowed:
        if key not in classes:
            raise ConfigError(f"--allow-change {key}: not a setting of task {cfg.task} "
                              "(give section.key, e.g. --allow-change run.seed)")


def frozen_config(run_dir: str | Path) -> dict | None:
    """The run's frozen config when the run has a checkpoint to continue from; None for a new run."""
    run_dir = Path(run_dir)
    path = run_dir / FROZEN_CONFIG
    if not (run_dir / "checkpoints" / "last.pt").exists() or not path.exists():
        return None
    return read_yaml(path)


def resume_changes(cfg: Config, run_dir: str | Path, allowed: Sequence[str] = ()) -> list[Change]:
    """The changes this start makes to the run in ``run_dir`` (empty for a new run). Raises
    ConfigError (one line, each refused key with both values) when a trajectory setting changes
    without ``--allow-change``. Reads only; writes nothing."""
    check_allowed_keys(cfg, allowed)
    frozen = frozen_config(run_dir)
    if frozen is None:
        return []
    if frozen.get("task", cfg.task) != cfg.task:
        raise ConfigError(f"{Path(run_dir) / FROZEN_CONFIG}: the run trains task {frozen.get('task')!r}, "
                          f"not {cfg.task!r}; use a new run directory for another task")
    changes = diff_configs(frozen, cfg)
    refused = [c for c in changes if c.trajectory and c.key not in allowed]
    if refused:
        listed = "; ".join(f"{c.key}: {c.old!r} in the run, {c.new!r} now" for c in refused)
        flags = " ".join(f"--allow-change {c.key}" for c in refused)
        raise ConfigError(f"{Path(run_dir) / FROZEN_CONFIG}: this resume changes how the run trains ({listed}); "
                          f"resume with the run's own values, start a new run directory, or change them on "
                          f"purpose with {flags}")
    return changes


def allowed_by(change: Change) -> str:
    return "--allow-change" if change.trajectory else "free setting"


def describe(change: Change) -> str:
    return f"{change.key}: {change.old!r} -> {change.new!r} ({allowed_by(change)})"
