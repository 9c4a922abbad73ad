"""The run directory's plain-text state: ``state.json`` and ``metrics.jsonl`` (no torch).

Login-node commands (``launch.py status/list/logs``) and ``trainer.plot`` read these files;
only rank 0 of the training job writes them.

- ``state.json`` (atomic): status (running | checkpointed | finished | failed | diverged | stopped),
  step, epoch, epochs, best (metric -> value; only values whose ``best_*`` checkpoint was written),
  updated (ISO time), job_id, world_size, and ``exit_code`` when an attempt stopped or failed (the
  trainer's own code, which torchrun hides behind its 1; ``trainer/core/exitcodes.py``).
  ``stopped``: ended by Ctrl-C (not requeued; run the same command to continue from ``last``).
- ``metrics.jsonl``: one JSON object per line; step records carry ``kind: "step"``, ``step`` and
  ``loss``; epoch records carry ``kind: "epoch"``, ``epoch``, ``step`` and the validation metrics.

Step logs hold one record per step: a (re)start calls :func:`truncate_logs` with the step of the
checkpoint it starts from (0 for a fresh start), which cuts ``metrics.jsonl`` and every writer
registered with :func:`register_log_truncator` (e.g. a TensorBoard writer) back to that step.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.core.io import append_line, atomic_write_text

STATE_FILE = "state.json"
METRICS_FILE = "metrics.jsonl"
STATUSES = ("running", "checkpointed", "finished", "failed", "diverged", "stopped")
FINAL_STATUSES = ("finished", "failed", "diverged", "stopped")  # nothing runs and nothing is requeued


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/Inf become null (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_state(run_dir: str | Path, **fields: Any) -> dict:
    """Merge ``fields`` into state.json (atomically) and return the new state."""
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"status {fields['status']!r} is not one of {STATUSES}")
    state = read_state(run_dir)
    state.update(_clean(fields))
    state["updated"] = now_iso()
    atomic_write_text(Path(run_dir) / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")
    return state


def load_state(run_dir: str | Path) -> tuple[dict, str | None]:
    """(state.json as a dict, problem): ({}, None) when there is none yet; ({}, 'why') when it
    cannot be used (unreadable, not JSON, not a JSON object). The one reader of state.json, for the
    trainer (:func:`read_state`) and the launcher (``jobs.rundir.RunDir.state``/``load_state``)."""
    path = Path(run_dir) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"{path} cannot be read ({exc.strerror})"
    try:
        state = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
        return {}, f"{path} is not valid JSON ({where})"
    if not isinstance(state, dict):
        return {}, f"{path} holds a JSON {type(state).__name__}, not an object"
    return state, None


def read_state(run_dir: str | Path) -> dict:
    """state.json for the trainer, or ``{"status": "unknown", "error": why}`` when it cannot be used
    (:func:`load_state`'s problem; the launcher's ``RunDir.state`` gives {} then)."""
    state, problem = load_state(run_dir)
    return {"status": "unknown", "error": problem} if problem else state


class MetricsLog:
    """Append-only JSON-lines log; flushed per record so ``logs --follow`` and plots see it live."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._fh = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self._fh = open(self.path, "a")
        append_line(self._fh, self.path, json.dumps(_clean(record)) + "\n")

    def truncate_after(self, step: int) -> int:
        """Drop records from after ``step`` (work an interrupted run did past its last checkpoint).

        Returns the number of records dropped. The rewrite is atomic.
        """
        if not self.enabled or not self.path.exists():
            return 0
        kept, num_dropped = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash mid-write
                num_dropped += 1
                continue
            record_step = record.get("step", 0) if isinstance(record, dict) else None
            if not isinstance(record_step, (int, float)) or record_step > step:
                num_dropped += 1
            else:
                kept.append(line)
        if num_dropped:
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return num_dropped

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:  # e.g. a full disk: every record was flushed (or reported) when written
                pass
            self._fh = None


_log_truncators: list[Callable[[Path, int], int]] = []


def register_log_truncator(truncate: Callable[[Path, int], int]) -> Callable[[], None]:
    """Add a step-log writer's ``truncate(run_dir, step) -> records dropped`` to :func:`truncate_logs`
    (e.g. a TensorBoard writer's). Returns a function that unregisters it."""
    _log_truncators.append(truncate)
    return lambda: _log_truncators.remove(truncate) if truncate in _log_truncators else None


def truncate_logs(run_dir: str | Path, step: int) -> int:
    """Cut every step log of ``run_dir`` to what a run starting at ``step`` has seen: records from
    after ``step`` were written by an attempt that died before saving them (0: a fresh start keeps
    nothing). Only the process that writes the logs (rank 0) calls it. Returns records dropped."""
    run_dir = Path(run_dir)
    dropped = MetricsLog(run_dir).truncate_after(step)
    for truncate in list(_log_truncators):
        dropped += truncate(run_dir, step)
    return dropped


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file; a line being written right now (or cut by a crash) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_metrics(run_dir: str | Path) -> list[dict]:
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def _kind_marks(kind: str) -> tuple[bytes, ...]:
    """How ``"kind": KIND`` appears in a line: as :class:`MetricsLog` writes it, and compact."""
    return tuple(json.dumps({"kind": kind}, separators=seps)[1:-1].encode() for seps in ((", ", ": "), (",", ":")))


def read_epoch_records(run_dir: str | Path) -> list[dict]:
    """The epoch records (``kind: "epoch"``) of ``metrics.jsonl``, oldest first; [] when there is none or
    it cannot be read. Only the lines holding the kind's mark are parsed, so the step records of a
    large log are skipped unread (``launch.py compare`` reads a whole sweep's logs at once); a last
    line without its newline (being written, or cut) is skipped."""
    try:
        data = (Path(run_dir) / METRICS_FILE).read_bytes()
    except OSError:
        return []
    found: dict[int, dict] = {}  # line start -> record
    for mark in _kind_marks("epoch"):
        position = data.find(mark)
        while position != -1:
            start, end = data.rfind(b"\n", 0, position) + 1, data.find(b"\n", position)
            if end == -1:
                break
            try:
                record = json.loads(data[start:end])
            except ValueError:
                record = None
            if isinstance(record, dict) and record.get("kind") == "epoch":
                found[start] = record
            position = data.find(mark, end)
    return [found[start] for start in sorted(found)]
