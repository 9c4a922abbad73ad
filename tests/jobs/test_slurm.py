"""jobs/slurm.py is the launcher's one Slurm adapter: the only module that runs Slurm's commands,
owns the state-word sets, and (with jobs/sbatch.py) renders sbatch scripts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from jobs import slurm
from jobs.slurm import format_slurm_time, parse_slurm_time
from trainer.core import lock
from trainer.core.settings import ConfigError

JOBS = Path(__file__).resolve().parents[2] / "jobs"
TOOLS = {"squeue", "sacct", "scontrol", "scancel", "sinfo", "sbatch", "sacctmgr"}


def _command_lists(path: Path) -> list[str]:
    """Every list literal in the file whose first element names a Slurm tool (a command line)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.List) and node.elts and isinstance(node.elts[0], ast.Constant) \
                and node.elts[0].value in TOOLS:
            found.append(f"{path.relative_to(JOBS.parent)}:{node.lineno} {node.elts[0].value}")
    return found


def test_only_the_adapter_runs_slurm_commands():
    modules = sorted(JOBS.rglob("*.py"))
    outside = [hit for path in modules if path.name != "slurm.py" for hit in _command_lists(path)]
    assert outside == []
    assert _command_lists(JOBS / "slurm.py")  # the adapter itself does


def test_the_trainers_lock_probe_agrees_with_the_adapters_states():
    """trainer/core/lock.py keeps its own squeue probe (trainer/ never imports jobs/): every state it
    calls running must be one the adapter calls active, and no settled state may be among them."""
    assert lock.RUNNING_STATES <= slurm.ACTIVE
    assert not (lock.RUNNING_STATES & slurm.SETTLED_STATES)
    assert set(slurm.FINAL_WORDS) <= slurm.SETTLED_STATES and not (slurm.SETTLED_STATES & slurm.ACTIVE - {"REQUEUED"})


def test_the_ending_classifier_reads_slurms_words():
    assert slurm.state_word({"State": "CANCELLED by 0"}) == "CANCELLED"
    assert slurm.state_word({}) == ""


def test_one_module_renders_sbatch_scripts():
    """submitit's private renderer is called from jobs/sbatch.py alone (training, sweeps, evaluation)."""
    callers = sorted(str(path.relative_to(JOBS.parent)) for path in JOBS.rglob("*.py")
                     if "_make_sbatch_string" in path.read_text())
    assert callers == ["jobs/sbatch.py"]


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("5:30", 330), ("12:00:00", 43200),
                                          ("1-00", 86400), ("1-02:03", 93780), ("2-00:00:10", 172810)])
def test_slurm_times(text, seconds):
    assert parse_slurm_time(text) == seconds
    assert parse_slurm_time(format_slurm_time(seconds)) == seconds


def test_bad_slurm_time_names_the_value():
    with pytest.raises(ConfigError, match="'12h'"):
        parse_slurm_time("12h")


@pytest.mark.parametrize("text,problem", [("99:99:99", "minutes must be 0-59"), ("11:59:60", "seconds must be 0-59"),
                                          ("5:60", "seconds must be 0-59"), ("1-24:00:00", "hours must be 0-23"),
                                          ("1-00:60", "minutes must be 0-59"), ("-5", "not a Slurm time"),
                                          ("12:00:00\n", "not a Slurm time")])
def test_slurm_times_that_would_carry_over_are_refused(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_slurm_time(text)
