"""Distributed setup: the only reader of RANK/LOCAL_RANK/WORLD_SIZE/MASTER_*/SLURM_* variables.

The torchrun environment contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT) selects DDP; with none of them set the trainer runs as a single process. CUDA ranks
use NCCL with ``torch.cuda.set_device(local_rank)``; CPU ranks use gloo.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as torch_dist

from trainer.configbase import ConfigError


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


def select_device(env: DistEnv, preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is visible (CUDA_VISIBLE_DEVICES?)")
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def backend_for(device: torch.device) -> str:
    """CUDA ranks: NCCL for CUDA tensors and gloo for the small CPU tensors and objects of the
    loop's agreement collectives (NCCL alone cannot reduce a CPU tensor); CPU ranks: gloo."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init(env: DistEnv, device: torch.device, timeout_minutes: float = 30.0) -> None:
    """Join the process group (NCCL on CUDA, gloo on CPU); a no-op for one process."""
    if not env.is_distributed or torch_dist.is_initialized():
        return
    torch_dist.init_process_group(
        backend=backend_for(device), init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank, world_size=env.world_size, timeout=datetime.timedelta(minutes=timeout_minutes),
        **({"device_id": device} if device.type == "cuda" else {}),
    )


def shutdown() -> None:
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def active() -> bool:
    return torch_dist.is_available() and torch_dist.is_initialized()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place on a copy); the identity for one process."""
    values = values.clone()
    if active():
        torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
    return values


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (small Python objects only)."""
    if not active():
        return [obj]
    out: list[Any] = [None] * torch_dist.get_world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not active():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        torch_dist.barrier()
