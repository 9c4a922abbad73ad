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
evaluation explicitly (:func:`cancel_dependent`, from ``jobs.injob.job`` and ``python -m jobs.requeue``).

The job (:class:`EvaluationJob`, from the run's code snapshot) runs
``python -m trainer.evaluate --run-dir RUN --clean-dir TEST/clean --noisy-dir TEST/noisy --json
RUN/test_scores.json`` in-process; the table goes to its log. ``RUN_DIR/slurm/evaluation.json``
names the job, the test folder and the training job it waits for; ``status`` reads it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from jobs import ROOT, runs, sbatch
from jobs.injob.evaluation import RECORD, EvaluationJob
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.slurm import format_slurm_time
from jobs.submit import validate
from jobs.submit.profiles import ClusterProfile
from trainer.core.io import atomic_write_text

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


def describe_submission(job_id: str, after: str, plan_: Plan, cpu_only_note: bool = True) -> str:
    resources = f"{plan_.gpus} GPU" if plan_.gpus else "CPU only"
    return (f"evaluation:    job {job_id} after training job {after} ({resources}, {plan_.cpus} cores, "
            f"time {format_slurm_time(plan_.time_s)}): scores every kept checkpoint on {plan_.test_dir} "
            f"into test_scores.json")
