"""Content checksums of checkpoint states (nested dicts, lists, tuples, tensors and plain values).

torch does not check the CRCs of its zip archive, so one flipped byte in a tensor loads silently
(e.g. a weight becomes 1.6e38). :func:`digest` hashes what a state *means*: every tensor's dtype,
shape and bytes and every plain value, in order, with a type tag per node. The writer stores it
inside the checkpoint and the reader recomputes it over what it loaded: a flip anywhere that
changes a loaded value changes the digest, and a flip that changes nothing loaded is harmless.
"""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import torch

ALGORITHM = "sha256-tree-v1"  # the encoding below; change the name when the encoding changes


def digest(state: Any) -> tuple[str, list[str]]:
    """(hex digest of ``state``, names of floating tensors holding NaN/Inf, e.g. ``generator.w``)."""
    hasher, nonfinite = hashlib.sha256(), []
    _feed(hasher, state, "", nonfinite)
    return hasher.hexdigest(), nonfinite


def _tag(hasher, tag: bytes, payload: bytes = b"") -> None:
    hasher.update(tag + struct.pack("<Q", len(payload)) + payload)


def _feed(hasher, obj: Any, name: str, nonfinite: list[str]) -> None:
    if isinstance(obj, torch.Tensor):
        tensor = obj.detach().cpu().contiguous()
        _tag(hasher, b"T", f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        flat = tensor.reshape(-1)
        hasher.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            nonfinite.append(name or "<top level>")
    elif isinstance(obj, dict):
        _tag(hasher, b"D", str(len(obj)).encode())
        for key, value in obj.items():
            _feed(hasher, key, name, nonfinite)
            _feed(hasher, value, f"{name}.{key}" if name else str(key), nonfinite)
    elif isinstance(obj, (list, tuple)):
        _tag(hasher, b"L" if isinstance(obj, list) else b"U", str(len(obj)).encode())
        for i, value in enumerate(obj):
            _feed(hasher, value, f"{name}[{i}]", nonfinite)
    elif obj is None or isinstance(obj, bool):
        _tag(hasher, b"B", repr(obj).encode())
    elif isinstance(obj, int):
        _tag(hasher, b"I", str(obj).encode())
    elif isinstance(obj, float):
        _tag(hasher, b"F", obj.hex().encode() if math.isfinite(obj) else repr(obj).encode())
    elif isinstance(obj, str):
        _tag(hasher, b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, bytes):
        _tag(hasher, b"Y", obj)
    else:  # not produced by the toolkit; hash its type and text so that it is at least covered
        _tag(hasher, b"O", f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}".encode())
