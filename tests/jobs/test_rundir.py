"""jobs.rundir.RunDir: one run directory's paths and readers (what a missing or damaged file gives)."""

from __future__ import annotations

import json

from jobs.rundir import RunDir, append_jsonl, state_step
from trainer.core.runstate import read_state, write_state


def test_state_json_has_one_reader_and_says_what_a_problem_gives(tmp_path):
    run = RunDir(tmp_path)
    assert run.state() == {} and run.load_state() == ({}, None) and run.resume_step() == 0
    write_state(tmp_path, status="checkpointed", step=12)
    assert run.state()["step"] == 12 and state_step(run.state()) == 12 and run.resume_step() == 12
    (tmp_path / "state.json").write_text("{not json")
    state, problem = run.load_state()
    assert state == {} and "state.json is not valid JSON" in problem
    assert run.state() == {}  # the launcher: nothing known
    assert read_state(tmp_path) == {"status": "unknown", "error": problem}  # the trainer: the same problem, said


def test_attempts_are_filtered_by_event_and_job_and_a_cut_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    for record in ({"event": "start", "job_id": "7", "restart": 0}, {"event": "end", "job_id": "7", "restart": 0},
                   {"event": "start", "job_id": "8", "restart": 0}):
        run.add_attempt(record)
    with open(run.attempts_file, "a") as fh:
        fh.write('{"event": "end", "job_id": "8"')  # being written
    assert [a["job_id"] for a in run.attempts("start")] == ["7", "8"]
    assert run.attempts("end", "7") == [{"event": "end", "job_id": "7", "restart": 0}]
    assert run.attempts("end", "8") == []


def test_an_array_elements_logs_lie_in_the_sweeps_root(tmp_path):
    (tmp_path / "sweep.json").write_text(json.dumps({"elements": []}))
    element = RunDir(tmp_path / "lr=1")
    assert element.job_folder("500_1") == tmp_path / "slurm" and element.job_folder("42") == element.slurm
    assert element.log_path("500_1", rank=1, err=True) == tmp_path / "slurm" / "500_1_1_log.err"
    assert not element.looks_like_one()
    append_jsonl(element.attempts_file, {"event": "start", "job_id": "500_1"})
    assert element.looks_like_one()
    element.mark_cancelled("500_1", "now")
    assert element.cancel_marker("500_1").read_text() == "now\n"
