"""Argument parsing for ``launch.py`` (no torch imports: login-node start-up must be fast).

    launch.py --config CFG [--cluster NAME] [--partition P] [--account A] ...   submit (returns at once)
    launch.py --config CFG ... --dry-run | --local | --emit-sbatch
    launch.py --config CFG ... --evaluate-after TEST_DIR     + a dependent job scoring the kept checkpoints
    launch.py sweep --config CFG --grid section.key=v1,v2 [--grid ...] [--max-parallel N] ...   one job array
    launch.py logs [JOB|RUN] [--follow] [--rank R] [--err]
    launch.py status [JOB|RUN|SWEEP] | list | cancel JOB|SWEEP | check [--partition P --account A]
    launch.py compare RUN_OR_SWEEP... [--metric pesq] [--plot out.png] [--csv out.csv] [--report DIR]
"""

from __future__ import annotations

import argparse
import os
import sys

from jobs.runs import LaunchError
from jobs.submit.profiles import default_cluster
from trainer.core.settings import ConfigError

COMMANDS = ("logs", "status", "list", "cancel", "check", "sweep", "compare")


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cluster", default=None,
                        help=f"cluster profile in configs/clusters/ (default: $SEGAN_CLUSTER or {default_cluster()})")
    parser.add_argument("--partition", help="SLURM partition (default: the profile's)")
    parser.add_argument("--account", help="project account to charge (required on Levante)")


def _add_submit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config YAML (e.g. configs/se_balanced.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (type-checked); repeatable")
    parser.add_argument("--allow-change", dest="allow_changes", action="append", default=[], metavar="SECTION.KEY",
                        help="let a resume change a setting that changes the training trajectory (e.g. run.seed); "
                             "repeatable; recorded in the run (docs/resume-and-changes.md)")
    _add_cluster_flags(parser)
    parser.add_argument("--nodes", type=int, default=1, help="nodes (each runs one rank per GPU)")
    parser.add_argument("--gpus-per-node", type=int, help="GPUs = ranks per node (default: the profile's)")
    parser.add_argument("--cpus-per-task", type=int, help="CPU cores per rank (default: the profile's)")
    parser.add_argument("--time", help="time limit, HH:MM:SS or D-HH:MM:SS (default: the profile's)")
    parser.add_argument("--constraint", help="node feature constraint, e.g. a100_80")
    parser.add_argument("--signal-lead", type=int, metavar="SECONDS",
                        help="send USR2 this long before the time limit to save and requeue (default: the profile's)")
    parser.add_argument("--max-requeues", type=int, help="automatic requeue budget (default: the profile's)")
    parser.add_argument("--entry", default="trainer.train",
                        help="module whose main(argv) the job runs (default trainer.train)")
    parser.add_argument("--evaluate-after", metavar="TEST_DIR",
                        help="when training has finished for good, score every kept checkpoint on TEST_DIR/clean "
                             "and TEST_DIR/noisy in a dependent job (RUN_DIR/test_scores.json)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Submit speech-enhancement GAN training jobs to SLURM (via submitit) and follow them. "
                    f"Other commands: {', '.join(COMMANDS)} (launch.py COMMAND --help).",
    )
    _add_submit_flags(parser)
    parser.add_argument("--name", help="job name (default: run.name of the config)")
    parser.add_argument("--run-dir", help="run directory (default: run.dir or logs/runs/<run.name>); "
                                          "an existing one is resumed")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the sbatch script and resolved config; submit nothing")
    mode.add_argument("--local", action="store_true", help="run the same job here in the foreground (no SLURM)")
    mode.add_argument("--emit-sbatch", action="store_true",
                      help="print a plain sbatch script (srun + torchrun, no submitit) with the same requeue behaviour")
    return parser


def build_sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py sweep",
        description="Submit one SLURM job array: one training run per combination of the --grid values, each "
                    "in its own run directory RUN_ROOT/<key=value,...> with its own requeues.")
    parser.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2,...",
                        help="values of one config key (repeatable: every combination is one element)")
    parser.add_argument("--max-parallel", type=int, metavar="N",
                        help="run at most N elements at once (default: all)")
    _add_submit_flags(parser)
    parser.add_argument("--name", help="sweep (and job) name; the root is logs/runs/NAME (default: run.name)")
    parser.add_argument("--run-dir", help="the sweep's root folder (default: logs/runs/NAME)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the combinations and the sbatch script; submit nothing")
    return parser


def build_command_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"launch.py {command}")
    if command == "logs":
        parser.add_argument("target", nargs="?", help="job id, run directory or run name (default: the latest job)")
        parser.add_argument("--follow", "-f", action="store_true",
                            help="keep following, across requeues, until the job ends")
        parser.add_argument("--rank", type=int, default=0, help="global rank whose log to show (default 0)")
        parser.add_argument("--err", action="store_true", help="show stderr (the training log) instead of stdout")
    elif command == "status":
        parser.add_argument("target", nargs="?", help="job id, run directory, run name or sweep (name, root or "
                                                      "array job id: one line per element; default: the latest job)")
    elif command == "list":
        parser.add_argument("--limit", type=int, default=20, help="show this many recent runs")
    elif command == "cancel":
        parser.add_argument("job", help="job id, or a sweep (name, root or array job id: every element); "
                                        "cancelled jobs are not requeued")
    elif command == "check":
        parser.add_argument("--config", help="training config to check data and run directory for")
        parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
        parser.add_argument("--run-dir", help="run directory to check (default: from the config)")
        _add_cluster_flags(parser)
        parser.add_argument("--signal-lead", type=int, metavar="SECONDS", help="lead time to compare with a save")
    elif command == "sweep":
        return build_sweep_parser()
    elif command == "compare":
        parser.description = ("One row per run: the config values that differ between the runs, the best "
                              "validation scores with their epochs, the last epoch, the state and the test "
                              "scores, sorted by --metric.")
        parser.add_argument("targets", nargs="+", metavar="RUN_OR_SWEEP",
                            help="run directories, run names, job ids or sweeps (every element)")
        parser.add_argument("--metric", default="pesq",
                            help="validation metric to sort by (pesq, stoi, ssnr, composite, loss, ...; default pesq)")
        parser.add_argument("--plot", metavar="PNG", help="also draw the validation curves of all runs into one PNG")
        parser.add_argument("--csv", metavar="CSV", help="also write the table as CSV")
        parser.add_argument("--report", metavar="DIR", help="also write DIR/index.html: curves with kept checkpoints, "
                            "divergence alerts, test scores with intervals, each run's listening report")
    return parser


def _error(message: str) -> int:
    sys.stderr.write(f"launch.py: error: {message}\n")
    return 2


def run_command(command: str, args: argparse.Namespace) -> int:
    from jobs.report import monitor

    if command == "logs":
        return monitor.logs(args.target, args.follow, args.rank, args.err)
    if command == "status":
        return monitor.status(args.target)
    if command == "list":
        return monitor.list_runs(args.limit)
    if command == "cancel":
        return monitor.cancel(args.job)
    if command == "sweep":
        from jobs.submit import sweep

        return sweep.run(args)
    if command == "compare":
        from jobs.report import compare

        return compare.main(args.targets, args.metric, args.plot, args.csv, args.report)
    from jobs.submit import preflight

    return preflight.check(args)


def run_submit(args: argparse.Namespace) -> int:
    from jobs.submit import modes

    return modes.run(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return run_command(argv[0], build_command_parser(argv[0]).parse_args(argv[1:]))
        return run_submit(build_parser().parse_args(argv))
    except (ConfigError, LaunchError) as exc:
        return _error(str(exc))
    except BrokenPipeError:  # the reader went away (`launch.py list | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 1
