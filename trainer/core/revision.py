"""Which code a process runs: the git revision of a checkout and whether it differs from it.

Pure Python (no torch): the launcher's code snapshot (jobs/submit/snapshot.py) and the checkpoints of a run
started without the launcher (trainer/core/checkpoint.py) both read it here.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path

SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the checkout that holds trainer/


def git(root: Path, *args: str) -> str | None:
    """``git -C root ARGS``'s output, or None (not a checkout, no git, an error)."""
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def changes(root: Path) -> tuple[list[str], list[str]]:
    """The files of ``root`` that differ from its revision: (changed, untracked but not ignored)."""
    porcelain = git(root, "status", "--porcelain", "-z", "--no-renames", "--untracked-files=all") or ""
    changed, untracked = [], []
    for entry in porcelain.split("\0"):
        if len(entry) > 3:
            (untracked if entry.startswith("??") else changed).append(entry[3:])
    return changed, untracked


def checkout_version(root: Path = SOURCE_ROOT) -> dict | None:
    """``{"revision", "dirty"}`` of the checkout at ``root``; None outside a git checkout."""
    revision = git(root, "rev-parse", "HEAD")
    if revision is None:
        return None
    changed, untracked = changes(root)
    return {"revision": revision.strip(), "dirty": bool(changed or untracked)}


def describe(record: dict | None) -> str:
    """``revision 1d3258186d3d with uncommitted changes`` for a record of :func:`checkout_version`."""
    if not record or not record.get("revision"):
        return "no git revision (not a git checkout, or no git on PATH)"
    return f"revision {record['revision'][:12]}" + (" with uncommitted changes" if record.get("dirty") else "")


def code_version() -> dict | None:
    """The code this process runs, as the launcher recorded it (``SEGAN_CODE``: git revision, dirty
    flag, snapshot path; see jobs/submit/snapshot.py); without it (``python -m trainer.train``), the revision
    of the checkout this code is imported from, with no snapshot; None when neither is known. Every
    checkpoint records it (trainer/core/checkpoint.py)."""
    if "SEGAN_CODE" not in os.environ:
        found = _checkout_version()
        return None if found is None else {**found, "snapshot": None}
    try:
        value = json.loads(os.environ["SEGAN_CODE"] or "null")
    except ValueError:
        return None
    if not isinstance(value, dict):
        return None
    return {key: value.get(key) for key in ("revision", "dirty", "snapshot")
            if isinstance(value.get(key), (str, bool, type(None)))}


@functools.cache
def _checkout_version() -> dict | None:
    return checkout_version()  # once per process: the code it runs was imported at its start
