"""Stop requests: signal handlers only set a flag; the loop acts on it at a step boundary.

SLURM sends the ``--signal`` (SIGUSR2 here) to every process of the job step, and SIGTERM on
preemption or ``scancel``; the training loop all-reduces the flag so that all ranks save together.

Ctrl-C (SIGINT, e.g. under ``launch.py --local`` or in an interactive allocation) is a stop too:
the first one sets the flag like SIGTERM (save ``last`` at the next step boundary), but the run then
ends with ``EXIT_INTERRUPTED`` (no requeue: a person asked to stop). A second Ctrl-C raises
KeyboardInterrupt at once (the trainer records the run as stopped without a save); a third one
is no longer caught. What each outcome's exit code is: :mod:`trainer.core.exitcodes`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator

STOP_SIGNALS = (signal.SIGUSR2, signal.SIGTERM)
_flag = threading.Event()
_interrupted = threading.Event()
_reason: list[str] = []
_installed: dict[str, object] = {"interrupt": False, "previous": None}


def _handler(signum: int, _frame) -> None:
    _reason.append(signal.Signals(signum).name)
    _flag.set()


def _interrupt(signum: int, _frame) -> None:
    if _interrupted.is_set():  # the second Ctrl-C: stop now; a third one is not caught any more
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        raise KeyboardInterrupt
    _interrupted.set()
    _handler(signum, _frame)


def install(signums: tuple[int, ...] = STOP_SIGNALS, *, interrupt: bool = True) -> None:
    """Install flag-only handlers (main thread only; replaces e.g. submitit's handler here);
    ``interrupt``: also handle Ctrl-C (SIGINT) as described in the module docstring."""
    for signum in signums:
        signal.signal(signum, _handler)
    if interrupt:
        _installed["previous"] = signal.signal(signal.SIGINT, _interrupt)
        _installed["interrupt"] = True


def uninstall_interrupt() -> None:
    """Give Ctrl-C back to whoever handled it before :func:`install` (for in-process callers)."""
    if _installed["interrupt"]:
        previous = _installed["previous"]
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
        _installed["interrupt"] = False


def helper_signals() -> tuple[int, ...]:
    """The signals a helper process of this process (loader or metric worker) must ignore: the stop
    signals, and Ctrl-C when this process handles it (a terminal sends it to the whole group)."""
    return STOP_SIGNALS + ((signal.SIGINT,) if _installed["interrupt"] else ())


def ignore_signals(signums: tuple[int, ...], *_args) -> None:
    """For helper processes (DataLoader workers, metric pools): SLURM signals every process of
    the step, and one without a handler dies of SIGUSR2/SIGTERM, taking the batch with it. The
    rank process saves and exits; its helpers are shut down by it. Use it with the parent's
    :func:`helper_signals` (``functools.partial`` for a worker_init_fn, ``initargs`` for a pool)."""
    for signum in signums:
        signal.signal(signum, signal.SIG_IGN)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> None:
    """End this helper process (SIGKILL, which it cannot ignore) when the process that started it
    ends, however it ends (kill -9 included): without it, a killed training's PESQ workers, which
    ignore the stop signals, lived on with parent 1, and kept its resource trackers alive. Linux's
    PR_SET_PDEATHSIG fires when the thread that started this process ends; a parent that died
    before this call is noticed by its pid. Elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (e.g. a seccomp filter): the pool's own shutdown still ends it
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signal.SIGKILL)


def init_helper(signums: tuple[int, ...], parent_pid: int, *_args) -> None:
    """Initializer of every helper process (DataLoader worker, metric pool worker): ignore the
    stop signals (:func:`ignore_signals`) and end with the training (:func:`die_with_parent`).
    ``functools.partial(init_helper, helper_signals(), os.getpid())`` for a worker_init_fn,
    ``initargs=(helper_signals(), os.getpid())`` for a pool."""
    die_with_parent(parent_pid)
    ignore_signals(signums)


@contextlib.contextmanager
def blocked(signums: Iterable[int]) -> Iterator[None]:
    """Block ``signums`` in this thread meanwhile, for starting helper processes: a process (and a
    thread) started inside inherits the mask, across fork and exec, and keeps it unless it unblocks
    them. A signal that arrives meanwhile is delivered right after (or to another thread)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def stop_requested() -> bool:
    return _flag.is_set()


def interrupted() -> bool:
    """Whether this process got a Ctrl-C (the run then ends without a requeue)."""
    return _interrupted.is_set()


def stop_reason() -> str:
    return _reason[0] if _reason else ""


def reset() -> None:
    _flag.clear()
    _interrupted.clear()
    _reason.clear()
