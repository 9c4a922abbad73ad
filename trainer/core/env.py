"""Who this process is: the only reader of RANK/LOCAL_RANK/WORLD_SIZE/MASTER_*/SLURM_* variables.

The torchrun environment contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) selects DDP; with none of them set the trainer runs as a single process. Pure Python
(no torch), so torch-free commands (evaluate's scoring) size their pools the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from trainer.core.settings import ConfigError


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    master_addr: str | None = None
    master_port: int | None = None
    job_id: str | None = None  # SLURM_JOB_ID when running under SLURM
    restart_count: int = 0  # SLURM_RESTART_COUNT: how often SLURM requeued this job

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def read_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read the torchrun contract (and the SLURM job identity) from the environment."""
    environ = os.environ if environ is None else environ
    world_size = _int(environ, "WORLD_SIZE", 1)
    env = DistEnv(
        rank=_int(environ, "RANK", 0),
        local_rank=_int(environ, "LOCAL_RANK", 0),
        world_size=world_size,
        local_world_size=_int(environ, "LOCAL_WORLD_SIZE", world_size),
        master_addr=environ.get("MASTER_ADDR"),
        master_port=_int(environ, "MASTER_PORT", 0) or None,
        job_id=environ.get("SLURM_JOB_ID"),
        restart_count=_int(environ, "SLURM_RESTART_COUNT", 0),
    )
    if not 0 <= env.rank < env.world_size:
        raise ConfigError(f"RANK={env.rank} is outside WORLD_SIZE={env.world_size}")
    if env.is_distributed and (not env.master_addr or not env.master_port):
        raise ConfigError("WORLD_SIZE > 1 needs MASTER_ADDR and MASTER_PORT (the torchrun contract)")
    return env


def cores_per_rank(env: DistEnv) -> int:
    """CPU cores this rank may use (affinity mask shared evenly by the ranks on this node)."""
    try:
        num_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        num_cores = os.cpu_count() or 1
    return max(1, num_cores // max(1, env.local_world_size))


def local_cores() -> int:
    """CPU cores of this process's share of the node (affinity mask split evenly by the local ranks)."""
    return cores_per_rank(read_env())
