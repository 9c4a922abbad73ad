"""Crash-safe file writes: every file the toolkit writes goes through :func:`atomic_write`.

Readers see the old file or the complete new one, never a half-written one; a failure leaves
the old file and no temporary file behind. A full disk or an exceeded quota (ENOSPC, EDQUOT) is
raised as :class:`DiskFull`, one line naming the file and the bytes it needed. Temporary files
are named ``.<name>.<random>.tmp`` beside their target; a writer killed with SIGKILL leaves one
behind, and :func:`remove_stale_temporaries` clears them (the training does at start, once it
owns the run directory). Pure Python: importing it never imports torch.
"""

from __future__ import annotations

import errno
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
TEMP_SUFFIX = ".tmp"


class DiskFull(RuntimeError):
    """No space left on the device (or quota exceeded) while writing a file; the message is one line
    (:meth:`of` builds it). The training exits with ``EXIT_DISK_FULL``: a retry would hit the same disk."""

    @classmethod
    def of(cls, path: str | Path, needed: int | None = None, cause: OSError | None = None) -> DiskFull:
        path = Path(path)
        what = "quota exceeded" if cause is not None and cause.errno == errno.EDQUOT else "no space left on the device"
        size = f"{needed} bytes" if needed is not None else "its data"
        free = free_bytes(path.parent)
        room = f" ({free} bytes free there)" if free is not None else ""
        return cls(f"{path}: {what} while writing {size}{room}; the previous version of the file is intact. "
                   "Free space (or raise the quota), then run the same command again")


def free_bytes(folder: str | Path) -> int | None:
    """Bytes available to this user on the file system of ``folder`` (None if unknown)."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], *, size: int | None = None) -> None:
    """``write(fh)`` into a temporary file beside ``path``, fsync, rename, fsync the folder.

    Readers see the old file or the complete new one, never a half-written one; a failure leaves
    the old file and no temporary file behind. ``size``: the bytes about to be written (named in
    the :class:`DiskFull` message when the disk is full).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull.of(path, size, exc) from None
        raise
    try:
        os.fchmod(fd, umask_mode())  # mkstemp makes 0600; shared run directories need the umask's mode
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if is_no_space(exc):
            raise DiskFull.of(path, size, exc) from None
        raise
    _fsync_folder(path.parent)  # the rename itself survives a crash


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    atomic_write(path, lambda fh: fh.write(data), size=len(data))


def atomic_write_group(paths: list[str | Path], data: bytes | memoryview) -> None:
    """Write the same ``data`` to every path, all or nothing: one temporary file, hard-linked (or,
    where links are not supported, copied) to a temporary name beside each further path, then all
    renamed into place in the given order. A failure before the renames (a full disk) changes no target."""
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    current = paths[0]
    try:
        for current in paths:
            current.parent.mkdir(parents=True, exist_ok=True)
            if temps:
                tmp = current.parent / f".{current.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
                try:
                    os.link(temps[0], tmp)
                    temps.append(tmp)
                    continue
                except OSError as exc:
                    if is_no_space(exc):
                        raise
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # no links here: a copy
            else:
                fd, name = tempfile.mkstemp(prefix=f".{current.name}.", suffix=TEMP_SUFFIX, dir=current.parent)
                tmp = Path(name)
            temps.append(tmp)
            os.fchmod(fd, umask_mode())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for tmp, path in zip(temps, paths, strict=True):
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        if is_no_space(exc):
            raise DiskFull.of(current, len(data), exc) from None
        raise
    for folder in dict.fromkeys(path.parent for path in paths):
        _fsync_folder(folder)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def append_line(fh: BinaryIO | object, path: str | Path, line: str) -> None:
    """Append one line to an open append-only log (metrics.jsonl) and flush it; a full disk is DiskFull."""
    try:
        fh.write(line)
        fh.flush()
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFull.of(path, len(line.encode()), exc) from None
        raise


def is_temporary(path: Path) -> bool:
    """A temporary file of :func:`atomic_write` (``.<name>.<random>.tmp``)."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX) and path.name.count(".") >= 3


def remove_stale_temporaries(folders: list[str | Path], not_after: float) -> tuple[int, int]:
    """Delete :func:`atomic_write` temporaries in ``folders`` last modified at or before ``not_after``
    (a time from the same file system, e.g. the run lock's mtime): what a writer killed mid-write left.
    Only for folders whose writers are known to be gone. Returns (files removed, bytes freed)."""
    count = freed = 0
    for folder in folders:
        try:
            entries = list(Path(folder).iterdir())
        except OSError:
            continue
        for path in entries:
            try:
                stat = path.lstat()
                if not is_temporary(path) or not path.is_file() or stat.st_mtime > not_after:
                    continue
                path.unlink()
            except OSError:
                continue
            count, freed = count + 1, freed + stat.st_size
    return count, freed


def umask_mode(base: int = 0o666) -> int:
    """The mode a plain ``open()`` would give a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


def atomic_write_wav(path: str | Path, wave, sample_rate: int, subtype: str = "FLOAT") -> None:
    """A WAV file (float32 by default, so nothing clips) through :func:`atomic_write`. Encoded in
    memory first: soundfile writing straight to a file object turns ENOSPC into a bare AssertionError,
    while a plain write raises :class:`DiskFull` naming the bytes."""
    import io

    import soundfile as sf  # not at the top: login-node commands import this module and need no audio

    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, subtype=subtype, format="WAV")
    atomic_write_bytes(path, buffer.getbuffer())
