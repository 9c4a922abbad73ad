"""The process group and its collectives: NCCL with ``torch.cuda.set_device(local_rank)`` on CUDA
ranks (plus gloo for CPU tensors), gloo on CPU ranks. Which process is which comes from
:mod:`trainer.core.env`; with one process every collective is the identity.
"""

from __future__ import annotations

import datetime
from typing import Any

import torch
import torch.distributed as torch_dist

from trainer.core.env import DistEnv
from trainer.core.settings import ConfigError


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


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (a collective; the flag itself for one process)."""
    return bool(all_reduce_sum(torch.tensor([float(flag)]))[0] > 0)


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
