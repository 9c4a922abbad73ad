"""Crash-safe file writes: every file the toolkit writes goes through :func:`atomic_write`.

Readers see the old file or the complete new one, never a half-written one; a failure leaves
the old file and no temporary file behind. Pure Python: importing it never imports torch.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(fh)`` into a temporary file beside ``path``, fsync, rename, fsync the folder.

    Readers see the old file or the complete new one, never a half-written one; a failure leaves
    the old file and no temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, umask_mode())  # mkstemp makes 0600; shared run directories need the umask's mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode()))


def umask_mode(base: int = 0o666) -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write_wav(path: str | Path, wave, sample_rate: int, subtype: str = "FLOAT") -> None:
    """A WAV file (float32 by default, so nothing clips) through :func:`atomic_write`."""
    import soundfile as sf  # not at the top: login-node commands import this module and need no audio

    atomic_write(path, lambda fh: sf.write(fh, wave, sample_rate, subtype=subtype, format="WAV"))
