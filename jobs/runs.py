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
    """The index's records (a line that is not a record with a job id and run directory is skipped)."""
    return [r for r in read_jsonl(index_path()) if isinstance(r, dict) and isinstance(r.get("job_id"), str)
            and isinstance(r.get("run_dir"), str)]


def load_state(run_dir: Path) -> tuple[dict, str | None]:
    """(state.json as a dict, problem): ({}, None) when there is none yet; ({}, 'why') when it
    cannot be used (unreadable, not JSON, not a JSON object)."""
    path = Path(run_dir) / "state.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        return {}, f"{path} cannot be read ({exc.strerror})"
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        return {}, f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})"
    if not isinstance(state, dict):
        return {}, f"{path} holds a JSON {type(state).__name__}, not an object"
    return state, None


def read_state(run_dir: Path) -> dict:
    return load_state(run_dir)[0]


def state_step(state: dict) -> int | None:
    step = state.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


class _Opaque:
    """Stands in for every class of a checkpoint's pickle (tensors, NumPy, ...) when peeking."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def checkpoint_step(run_dir: Path) -> int | None:
    """The step stored in ``checkpoints/last.pt`` (where a restart resumes), read without torch;
    None when there is no such checkpoint or it cannot be read this way.

    torch.save writes a zip archive whose ``*/data.pkl`` holds the state dict; it is unpickled with
    every class replaced by :class:`_Opaque` and tensor storages by None, so nothing is run."""
    path = Path(run_dir) / "checkpoints" / "last.pt"
    if not path.is_file():
        return None
    import collections
    import pickle
    import zipfile  # imported here: login-node commands that never peek stay fast

    class PeekUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            return _Opaque

        def persistent_load(self, pid):
            return None

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                return None
            with archive.open(name) as fh:
                state = PeekUnpickler(fh).load()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError):
        return None
    return state_step(state) if isinstance(state, dict) else None


def resume_step(run_dir: Path) -> int:
    """The step a (re)started attempt continues from: the checkpoint's, else state.json's (entries
    without checkpoints, e.g. jobs.probe, resume from state.json), else 0."""
    step = checkpoint_step(run_dir)
    if step is None:
        step = state_step(read_state(run_dir))
    return step or 0


RUN_DIR_MARKS = ("state.json", "attempts.jsonl", "config.yaml", "metrics.jsonl", "checkpoints",
                 "slurm/submitted_config.yaml", "slurm/JOB_*")


def _slurm_job_files(run_dir: Path) -> list[str]:
    """Names in RUN_DIR/slurm/ that a job left (JOB_submitted.pkl, JOB_0_log.out, JOB_sbatch.out, ...)."""
    try:
        names = [p.name for p in slurm_folder(run_dir).iterdir()]
    except OSError:
        return []
    return [name for name in names if name.split("_", 1)[0].split(".", 1)[0].isdigit() and not name.isdigit()]


def is_run_dir(path: Path) -> bool:
    """Does ``path`` look like a run directory (something the trainer or launcher wrote is in it)?"""
    path = Path(path)
    if not path.is_dir():
        return False
    return any((path / mark).exists() for mark in RUN_DIR_MARKS[:-1]) or bool(_slurm_job_files(path))


def attempts_path(run_dir: Path) -> Path:
    return Path(run_dir) / "attempts.jsonl"


def read_attempts(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(attempts_path(run_dir)) if isinstance(r, dict)]


def slurm_folder(run_dir: Path) -> Path:
    return Path(run_dir) / "slurm"


def log_path(run_dir: Path, job_id: str, rank: int = 0, err: bool = False) -> Path:
    return slurm_folder(run_dir) / f"{job_id}_{rank}_log.{'err' if err else 'out'}"


def cancel_marker(run_dir: Path, job_id: str) -> Path:
    return slurm_folder(run_dir) / f"{job_id}.cancelled"


def job_ids_of(run_dir: Path) -> set[str]:
    """Every job id this run directory or the submission index connects with it: the index, the
    attempt records, and Slurm's files in RUN_DIR/slurm/ (JOB_submitted.pkl, JOB_0_log.out,
    JOB_sbatch.out)."""
    run_dir = Path(run_dir).resolve()
    ids = {sub["job_id"] for sub in submissions() if Path(sub["run_dir"]).resolve() == run_dir}
    ids |= {str(a["job_id"]) for a in read_attempts(run_dir) if a.get("job_id")}
    ids |= {name.split("_", 1)[0].split(".", 1)[0] for name in _slurm_job_files(run_dir)}
    return ids


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
    existing = [p for p in candidates if p.is_dir()]
    if not existing:
        raise LaunchError(f"{target!r} is neither a job id, a run directory nor a run name under logs/runs")
    known = {Path(sub["run_dir"]).resolve(): sub["job_id"] for sub in subs}
    run_dir = next((p.resolve() for p in existing if p.resolve() in known or is_run_dir(p)), None)
    if run_dir is None:
        raise LaunchError(f"{existing[0].resolve()} is not a run directory (none of {', '.join(RUN_DIR_MARKS)} "
                          "in it); give a job id, a run directory or a run name under logs/runs")
    if run_dir in known:
        return known[run_dir], run_dir
    jobs = [a.get("job_id") for a in read_attempts(run_dir) if a.get("job_id")]
    return (jobs[-1] if jobs else None), run_dir
