import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import warmstart  # noqa: E402

# Trainings, evaluations and enhancements the tests start are forks of a server that imported torch
# once (tests/warmstart.py: what differs from a cold start, and when a start stays cold);
# TESTS_WARM_START=0 starts every process cold.
subprocess.Popen = warmstart.WarmPopen


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


@pytest.fixture(scope="session")
def bsrnn_ckpt(tmp_path_factory) -> Path:
    """A tiny BSRNN training checkpoint with seeded random weights (tests/test_enhance.py's
    ``save_checkpoint``), written once per test process; the tests only read it."""
    from tests.test_enhance import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "bsrnn.pt"
    save_checkpoint(path, seed=4)
    return path


# pytest-xdist (pyproject's addopts: -n auto): which tests must run on the same worker, one after
# the other, and in which order. Scheduled by node id, since the controller never imports the tests:
# every test under tests/cluster/ shares the one test cluster; the tests of a module with a
# module-scoped fixture (one training run, one corpus) share it, built once. Every other test goes
# wherever a worker is free (a session-scoped fixture of this file, cheap by rule, is built once by
# each worker that needs it). (xdist's own --dist loadgroup cannot be used: its xdist_group marks do
# not reach the node ids under pytest 9.)
SHARED_FIXTURE_MODULES = frozenset(
    path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("test_*.py")
    if 'scope="module"' in path.read_text())
CLUSTER_GROUP = "slurm-cluster"
DURATIONS = ROOT / "tests" / "durations.json"  # written by --store-durations (docs/testing.md)
UNKNOWN_SECONDS = 1.0  # a test not in DURATIONS yet: new tests are mostly unit tests


def xdist_group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.startswith("tests/cluster/"):
        return CLUSTER_GROUP
    return path if path in SHARED_FIXTURE_MODULES else nodeid


def pytest_addoption(parser):
    parser.addoption("--store-durations", action="store_true",
                     help=f"write each test's seconds to {DURATIONS.relative_to(ROOT)} (the workers' order)")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """One worker per CPU, and one for the cluster tests when they can be selected: they spend most
    of their quarter hour waiting for Slurm, and on a worker of their own they leave both CPUs to
    the other tests. The scheduler retires that worker when its tests are done, or at once when none
    were collected (a spare worker still spends a CPU-second or more on its imports and collection)."""
    return (os.cpu_count() or 1) + cluster_tests_may_be_selected(config)


def cluster_tests_may_be_selected(config) -> bool:
    """False when the paths given or the -m expression (the inner loop's "not slow") leave out
    tests/cluster; True when unsure."""
    cluster_dir = ROOT / "tests" / "cluster"
    paths = [(config.invocation_params.dir / arg.split("::", 1)[0]).resolve() for arg in config.args]
    if not any(p == cluster_dir or cluster_dir in p.parents or p in cluster_dir.parents for p in paths):
        return False
    if not config.option.markexpr:
        return True
    try:
        from _pytest.mark.expression import Expression
        return Expression.compile(config.option.markexpr).evaluate(lambda name, **_: name in ("slow", "cluster"))
    except Exception:  # a private API of pytest's: when it moves, keep the spare worker
        return True


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    durations = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}

    class SharedResourceScheduling(LoadScopeScheduling):
        """Longest group first (the cluster group before all), so that no long test starts last; with
        more workers than CPUs, the cluster group's worker takes nothing else and retires when done,
        and without cluster tests the spare worker retires at once (pytest_xdist_auto_num_workers)."""

        _ordered = False
        _cluster_node = None

        def _split_scope(self, nodeid: str) -> str:
            return xdist_group(nodeid)

        def _assign_work_unit(self, node) -> None:
            if not self._ordered:
                self._order_and_retire_the_spare_worker()
            if node is self._cluster_node or node.shutting_down:
                return
            cluster = next(iter(self.workqueue)) == CLUSTER_GROUP and len(self.nodes) > (os.cpu_count() or 1)
            super()._assign_work_unit(node)
            if cluster:  # a worker of its own only when there is one to spare
                self._cluster_node = node
                node.shutdown()  # runs what it holds, then ends (a worker keeps its last test until told)

        def _reschedule(self, node) -> None:
            if node is not self._cluster_node:
                super()._reschedule(node)

        def _order_and_retire_the_spare_worker(self) -> None:
            self._ordered = True
            units = sorted(self.workqueue.items(), key=lambda unit: -self._seconds(*unit))
            self.workqueue.clear()
            self.workqueue.update(units)
            if CLUSTER_GROUP not in self.workqueue and len(self.nodes) > (os.cpu_count() or 1):
                self.nodes[-1].shutdown()

        @staticmethod
        def _seconds(scope: str, nodeids: dict) -> float:
            if scope == CLUSTER_GROUP:
                return float("inf")
            return sum(durations.get(nodeid, UNKNOWN_SECONDS) for nodeid in nodeids)

    return SharedResourceScheduling(config, log)


def pytest_configure(config):
    """In an xdist worker, the worker's own torch work gets its share of the CPUs (one thread with
    -n auto): OpenMP threads of two workers spinning against each other on two cores cost the inner
    loop about 9 % (docs/testing.md). The processes the tests start keep torch's default."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


_measured: dict[str, float] = {}


def pytest_runtest_logreport(report):
    """Setup, call and teardown of each test (on the controller, the workers' reports too)."""
    _measured[report.nodeid] = _measured.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    """--store-durations: merge this run's seconds into DURATIONS (a subset run updates its tests)."""
    if session.config.getoption("store_durations") and not os.environ.get("PYTEST_XDIST_WORKER"):
        stored = json.loads(DURATIONS.read_text()) if DURATIONS.is_file() else {}
        stored.update({nodeid: round(seconds, 1) for nodeid, seconds in _measured.items()})
        DURATIONS.write_text(json.dumps(dict(sorted(stored.items())), indent=0) + "\n")


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
