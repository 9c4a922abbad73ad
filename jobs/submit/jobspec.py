"""Submission: profile + flags -> a checked :class:`JobSpec` -> submitit (or --local / --dry-run).

Every check runs before anything is submitted; a failure is one :class:`LaunchError` line.
Values are checked in :mod:`jobs.submit.validate` (what Slurm accepts), the run directory here (a
directory, not finished, not in use by a live job). Trainer arguments travel as an argv list
inside submitit's pickle and are never interpreted by a shell.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from jobs import ROOT, rundir, runs, sbatch, slurm
from jobs.injob.job import PORT_VARIABLE, TrainingJob
from jobs.injob.requeue import RequeuePolicy
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.slurm import format_slurm_time
from jobs.submit import validate
from jobs.submit.profiles import ClusterProfile
from trainer.core.config import Config
from trainer.core.io import atomic_write_text
from trainer.core.settings import dump_yaml


@dataclasses.dataclass
class JobSpec:
    cluster: str
    name: str
    partition: str
    account: str | None
    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    time_s: int
    constraint: str | None
    signal_lead_s: int
    run_dir: Path
    config: Path
    overrides: list[str]
    setup: list[str]
    policy: RequeuePolicy
    entry: str = "trainer.train"
    allow_changes: list[str] = dataclasses.field(default_factory=list)  # trajectory settings a resume may change

    def trainer_argv(self) -> list[str]:
        argv = ["--config", str(self.config), "--run-dir", str(self.run_dir)]
        for item in self.overrides:
            argv += ["--set", item]
        for key in self.allow_changes:
            argv += ["--allow-change", key]
        return argv

    @property
    def num_ranks(self) -> int:
        return self.nodes * self.gpus_per_node


def build_spec(args, profile: ClusterProfile, cfg: Config) -> JobSpec:
    """Flags over profile -> a JobSpec whose every value Slurm reads as meant (:mod:`jobs.submit.validate`)."""
    from_profile: set[str] = set()

    def pick(field: str, flag_value, profile_value):
        if flag_value is None:
            from_profile.add(field)
            return profile_value
        return flag_value

    name = validate.job_name(args.name if args.name is not None else cfg.run.name,
                             "--name" if args.name is not None else "run.name of the config (or give --name)")
    time_text = pick("time", args.time, profile.time)
    time_s = validate.time(time_text, "--time" if args.time is not None else
                           f"time of cluster profile {profile.name!r}")
    constraint = pick("constraint", args.constraint, profile.constraint)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run_dir()
    spec = JobSpec(
        cluster=profile.name, name=name, partition=pick("partition", args.partition, profile.partition),
        account=pick("account", args.account, profile.account), nodes=args.nodes,
        gpus_per_node=pick("gpus_per_node", args.gpus_per_node, profile.gpus_per_node),
        cpus_per_task=pick("cpus_per_task", args.cpus_per_task, profile.cpus_per_task), time_s=time_s,
        constraint=constraint or None,  # --constraint '' drops the profile's
        signal_lead_s=pick("signal_lead_s", args.signal_lead, profile.signal_lead_s),
        run_dir=run_dir.resolve(), config=Path(args.config).resolve(), overrides=list(args.overrides),
        setup=list(profile.setup),
        policy=RequeuePolicy(max_requeues=pick("max_requeues", args.max_requeues, profile.max_requeues),
                             max_crash_requeues=profile.max_crash_requeues,
                             max_stalled_restarts=profile.max_stalled_restarts),
        entry=args.entry, allow_changes=list(getattr(args, "allow_changes", None) or []),
    )
    validate.check_spec(spec, profile, from_profile)
    return spec


def check_run_dir(run_dir: Path, create: bool = True) -> None:
    """The run directory is (or can become) a writable directory. ``create=False`` (dry run,
    --emit-sbatch) checks without creating anything."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LaunchError(f"run directory {run_dir} is a file, not a directory; choose another --run-dir")
    if not create:
        ancestor = run_dir
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise LaunchError(f"run directory {run_dir} is not writable ({ancestor} is a file, not a directory); "
                              "choose another --run-dir")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise LaunchError(f"run directory {run_dir} is not writable ({ancestor} is not writable); "
                              "choose another with --run-dir")
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise LaunchError(f"run directory {run_dir} is not writable ({exc.strerror}); "
                          "choose another with --run-dir") from None


def finished_epochs(run_dir: Path) -> int | None:
    """The epochs a finished run was trained for (state.json, else its config.yaml); None while
    the run is not finished (or was never started)."""
    state = RunDir(run_dir).state()
    if state.get("status") != "finished":
        return None
    epochs = state.get("epochs")
    if not isinstance(epochs, int):
        try:
            epochs = ((yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("train") or {}).get("epochs")
        except (OSError, yaml.YAMLError, AttributeError):
            epochs = None
    return epochs if isinstance(epochs, int) else None


def finished_run(run_dir: Path, cfg: Config) -> tuple[int, int | None] | None:
    """(epochs, step) of a run that has trained all the epochs ``cfg`` asks for; None otherwise."""
    done = finished_epochs(run_dir)
    if done is None or cfg.train.epochs > done:
        return None
    return done, rundir.state_step(RunDir(run_dir).state())


def check_not_finished(run_dir: Path, cfg: Config) -> None:
    """Resubmitting a finished run would take an allocation only to print 'finished'."""
    finished = finished_run(run_dir, cfg)
    if finished is not None:
        done, step = finished
        raise LaunchError(f"run directory {run_dir} has already finished its {done} epochs (step {step}); "
                          "to train it further raise train.epochs "
                          f"(e.g. --set train.epochs={done + max(1, done // 2)}), "
                          "or choose another --run-dir")


def live_jobs(run_dir: Path) -> list[tuple[str, str]]:
    """(job id, state) of every queued or running job on this run directory: jobs whose log goes
    to RUN_DIR/slurm/ (both the submitit path and the plain sbatch template), and jobs this run
    directory or the submission index knows. [] when Slurm cannot be asked."""
    queue = slurm.queue() if slurm.available() else None
    if not queue:
        return []
    folder = RunDir(run_dir.resolve()).slurm
    known = runs.job_ids_of(run_dir)
    found = []
    for job in queue:
        if job["State"] not in slurm.ACTIVE:
            continue
        log_dir = Path(os.path.normpath(job["StdOut"])).parent if job["StdOut"].startswith("/") else None
        if log_dir == folder or job["JobID"] in known:
            found.append((job["JobID"], job["State"]))
    return found


def check_no_live_job(run_dir: Path) -> None:
    """Two jobs training in one run directory would overwrite each other's checkpoints."""
    jobs = live_jobs(run_dir)
    if jobs:
        job_id, state = jobs[0]
        others = f" (and {', '.join(j for j, _ in jobs[1:])})" if len(jobs) > 1 else ""
        raise LaunchError(f"run directory {run_dir} is in use by job {job_id}{others}, which is still "
                          f"{state.lower()}: two jobs must not train in one run directory; wait until it has "
                          f"ended (python launch.py status {job_id}) or cancel it: python launch.py cancel {job_id} "
                          f"(or scancel {job_id})")


def check_not_sweep_root(run_dir: Path) -> None:
    if runs.is_sweep_root(run_dir):
        raise LaunchError(f"run directory {run_dir} is the root of a sweep ({rundir.SWEEP_FILE}); give one of its "
                          "run directories (python launch.py status SWEEP lists them) or another --run-dir")


def check_run_dir_free(spec: JobSpec, cfg: Config, create: bool) -> None:
    """Every run-directory check before a job may train in it (file, sweep root, finished, resume rule,
    live job, writable)."""
    from trainer.core.changes import resume_changes

    check_run_dir(spec.run_dir, create=False)
    check_not_sweep_root(spec.run_dir)
    check_not_finished(spec.run_dir, cfg)
    resume_changes(cfg, spec.run_dir, spec.allow_changes)  # the trainer's own rule, refused here before a job
    check_no_live_job(spec.run_dir)
    if create:
        check_run_dir(spec.run_dir)


def check_spec(spec: JobSpec, profile: ClusterProfile, *, ask_slurm: bool) -> None:
    """The checks that ask Slurm (or the profile offline); raises LaunchError. Values were
    checked when the spec was built (:mod:`jobs.submit.validate`)."""
    if spec.account is None and profile.account_required:
        raise LaunchError(f"--account is required on cluster {profile.name!r} (every job is charged to a "
                          "project); add --account YOUR_PROJECT")
    limit_s, where = profile.max_time_s, f"profile {profile.name!r}"
    info = slurm.partition_info(spec.partition) if ask_slurm else None
    known = slurm.partition_names() if ask_slurm and info is None else []
    if known:  # SLURM answers and does not know the partition
        raise LaunchError(f"--partition {spec.partition!r} does not exist on this cluster "
                          f"(known: {', '.join(known)})")
    if info is None and profile.partitions and spec.partition not in profile.partitions:
        raise LaunchError(f"--partition {spec.partition!r} is not a partition of {profile.name!r} "
                          f"(known: {', '.join(profile.partitions)})")
    if info is not None:
        limit_s, where = slurm.partition_max_time_s(info) or spec.time_s, f"partition {spec.partition!r}"
    if info is not None and spec.account:
        problem = slurm.account_error(spec.account, spec.partition)
        if problem:
            raise LaunchError(f"--account {spec.account!r} may not submit to partition {spec.partition!r} "
                              f"(sbatch --test-only: {problem}); list yours with: sacctmgr show assoc "
                              "user=$USER format=account,partition")
    if spec.time_s > limit_s:
        raise LaunchError(f"--time {format_slurm_time(spec.time_s)} is over the {format_slurm_time(limit_s)} "
                          f"limit of {where}; the job requeues itself, so ask for at most the limit")


def port_setup_line() -> str:
    """The batch shell runs on the job's first node, where rank 0 hosts the rendezvous: it probes a
    free port there (python -m jobs.ports) and srun hands it to every task (jobs.injob.job.PORT_VARIABLE)."""
    return (f"{PORT_VARIABLE}=$({shlex.quote(sys.executable)} -m jobs.ports) && export {PORT_VARIABLE}"
            "  # a free MASTER_PORT on the first node")


def executor_parameters(spec: JobSpec) -> dict:
    extra = {"requeue": True, "chdir": str(ROOT)}
    if spec.account:
        extra["account"] = spec.account
    params = dict(job_name=spec.name, partition=spec.partition, nodes=spec.nodes,
                  ntasks_per_node=spec.gpus_per_node, gpus_per_node=spec.gpus_per_node,
                  cpus_per_task=spec.cpus_per_task, time=max(1, math.ceil(spec.time_s / 60)),
                  signal_delay_s=spec.signal_lead_s, setup=[*spec.setup, port_setup_line()],
                  additional_parameters=extra)
    if spec.constraint:
        params["constraint"] = spec.constraint
    return params


def make_executor(spec: JobSpec):
    return sbatch.executor(RunDir(spec.run_dir).slurm, executor_parameters(spec))


def sbatch_script(spec: JobSpec) -> str:
    """The exact script ``submit`` hands to sbatch (rendered without needing srun here)."""
    return sbatch.script(RunDir(spec.run_dir).slurm, executor_parameters(spec))


def training_job(spec: JobSpec) -> TrainingJob:
    return TrainingJob(argv=spec.trainer_argv(), run_dir=str(spec.run_dir), policy=spec.policy, entry=spec.entry)


def freeze_config(spec: JobSpec, cfg: Config) -> JobSpec:
    """The job trains with the config as resolved at submission: editing the YAML file (or a file of
    its ``base:`` chain) afterwards cannot change a queued or requeued job. Every launch path (submitit,
    --emit-sbatch, sweeps, --local) trains from it: ``RUN_DIR/slurm/submitted_config.yaml``."""
    path = RunDir(spec.run_dir).slurm / "submitted_config.yaml"
    atomic_write_text(path, dump_yaml(cfg))
    return dataclasses.replace(spec, config=path, overrides=[])


def with_code(spec: JobSpec, record: dict) -> JobSpec:
    """Every process of the job imports jobs/ and trainer/ from the code snapshot (jobs.submit.snapshot); the
    profile's setup lines run first (a `module load` may set PYTHONPATH)."""
    from jobs.submit import snapshot

    return dataclasses.replace(spec, setup=[*spec.setup, *snapshot.setup_lines(record)])


def take_snapshot(spec: JobSpec) -> tuple[JobSpec, dict]:
    """Copy the code into RUN_DIR/slurm/code (a resubmission replaces the old copy) -> (spec, record)."""
    from jobs.submit import snapshot

    record = snapshot.take(RunDir(spec.run_dir).slurm)
    return with_code(spec, record), record


def submit(spec: JobSpec) -> str:
    executor = make_executor(spec)
    try:
        job = executor.submit(training_job(spec))
    except Exception as exc:
        raise runs.sbatch_refused(exc, "the job") from None
    runs.record_submission(job.job_id, spec.run_dir, spec.name, spec.cluster)
    return str(job.job_id)


def local_command(spec: JobSpec, num_procs: int) -> list[str]:
    module = ["-m", spec.entry, *spec.trainer_argv()]
    if num_procs <= 1:
        return [sys.executable, *module]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_procs}", *module]


def run_local(spec: JobSpec, num_procs: int) -> int:
    """Run the job here in the foreground (no SLURM); returns the trainer's exit code."""
    from jobs.submit import snapshot

    cmd = local_command(spec, num_procs)
    code = snapshot.live(ROOT)
    sys.stdout.write(f"launch.py: running locally: {shlex.join(cmd)}\n{snapshot.describe_live(code)}\n")
    sys.stdout.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env[snapshot.ENV_VARIABLE] = json.dumps(code)  # every checkpoint names the revision it was trained with
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def sbatch_missing_message() -> str:
    return ("launch.py: error: no sbatch on PATH (not a SLURM login node); run the same job on this "
            "machine with --local")


def describe_submission(spec: JobSpec, job_id: str) -> str:
    out = RunDir(spec.run_dir).log_path(job_id)
    return "\n".join([
        f"submitted job {job_id} ({spec.num_ranks} ranks on {spec.nodes} node(s), partition {spec.partition}, "
        f"time {format_slurm_time(spec.time_s)})",
        f"run directory: {spec.run_dir}",
        f"logs:          {out}  (stderr: {out.with_suffix('.err')}; rank R: {job_id}_R_log.*)",
        f"follow:        python launch.py logs {job_id} --follow",
        f"status:        python launch.py status {job_id}",
    ])

