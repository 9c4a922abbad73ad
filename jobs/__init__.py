"""The launcher (login node, no torch) and what runs inside a Slurm job; see docs/architecture.md."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the checkout (or a job's code snapshot)
