"""tests/warmstart.py: a warm start behaves as a cold one wherever a test could look."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import warmstart
from tests.test_train import run_train, step_losses
from trainer.core.exitcodes import EXIT_FINISHED

PROBE = "tests.warmstart_probe"
pytestmark = pytest.mark.skipif(os.environ.get("TESTS_WARM_START", "1") == "0",
                                reason="TESTS_WARM_START=0: every start is cold, nothing warm to compare")


@pytest.fixture
def probe_is_warm(monkeypatch):
    monkeypatch.setattr(warmstart, "WARM_MODULES", warmstart.WARM_MODULES | {PROBE})
    # room for two new servers, however many the worker's earlier tests started (then starts are cold)
    monkeypatch.setattr(warmstart, "MAX_SERVERS", len(warmstart._SERVERS) + 2)


def both(repo_root, *actions, env_extra=None, **kwargs):
    """(cold, warm) CompletedProcess of ``python -m tests.warmstart_probe ACTIONS``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    runs = []
    for popen in (warmstart._ColdPopen, warmstart.WarmPopen):
        proc = popen([sys.executable, "-m", PROBE, *actions], cwd=repo_root, env=env, stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        out, err = proc.communicate("from stdin", timeout=600)
        runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
        assert (getattr(proc, "_warm_status", None) is not None) == (popen is warmstart.WarmPopen)  # as meant
    return runs


def without_runpy_frames(text):
    return "\n".join(line for line in text.splitlines() if "<frozen runpy>" not in line)


@pytest.mark.slow
def test_facts_pipes_and_exit_sequence_match(repo_root, probe_is_warm):
    cold, warm = both(repo_root, "facts", "atexit", "thread", "stderr", "exit=3", env_extra={"PROBE": "x"},
                      start_new_session=True)
    assert warm.returncode == cold.returncode == 3
    assert warm.stdout == cold.stdout and warm.stderr == cold.stderr == "to stderr\n"
    facts = json.loads(cold.stdout.splitlines()[0])
    assert facts == {"name": "__main__", "argv": ["facts", "atexit", "thread", "stderr", "exit=3"],
                     "argv0": "warmstart_probe.py", "cwd": str(repo_root), "path0": str(repo_root), "probe": "x",
                     "session_leader": True, "stdin": "from stdin", "torch_threads": 1}
    assert cold.stdout.splitlines()[1:] == ["thread finished", "atexit ran"]


@pytest.mark.parametrize("actions, code", [(["exit=not a number"], 1), (["raise"], 1),
                                           (["interrupt"], -signal.SIGINT), ([], 0)])
def test_errors_end_as_with_python_m(repo_root, probe_is_warm, actions, code):
    cold, warm = both(repo_root, *actions)
    assert warm.returncode == cold.returncode == code
    assert without_runpy_frames(warm.stderr) == without_runpy_frames(cold.stderr)


def test_kill_reaches_the_warm_run_and_its_group(repo_root, probe_is_warm, tmp_path):
    flag = tmp_path / "running"
    proc = warmstart.WarmPopen([sys.executable, "-m", PROBE, "wait"], cwd=repo_root, start_new_session=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "PROBE": str(flag)})
    try:
        deadline = time.monotonic() + 600
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flag.exists() and proc._warm is not None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.1)
    finally:  # the probe waits until killed: never leave it behind
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=600) == -signal.SIGKILL


@pytest.mark.slow
def test_a_warm_scripts_own_starts_are_warm(repo_root, monkeypatch):
    """A listed script (a benchmark) started warm starts its trainings warm too; started cold, cold."""
    monkeypatch.setattr(warmstart, "WARM_SCRIPTS", warmstart.WARM_SCRIPTS | {"tests/warmstart_probe.py"})
    outputs = []
    for popen in (warmstart._ColdPopen, warmstart.WarmPopen):
        proc = popen([sys.executable, "tests/warmstart_probe.py", "nested"], cwd=repo_root, stdout=subprocess.PIPE,
                     text=True)
        outputs.append(json.loads(proc.communicate(timeout=600)[0]))
    assert outputs == [{"code": 0, "warm": False}, {"code": 0, "warm": True}]


def test_starts_that_could_differ_stay_cold(repo_root):
    request = lambda args, **kw: warmstart.warm_request(  # noqa: E731
        args, kw.get("executable"), None, (), repo_root, kw.get("env", dict(os.environ)), kw.get("shell", False),
        None, None, None, -1, None)
    assert request([sys.executable, "-u", "-m", "trainer.train", "--help"])["unbuffered"]
    assert request([sys.executable, "-m", "trainer.evaluate"])["module"] == "trainer.evaluate"
    assert request([sys.executable, "-m", "launch", "status"]) is None  # login-node commands never import torch
    assert request([sys.executable, "-X", "importtime", "-m", "trainer.train"]) is None
    assert request([sys.executable, "trainer/train.py"]) is None
    assert request([sys.executable, "benchmarks/bench_throughput.py", "--steps", "1"])["script"] == \
        "benchmarks/bench_throughput.py"
    assert request(f"{sys.executable} -m trainer.train", shell=True) is None
    assert request([sys.executable, "-m", "trainer.evaluate"], env={**os.environ, "TESTS_WARM_START": "0"}) is None


def test_each_environment_the_imports_read_has_its_own_server():
    env = {"PATH": "/bin", "OMP_NUM_THREADS": "1"}
    assert warmstart.server_key({**env, "TRAINER_ANYTHING": "1", "PYTEST_CURRENT_TEST": "x",
                                 "TORCHINDUCTOR_CACHE_DIR": "/c"}) == warmstart.server_key(env)  # read when compiling
    for name, value in (("OMP_NUM_THREADS", "2"), ("PYTHONPATH", "/elsewhere"), ("TORCH_LOGS", "dynamo"),
                        ("HOME", "/h")):
        assert warmstart.server_key({**env, name: value}) != warmstart.server_key(env), name


@pytest.mark.slow
def test_a_server_per_environment(repo_root, probe_is_warm):
    """A start in another thread count gets a server of its own, which imported torch with it."""
    keys = set()
    for threads in ("1", "2"):
        cold, warm = both(repo_root, "facts", env_extra={"OMP_NUM_THREADS": threads})
        assert warm.stdout == cold.stdout
        keys.add(warmstart.server_key({**os.environ, "OMP_NUM_THREADS": threads}))
    assert keys <= set(warmstart._SERVERS) and len(keys) == 2


@pytest.mark.slow
def test_a_warm_training_equals_a_cold_one(repo_root, tmp_path, monkeypatch):
    """The same tiny training started cold and warm: the same per-step losses and log lines."""
    runs, log = {}, tmp_path / "starts.jsonl"
    monkeypatch.setenv("TESTS_WARM_START_LOG", str(log))
    monkeypatch.setattr(warmstart, "MAX_SERVERS", len(warmstart._SERVERS) + 1)
    for name, switch in (("cold", "0"), ("warm", "1")):
        monkeypatch.setenv("TESTS_WARM_START", switch)
        runs[name] = run_train(repo_root, tmp_path / name, "train.epochs=1", "train.max_steps_per_epoch=2")
        assert runs[name].returncode == EXIT_FINISHED, runs[name].stderr[-3000:]
    assert [json.loads(line)["warm"] for line in log.read_text().splitlines()] == [False, True]
    assert step_losses(tmp_path / "warm") == step_losses(tmp_path / "cold") and len(step_losses(tmp_path / "cold")) == 2
    words = lambda text: [line.split(" ", 2)[-1].replace(str(tmp_path / "warm"), str(tmp_path / "cold"))  # noqa: E731
                          for line in text.splitlines() if "s/step" not in line and "sec" not in line]
    assert words(runs["warm"].stderr) == words(runs["cold"].stderr)
