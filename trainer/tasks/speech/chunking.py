"""How long a chunk each speech generator can enhance at once, and whether a chosen chunk fits.

The memory one generator call needs grows with the chunk's length ``s`` (seconds at 16 kHz) as
``linear * s + quadratic * s**2`` bytes per batch item: the quadratic term is attention over time
(CMGAN's conformers; a 30 s chunk of even the 22 k-parameter smoke CMGAN needs over 100 GiB), zero
for BSRNN's recurrences. The coefficients below were measured, not guessed, with
``benchmarks/bench_enhance_memory.py`` (peak resident memory of one ``torch.no_grad()`` call on the
CPU for several lengths, least-squares fit; the larger of the preset and smoke sizes, rounded up);
docs/enhancement-and-evaluation-trust.md lists the measurements.

- :func:`default_chunk_seconds`: the longest whole number of seconds (at most 30) whose one chunk
  needs at most :data:`DEFAULT_CHUNK_BUDGET` bytes;
- :func:`fitting_chunk`, :func:`fitting_batch_size`: the default shortened to what fits;
- :func:`chunk_problem`: refuses a chunk and batch size that would need more than
  :data:`USABLE_FRACTION` of the memory available on the device (the CPU's available RAM, within a
  cgroup limit where there is one; a GPU's free memory), naming the largest safe ``--chunk-seconds``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

GIB = 2**30
MIB = 2**20
REFERENCE_RATE = 16000  # the rate the coefficients were measured at
DEFAULT_CHUNK_BUDGET = 2 * GIB  # one chunk of the default length stays within this
MAX_DEFAULT_CHUNK_SECONDS = 30.0
USABLE_FRACTION = 0.8  # of the available memory: the weights, the files in flight and the allocator's slack


@dataclass(frozen=True)
class MemoryModel:
    linear: float  # bytes per second of audio (16 kHz) per batch item
    quadratic: float  # bytes per second squared per batch item

    def chunk_bytes(self, seconds: float, batch_size: int = 1) -> float:
        return batch_size * (self.linear * seconds + self.quadratic * seconds**2)

    def largest_seconds(self, budget: float, batch_size: int = 1) -> float:
        """The longest chunk whose ``batch_size`` items need at most ``budget`` bytes."""
        per_item = budget / batch_size
        if self.quadratic <= 0:
            return per_item / self.linear
        return (-self.linear + math.sqrt(self.linear**2 + 4 * self.quadratic * per_item)) / (2 * self.quadratic)


# bytes per second and per second squared, measured on the CPU (see the module docstring)
MEMORY_MODELS = {
    "bsrnn": MemoryModel(linear=28 * MIB, quadratic=0.0),  # base.yaml: 24 MiB at 1 s, 72 MiB at 4 s
    "cmgan": MemoryModel(linear=152 * MIB, quadratic=160 * MIB),  # cmgan.yaml 151 + 138 s^2, smoke 7 + 158 s^2
    "mpsenet": MemoryModel(linear=108 * MIB, quadratic=12 * MIB),  # mpsenet.yaml 108 + 11.2 s^2, smoke 17 + 0.4 s^2
}
UNKNOWN = MEMORY_MODELS["cmgan"]  # a generator nobody measured: assume the steepest growth


def memory_model(model_name: str, sample_rate: int = REFERENCE_RATE) -> MemoryModel:
    """The growth of ``model_name`` in seconds at ``sample_rate`` (frames scale with the rate)."""
    base = MEMORY_MODELS.get(model_name, UNKNOWN)
    ratio = sample_rate / REFERENCE_RATE
    return MemoryModel(linear=base.linear * ratio, quadratic=base.quadratic * ratio**2)


def default_chunk_seconds(model_name: str, sample_rate: int = REFERENCE_RATE) -> float:
    seconds = memory_model(model_name, sample_rate).largest_seconds(DEFAULT_CHUNK_BUDGET)
    return float(min(MAX_DEFAULT_CHUNK_SECONDS, max(1, math.floor(seconds))))


def available_bytes(device: str) -> tuple[int | None, str]:
    """(bytes this process may still allocate on ``device``, what that is) or (None, why unknown)."""
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return free, f"free memory of CUDA device {torch.cuda.current_device()}"
    available = _meminfo_available()
    limit = _cgroup_room()
    if limit is not None and (available is None or limit < available):
        return limit, "room left under this job's memory limit (cgroup)"
    return available, "available RAM"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 ``memory.max - memory.current`` of this process's group (None without a limit)."""
    try:
        group = Path("/proc/self/cgroup").read_text().strip().splitlines()[0].split("::", 1)[1]
        folder = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((folder / "memory.current").read_text())
    except (OSError, ValueError, IndexError):
        return None


def chunk_problem(model_name: str, sample_rate: int, chunk_seconds: float, batch_size: int, device: str,
                  overlap_seconds: float) -> str | None:
    """Why ``chunk_seconds`` x ``batch_size`` chunks do not fit on ``device`` (None if they do)."""
    available, what = available_bytes(device)
    if available is None:
        return None
    model = memory_model(model_name, sample_rate)
    usable = USABLE_FRACTION * available
    needed = model.chunk_bytes(chunk_seconds, batch_size)
    if needed <= usable:
        return None
    safe = math.floor(model.largest_seconds(usable, batch_size) * 10) / 10
    advice = (f"use --chunk-seconds {safe:g} or less" if safe > 2 * overlap_seconds else
              "use a smaller --batch-size or --overlap-seconds, or another device")
    return (f"--chunk-seconds {chunk_seconds:g} with --batch-size {batch_size}: a {model_name} generator needs "
            f"about {needed / GIB:.1f} GiB per call, more than {USABLE_FRACTION:.0%} of the {available / GIB:.1f} GiB "
            f"{what}; {advice}")


def fitting_batch_size(model_name: str, sample_rate: int, chunk_seconds: float, device: str, wanted: int) -> int:
    """The largest batch size up to ``wanted`` whose chunks fit on ``device`` (at least 1)."""
    available, _ = available_bytes(device)
    if available is None:
        return wanted
    per_chunk = memory_model(model_name, sample_rate).chunk_bytes(chunk_seconds)
    return max(1, min(wanted, int(USABLE_FRACTION * available // max(per_chunk, 1))))


def fitting_chunk(model_name: str, sample_rate: int, chunk_seconds: float, batch_size: int, device: str) -> float:
    """``chunk_seconds``, or the largest tenth of a second below it whose ``batch_size`` chunks fit."""
    available, _ = available_bytes(device)
    if available is None:
        return chunk_seconds
    largest = memory_model(model_name, sample_rate).largest_seconds(USABLE_FRACTION * available, batch_size)
    return min(chunk_seconds, math.floor(largest * 10) / 10)
