"""The check made before any work on a ``--report DIR`` (``trainer.evaluate``, ``launch.py compare``):
a folder that is a file, lies under a file or cannot be written is refused. Imports nothing heavy."""

from __future__ import annotations

import os
from pathlib import Path


def report_folder_problem(folder: Path, flag: str = "--report") -> str | None:
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"{flag} {folder} is a file; give a folder"
    parent = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        return f"{flag} {folder}: {parent} is a file, not a folder; give another folder"
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        return f"{flag} {folder}: {parent} is not writable; give another folder"
    return None
