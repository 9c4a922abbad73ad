"""The training loop: ``python -m trainer.train --config C --run-dir D [--set k=v ...]``.

Runs unchanged as one process or under ``torchrun --nproc_per_node 4 -m trainer.train ...``.
Running again with the same run directory continues from ``checkpoints/last.pt`` at the exact
step (per-step losses equal those of an uninterrupted run, bit for bit on CPU). SIGUSR2/SIGTERM
only set a flag: at the next step boundary all ranks agree, save ``last`` together and exit with
``EXIT_REQUEUE`` (42). Exit codes: ``trainer/core/exitcodes.py``.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from trainer.core.config import Config, ConfigError, config_class, load_config, save_config
from trainer.core.errors import BadInput
from trainer.core.exitcodes import EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_DIVERGED, EXIT_FINISHED, EXIT_REQUEUE
from trainer.core.registry import task_names
from trainer.core.settings import describe


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="training config YAML; default: the run directory's config.yaml")
    parser.add_argument("--run-dir", help="run directory (default: run.dir or logs/runs/<run.name>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
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
    except ConfigError as exc:
        sys.stderr.write(f"trainer.train: error: {exc}\n")
        return EXIT_BAD_INPUT

    # Heavy imports only after the config is known to be good (fast errors, fast --help).
    from trainer.core import dist, signals
    from trainer.core.env import read_env
    from trainer.core.log import get_logger, setup_logging
    from trainer.core.loop import Diverged, Trainer

    signals.install()
    try:
        env = read_env()
    except ConfigError as exc:
        sys.stderr.write(f"trainer.train: error: {exc}\n")
        return EXIT_BAD_INPUT
    if env.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            sys.stderr.write(f"trainer.train: error: run directory {run_dir} is not writable ({exc.strerror})\n")
            return EXIT_BAD_INPUT
    setup_logging(env.rank, log_file=run_dir / "train.log" if env.is_main else None)
    log = get_logger("train")
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, env)
        if env.is_main:
            save_config(cfg, run_dir / "config.yaml")
        return trainer.fit()
    except BadInput as exc:
        log.error("%s", exc)
        if trainer is not None:
            trainer.mark("failed")
        return EXIT_BAD_INPUT
    except Diverged as exc:
        log.error("%s", exc)
        if trainer is not None:
            trainer.mark("diverged")
        return EXIT_DIVERGED
    except Exception:
        log.error("training crashed:\n%s", traceback.format_exc())
        if trainer is not None:
            trainer.mark("failed")
        return EXIT_CRASHED
    finally:
        if trainer is not None:
            trainer.close()
        dist.shutdown()


__all__ = ["main", "EXIT_REQUEUE"]

if __name__ == "__main__":
    sys.exit(main())
