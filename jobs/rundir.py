"""One run directory as the launcher sees it: its paths and typed readers (no torch).

A run directory holds what the trainer writes (``state.json``, ``metrics.jsonl``, ``checkpoints/``
with each kept checkpoint's JSON sidecar, ``train.lock``) and what the launcher adds: ``slurm/``
(submitit's folder: pickles and the per-rank logs ``JOB_RANK_log.out|err``; the frozen config,
``code.json`` and the code snapshot) and ``attempts.jsonl`` (one ``start`` and one ``end`` record
per attempt, written by global rank 0 of the job). An element of a sweep lies in the sweep's root
(``ROOT/sweep.json``), whose ``slurm/`` holds the array's files and logs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from trainer.core import ckptinfo
from trainer.core.runstate import load_state, read_jsonl

SWEEP_FILE = "sweep.json"
ATTEMPTS_FILE = "attempts.jsonl"
MARKS = ("state.json", ATTEMPTS_FILE, "config.yaml", "metrics.jsonl", "checkpoints",
         "slurm/submitted_config.yaml", "slurm/JOB_*")
_JOB_FILES = (re.compile(r"(\d+(?:_\d+)?)_\d+_(?:log\.out|log\.err|result\.pkl)"),
              re.compile(r"(\d+(?:_\d+)?)_(?:submitted\.pkl|submission\.sh|sbatch\.out)"),
              re.compile(r"(\d+(?:_\d+)?)\.cancelled"))


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one JSON line and fsync (an appended line is never half-visible to readers that
    skip a last line without newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def state_step(state: dict) -> int | None:
    """The ``step`` of a state.json (or checkpoint sidecar) record, None when it has no integer one."""
    step = state.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def job_of_file(name: str) -> str | None:
    """The job id in the name of a file a job left in a slurm/ folder (JOB_0_log.out, ARRAY_TASK_0_log.out,
    JOB_submitted.pkl, ARRAY_submission.sh, JOB_sbatch.out, JOB.cancelled), else None."""
    for pattern in _JOB_FILES:
        match = pattern.fullmatch(name)
        if match:
            return match.group(1)
    return None


class RunDir:
    """A run directory's paths and readers. Reading never raises for a missing or damaged file:
    each reader says what it gives then."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def slurm(self) -> Path:
        """RUN_DIR/slurm: submitit's folder of a single run, the frozen config and the code snapshot."""
        return self.path / "slurm"

    @property
    def attempts_file(self) -> Path:
        return self.path / ATTEMPTS_FILE

    def load_state(self) -> tuple[dict, str | None]:
        """state.json and its problem: see :func:`trainer.core.runstate.load_state` (the one reader)."""
        return load_state(self.path)

    def state(self) -> dict:
        """state.json; {} when there is none or it cannot be used (the reason: :meth:`load_state`)."""
        return load_state(self.path)[0]

    def checkpoint_step(self) -> int | None:
        """The step stored in ``checkpoints/last.pt`` (where a restart resumes), from the JSON sidecar the
        trainer writes beside it (:mod:`trainer.core.ckptinfo`, torch-free); None when there is no such
        checkpoint, or no sidecar that describes it (a checkpoint of an older version, or a crash between
        the checkpoint's write and its sidecar's)."""
        info = ckptinfo.read(self.path / "checkpoints" / "last.pt")
        return None if info is None else state_step(info)

    def resume_step(self) -> int:
        """The step a (re)started attempt continues from: the checkpoint's, else state.json's (entries
        without checkpoints, e.g. jobs.probe, resume from state.json), else 0."""
        step = self.checkpoint_step()
        if step is None:
            step = state_step(self.state())
        return step or 0

    def attempts(self, event: str | None = None, job_id: str | None = None) -> list[dict]:
        """The records of attempts.jsonl (start, end, requeue_failed, evaluation, ...), oldest first,
        only those of ``event`` and ``job_id`` when given; a line being written (or cut) is skipped;
        [] when there is none."""
        return [r for r in read_jsonl(self.attempts_file) if isinstance(r, dict)
                and (event is None or r.get("event") == event) and (job_id is None or r.get("job_id") == job_id)]

    def add_attempt(self, record: dict) -> None:
        append_jsonl(self.attempts_file, record)

    def job_files(self) -> list[str]:
        """Names in RUN_DIR/slurm/ that a job left (JOB_submitted.pkl, JOB_0_log.out, JOB_sbatch.out, ...)."""
        try:
            names = [p.name for p in self.slurm.iterdir()]
        except OSError:
            return []
        return [name for name in names if job_of_file(name)]

    def looks_like_one(self) -> bool:
        """Does the path look like a run directory (something the trainer or launcher wrote is in it)?"""
        if not self.path.is_dir():
            return False
        return any((self.path / mark).exists() for mark in MARKS[:-1]) or bool(self.job_files())

    def job_folder(self, job_id: str | None) -> Path:
        """Where a job's submitit files and logs lie: RUN_DIR/slurm, or for an element of a sweep's array
        (job id ARRAYID_TASK, the run directory inside a sweep's root) the root's slurm/ folder."""
        if job_id and "_" in str(job_id) and (self.path.parent / SWEEP_FILE).is_file():
            return RunDir(self.path.parent).slurm
        return self.slurm

    def log_path(self, job_id: str, rank: int = 0, err: bool = False) -> Path:
        """submitit's log of one rank; for a job of the plain sbatch template (no submitit files) its one
        log, ``JOB_sbatch.out``, which holds every rank's output and errors."""
        folder = self.job_folder(job_id)
        plain = folder / f"{job_id}_sbatch.out"
        if plain.exists() and not (folder / f"{job_id}_submitted.pkl").exists():
            return plain
        return folder / f"{job_id}_{rank}_log.{'err' if err else 'out'}"

    def cancel_marker(self, job_id: str) -> Path:
        """RUN_DIR/slurm/JOB.cancelled: written by ``launch.py cancel`` before scancel; such a job is never requeued."""
        return self.slurm / f"{job_id}.cancelled"

    def mark_cancelled(self, job_id: str, when: str) -> None:
        """Write :meth:`cancel_marker` (``when``: the time, its content)."""
        marker = self.cancel_marker(job_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(when + "\n")

    def lock_holder(self) -> str | None:
        """The Slurm job id in the run directory's training lock (trainer/core/lock.py's train.lock), if any."""
        try:
            holder = json.loads((self.path / "train.lock").read_text())
        except (OSError, ValueError):
            return None
        job = holder.get("job_id") if isinstance(holder, dict) else None
        return str(job) if job not in (None, "", "None") else None

    def locked_out_jobs(self) -> set[str]:
        """Jobs whose attempts on this run directory were refused because another job held it."""
        return {str(a.get("job_id")) for a in self.attempts() if a.get("event") == "end" and a.get("locked_out_by")}
