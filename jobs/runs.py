"""Run directories and the submission index, read and written without torch.

A run directory holds what the trainer writes (``state.json``, ``metrics.jsonl``, ...) and what
the launcher adds: ``slurm/`` (submitit's folder: pickles and the per-rank logs
``JOB_RANK_log.out|err``; the frozen config, ``code.json`` and the code snapshot) and
``attempts.jsonl`` (one ``start`` and one ``end`` record per attempt, written by global rank 0 of
the job). The index ``logs/submissions.jsonl`` maps job ids to run directories for
``logs``/``status``/``list`` (``SEGAN_JOB_INDEX`` moves it); its records may add ``kind``
(``evaluation`` for a job chained after training), ``sweep`` (the sweep's root) and ``after``.

A sweep's root (``RUN_ROOT/sweep.json``) holds one run directory per element; the array's
submitit files and logs (``ARRAY_TASK_RANK_log.out``) lie in the root's ``slurm/``: an element's
job id is ``ARRAYID_TASK`` (:func:`job_folder`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from jobs import slurm
from jobs.profiles import ROOT
from trainer.core import ckptinfo
from trainer.core.runstate import load_state, now_iso, read_jsonl  # noqa: F401 (re-exported for jobs/)


class LaunchError(ValueError):
    """A problem the user can fix; printed as one line, exit code 2."""


def sbatch_refused(exc: Exception, what: str) -> LaunchError:
    """submitit wraps sbatch's refusal of ``what`` in a long message; keep its last line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return LaunchError(f"sbatch refused {what}: {lines[-1] if lines else exc}")


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


JOB_ID = re.compile(r"\d+(?:_\d+)?")  # a job, or one element of a job array: ARRAYID_TASK


def record_submission(job_id: str, run_dir: Path, name: str, cluster: str, **extra) -> None:
    append_jsonl(index_path(), {"job_id": str(job_id), "run_dir": str(run_dir), "name": name,
                                "cluster": cluster, "submitted": now_iso(), **extra})


_INDEX_CACHE: dict[tuple, list[dict]] = {}


def submissions() -> list[dict]:
    """The index's records (a line that is not a record with a job id and run directory is skipped).

    Read once per process while the file is unchanged (same size and mtime): ``compare`` of 50 runs
    asks for each of them."""
    path = index_path()
    try:
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _INDEX_CACHE:
        return list(_INDEX_CACHE[key])
    records = [r for r in read_jsonl(path) if isinstance(r, dict) and isinstance(r.get("job_id"), str)
               and isinstance(r.get("run_dir"), str)]
    if key is not None:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = records
    return list(records)


def training_submissions() -> list[dict]:
    """The index's training jobs (not the evaluation jobs chained after them)."""
    return [r for r in submissions() if r.get("kind", "training") == "training"]


SWEEP_FILE = "sweep.json"


def read_sweep(root: Path) -> dict | None:
    """``ROOT/sweep.json`` (the grid, and each element's run directory and job id), None if there is none."""
    try:
        value = json.loads((Path(root) / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("elements"), list) else None


def resubmit_advice(run_dir: Path) -> str:
    """How to continue a run that Slurm will not run again: resubmit it with the same --run-dir, or,
    for an element of a sweep, rerun the sweep's command (its finished elements are skipped)."""
    root = Path(run_dir).parent
    sweep = read_sweep(root)
    members = {str(Path(e.get("run_dir", "")).name) for e in (sweep or {}).get("elements", []) if isinstance(e, dict)}
    if sweep is None or Path(run_dir).name not in members:
        return "resubmit with the same --run-dir"
    command = sweep.get("command") or f"python launch.py sweep ... --run-dir {root}"
    return f"rerun the sweep's command, which skips its finished elements ({command})"


def sweep_submissions(sweep: dict, key: str = "arrays", element_key: str = "job_id") -> str:
    """The sweep's submissions in a phrase: 'array 120', 'arrays 120, 131', 'array 120 and job 140' (a
    resubmission with one element left submits a job of its own, not an array); ``key`` and
    ``element_key`` name the evaluation jobs instead ("evaluation_arrays", "evaluation_job_id")."""
    ids = [str(a) for a in sweep.get(key) or []]
    elements = [str(e.get(element_key)) for e in sweep.get("elements") or [] if isinstance(e, dict)]
    singles = {job for job in ids if job in elements and not any(e.startswith(job + "_") for e in elements)}
    arrays, jobs = [i for i in ids if i not in singles], [i for i in ids if i in singles]
    return " and ".join(f"{word if len(group) == 1 else word + 's'} {', '.join(group)}"
                        for word, group in (("array", arrays), ("job", jobs)) if group)


def is_sweep_root(path: Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def find_sweep(target: str | None) -> tuple[Path, dict] | None:
    """A sweep named by its root, its name (under logs/runs, or in the index), or its array job id (or its
    evaluation array's) -> (root, sweep.json); None when ``target`` is not a sweep."""
    if not target:
        return None
    for candidate in (Path(target), ROOT / "logs" / "runs" / target, Path("logs") / "runs" / target):
        record = read_sweep(candidate)
        if record is not None:
            return candidate.resolve(), record
    if "/" in target:  # a path that holds no sweep.json
        return None
    for root in dict.fromkeys(sub["sweep"] for sub in reversed(submissions()) if isinstance(sub.get("sweep"), str)):
        record = read_sweep(Path(root))
        if record is not None and target in (record.get("name"), str(record.get("array_job_id")),
                                             *evaluation_arrays(record)):
            return Path(root), record
    return None


def evaluation_arrays(sweep: dict) -> list[str]:
    """Every evaluation array (or single evaluation job) a sweep's submissions chained, oldest first."""
    found = [str(a) for a in sweep.get("evaluation_arrays") or []]
    latest = (sweep.get("evaluation") or {}).get("array_job_id")
    return found + ([str(latest)] if latest and str(latest) not in found else [])


def sweep_target(target: str | None) -> tuple[Path, dict] | None:
    """The sweep ``target`` names, unless it is the id of a job in the index (a job id wins)."""
    if not target or (JOB_ID.fullmatch(target) and any(s["job_id"] == target for s in submissions())):
        return None
    return find_sweep(target)


def read_state(run_dir: Path) -> dict:
    return load_state(run_dir)[0]


def state_step(state: dict) -> int | None:
    step = state.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def checkpoint_step(run_dir: Path) -> int | None:
    """The step stored in ``checkpoints/last.pt`` (where a restart resumes), from the JSON sidecar the
    trainer writes beside it (:mod:`trainer.core.ckptinfo`, torch-free); None when there is no such
    checkpoint, or no sidecar that describes it (a checkpoint of an older version, or a crash between
    the checkpoint's write and its sidecar's)."""
    info = ckptinfo.read(Path(run_dir) / "checkpoints" / "last.pt")
    return None if info is None else state_step(info)


def resume_step(run_dir: Path) -> int:
    """The step a (re)started attempt continues from: the checkpoint's, else state.json's (entries
    without checkpoints, e.g. jobs.probe, resume from state.json), else 0."""
    step = checkpoint_step(run_dir)
    if step is None:
        step = state_step(read_state(run_dir))
    return step or 0


RUN_DIR_MARKS = ("state.json", "attempts.jsonl", "config.yaml", "metrics.jsonl", "checkpoints",
                 "slurm/submitted_config.yaml", "slurm/JOB_*")


_JOB_FILES = (re.compile(r"(\d+(?:_\d+)?)_\d+_(?:log\.out|log\.err|result\.pkl)"),
              re.compile(r"(\d+(?:_\d+)?)_(?:submitted\.pkl|submission\.sh|sbatch\.out)"),
              re.compile(r"(\d+(?:_\d+)?)\.cancelled"))


def job_of_file(name: str) -> str | None:
    """The job id in the name of a file a job left in a slurm/ folder (JOB_0_log.out, ARRAY_TASK_0_log.out,
    JOB_submitted.pkl, ARRAY_submission.sh, JOB_sbatch.out, JOB.cancelled), else None."""
    for pattern in _JOB_FILES:
        match = pattern.fullmatch(name)
        if match:
            return match.group(1)
    return None


def _slurm_job_files(run_dir: Path) -> list[str]:
    """Names in RUN_DIR/slurm/ that a job left (JOB_submitted.pkl, JOB_0_log.out, JOB_sbatch.out, ...)."""
    try:
        names = [p.name for p in slurm_folder(run_dir).iterdir()]
    except OSError:
        return []
    return [name for name in names if job_of_file(name)]


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


def job_folder(run_dir: Path, job_id: str | None) -> Path:
    """Where a job's submitit files and logs lie: RUN_DIR/slurm, or for an element of a sweep's array
    (job id ARRAYID_TASK, the run directory inside a sweep's root) the root's slurm/ folder."""
    run_dir = Path(run_dir)
    if job_id and "_" in str(job_id) and is_sweep_root(run_dir.parent):
        return slurm_folder(run_dir.parent)
    return slurm_folder(run_dir)


def log_path(run_dir: Path, job_id: str, rank: int = 0, err: bool = False) -> Path:
    """submitit's log of one rank; for a job of the plain sbatch template (no submitit files) its one
    log, ``JOB_sbatch.out``, which holds every rank's output and errors."""
    folder = job_folder(run_dir, job_id)
    plain = folder / f"{job_id}_sbatch.out"
    if plain.exists() and not (folder / f"{job_id}_submitted.pkl").exists():
        return plain
    return folder / f"{job_id}_{rank}_log.{'err' if err else 'out'}"


def lock_holder(run_dir: Path) -> str | None:
    """The Slurm job id in the run directory's training lock (trainer/core/lock.py's train.lock), if any."""
    try:
        holder = json.loads((Path(run_dir) / "train.lock").read_text())
    except (OSError, ValueError):
        return None
    job = holder.get("job_id") if isinstance(holder, dict) else None
    return str(job) if job not in (None, "", "None") else None


def locked_out_jobs(run_dir: Path) -> set[str]:
    """Jobs whose attempts on this run directory were refused because another job held it."""
    return {str(a.get("job_id")) for a in read_attempts(run_dir) if a.get("event") == "end" and a.get("locked_out_by")}


def cancel_marker(run_dir: Path, job_id: str) -> Path:
    return slurm_folder(run_dir) / f"{job_id}.cancelled"


def job_ids_of(run_dir: Path) -> set[str]:
    """Every job id this run directory or the submission index connects with it: the index, the
    attempt records, and Slurm's files in RUN_DIR/slurm/ (JOB_submitted.pkl, JOB_0_log.out,
    JOB_sbatch.out)."""
    run_dir = Path(run_dir).resolve()
    ids = {sub["job_id"] for sub in submissions() if Path(sub["run_dir"]).resolve() == run_dir}
    ids |= {str(a["job_id"]) for a in read_attempts(run_dir) if a.get("job_id")}
    ids |= {job_of_file(name) for name in _slurm_job_files(run_dir)}
    sweep = read_sweep(run_dir.parent)
    for element in (sweep or {}).get("elements", []):
        if isinstance(element, dict) and element.get("run_dir") and Path(element["run_dir"]).resolve() == run_dir:
            ids |= {str(element[key]) for key in ("job_id", "evaluation_job_id") if element.get(key)}
    return ids


def plain_sbatch_run_dir(job_id: str) -> Path | None:
    """The run directory of a job submitted with ``sbatch`` from an ``--emit-sbatch`` script (not in the
    index): its log is RUN_DIR/slurm/JOB_sbatch.out, as Slurm knows it while it remembers the job."""
    log = slurm.log_of(job_id)
    if log and Path(log).name == f"{job_id}_sbatch.out" and Path(log).parent.name == "slurm":
        return Path(log).parent.parent
    return None


def resolve(target: str | None) -> tuple[str | None, Path]:
    """JOB id, run directory or run name (None: the latest submission) -> (job id, run dir)."""
    subs = submissions()
    if target is None:
        trained = [sub for sub in subs if sub.get("kind", "training") == "training"]
        if not trained:
            raise LaunchError(f"no submissions recorded yet in {index_path()}; give a job id or run directory")
        last = trained[-1]
        return last["job_id"], Path(last["run_dir"])
    if JOB_ID.fullmatch(target):
        for sub in reversed(subs):
            if sub["job_id"] == target:
                return target, Path(sub["run_dir"])
        run_dir = plain_sbatch_run_dir(target)
        if run_dir is not None:
            return target, run_dir
        raise LaunchError(f"job {target} was not submitted from here (not in {index_path()}); "
                          "give its run directory instead")
    candidates = [Path(target), ROOT / "logs" / "runs" / target]
    existing = [p for p in candidates if p.is_dir()]
    if not existing:
        raise LaunchError(f"{target!r} is neither a job id, a run directory nor a run name under logs/runs")
    known = {Path(sub["run_dir"]).resolve(): sub["job_id"] for sub in subs if sub.get("kind", "training") == "training"}
    for path in existing:  # a job locked out of the run directory is not the one to report or cancel
        shut_out = locked_out_jobs(path)
        if shut_out and known.get(path.resolve()) in shut_out:
            others = [sub["job_id"] for sub in subs if Path(sub["run_dir"]).resolve() == path.resolve()
                      and sub.get("kind", "training") == "training" and sub["job_id"] not in shut_out]
            if others:
                known[path.resolve()] = others[-1]
    run_dir = next((p.resolve() for p in existing if p.resolve() in known or is_run_dir(p)), None)
    if run_dir is None:
        raise LaunchError(f"{existing[0].resolve()} is not a run directory (none of {', '.join(RUN_DIR_MARKS)} "
                          "in it); give a job id, a run directory or a run name under logs/runs")
    if run_dir in known:
        return known[run_dir], run_dir
    jobs = [a.get("job_id") for a in read_attempts(run_dir) if a.get("job_id")]
    return (jobs[-1] if jobs else None), run_dir
