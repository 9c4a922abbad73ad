import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture
def repo_root() -> Path:
    return ROOT


def read_golden_keys(name: str) -> list[tuple[str, list[int]]]:
    """``[(key, shape), ...]`` from ``tests/golden/<name>`` (lines ``key [d0, d1, ...]``; ``#`` comments)."""
    rows = []
    for line in (ROOT / "tests/golden" / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        rows.append((key, [int(d) for d in shape.strip("[]").split(",") if d.strip()]))
    return rows


@pytest.fixture
def golden_keys():
    """The state-dict layouts of the official CMGAN / MP-SENet checkpoints (tests/golden/*_keys.txt)."""
    return read_golden_keys


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def one_torch_thread():
    """Tiny tensors on two shared cores: one intra-op thread beats OpenMP threads spinning against
    each other (and other processes)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
