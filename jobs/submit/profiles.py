"""Cluster profiles (``configs/clusters/NAME.yaml``): the facts of one cluster, typed.

Loaded with the same strict machinery as the training config (unknown key, wrong type or
out-of-range value: one line naming file and key). Command-line flags override a profile.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from jobs import ROOT
from jobs.slurm import parse_slurm_time
from trainer.core.settings import ConfigError, Section, build, read_with_bases, setting

PROFILE_DIR = ROOT / "configs" / "clusters"
DEFAULT_CLUSTER = "levante"  # SEGAN_CLUSTER=NAME changes the default of --cluster


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
