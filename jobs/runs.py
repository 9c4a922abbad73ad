"""Run directories and the submission index, read and written without torch.

A run directory holds what the trainer writes (``state.json``, ``metrics.jsonl``, ...) and what
the launcher adds: ``slurm/`` (submitit's folder: pickles and the per-rank logs
``JOB_RANK_log.out|err``) and ``attempts.jsonl`` (one ``start`` and one ``end`` record per
attempt, written by global rank 0 of the job). The index ``logs/submissions.jsonl`` maps job
ids to run directories for ``logs``/``status``/``list`` (``SEGAN_JOB_INDEX`` moves it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from jobs.profiles import ROOT
from trainer.core.runstate import now_iso, read_jsonl  # noqa: F401 (re-exported for jobs/)


class LaunchError(ValueError):
    """A problem the user can fix; printed as one line, exit code 2."""


def index_path() -> Path:
    return Path(os.environ.get("SEGAN_JOB_INDEX") or ROOT / "logs" / "submissions.jsonl")


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and fsync (an appended line is never half-visible to readers that
    skip a last line without newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def record_submission(job_id: str, run_dir: Path, name: str, cluster: str) -> None:
    append_jsonl(index_path(), {"job_id": str(job_id), "run_dir": str(run_dir), "name": name,
                                "cluster": cluster, "submitted": now_iso()})


def submissions() -> list[dict]:
    return read_jsonl(index_path())


def read_state(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / "state.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def attempts_path(run_dir: Path) -> Path:
    return Path(run_dir) / "attempts.jsonl"


def read_attempts(run_dir: Path) -> list[dict]:
    return read_jsonl(attempts_path(run_dir))


def slurm_folder(run_dir: Path) -> Path:
    return Path(run_dir) / "slurm"


def log_path(run_dir: Path, job_id: str, rank: int = 0, err: bool = False) -> Path:
    return slurm_folder(run_dir) / f"{job_id}_{rank}_log.{'err' if err else 'out'}"


def cancel_marker(run_dir: Path, job_id: str) -> Path:
    return slurm_folder(run_dir) / f"{job_id}.cancelled"


def resolve(target: str | None) -> tuple[str | None, Path]:
    """JOB id, run directory or run name (None: the latest submission) -> (job id, run dir)."""
    subs = submissions()
    if target is None:
        if not subs:
            raise LaunchError(f"no submissions recorded yet in {index_path()}; give a job id or run directory")
        last = subs[-1]
        return last["job_id"], Path(last["run_dir"])
    if target.isdigit():
        for sub in reversed(subs):
            if sub["job_id"] == target:
                return target, Path(sub["run_dir"])
        raise LaunchError(f"job {target} was not submitted from here (not in {index_path()}); "
                          "give its run directory instead")
    candidates = [Path(target), ROOT / "logs" / "runs" / target]
    run_dir = next((p for p in candidates if p.is_dir()), None)
    if run_dir is None:
        raise LaunchError(f"{target!r} is neither a job id, a run directory nor a run name under logs/runs")
    run_dir = run_dir.resolve()
    for sub in reversed(subs):
        if Path(sub["run_dir"]).resolve() == run_dir:
            return sub["job_id"], run_dir
    jobs = [a.get("job_id") for a in read_attempts(run_dir) if a.get("job_id")]
    return (jobs[-1] if jobs else None), run_dir
