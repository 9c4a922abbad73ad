import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GOLDEN = Path(__file__).resolve().parent / "golden"


def read_golden_keys(name: str) -> list[tuple[str, list[int]]]:
    """``[(key, shape), ...]`` from ``golden/<name>`` (lines ``key [d0, d1, ...]``; ``#`` comments)."""
    rows = []
    for line in (GOLDEN / name).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape = line.split(" ", 1)
        rows.append((key, [int(d) for d in shape.strip("[]").split(",") if d.strip()]))
    return rows


@pytest.fixture
def golden_keys():
    return read_golden_keys


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: on a shared two-core machine OpenMP threads spinning against each
    other (and other processes) made these tests several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
