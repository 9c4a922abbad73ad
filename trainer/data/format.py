"""The dataset format: what a packed folder holds and how its integrity is checked.

A dataset folder holds ``shard-00000.h5 ...`` and ``manifest.json`` (written last; without it a
folder is not a dataset). The manifest has ``format_version``, ``sample_rate``, ``signals`` (the
reference first: clean/target, then the model input: noisy/input), ``num_pairs``,
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

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHUNK_SAMPLES = 16384  # 64 KiB chunks: a 2 s crop at 16 kHz touches 2-3 of them


class DataError(BadInput):
    """Bad audio, shards or manifests: one line naming the file and what to do (exit code 2)."""


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
