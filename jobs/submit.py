"""Submission: profile + flags -> a checked :class:`JobSpec` -> submitit (or --local / --dry-run).

Every check runs before anything is submitted; a failure is one :class:`LaunchError` line.
Trainer arguments travel as an argv list inside submitit's pickle and are never interpreted
by a shell.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from jobs import runs, slurm
from jobs.job import RequeuePolicy, TrainingJob
from jobs.profiles import ROOT, ClusterProfile, format_slurm_time, parse_slurm_time
from jobs.runs import LaunchError
from trainer.core.config import Config
from trainer.core.io import atomic_write_text
from trainer.core.settings import dump_yaml

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


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

    def trainer_argv(self) -> list[str]:
        argv = ["--config", str(self.config), "--run-dir", str(self.run_dir)]
        for item in self.overrides:
            argv += ["--set", item]
        return argv

    @property
    def num_ranks(self) -> int:
        return self.nodes * self.gpus_per_node


def build_spec(args, profile: ClusterProfile, cfg: Config) -> JobSpec:
    name = args.name or cfg.run.name
    if not _SAFE_NAME.match(name):
        raise LaunchError(f"--name {name!r}: use letters, digits, '.', '_' or '-' only (no spaces or shell "
                          "metacharacters)")
    if not _MODULE.match(args.entry):
        raise LaunchError(f"--entry {args.entry!r}: expected a module name such as trainer.train")
    time_text = args.time or profile.time
    try:
        time_s = parse_slurm_time(time_text)
    except ValueError as exc:
        raise LaunchError(f"--time {time_text!r}: not a Slurm time; use HH:MM:SS or D-HH:MM:SS") from exc
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run_dir()
    return JobSpec(
        cluster=profile.name, name=name, partition=args.partition or profile.partition,
        account=args.account or profile.account, nodes=args.nodes,
        gpus_per_node=args.gpus_per_node or profile.gpus_per_node,
        cpus_per_task=args.cpus_per_task or profile.cpus_per_task, time_s=time_s,
        constraint=args.constraint if args.constraint is not None else profile.constraint,
        signal_lead_s=args.signal_lead if args.signal_lead is not None else profile.signal_lead_s,
        run_dir=run_dir.resolve(), config=Path(args.config).resolve(), overrides=list(args.overrides),
        setup=list(profile.setup),
        policy=RequeuePolicy(max_requeues=profile.max_requeues if args.max_requeues is None else args.max_requeues,
                             max_crash_requeues=profile.max_crash_requeues,
                             max_stalled_restarts=profile.max_stalled_restarts),
        entry=args.entry,
    )


def check_run_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise LaunchError(f"run directory {run_dir} is not writable ({exc.strerror}); "
                          "choose another with --run-dir") from None


def check_spec(spec: JobSpec, profile: ClusterProfile, *, ask_slurm: bool) -> None:
    """The bad-input checks that need no submission; raises LaunchError."""
    if spec.account is None and profile.account_required:
        raise LaunchError(f"--account is required on cluster {profile.name!r} (every job is charged to a "
                          "project); add --account YOUR_PROJECT")
    if spec.nodes < 1:
        raise LaunchError(f"--nodes {spec.nodes}: must be at least 1")
    if spec.gpus_per_node > profile.max_gpus_per_node:
        raise LaunchError(f"--gpus-per-node {spec.gpus_per_node}: a node of {profile.name!r} has "
                          f"{profile.max_gpus_per_node} GPUs; use more --nodes instead")
    if spec.signal_lead_s >= spec.time_s:
        raise LaunchError(f"--signal-lead {spec.signal_lead_s}s is not shorter than --time "
                          f"{format_slurm_time(spec.time_s)}")
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


def executor_parameters(spec: JobSpec) -> dict:
    extra = {"requeue": True, "chdir": str(ROOT)}
    if spec.account:
        extra["account"] = spec.account
    params = dict(job_name=spec.name, partition=spec.partition, nodes=spec.nodes,
                  ntasks_per_node=spec.gpus_per_node, gpus_per_node=spec.gpus_per_node,
                  cpus_per_task=spec.cpus_per_task, time=max(1, math.ceil(spec.time_s / 60)),
                  signal_delay_s=spec.signal_lead_s, setup=spec.setup or None, additional_parameters=extra)
    if spec.constraint:
        params["constraint"] = spec.constraint
    return params


def make_executor(spec: JobSpec):
    import submitit

    executor = submitit.SlurmExecutor(folder=runs.slurm_folder(spec.run_dir), max_num_timeout=0)
    executor.update_parameters(**executor_parameters(spec))
    return executor


def sbatch_script(spec: JobSpec) -> str:
    """The exact script ``submit`` hands to sbatch (rendered without needing srun here)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = runs.slurm_folder(spec.run_dir)
    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, **executor_parameters(spec))


def training_job(spec: JobSpec) -> TrainingJob:
    return TrainingJob(argv=spec.trainer_argv(), run_dir=str(spec.run_dir), policy=spec.policy, entry=spec.entry)


def freeze_config(spec: JobSpec, cfg: Config) -> JobSpec:
    """The job trains with the config as resolved at submission: editing the YAML file afterwards
    cannot change a queued or requeued job. Written to ``RUN_DIR/slurm/submitted_config.yaml``."""
    path = runs.slurm_folder(spec.run_dir) / "submitted_config.yaml"
    atomic_write_text(path, dump_yaml(cfg))
    return dataclasses.replace(spec, config=path, overrides=[])


def submit(spec: JobSpec) -> str:
    executor = make_executor(spec)
    try:
        job = executor.submit(training_job(spec))
    except Exception as exc:  # submitit wraps sbatch's refusal; keep its last line
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise LaunchError(f"sbatch refused the job: {lines[-1] if lines else exc}") from None
    runs.record_submission(job.job_id, spec.run_dir, spec.name, spec.cluster)
    return str(job.job_id)


def local_command(spec: JobSpec, num_procs: int) -> list[str]:
    module = ["-m", spec.entry, *spec.trainer_argv()]
    if num_procs <= 1:
        return [sys.executable, *module]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_procs}", *module]


def run_local(spec: JobSpec, num_procs: int) -> int:
    """Run the job here in the foreground (no SLURM); returns the trainer's exit code."""
    cmd = local_command(spec, num_procs)
    sys.stdout.write(f"launch.py: running locally: {shlex.join(cmd)}\n")
    sys.stdout.flush()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode


def sbatch_missing_message() -> str:
    return ("launch.py: error: no sbatch on PATH (not a SLURM login node); run the same job on this "
            "machine with --local")


def describe_submission(spec: JobSpec, job_id: str) -> str:
    out = runs.log_path(spec.run_dir, job_id)
    return "\n".join([
        f"submitted job {job_id} ({spec.num_ranks} ranks on {spec.nodes} node(s), partition {spec.partition}, "
        f"time {format_slurm_time(spec.time_s)})",
        f"run directory: {spec.run_dir}",
        f"logs:          {out}  (stderr: {out.with_suffix('.err')}; rank R: {job_id}_R_log.*)",
        f"follow:        python launch.py logs {job_id} --follow",
        f"status:        python launch.py status {job_id}",
    ])


def have_sbatch() -> bool:
    return shutil.which("sbatch") is not None
