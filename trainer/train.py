"""The training loop: ``python -m trainer.train --config C --run-dir D [--set k=v ...]``.

Runs unchanged as one process or under ``torchrun --nproc_per_node 4 -m trainer.train ...``.
Running again with the same run directory continues from ``checkpoints/last.pt`` at the exact
step (per-step losses equal those of an uninterrupted run, bit for bit on CPU). One training per
run directory: rank 0 takes ``RUN_DIR/train.lock`` first (:mod:`trainer.core.lock`). SIGUSR2/SIGTERM
only set a flag: at the next step boundary all ranks agree, save ``last`` together and exit with
``EXIT_REQUEUE`` (42); a first Ctrl-C does the same but exits with ``EXIT_INTERRUPTED`` (130, no
requeue), a second one stops at once. A full disk exits with ``EXIT_DISK_FULL`` (4).
Exit codes: ``trainer/core/exitcodes.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from trainer.core.changes import resume_changes
from trainer.core.config import Config, ConfigError, config_class, load_config, save_config
from trainer.core.errors import BadInput
from trainer.core.exitcodes import (
    EXIT_BAD_INPUT,
    EXIT_CRASHED,
    EXIT_DISK_FULL,
    EXIT_DIVERGED,
    EXIT_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_REQUEUE,
)
from trainer.core.registry import task_names
from trainer.core.settings import describe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="training config YAML; default: the run directory's config.yaml")
    parser.add_argument("--run-dir", help="run directory (default: run.dir or logs/runs/<run.name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--allow-change", dest="allow_changes", action="append", default=[], metavar="SECTION.KEY",
                        help="let this resume change a setting that changes the training trajectory (e.g. "
                             "run.seed); repeatable; recorded in train.log and the next checkpoint "
                             "(docs/resume-and-changes.md)")
    parser.add_argument("--help-config", action="store_true",
                        help="list every config key with its reason (of the --config's task, else of every task)")
    return parser


def resolve_config(args) -> tuple[Config, Path]:
    """The config for this run: --config (+ --set), else the run directory's own config.yaml."""
    config_path = args.config
    if config_path is None and args.run_dir and (Path(args.run_dir) / "config.yaml").exists():
        config_path = str(Path(args.run_dir) / "config.yaml")
    if config_path is None:
        raise ConfigError("give --config FILE (or --run-dir of an existing run to continue it)")
    cfg = load_config(config_path, args.overrides)
    run_dir = Path(args.run_dir) if args.run_dir else cfg.run_dir()
    return cfg, run_dir


def _help_config(args) -> int:
    try:
        tasks = [load_config(args.config).task] if args.config else task_names()
    except ConfigError as exc:
        sys.stderr.write(f"trainer.train: error: {exc}\n")
        return EXIT_BAD_INPUT
    for task in tasks:
        sys.stdout.write(f"# task: {task}\n" + "\n".join(describe(config_class(task))) + "\n")
    return EXIT_FINISHED


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.help_config:
        return _help_config(args)
    try:
        cfg, run_dir = resolve_config(args)
        changes = resume_changes(cfg, run_dir, args.allow_changes)  # before anything is written
    except ConfigError as exc:
        sys.stderr.write(f"trainer.train: error: {exc}\n")
        return EXIT_BAD_INPUT

    # Heavy imports only after the config is known to be good (fast errors, fast --help).
    from trainer.core import dist, signals
    from trainer.core.env import read_env
    from trainer.core.io import NO_SPACE
    from trainer.core.log import setup_logging

    signals.install()
    try:
        env = read_env()
    except ConfigError as exc:
        sys.stderr.write(f"trainer.train: error: {exc}\n")
        return EXIT_BAD_INPUT
    if env.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / f".write-test.{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            sys.stderr.write(f"trainer.train: error: run directory {run_dir} is not writable ({exc.strerror})\n")
            return EXIT_DISK_FULL if exc.errno in NO_SPACE else EXIT_BAD_INPUT
    setup_logging(env.rank)  # stderr only until this process owns the run directory
    try:
        return _run(cfg, run_dir, env, setup_logging, changes)
    except KeyboardInterrupt:  # a second Ctrl-C before the training started or after it ended
        return EXIT_INTERRUPTED
    finally:
        dist.shutdown()
        signals.uninstall_interrupt()


def _run(cfg: Config, run_dir: Path, env, setup_logging, changes: list) -> int:
    """Own the run directory (the lock), then train; maps every outcome to its exit code and
    leaves state.json in a final state (or "checkpointed" for a requeue)."""
    from trainer.core.checkpoint import NonFiniteState
    from trainer.core.io import DiskFull, remove_stale_temporaries
    from trainer.core.lock import LockHeld, claim_run_dir
    from trainer.core.log import get_logger
    from trainer.core.loop import Diverged, Trainer

    log = get_logger("train")
    try:
        lock = claim_run_dir(run_dir, env, cfg.train.device)
    except (LockHeld, DiskFull) as exc:
        if env.is_main:
            log.error("%s", exc)
        return EXIT_DISK_FULL if isinstance(exc, DiskFull) else EXIT_BAD_INPUT
    trainer = None
    try:
        if env.is_main:
            setup_logging(env.rank, log_file=run_dir / "train.log")
            removed, freed = remove_stale_temporaries([run_dir, run_dir / "checkpoints", run_dir / "tensorboard"],
                                                      lock.mtime)
            if removed:
                log.info("removed %d stale temporary file(s) (%d bytes) left by an interrupted write", removed, freed)
        trainer = Trainer(cfg, run_dir, env, changes)
        if env.is_main:
            save_config(cfg, run_dir / "config.yaml")
        return trainer.fit()
    except BadInput as exc:
        return _ended(log, trainer, run_dir, env, exc, "failed", EXIT_BAD_INPUT)
    except DiskFull as exc:
        return _ended(log, trainer, run_dir, env, exc, "failed", EXIT_DISK_FULL)
    except (Diverged, NonFiniteState) as exc:
        return _ended(log, trainer, run_dir, env, exc, "diverged", EXIT_DIVERGED)
    except KeyboardInterrupt:
        log.warning("stopped by a second Ctrl-C: nothing saved since the last checkpoint; run the same "
                    "command to continue from it")
        return _ended(log, trainer, run_dir, env, None, "stopped", EXIT_INTERRUPTED)
    except Exception:
        log.error("training crashed:\n%s", traceback.format_exc())
        return _ended(log, trainer, run_dir, env, None, "failed", EXIT_CRASHED)
    finally:
        if trainer is not None:
            trainer.close()
        if lock is not None:
            lock.release()


def _ended(log, trainer, run_dir: Path, env, error: BaseException | None, status: str, code: int) -> int:
    """Log ``error`` (one line) and record ``status`` in state.json; a state.json that cannot be
    written (a full disk) is reported, not raised."""
    from trainer.core.runstate import FINAL_STATUSES, read_state, write_state

    if error is not None:
        log.error("%s", error)
    if not env.is_main:
        return code
    try:
        if trainer is not None:
            trainer.mark(status, exit_code=code)
        elif read_state(run_dir).get("status") not in (None, *FINAL_STATUSES):  # left "running" by a killed run
            write_state(run_dir, status=status, exit_code=code)
    except Exception as exc:  # the exit code must survive a failing state write
        log.warning("could not record status %r in %s (%s)", status, run_dir / "state.json", exc)
    return code


__all__ = ["main", "EXIT_REQUEUE"]

if __name__ == "__main__":
    sys.exit(main())
