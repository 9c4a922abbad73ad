"""Unit tests of the launcher's pieces: requeue decisions, Slurm times, profiles, the sbatch template."""

import subprocess
import sys
from pathlib import Path

import pytest

from jobs.job import RequeuePolicy, decide, master_port
from jobs.profiles import format_slurm_time, load_profile, parse_slurm_time
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_DIVERGED, EXIT_FINISHED, EXIT_REQUEUE
from trainer.core.settings import ConfigError

GOLDEN = Path(__file__).parent / "golden"
POLICY = RequeuePolicy(max_requeues=3, max_crash_requeues=1, max_stalled_restarts=2)


def end(code, start, stop, action="requeue"):
    return {"exit_code": code, "step_start": start, "step_end": stop, "action": action}


def test_decide_finishes_and_never_retries_bad_input_or_divergence():
    assert decide(EXIT_FINISHED, [end(0, 0, 9)], POLICY, ending=None)[0] == "finish"
    for code in (EXIT_BAD_INPUT, EXIT_DIVERGED):
        action, reason = decide(code, [end(code, 0, 0)], POLICY, ending=None)
        assert action == "stop" and f"exit code {code}" in reason


def test_decide_requeues_a_stop_request_until_the_budget_is_spent():
    history = []
    for attempt in range(POLICY.max_requeues + 1):
        current = end(EXIT_REQUEUE, 10 * attempt, 10 * attempt + 5, action=None)
        action, reason = decide(EXIT_REQUEUE, history + [current], POLICY, ending=None)
        current["action"] = action
        history.append(current)
    assert [h["action"] for h in history] == ["requeue"] * POLICY.max_requeues + ["stop"]
    assert "budget" in reason


def test_decide_never_requeues_a_cancelled_job():
    action, reason = decide(EXIT_REQUEUE, [end(EXIT_REQUEUE, 0, 5)], POLICY, ending="cancelled by the user")
    assert (action, reason) == ("stop", "cancelled by the user")


def test_decide_stops_a_crash_loop_at_the_crash_budget():
    first = decide(EXIT_CRASHED, [end(EXIT_CRASHED, 0, 3)], POLICY, ending=None)
    assert first[0] == "requeue"
    second = decide(EXIT_CRASHED, [end(EXIT_CRASHED, 0, 3), end(EXIT_CRASHED, 3, 6)], POLICY, ending=None)
    assert second[0] == "stop" and "crashed 2 times" in second[1]


def test_decide_stops_restarts_without_progress():
    stalled = [end(EXIT_REQUEUE, 7, 7)]
    assert decide(EXIT_REQUEUE, stalled * 2, POLICY, ending=None)[0] == "requeue"
    action, reason = decide(EXIT_REQUEUE, stalled * 3, POLICY, ending=None)
    assert action == "stop" and "no training step of progress in 3 attempts" in reason
    # progress in between resets the count
    roomy = RequeuePolicy(max_requeues=10, max_crash_requeues=1, max_stalled_restarts=2)
    assert decide(EXIT_REQUEUE, stalled * 2 + [end(EXIT_REQUEUE, 7, 9)] + stalled, roomy, None)[0] == "requeue"


def test_master_port_differs_between_jobs_and_restarts():
    ports = {master_port(str(job), restart) for job in range(1000, 1100) for restart in (0, 1)}
    assert len(ports) == 200 and all(20000 <= p < 60000 for p in ports)


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("5:30", 330), ("12:00:00", 43200),
                                          ("1-00", 86400), ("1-02:03", 93780), ("2-00:00:10", 172810)])
def test_slurm_times(text, seconds):
    assert parse_slurm_time(text) == seconds
    assert parse_slurm_time(format_slurm_time(seconds)) == seconds


def test_bad_slurm_time_names_the_value():
    with pytest.raises(ConfigError, match="'12h'"):
        parse_slurm_time("12h")


def test_levante_profile_holds_the_cluster_facts():
    levante = load_profile("levante")
    assert (levante.partition, levante.max_gpus_per_node, levante.max_time_s) == ("gpu", 4, 12 * 3600)
    assert levante.account_required


def test_profile_with_unknown_key_is_one_line_naming_file_and_key(tmp_path):
    bad = tmp_path / "mycluster.yaml"
    bad.write_text("partition: gpu\ngpus: 4\n")
    with pytest.raises(ConfigError, match=r"mycluster.yaml: unknown key gpus"):
        load_profile(str(bad))
    with pytest.raises(ConfigError, match="unknown cluster profile 'nowhere'.*levante"):
        load_profile("nowhere")


def emit_sbatch(repo_root, *extra):
    args = [sys.executable, "launch.py", "--emit-sbatch", "--cluster", "levante", "--account", "ab1234",
            "--config", "configs/se_balanced.yaml", "--run-dir", "/scratch/ab1234/runs/se_balanced",
            "--nodes", "2", "--constraint", "a100_80", *extra]
    proc = subprocess.run(args, cwd=repo_root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    subprocess.run(["bash", "-n"], input=proc.stdout, text=True, check=True)  # valid shell as rendered
    return proc.stdout.replace(sys.executable, "<PYTHON>").replace(str(repo_root), "<ROOT>")


def test_emitted_sbatch_matches_the_golden_file(repo_root):
    text = emit_sbatch(repo_root, "--set", "optim.lr=1e-4", "--set", "data.train_dir=/data/my corpus/$(whoami);x")
    assert text == (GOLDEN / "levante_2nodes.sbatch").read_text()
    assert "'data.train_dir=/data/my corpus/$(whoami);x'" in text  # one word, never expanded


def test_emitted_sbatch_for_the_defaults_matches_the_golden_file(repo_root):
    text = emit_sbatch(repo_root, "--nodes", "1", "--time", "04:00:00", "--signal-lead", "900")
    assert text == (GOLDEN / "levante_defaults.sbatch").read_text()
