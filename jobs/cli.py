"""Argument parsing for ``launch.py`` (no torch imports: login-node start-up must be fast)."""

from __future__ import annotations

import argparse
import sys

from trainer.config import load_config
from trainer.configbase import ConfigError, dump_yaml


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launch.py",
        description="Submit speech-enhancement GAN training jobs to SLURM (via submitit) and follow them.",
    )
    parser.add_argument("--config", help="training config YAML (e.g. configs/se_balanced.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value (type-checked); repeatable")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config; submit nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"launch.py: error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(dump_yaml(cfg))
        return 0
    print("launch.py: submission is not implemented yet; use --dry-run", file=sys.stderr)
    return 2
