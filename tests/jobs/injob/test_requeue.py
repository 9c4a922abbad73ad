"""The one requeue policy (jobs/injob/requeue.py): decide() and the `python -m jobs.requeue` CLI of the
plain sbatch template give the same decisions and write the same attempt records."""

import json
import os
import subprocess
import sys

import pytest

from jobs.injob.job import TrainingJob
from jobs.injob.requeue import Ending, RequeuePolicy, decide, end_attempt, job_exit_code, trainer_exit_code
from jobs.report.outcome import describe
from jobs.rundir import RunDir
from trainer.core.exitcodes import (
    EXIT_BAD_INPUT,
    EXIT_CRASHED,
    EXIT_DISK_FULL,
    EXIT_DIVERGED,
    EXIT_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_REQUEUE,
)

POLICY = RequeuePolicy(max_requeues=3, max_crash_requeues=1, max_stalled_restarts=2)
OFFLINE = {"PATH": "/nonexistent"}  # Slurm cannot be asked: the ending comes from the run directory only
JOB = "4242"
CANCELLED = "cancelled by the user (launch.py cancel); not requeued"


def end(code, start, stop, action="requeue"):
    return {"exit_code": code, "step_start": start, "step_end": stop, "action": action}


PROGRESS = end(EXIT_REQUEUE, 0, 5)
STALLED = end(EXIT_REQUEUE, 7, 7)

# (exit code, earlier end records of this job, (step_start, step_end) of this attempt, cancelled?,
#  expected action, part of the expected reason)
CASES = {
    "finished": (EXIT_FINISHED, [], (0, 9), False, "finish", "training finished"),
    "finished although cancelled": (EXIT_FINISHED, [], (0, 9), True, "finish", "training finished"),
    "bad input is never retried": (EXIT_BAD_INPUT, [], (0, 0), False, "stop", "exit code 2 is not retried"),
    "divergence is never retried": (EXIT_DIVERGED, [], (0, 3), False, "stop", "exit code 3 is not retried"),
    "a full disk is never retried": (EXIT_DISK_FULL, [], (0, 3), False, "stop",
                                     "exit code 4 is not retried (disk full or quota exceeded: free space"),
    "Ctrl-C is never retried": (EXIT_INTERRUPTED, [], (0, 3), False, "stop",
                                "exit code 130 is not retried (stopped with Ctrl-C"),
    "first stop request": (EXIT_REQUEUE, [], (0, 5), False, "requeue",
                           "stop requested (timeout or preemption); requeue 1 of 3"),
    "last requeue of the budget": (EXIT_REQUEUE, [PROGRESS, PROGRESS], (5, 9), False, "requeue", "requeue 3 of 3"),
    "budget spent": (EXIT_REQUEUE, [PROGRESS] * 3, (5, 9), False, "stop", "requeue budget spent (3 requeues)"),
    "cancelled": (EXIT_REQUEUE, [], (0, 5), True, "stop", CANCELLED),
    "crash while cancelled": (EXIT_CRASHED, [], (0, 5), True, "stop", CANCELLED),
    "first crash": (EXIT_CRASHED, [], (0, 3), False, "requeue", "crashed; requeue 1 of 3 (crash budget: 1 of 1)"),
    "crash budget": (EXIT_CRASHED, [end(EXIT_CRASHED, 0, 3)], (3, 6), False, "stop",
                     "crashed 2 times (crash budget 1 requeues)"),
    "stalls within the limit": (EXIT_REQUEUE, [STALLED], (7, 7), False, "requeue", "requeue 2 of 3"),
    "stalls over the limit": (EXIT_REQUEUE, [STALLED, STALLED], (7, 7), False, "stop",
                              "no training step of progress in 3 attempts in a row (limit 2 restarts)"),
    "progress resets the stall count": (EXIT_REQUEUE, [STALLED, PROGRESS], (7, 7), False, "requeue", "requeue 3 of 3"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_decide(case):
    code, history, (start, stop), cancelled, action, reason = CASES[case]
    ending = Ending("cancelled", CANCELLED) if cancelled else None
    got = decide(code, history + [end(code, start, stop, action=None)], POLICY, ending)
    assert got[0] == action and reason in got[1], got


def test_decide_leaves_a_job_slurm_requeued_itself_to_slurm_whatever_the_exit_code():
    node_fail = Ending("node_fail", "a node of the job failed (sacct NODE_FAIL on n[1-2]): Slurm requeued", True)
    for code in (EXIT_REQUEUE, EXIT_CRASHED, EXIT_BAD_INPUT):
        assert decide(code, [end(code, 0, 5, None)], POLICY, node_fail) == ("slurm-requeue", node_fail.reason)
    # and these attempts count against neither budget: the next stop request is requeue 1
    history = [end(EXIT_REQUEUE, 0, 5, "slurm-requeue")] * 4
    assert decide(EXIT_REQUEUE, history + [end(EXIT_REQUEUE, 5, 9, None)], POLICY, None)[1].endswith("requeue 1 of 3")


def make_attempt(run_dir, case):
    """The run directory as rank 0 (or the batch shell) finds it when the attempt has ended."""
    code, history, (start, stop), cancelled, _, _ = CASES[case]
    (run_dir / "slurm").mkdir(parents=True)
    records = [{"event": "end", "job_id": JOB, "restart": i, **h} for i, h in enumerate(history)]
    records.append({"event": "start", "job_id": JOB, "restart": len(history), "step": start})
    (run_dir / "attempts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    status = {EXIT_FINISHED: "finished", EXIT_REQUEUE: "checkpointed", EXIT_DIVERGED: "diverged"}.get(code, "failed")
    (run_dir / "state.json").write_text(json.dumps({"status": status, "step": stop}))
    if cancelled:
        RunDir(run_dir).cancel_marker(JOB).write_text("now\n")
    return code, len(history), start


def requeue_cli(repo_root, run_dir, *args, restart=0):
    return subprocess.run([sys.executable, "-m", "jobs.requeue", "--run-dir", str(run_dir), "--job-id", JOB,
                           "--restart", str(restart), *args], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, **OFFLINE}, timeout=60)


def without_time(record):
    return {k: v for k, v in record.items() if k != "time"}


@pytest.mark.parametrize("case", list(CASES))
def test_the_requeue_cli_decides_and_records_like_the_submitit_path(repo_root, tmp_path, monkeypatch, case):
    """The sbatch template's `python -m jobs.requeue end` and TrainingJob (rank 0 of the submitit
    path) give the decision of the table and append the same end record to attempts.jsonl."""
    cli_dir, job_dir = tmp_path / "cli", tmp_path / "job"
    code, restart, start = make_attempt(cli_dir, case)
    make_attempt(job_dir, case)
    proc = requeue_cli(repo_root, cli_dir, "end", "--exit-code", str(code), "--no-requeue", "--max-requeues", "3",
                       "--max-crash-requeues", "1", "--max-stalled-restarts", "2", restart=restart)
    *_, action, reason = CASES[case]
    assert f"{action}: " in proc.stdout and reason in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == job_exit_code(action, code, requeue_failed=False)

    monkeypatch.setenv("PATH", OFFLINE["PATH"])
    TrainingJob(argv=[], run_dir=str(job_dir), policy=POLICY)._finish_attempt(JOB, restart, start, code)
    cli_end = [r for r in RunDir(cli_dir).attempts() if r["event"] == "end"][-1]
    job_end = [r for r in RunDir(job_dir).attempts() if r["event"] == "end"][-1]
    assert without_time(cli_end) == without_time(job_end)
    assert (cli_end["action"], cli_end["step_start"], cli_end["restart"]) == (action, start, restart)
    assert reason in cli_end["reason"]


def test_start_records_the_attempt_and_prints_its_header(repo_root, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text(json.dumps({"status": "checkpointed", "step": 17}))
    proc = requeue_cli(repo_root, run_dir, "start", restart=2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"===== attempt 3 of job {JOB} · ") and "step 17 =====" in proc.stdout
    (start,) = RunDir(run_dir).attempts()
    assert (start["event"], start["job_id"], start["restart"], start["step"]) == ("start", JOB, 2, 17)


def test_a_crashed_attempt_records_the_step_it_reached_and_the_step_it_resumes_from(tmp_path, monkeypatch):
    """trainer.train marks a crash in state.json with the step it was at; a restart resumes from
    checkpoints/last.pt, whose step the launcher reads from the trainer's JSON sidecar (no torch)."""
    import torch

    from trainer.core import checkpoint as ckpt

    run_dir = tmp_path / "run"
    state = {key: {} for key in ckpt.REQUIRED_KEYS}
    state.update(format_version=ckpt.FORMAT_VERSION, epoch=1, step=30, batches_done=0, rng=[ckpt.capture_rng()],
                 generator={"w": torch.zeros(3)}, versions=ckpt.versions(), config={"train": {"epochs": 4}})
    ckpt.save_run_checkpoints(state, run_dir / "checkpoints", ())
    # state.json's step is last.pt's (issue 22 item 17); step_reached where the crash happened
    (run_dir / "state.json").write_text(json.dumps({"status": "failed", "step": 30, "step_reached": 37}))
    assert RunDir(run_dir).checkpoint_step() == 30
    monkeypatch.setenv("PATH", OFFLINE["PATH"])
    record = end_attempt(run_dir, JOB, 0, EXIT_CRASHED, POLICY, step_start=20)
    assert (record["step_start"], record["step_reached"], record["step_end"]) == (20, 37, 30)
    assert record["action"] == "requeue"


@pytest.mark.parametrize("recorded", [EXIT_BAD_INPUT, EXIT_DISK_FULL, EXIT_INTERRUPTED])
def test_the_exit_code_the_trainer_recorded_wins_over_torchruns_1(tmp_path, recorded):
    (tmp_path / "state.json").write_text(json.dumps({"status": "failed", "step": 3, "exit_code": recorded,
                                                     "updated": "2026-01-01T00:00:05Z"}))
    assert trainer_exit_code(1, tmp_path, True, "2026-01-01T00:00:00+00:00") == recorded
    assert decide(recorded, [end(recorded, 0, 3, action=None)], POLICY, None)[0] == "stop"
    assert trainer_exit_code(1, tmp_path, True, "2026-01-01T00:01:00+00:00") == EXIT_CRASHED  # an older record


@pytest.mark.parametrize("raw,status,stop,expected", [
    (0, "finished", False, EXIT_FINISHED),
    (1, "checkpointed", True, EXIT_REQUEUE),  # torchrun exits 1 when a rank exits 42
    (1, "checkpointed", False, EXIT_CRASHED),  # no save was asked for: not a save
    (1, "diverged", False, EXIT_DIVERGED),
    (1, "failed", False, EXIT_CRASHED),
    (1, "running", True, EXIT_CRASHED),  # asked to save, never saved
])
def test_the_trainer_exit_code_behind_torchrun(tmp_path, raw, status, stop, expected):
    (tmp_path / "state.json").write_text(json.dumps({"status": status, "step": 3, "updated": "2026-01-01T00:00:05Z"}))
    assert trainer_exit_code(raw, tmp_path, stop, "2026-01-01T00:00:00+00:00") == expected
    # a state.json written before this attempt started says nothing about it
    assert trainer_exit_code(raw, tmp_path, stop, "2026-01-01T00:01:00+00:00") in (EXIT_FINISHED, EXIT_CRASHED)


def test_outcome_headline_is_the_final_state_not_the_last_attempt_record():
    """A job cancelled while it waited to be requeued: squeue forgot it, sacct says CANCELLED, the
    last attempt record says 'requeue 1 of 5' and state.json 'checkpointed'."""
    requeued = {"event": "end", "job_id": JOB, "restart": 0, "exit_code": 42, "step_start": 0, "step_end": 40,
                "action": "requeue", "reason": "stop requested (timeout or preemption); requeue 1 of 5"}
    acct = {"State": "CANCELLED by 0", "Start": "2026-01-01T00:00:03", "End": "2026-01-01T00:00:03",
            "NodeList": "None assigned", "ExitCode": "0:0"}
    result = describe(JOB, None, None, acct, {"status": "checkpointed", "step": 40}, [requeued], 40)
    assert result.state == "cancelled" and not result.active
    assert result.headline.startswith("cancelled while it waited to be requeued (cancelled by 0)")
    assert "saved at step 40" in result.headline and "requeue 1 of 5" not in result.headline
    waiting = describe(JOB, "PENDING", "BeginTime", None, {"status": "checkpointed", "step": 40}, [requeued], 40)
    assert waiting.state == "requeued" and waiting.active and "it resumes at step 40" in waiting.headline
    stopped = dict(requeued, action="stop", reason="requeue budget spent (5 requeues); resubmit to continue")
    done = describe(JOB, None, None, {"State": "COMPLETED", "NodeList": "n1"}, {"status": "checkpointed"},
                    [stopped], 40)
    assert (done.state, done.headline) == ("stopped", f"stopped, not requeued: {stopped['reason']}")


def test_a_job_that_died_without_an_end_record_does_not_show_the_previous_attempts_reason():
    """Attempt 1 was requeued; attempt 2 was SIGKILLed (OOM, scancel of the step, lost batch host): it
    has a start record and no end record, state.json still says running."""
    requeued = {"event": "end", "job_id": JOB, "restart": 0, "exit_code": 42, "step_start": 0, "step_end": 40,
                "action": "requeue", "reason": "stop requested (timeout or preemption); requeue 1 of 5"}
    starts = [{"event": "start", "job_id": JOB, "restart": 0, "step": 0},
              {"event": "start", "job_id": JOB, "restart": 1, "step": 40}]
    acct = {"State": "FAILED", "ExitCode": "0:9", "NodeList": "n1", "Start": "2026-01-01T00:00:03"}
    result = describe(JOB, None, None, acct, {"status": "running", "step": 55}, [requeued], 40, starts=starts)
    assert result.state == "failed" and not result.active
    assert "attempt 2 ended without an end record" in result.headline
    assert "requeue 1 of 5" not in result.headline and f"logs {JOB} --err" in result.headline
    forgotten = describe(JOB, None, None, None, {"status": "running", "step": 55}, [requeued], 40, starts=starts)
    assert forgotten.state == "ended" and "attempt 2 ended without an end record" in forgotten.headline
    # the same records while attempt 2 runs: it is running, nothing else
    running = describe(JOB, "RUNNING", "None", None, {"status": "running", "step": 55}, [requeued], 40, starts=starts)
    assert running.state == "running" and running.active


def test_with_sacct_silent_the_headline_says_how_the_job_ended_is_unknown():
    """slurmdbd down: the job is not in the queue and sacct does not answer; not 'Slurm does not know'."""
    finished = {"event": "end", "job_id": JOB, "restart": 0, "exit_code": 0, "step_start": 0, "step_end": 40,
                "action": "finish", "reason": "training finished"}
    start = [{"event": "start", "job_id": JOB, "restart": 0, "step": 0}]
    died = describe(JOB, None, None, None, {"status": "running", "step": 7}, [], 0, starts=start, sacct_silent=True)
    assert died.state == "unknown" and not died.active
    assert "sacct does not answer (slurmdbd down?)" in died.headline and "no accounting" not in died.headline
    assert f"sacct -j {JOB}" in died.headline and "attempt 1 ended without an end record" in died.headline
    done = describe(JOB, None, None, None, {"status": "finished", "step": 40}, [finished], 40, starts=start,
                    sacct_silent=True)
    assert done.state == "finished"  # our own end record says it: no need for sacct


def test_a_requeued_headline_says_where_it_resumes_once():
    preempted = {"event": "end", "job_id": JOB, "restart": 0, "exit_code": 42, "step_start": 0, "step_end": 40,
                 "action": "slurm-requeue", "reason": "preempted, Slurm requeued the job itself (PreemptMode=REQUEUE); "
                 "it resumes from the last save"}
    waiting = describe(JOB, "PENDING", "BeginTime", None, {"status": "checkpointed", "step": 40}, [preempted], 40)
    assert waiting.headline.count("resumes") == 1 and waiting.headline.endswith("it resumes at step 40")


def test_a_held_job_says_it_needs_a_release():
    held = describe(JOB, "PENDING", "JobHeldUser", None, {}, [], 0)
    assert held.state == "held" and held.active and held.headline.endswith(f"scontrol release {JOB}")


@pytest.mark.parametrize("first_answers,stop_signal", [
    ([None, None], ""),  # scontrol did not answer while the controller was preempting the job (CI)
    ([{"JobState": "RUNNING", "Restarts": "0"}], "SIGTERM"),  # Slurm's SIGTERM came before its state changed
])
def test_a_preempted_job_waits_for_slurm_to_say_so(tmp_path, monkeypatch, first_answers, stop_signal):
    """A preempted attempt's end record names the preemption even when scontrol's first answers do not
    (in CI it read as our own requeue and lacked ``ending``). Slurm's answers are replayed here; the
    real preemption is tests/cluster/test_cluster_endings.py's."""
    from jobs import slurm

    answers = [*first_answers, {"JobState": "COMPLETING", "Restarts": "1"}]
    monkeypatch.setattr(slurm, "job_info", lambda job_id: answers.pop(0) if len(answers) > 1 else answers[0])
    monkeypatch.setattr(slurm, "attempt_records", lambda job_id, timeout=0: [{"State": "PREEMPTED"}])
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(slurm.time, "sleep", lambda seconds: None)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = end_attempt(run_dir, JOB, 0, EXIT_REQUEUE, POLICY, step_start=0, stop_signal=stop_signal)
    assert (record["action"], record["ending"]) == ("slurm-requeue", "preempted"), record
    assert answers == [{"JobState": "COMPLETING", "Restarts": "1"}]


def test_a_time_limit_save_does_not_wait_for_slurm(tmp_path, monkeypatch):
    """USR2 (the signal lead before the time limit): the job still runs and asks for its own requeue at once."""
    from jobs import slurm

    calls = []
    monkeypatch.setattr(slurm, "job_info", lambda job_id: calls.append(job_id) or {"JobState": "RUNNING"})
    monkeypatch.setattr(slurm.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = end_attempt(run_dir, JOB, 0, EXIT_REQUEUE, POLICY, step_start=0, stop_signal="SIGUSR2")
    assert record["action"] == "requeue" and "ending" not in record and calls == [JOB]
