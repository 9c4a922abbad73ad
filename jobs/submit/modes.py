"""Submitting one run (``launch.py --config CFG ...``): the checks every mode shares, then one
function per mode: ``--local`` (train here, in the foreground), ``--emit-sbatch`` (print a plain
sbatch script), ``--dry-run`` (print what would be submitted) and a submission through submitit,
with the evaluation chained after it (``--evaluate-after``). No torch.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from jobs import slurm
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.slurm import format_slurm_time
from jobs.submit import evaluation, snapshot
from jobs.submit import jobspec as submit
from jobs.submit.profiles import ClusterProfile, default_cluster, load_profile
from trainer.core.settings import dump_yaml


def run(args: argparse.Namespace) -> int:
    from trainer.core.config import load_config

    if not args.config:
        raise LaunchError("--config is required to submit (e.g. --config configs/se_balanced.yaml)")
    cfg = load_config(args.config, args.overrides)
    profile = load_profile(args.cluster or default_cluster())
    spec = submit.build_spec(args, profile, cfg)  # every value checked (jobs.submit.validate)
    plan = None
    if args.evaluate_after is not None:
        if args.local or args.emit_sbatch:
            raise LaunchError("--evaluate-after submits a dependent Slurm job; with --local or --emit-sbatch score "
                              "the run afterwards: python -m trainer.evaluate --run-dir RUN --clean-dir "
                              "TEST/clean --noisy-dir TEST/noisy")
        plan = evaluation.plan(args.evaluate_after, cfg.task, spec.name, profile)
    if args.local:
        submit.check_run_dir_free(spec, cfg, create=True)
        return submit.run_local(submit.freeze_config(spec, cfg), args.gpus_per_node or 1)
    if args.emit_sbatch:
        return emit_sbatch(spec, cfg, profile)
    have_slurm = slurm.available()
    if not have_slurm and not args.dry_run:
        sys.stderr.write(submit.sbatch_missing_message() + "\n")
        return 2
    submit.check_spec(spec, profile, ask_slurm=have_slurm)
    submit.check_run_dir_free(spec, cfg, create=not args.dry_run)
    if args.dry_run:
        return dry_run(spec, cfg, profile, plan)
    return submit_job(spec, cfg, plan)


def emit_sbatch(spec: submit.JobSpec, cfg, profile: ClusterProfile) -> int:
    """Print the plain sbatch template for this run; the frozen config and a code snapshot are written
    into RUN_DIR/slurm, which every attempt of the script uses."""
    from jobs.submit import template
    from trainer.core.io import DiskFull

    submit.check_spec(spec, profile, ask_slurm=False)
    submit.check_run_dir_free(spec, cfg, create=False)
    folder = RunDir(spec.run_dir).slurm
    try:  # Slurm opens the script's --output in RUN_DIR/slurm before it runs: it must exist
        folder.mkdir(parents=True, exist_ok=True)
        spec = submit.freeze_config(spec, cfg)  # every attempt trains this config, whatever the YAML becomes
    except (OSError, DiskFull) as exc:
        raise LaunchError(f"cannot write the run's frozen config in {folder} "
                          f"({getattr(exc, 'strerror', None) or exc}); "
                          "every attempt of the script trains from it: free space, make it writable or choose "
                          "another --run-dir") from None
    try:
        spec, code = submit.take_snapshot(spec)  # every attempt of the script runs this copy
        sys.stderr.write(snapshot.describe(code) + "\n")
    except OSError as exc:
        sys.stderr.write(f"launch.py: note: no code snapshot in {folder} ({exc.strerror or exc}): the script runs "
                         f"the checkout as it is when each attempt starts; create {folder} before sbatch (the "
                         "job log goes there)\n")
    sys.stdout.write(template.render(spec))
    return 0


def dry_run(spec: submit.JobSpec, cfg, profile: ClusterProfile, plan) -> int:
    """Print what would be submitted: the sbatch script, each task's command, the evaluation job, the config."""
    code = snapshot.planned(RunDir(spec.run_dir).slurm)
    spec = submit.with_code(spec, code)
    sys.stdout.write(f"# cluster profile {profile.name}; run directory {spec.run_dir}; "
                     f"{spec.num_ranks} ranks; time {format_slurm_time(spec.time_s)}\n")
    sys.stdout.write(f"# {snapshot.describe(code)}\n")
    sys.stdout.write("# ---- sbatch script (submitit runs jobs.injob.job.TrainingJob in every task) ----\n")
    sys.stdout.write(submit.sbatch_script(spec) + "\n")
    sys.stdout.write(f"# ---- each task runs: python -m {spec.entry} {shlex.join(spec.trainer_argv())}\n")
    if plan is not None:
        sys.stdout.write("# ---- evaluation job, after the training job (afterok:JOBID) ----\n")
        sys.stdout.write(evaluation.sbatch_script(plan, spec, "afterok:0", RunDir(spec.run_dir).slurm)
                         .replace("afterok:0", "afterok:JOBID") + "\n")
        sys.stdout.write(f"# ---- it runs: python -m trainer.evaluate "
                         f"{shlex.join(evaluation.make_job(plan, spec.run_dir).argv())}\n")
    sys.stdout.write("# ---- resolved config ----\n")
    sys.stdout.write(dump_yaml(cfg))
    return 0


def submit_job(spec: submit.JobSpec, cfg, plan) -> int:
    """Submit through submitit (frozen config, code snapshot), then the chained evaluation; when that
    fails, the training job is cancelled again so nothing is left queued."""
    spec = submit.freeze_config(spec, cfg)
    spec, code = submit.take_snapshot(spec)
    job_id = submit.submit(spec)
    lines = [submit.describe_submission(spec, job_id), snapshot.describe(code)]
    if plan is not None:
        try:
            eval_id = evaluation.submit_after(plan, spec, job_id)
        except LaunchError as exc:
            slurm.cancel(job_id)
            raise LaunchError(f"{exc}; training job {job_id} was cancelled again, nothing is left queued") from None
        lines.append(evaluation.describe_submission(eval_id, job_id, plan))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
