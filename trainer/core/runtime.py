"""Process setup for a training run: device, process group, determinism, threads and seeds."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import torch

from trainer.core import dist, signals
from trainer.core.config import Config
from trainer.core.env import DistEnv, cores_per_rank
from trainer.core.log import get_logger, warn_once

log = get_logger("runtime")


def setup_process(cfg: Config, env: DistEnv) -> tuple[torch.device, int, bool]:
    """Select the device, join the process group, set determinism and threads.

    Returns (device, CPU cores of this rank, whether bf16 autocast is on).
    """
    device = dist.select_device(env, cfg.train.device)
    dist.init(env, device)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    amp = cfg.train.amp and device.type == "cuda"
    if cfg.train.amp and not amp:
        warn_once(log, "amp-cpu", "train.amp is ignored on the CPU (autocast is for CUDA here)")
    cores = cores_per_rank(env)
    if "OMP_NUM_THREADS" not in os.environ:  # else torch takes every core of the node in each rank
        torch.set_num_threads(cores)
    return device, cores, amp


def seed_all(seed: int) -> None:
    """Python, NumPy and torch (CPU and CUDA) streams."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def start_compile_workers() -> None:
    """Start inductor's compile-worker pool (train.compile) with SIGUSR2 blocked; its sidecar and
    workers inherit the mask.

    SLURM's ``--signal`` reaches every process of the step, and inductor's workers ignore only
    SIGINT: the time-limit USR2 killed the pool ("SubprocPool unclean exit"), and with it any compile
    still to come in that attempt. SIGTERM stays deliverable: the pool's own shutdown terminates its
    workers with it (blocked, every exit would wait out inductor's 10 s grace before a SIGKILL).
    Nothing happens when inductor compiles in-process (one compile thread).
    """
    from torch._inductor.async_compile import AsyncCompile

    with signals.blocked({signal.SIGUSR2}):
        AsyncCompile.warm_pool()
