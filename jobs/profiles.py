"""Cluster profiles (``configs/clusters/NAME.yaml``): the facts of one cluster, typed.

Loaded with the same strict machinery as the training config (unknown key, wrong type or
out-of-range value: one line naming file and key). Command-line flags override a profile.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from trainer.core.settings import ConfigError, Section, build, read_with_bases, setting

ROOT = Path(__file__).resolve().parents[1]
PROFILE_DIR = ROOT / "configs" / "clusters"
DEFAULT_CLUSTER = "levante"  # SEGAN_CLUSTER=NAME changes the default of --cluster
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", re.ASCII)


def parse_slurm_time(text: str) -> int:
    """Slurm time ('MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS') -> seconds.

    Strict where Slurm would silently carry over: minutes and seconds after a ':' are 0-59 and the
    hours after 'D-' are 0-23 ('99:99:99' and '11:59:60' are refused, not read as 4 days or noon)."""
    match = _TIME.fullmatch(str(text))
    if not match:
        raise ConfigError(f"time: {text!r}: not a Slurm time; use HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = match.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:  # D-HH[:MM[:SS]]
        fields = (("hours", a, 23), ("minutes", b, 59), ("seconds", c, 59))
        total = int(days) * 86400 + a * 3600 + b * 60 + c
    elif match.group(4) is not None:  # HH:MM:SS
        fields = (("minutes", b, 59), ("seconds", c, 59))
        total = a * 3600 + b * 60 + c
    else:  # MM[:SS]
        fields = (("seconds", b, 59),)
        total = a * 60 + b
    for what, value, limit in fields:
        if value > limit:
            raise ConfigError(f"time: {text!r}: {what} must be 0-{limit}; use HH:MM:SS or D-HH:MM:SS")
    return total


def format_slurm_time(seconds: int) -> str:
    days, rest = divmod(int(seconds), 86400)
    text = f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}-{text}" if days else text


@dataclasses.dataclass(kw_only=True)
class ClusterProfile(Section):
    name: str = setting("", "profile name (the file's stem)")
    partition: str = setting("gpu", "default partition (--partition overrides)")
    partitions: list[str] = setting(default_factory=list, help="partitions known to exist, checked "
                                    "when SLURM cannot be asked (empty: no offline check)")
    account_required: bool = setting(False, "refuse to submit without --account (Levante: yes)")
    account: str | None = setting(None, "default account (--account overrides)")
    max_time: str = setting("12:00:00", "partition time limit, used when SLURM cannot be asked")
    time: str = setting("12:00:00", "default job time limit (--time overrides)")
    gpus_per_node: int = setting(4, "GPUs (= ranks) per node by default", min=1)
    max_gpus_per_node: int = setting(4, "GPUs a node of this cluster has", min=1)
    cpus_per_task: int = setting(8, "CPU cores per rank (data loading, PESQ labelling)", min=1)
    constraint: str | None = setting(None, "default node feature constraint, e.g. a100_80")
    signal_lead_s: int = setting(300, "USR2 this many seconds before the time limit: time for a "
                                      "coherent save and the requeue", min=10)
    max_requeues: int = setting(20, "total automatic requeues of one job (timeouts, preemptions, crashes)", min=0)
    max_crash_requeues: int = setting(2, "of those, requeues after a crash (exit 1)", min=0)
    max_stalled_restarts: int = setting(3, "stop after this many restarts in a row without a step of progress",
                                        min=1)
    setup: list[str] = setting(default_factory=list, help="shell lines run in the batch script before "
                                                          "srun (module load, venv activation)")
    evaluate_gpus: int = setting(1, "GPUs of the --evaluate-after job (0: a CPU-only job, where the "
                                    "partition accepts one)", min=0)
    evaluate_cpus: int = setting(8, "cores of the --evaluate-after job (its scoring processes)", min=1)
    evaluate_time: str = setting("02:00:00", "time limit of the --evaluate-after job")

    def validate(self) -> None:
        parse_slurm_time(self.max_time)
        parse_slurm_time(self.time)
        parse_slurm_time(self.evaluate_time)

    @property
    def max_time_s(self) -> int:
        return parse_slurm_time(self.max_time)


def default_cluster() -> str:
    return os.environ.get("SEGAN_CLUSTER") or DEFAULT_CLUSTER


def profile_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or "/" in name:
        return path
    return PROFILE_DIR / f"{name}.yaml"


def load_profile(name: str) -> ClusterProfile:
    path = profile_path(name)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown cluster profile {name!r}: no {path}; known profiles: {known}")
    data = read_with_bases(path)
    data.setdefault("name", path.stem)
    try:
        return build(ClusterProfile, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
