"""The submission index, sweeps and finding a run directory from a job id or name (no torch).

One run directory's paths and readers are :class:`jobs.rundir.RunDir`'s. The index
``logs/submissions.jsonl`` maps job ids to run directories for
``logs``/``status``/``list`` (``SEGAN_JOB_INDEX`` moves it); its records may add ``kind``
(``evaluation`` for a job chained after training), ``sweep`` (the sweep's root) and ``after``.

A sweep's root (``RUN_ROOT/sweep.json``) holds one run directory per element; the array's
submitit files and logs (``ARRAY_TASK_RANK_log.out``) lie in the root's ``slurm/``: an element's
job id is ``ARRAYID_TASK`` (:meth:`jobs.rundir.RunDir.job_folder`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from jobs import ROOT, slurm
from jobs.rundir import MARKS, SWEEP_FILE, RunDir, append_jsonl, job_of_file
from trainer.core.runstate import now_iso, read_jsonl  # noqa: F401 (re-exported for jobs/)


class LaunchError(ValueError):
    """A problem the user can fix; printed as one line, exit code 2."""


def sbatch_refused(exc: Exception, what: str) -> LaunchError:
    """submitit wraps sbatch's refusal of ``what`` in a long message; keep its last line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return LaunchError(f"sbatch refused {what}: {lines[-1] if lines else exc}")


def index_path() -> Path:
    return Path(os.environ.get("SEGAN_JOB_INDEX") or ROOT / "logs" / "submissions.jsonl")


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


def job_ids_of(run_dir: Path) -> set[str]:
    """Every job id this run directory or the submission index connects with it: the index, the
    attempt records, and Slurm's files in RUN_DIR/slurm/ (JOB_submitted.pkl, JOB_0_log.out,
    JOB_sbatch.out)."""
    run_dir = Path(run_dir).resolve()
    ids = {sub["job_id"] for sub in submissions() if Path(sub["run_dir"]).resolve() == run_dir}
    ids |= {str(a["job_id"]) for a in RunDir(run_dir).attempts() if a.get("job_id")}
    ids |= {job_of_file(name) for name in RunDir(run_dir).job_files()}
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
        shut_out = RunDir(path).locked_out_jobs()
        if shut_out and known.get(path.resolve()) in shut_out:
            others = [sub["job_id"] for sub in subs if Path(sub["run_dir"]).resolve() == path.resolve()
                      and sub.get("kind", "training") == "training" and sub["job_id"] not in shut_out]
            if others:
                known[path.resolve()] = others[-1]
    run_dir = next((p.resolve() for p in existing if p.resolve() in known or RunDir(p).looks_like_one()), None)
    if run_dir is None:
        raise LaunchError(f"{existing[0].resolve()} is not a run directory (none of {', '.join(MARKS)} "
                          "in it); give a job id, a run directory or a run name under logs/runs")
    if run_dir in known:
        return known[run_dir], run_dir
    jobs = [a.get("job_id") for a in RunDir(run_dir).attempts() if a.get("job_id")]
    return (jobs[-1] if jobs else None), run_dir
