import json

import pytest

from trainer.core.runstate import MetricsLog, read_metrics, read_state, write_state


def test_state_merges_and_rejects_unknown_status(tmp_path):
    write_state(tmp_path, status="running", step=3)
    state = write_state(tmp_path, step=5, best={"pesq": float("nan")})
    assert state["status"] == "running" and state["step"] == 5 and state["best"] == {"pesq": None}
    assert read_state(tmp_path)["updated"]
    with pytest.raises(ValueError, match="status 'exploded'"):
        write_state(tmp_path, status="exploded")


def test_metrics_truncate_after_resume_point(tmp_path):
    log = MetricsLog(tmp_path)
    for step in range(1, 7):
        log.write({"kind": "step", "step": step, "loss": 1.0 / step})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "step", "st')  # a record cut by a crash
    assert MetricsLog(tmp_path).truncate_after(4) == 3
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())


def test_truncate_logs_covers_a_fresh_start_and_every_registered_writer(tmp_path):
    """Issue item 5: a (re)start cuts every step log to what its checkpoint has seen (nothing for a
    fresh start); a later writer (e.g. TensorBoard) hooks in with register_log_truncator."""
    from trainer.core.runstate import register_log_truncator, truncate_logs

    log = MetricsLog(tmp_path)
    for step in (1, 2):
        log.write({"kind": "step", "step": step, "loss": 1.0})
    log.close()
    seen = []
    hook = register_log_truncator(lambda run_dir, step: seen.append((run_dir, step)) or 7)
    try:
        assert truncate_logs(tmp_path, 0) == 2 + 7
    finally:
        hook()  # unregister
    assert read_metrics(tmp_path) == [] and seen == [(tmp_path, 0)]
    assert truncate_logs(tmp_path, 0) == 0  # idempotent, the hook is gone
