import json

import pytest

from trainer.core.runstate import MetricsLog, read_epoch_records, read_metrics, read_state, write_state


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


def test_epoch_records_skip_step_records_and_a_line_being_written(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(
        '{"kind": "step", "step": 1}\n{"kind": "epoch", "epoch": 0, "valid_pesq": 1.5}\n'
        '{"kind":"step","note":"kind: epoch"}\n{"kind": "epoch", "epoch": 1, "valid_pe')
    assert read_epoch_records(tmp_path) == [{"kind": "epoch", "epoch": 0, "valid_pesq": 1.5}]
    compact = tmp_path / "compact"
    compact.mkdir()
    (compact / "metrics.jsonl").write_text('{"kind":"epoch","epoch":3,"valid_pesq":2.0}\n')
    assert read_epoch_records(compact)[0]["epoch"] == 3
    assert read_epoch_records(tmp_path / "missing") == []


def test_epoch_records_are_read_as_the_metrics_log_writes_them(tmp_path):
    """The reader of compare (jobs/) and the writer (the trainer) are one module's: what MetricsLog
    writes, read_epoch_records finds, in order, and nothing else."""
    log = MetricsLog(tmp_path)
    for step in range(1, 7):
        log.write({"kind": "step", "step": step, "loss": 1.0 / step})
        if step % 3 == 0:
            log.write({"kind": "epoch", "epoch": step // 3 - 1, "step": step, "valid_pesq": step / 4})
    log.close()
    records = read_epoch_records(tmp_path)
    assert records == [r for r in read_metrics(tmp_path) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in records] == [0, 1]
