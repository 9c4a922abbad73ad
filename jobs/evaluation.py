"""``--evaluate-after TEST_DIR``: score a run's kept checkpoints on a test set once training has
finished for good (no torch on the login node).

At submission (:func:`plan`) the test folder is checked (``clean/`` and ``noisy/`` subfolders of
paired wavs) and the run must be a speech-enhancement run. Right after the training job, a
dependent job is submitted (:func:`submit_after`; for a sweep one array whose task i waits for
training task i, :func:`submit_after_array`) with the training job's partition, account and
constraint and the cluster profile's ``evaluate_gpus`` (0: a CPU-only job), ``evaluate_cpus`` and
``evaluate_time``. It waits with ``afterok`` (``aftercorr`` in a sweep): a requeued training job
keeps its id and its dependants keep waiting, through every requeue, until it has completed.
``--kill-on-invalid-dep=yes`` lets Slurm cancel the evaluation when training ends otherwise
(failed, cancelled, timeout: DependencyNeverSatisfied). A training job that ends for good without
finishing but still *completes* in Slurm's eyes (it saved and exited 42 and the requeue budget is
spent, or it stalled) would satisfy ``afterok``: there the requeue end record cancels the
evaluation explicitly (:func:`cancel_dependent`, from ``jobs.job`` and ``python -m jobs.requeue``).

The job (:class:`EvaluationJob`, from the run's code snapshot) runs
``python -m trainer.evaluate --run-dir RUN --clean-dir TEST/clean --noisy-dir TEST/noisy --json
RUN/test_scores.json`` in-process; the table goes to its log. ``RUN_DIR/slurm/evaluation.json``
names the job, the test folder and the training job it waits for; ``status`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import socket
import sys
from pathlib import Path

from jobs import runs, sbatch, slurm, validate
from jobs.profiles import ROOT, ClusterProfile, format_slurm_time
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from trainer.core.io import atomic_write_text

RECORD = "evaluation.json"  # in RUN_DIR/slurm/
SCORES = "test_scores.json"  # in RUN_DIR
SPEECH_TASK = "speech_enhancement"


@dataclasses.dataclass(frozen=True)
class Plan:
    test_dir: Path
    name: str
    gpus: int
    cpus: int
    time_s: int

    @property
    def clean_dir(self) -> Path:
        return self.test_dir / "clean"

    @property
    def noisy_dir(self) -> Path:
        return self.test_dir / "noisy"


def plan(test_dir: str, task: str, name: str, profile: ClusterProfile) -> Plan:
    """Check ``--evaluate-after`` before anything is submitted; raises LaunchError (one line)."""
    validate.argument(test_dir, "--evaluate-after")
    folder = Path(test_dir).expanduser().resolve()
    hint = "give a folder with clean/ and noisy/ subfolders of paired wavs (e.g. logs/demo_corpus/test)"
    if not folder.is_dir():
        raise LaunchError(f"--evaluate-after {test_dir}: not a folder; {hint}")
    for sub in ("clean", "noisy"):
        if not (folder / sub).is_dir():
            raise LaunchError(f"--evaluate-after {test_dir}: no {sub}/ folder in it; {hint}")
    if next((folder / "clean").rglob("*.wav"), None) is None:
        raise LaunchError(f"--evaluate-after {test_dir}: no .wav file under {folder / 'clean'}; {hint}")
    if task != SPEECH_TASK:
        raise LaunchError(f"--evaluate-after scores speech-enhancement checkpoints, but the config trains task "
                          f"{task!r}; listen to its checkpoints with python -m trainer.infer instead")
    time_s = validate.time(profile.evaluate_time, f"evaluate_time of cluster profile {profile.name!r}")
    eval_name = validate.job_name(f"{name}-eval"[:128], "the evaluation job's name (--name)")
    return Plan(folder, eval_name, profile.evaluate_gpus, profile.evaluate_cpus, time_s)


def executor_parameters(plan_: Plan, spec, dependency: str) -> dict:
    """submitit parameters of the evaluation job (``spec``: the training job's JobSpec)."""
    validate.dependency(dependency)
    extra = {"chdir": str(ROOT), "kill-on-invalid-dep": "yes"}
    if spec.account:
        extra["account"] = spec.account
    params = dict(job_name=plan_.name, partition=spec.partition, nodes=1, ntasks_per_node=1,
                  cpus_per_task=plan_.cpus, time=max(1, math.ceil(plan_.time_s / 60)), setup=list(spec.setup),
                  dependency=dependency, additional_parameters=extra)
    if plan_.gpus:
        params["gpus_per_node"] = plan_.gpus
    if spec.constraint:
        params["constraint"] = spec.constraint
    return params


@dataclasses.dataclass
class EvaluationJob:
    """The pickled callable of the evaluation job: ``trainer.evaluate`` on every kept checkpoint."""

    run_dir: str
    clean_dir: str
    noisy_dir: str
    workers: int = 1
    after: str = ""

    def argv(self) -> list[str]:
        return ["--run-dir", self.run_dir, "--clean-dir", self.clean_dir, "--noisy-dir", self.noisy_dir,
                "--json", str(Path(self.run_dir) / SCORES), "--workers", str(self.workers), "--no-progress"]

    def __call__(self) -> int:
        import submitit

        from trainer import evaluate

        job_id = str(submitit.JobEnvironment().job_id)
        sys.stdout.write(f"===== evaluation job {job_id} of {self.run_dir} after training job {self.after} · "
                         f"{socket.gethostname()} · {runs.now_iso()} =====\n"
                         f"python -m trainer.evaluate {shlex.join(self.argv())}\n")
        sys.stdout.flush()
        code = evaluate.main(self.argv())
        RunDir(self.run_dir).add_attempt({
            "event": "evaluation", "job_id": job_id, "after": self.after, "exit_code": code, "time": runs.now_iso(),
            "scores": str(Path(self.run_dir) / SCORES) if code == 0 else None})
        sys.stdout.flush()
        if code:
            sys.exit(code)
        return 0


def make_job(plan_: Plan, run_dir: Path, after: str = "") -> EvaluationJob:
    return EvaluationJob(run_dir=str(run_dir), clean_dir=str(plan_.clean_dir), noisy_dir=str(plan_.noisy_dir),
                         workers=plan_.cpus, after=after)


def sbatch_script(plan_: Plan, spec, dependency: str, folder: Path, count: int | None = None) -> str:
    """The evaluation job's script as sbatch gets it (``--dry-run``)."""
    return sbatch.script(folder, executor_parameters(plan_, spec, dependency), count)


def _executor(plan_: Plan, spec, dependency: str, folder: Path):
    return sbatch.executor(folder, executor_parameters(plan_, spec, dependency))


def write_record(run_dir: Path, job_id: str, after: str, plan_: Plan) -> None:
    atomic_write_text(RunDir(run_dir).slurm / RECORD, json.dumps({
        "job_id": str(job_id), "after": str(after), "test_dir": str(plan_.test_dir),
        "clean_dir": str(plan_.clean_dir), "noisy_dir": str(plan_.noisy_dir), "gpus": plan_.gpus,
        "cpus": plan_.cpus, "submitted": runs.now_iso()}, indent=1, sort_keys=True) + "\n")


def submit_after(plan_: Plan, spec, after: str) -> str:
    """The evaluation job of one run, waiting for training job ``after`` (afterok)."""
    executor = _executor(plan_, spec, f"afterok:{after}", RunDir(spec.run_dir).slurm)
    try:
        job = executor.submit(make_job(plan_, spec.run_dir, after))
    except Exception as exc:  # submitit wraps sbatch's refusal
        raise runs.sbatch_refused(exc, "the evaluation job") from None
    job_id = str(job.job_id)
    write_record(spec.run_dir, job_id, after, plan_)
    runs.record_submission(job_id, spec.run_dir, plan_.name, spec.cluster, kind="evaluation", after=str(after))
    return job_id


def submit_after_array(plan_: Plan, specs: list, after_ids: list[str], folder: Path) -> list[str]:
    """One array for a sweep: task i evaluates element i once training task i has completed (aftercorr)."""
    array_id = after_ids[0].split("_", 1)[0]
    executor = _executor(plan_, specs[0], f"aftercorr:{array_id}", folder)
    try:
        with executor.batch():
            jobs = [executor.submit(make_job(plan_, spec.run_dir, after)) for spec, after in zip(specs, after_ids,
                                                                                                  strict=True)]
    except Exception as exc:
        raise runs.sbatch_refused(exc, "the evaluation job") from None
    ids = [str(job.job_id) for job in jobs]
    for spec, job_id, after in zip(specs, ids, after_ids, strict=True):
        write_record(spec.run_dir, job_id, after, plan_)
        runs.record_submission(job_id, spec.run_dir, plan_.name, spec.cluster, kind="evaluation", after=after,
                               sweep=str(folder.parent))
    return ids


def read_record(run_dir: Path) -> dict | None:
    try:
        value = json.loads((RunDir(run_dir).slurm / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and value.get("job_id") else None


def cancel_dependent(run_dir: Path, job_id: str, reason: str) -> str | None:
    """Training job ``job_id`` ended for good without finishing: cancel the evaluation waiting for it
    (recorded in attempts.jsonl). Returns a line for the log, None when there is none to cancel."""
    record = read_record(run_dir)
    if record is None or str(record.get("after")) != str(job_id):
        return None
    eval_id = str(record["job_id"])
    proc = slurm.cancel(eval_id)
    ok = proc is not None and proc.returncode == 0
    RunDir(run_dir).add_attempt({
        "event": "evaluation_cancelled", "job_id": eval_id, "after": str(job_id), "time": runs.now_iso(),
        "reason": f"training ended for good without finishing ({reason})",
        **({} if ok else {"scancel": "scancel failed or not available"})})
    return (f"===== evaluation job {eval_id} cancelled: training ended for good without finishing "
            f"({reason}) =====")


def describe(run_dir: Path, queue_state: tuple[str, str] | None = None, acct: dict | None = None,
             ask_slurm: bool = True) -> tuple[str, str] | None:
    """(one word, one sentence) on the run's evaluation job, None when it has none."""
    record = read_record(run_dir)
    if record is None:
        return None
    eval_id, after = str(record["job_id"]), str(record.get("after"))
    if ask_slurm and slurm.available():
        queue_state = queue_state or slurm.queue_state_reason(eval_id)
        acct = acct or (None if queue_state else slurm.accounting(eval_id))
    ours = [a for a in RunDir(run_dir).attempts() if a.get("job_id") == eval_id]
    cancelled_by_us = next((a for a in reversed(ours) if a.get("event") == "evaluation_cancelled"), None)
    done = next((a for a in reversed(ours) if a.get("event") == "evaluation"), None)
    scores = Path(run_dir) / SCORES
    if queue_state:
        state, reason = queue_state
        if state == "PENDING" and reason == "DependencyNeverSatisfied":
            return "never", (f"job {eval_id} will never start: training job {after} did not complete successfully "
                             "(squeue PENDING, DependencyNeverSatisfied); cancel it: python launch.py cancel "
                             f"{eval_id}")
        if state == "PENDING" and reason == "Dependency":
            return "waiting", (f"job {eval_id} waits for training job {after} to finish for good (squeue PENDING, "
                               f"Dependency); then it scores every kept checkpoint on {record.get('test_dir')}")
        if state == "RUNNING":
            return "running", (f"job {eval_id} is scoring every kept checkpoint on {record.get('test_dir')} "
                               "(squeue RUNNING)")
        return state.lower(), f"job {eval_id}: squeue {state}" + (f" ({reason})" if reason and reason != "None" else "")
    word = ((acct or {}).get("State") or "").split(" ")[0]
    if cancelled_by_us is not None:
        return "cancelled", f"job {eval_id} cancelled: {cancelled_by_us.get('reason')}"
    if word == "COMPLETED" or (not word and done is not None and done.get("exit_code") == 0):
        return "done", f"job {eval_id} done: test scores in {scores}" if scores.is_file() else f"job {eval_id} done"
    if word == "CANCELLED":
        if (acct or {}).get("Reason") in ("Dependency", "DependencyNeverSatisfied") or slurm.never_started(acct or {}):
            return "cancelled", (f"job {eval_id} cancelled before it started: training job {after} did not complete "
                                 "successfully, so its afterok dependency could never be satisfied "
                                 "(DependencyNeverSatisfied; --kill-on-invalid-dep)")
        return "cancelled", f"job {eval_id} cancelled ({acct.get('State')})"
    if word:
        return word.lower(), (f"job {eval_id} ended {acct.get('State')} (exit {acct.get('ExitCode')})"
                              f"{_why(run_dir, eval_id)}")
    if done is not None:
        return "failed", f"job {eval_id} exited {done.get('exit_code')}{_why(run_dir, eval_id)}"
    return "submitted", f"job {eval_id} (Slurm does not know it here); after training job {after}"


def _why(run_dir: Path, eval_id: str) -> str:
    """': <the last line of the job's error log>; see it with: python launch.py logs E --err' (the
    one-line reason of a failed evaluation is written to stderr)."""
    err = RunDir(run_dir).log_path(eval_id, err=True)
    try:
        lines = [line for line in err.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    last = f": {lines[-1].strip()}" if lines else ""
    return f"{last}; see {err} (python launch.py logs {eval_id} --err)"


def describe_submission(job_id: str, after: str, plan_: Plan, cpu_only_note: bool = True) -> str:
    resources = f"{plan_.gpus} GPU" if plan_.gpus else "CPU only"
    return (f"evaluation:    job {job_id} after training job {after} ({resources}, {plan_.cpus} cores, "
            f"time {format_slurm_time(plan_.time_s)}): scores every kept checkpoint on {plan_.test_dir} "
            f"into test_scores.json")
