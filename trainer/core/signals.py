"""Stop requests: signal handlers only set a flag; the loop acts on it at a step boundary.

SLURM sends the ``--signal`` (SIGUSR2 here) to every process of the job step, and SIGTERM on
preemption or ``scancel``; the training loop all-reduces the flag so that all ranks save together.
"""

from __future__ import annotations

import signal
import threading

_flag = threading.Event()
_reason: list[str] = []


def _handler(signum: int, _frame) -> None:
    _reason.append(signal.Signals(signum).name)
    _flag.set()


def install(signums: tuple[int, ...] = (signal.SIGUSR2, signal.SIGTERM)) -> None:
    """Install flag-only handlers (main thread only; replaces e.g. submitit's handler here)."""
    for signum in signums:
        signal.signal(signum, _handler)


def ignore_stop_signals(*_args) -> None:
    """For helper processes (DataLoader workers, metric pools): SLURM signals every process of
    the step, and one without a handler dies of SIGUSR2/SIGTERM, taking the batch with it. The
    rank process saves and exits; its helpers are shut down by it. Usable as worker_init_fn."""
    for signum in (signal.SIGUSR2, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def stop_requested() -> bool:
    return _flag.is_set()


def stop_reason() -> str:
    return _reason[0] if _reason else ""


def reset() -> None:
    _flag.clear()
    _reason.clear()
