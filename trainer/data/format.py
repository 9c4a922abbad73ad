"""The dataset format: what a packed folder holds and how its integrity is checked.

A dataset folder holds ``shard-00000.h5 ...`` and ``manifest.json`` (written last; without it a
folder is not a dataset). The manifest has ``format_version``, ``kind`` (``paired``: two aligned
signals per item; ``speech``, ``noise``, ``rir``: one signal per item, the corpora mixed on the
fly; version 1 manifests have no kind and are paired), ``sample_rate``, ``signals`` (paired: the
reference first: clean/target, then the model input: noisy/input; else ``[kind]``), ``num_pairs``
(the number of items),
``total_seconds``, the speakers, the silent files, and per shard its pair count, size in bytes
and sha256.

Shard layout (``shard-00000.h5``): one 1-D float32 dataset per signal holding the utterances of
the shard back to back (chunked, with HDF5's fletcher32 checksum so that a corrupted chunk is
an error at read time), ``offsets`` (int64, num_pairs + 1), ``lengths``, ``names`` and
``speakers``; the attributes hold the format version, sample rate and the shard's plan hash.

Owned here (not by the packer or the reader, which both import it): the version, the file names,
the chunk size, :class:`DataError` and the checksum.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from trainer.core.errors import BadInput

FORMAT_VERSION = 2  # 2: the manifest names the kind (single-signal corpora); 1 is still read (paired)
READABLE_VERSIONS = (1, 2)
PAIRED = "paired"
SINGLE_KINDS = ("speech", "noise", "rir")
KINDS = (PAIRED, *SINGLE_KINDS)
MANIFEST = "manifest.json"
CHUNK_SAMPLES = 16384  # 64 KiB chunks: a 2 s crop at 16 kHz touches 2-3 of them


class DataError(BadInput):
    """Bad audio, shards or manifests: one line naming the file and what to do (exit code 2)."""


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def manifest_kind(manifest: dict) -> str:
    """The kind of a checked manifest (version 1: paired)."""
    return manifest.get("kind", PAIRED)


def check_manifest(manifest, path: str | Path) -> None:
    """Raise DataError naming ``path`` and the key unless ``manifest`` (parsed JSON) has the keys and
    types the readers rely on: a JSON object with format_version, sample_rate, signals and shards,
    and per shard a plain file name, num_pairs, num_bytes and a sha256."""
    fix = "re-run prepare (or restore the manifest that came with the shards)"
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a dataset manifest (a JSON {type(manifest).__name__}, not an object); {fix}")
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise DataError(f"{path}: format_version {manifest.get('format_version')!r}, this toolkit reads "
                        f"{' and '.join(map(str, READABLE_VERSIONS))}; {fix}")
    problems = []
    kind = manifest.get("kind", PAIRED)
    if kind not in KINDS or (manifest["format_version"] == 1 and "kind" in manifest):
        problems.append(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    count = 2 if kind == PAIRED else 1
    for key in ("sample_rate", "signals", "shards"):
        if key not in manifest:
            problems.append(f"key {key!r} is missing")
    rate = manifest.get("sample_rate")
    if "sample_rate" in manifest and (not _is_count(rate) or rate == 0):
        problems.append(f"sample_rate: {rate!r} is not a positive integer")
    signals = manifest.get("signals")
    if "signals" in manifest and (not isinstance(signals, list) or len(signals) != count
                                  or not all(isinstance(s, str) and s for s in signals) or len(set(signals)) != count):
        problems.append(f"signals: {signals!r} is not a list of {count} signal name(s) (kind {kind})")
    shards = manifest.get("shards")
    if "shards" in manifest and not isinstance(shards, list):
        problems.append(f"shards: a {type(shards).__name__}, not a list")
    for i, entry in enumerate(shards if isinstance(shards, list) else []):
        where = f"shards[{i}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: a {type(entry).__name__}, not an object")
            continue
        name = entry.get("file")
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            problems.append(f"{where}.file: {name!r} is not a file name in the dataset folder")
        for key in ("num_pairs", "num_bytes"):
            if not _is_count(entry.get(key)):
                problems.append(f"{where}.{key}: {entry.get(key)!r} is not a count" if key in entry
                                else f"{where}: key {key!r} is missing")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f"{where}.sha256: {digest!r} is not a sha256 hex digest")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(f"{path}: {problems[0]}{more}; {fix}")
