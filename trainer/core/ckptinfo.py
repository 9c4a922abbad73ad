"""The JSON sidecar of a kept checkpoint (``last.json`` beside ``last.pt``): what login-node tools
need to know about a checkpoint (step, epoch, best metrics, code revision, config digest) without
torch and without reading the checkpoint itself. This module owns the format: the trainer writes it
(:func:`write`) right after the checkpoint files of a save, and ``jobs/`` reads it (:func:`read`).

A sidecar describes one checkpoint file: it records that file's inode and modification time, and
:func:`read` trusts it only while they still match. A crash between the checkpoint's rename and the
sidecar's leaves an older sidecar beside a newer checkpoint; :func:`read` then answers None ("not
known without torch") instead of the previous save's step. Torch-free: login-node commands import it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from trainer.core.io import atomic_write_text

FORMAT = 1
SUFFIX = ".json"


def sidecar_path(checkpoint: str | Path) -> Path:
    return Path(checkpoint).with_suffix(SUFFIX)


def config_digest(config: dict) -> str:
    """sha256 of the resolved config in canonical YAML (sorted keys): equal configs, equal digests."""
    return hashlib.sha256(yaml.safe_dump(config, sort_keys=True).encode()).hexdigest()


def summary(state: dict) -> dict[str, Any]:
    """The torch-free facts of a checkpoint's state dict."""
    return {"step": state["step"], "epoch": state["epoch"], "best": dict(state["best"]),
            "code": state.get("code"), "config_sha256": config_digest(state["config"])}


def write(checkpoints: list[Path], facts: dict[str, Any]) -> None:
    """Write each checkpoint's sidecar (after the checkpoint itself is in place)."""
    for path in checkpoints:
        st = os.stat(path)
        record = {"format": FORMAT, **facts, "file": {"inode": st.st_ino, "mtime_ns": st.st_mtime_ns,
                                                      "bytes": st.st_size}}
        atomic_write_text(sidecar_path(path), json.dumps(record, sort_keys=True) + "\n")


def read(checkpoint: str | Path) -> dict[str, Any] | None:
    """The sidecar of ``checkpoint`` when it describes the file there now, else None."""
    try:
        st = os.stat(checkpoint)
        record = json.loads(sidecar_path(checkpoint).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    if record.get("file") != {"inode": st.st_ino, "mtime_ns": st.st_mtime_ns, "bytes": st.st_size}:
        return None
    return record
