"""Render ``slurm_templates/levante.sbatch`` (``launch.py --emit-sbatch``) from a JobSpec.

Placeholders are ``{{name}}``; every value that reaches the shell is quoted with
``shlex.quote``, so names and ``--set`` values are never interpreted by a shell.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

from jobs import ROOT
from jobs.slurm import format_slurm_time
from jobs.submit.jobspec import JobSpec

TEMPLATE = ROOT / "slurm_templates" / "levante.sbatch"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render(spec: JobSpec, *, python: str | None = None, root: Path | str = ROOT,
           template: Path = TEMPLATE) -> str:
    q = shlex.quote
    values = {
        "name": spec.name,  # checked: letters, digits, . _ - only
        "partition": q(spec.partition),
        "account_line": f"#SBATCH --account={q(spec.account)}" if spec.account else "# (no --account)",
        "nodes": str(spec.nodes),
        "gpus_per_node": str(spec.gpus_per_node),
        "cpus_per_node": str(spec.cpus_per_task * spec.gpus_per_node),
        "time": format_slurm_time(spec.time_s),
        "constraint_line": f"#SBATCH --constraint={q(spec.constraint)}" if spec.constraint else "# (no --constraint)",
        "signal_lead_s": str(spec.signal_lead_s),
        "log_pattern": f"{spec.run_dir}/slurm/%j_sbatch.out",
        "root": str(root),
        "run_dir": q(str(spec.run_dir)),
        "python": q(python or sys.executable),
        "max_requeues": str(spec.policy.max_requeues),
        "max_crash_requeues": str(spec.policy.max_crash_requeues),
        "max_stalled_restarts": str(spec.policy.max_stalled_restarts),
        "setup": "\n".join(spec.setup) if spec.setup else "# (no setup lines in the profile)",
        "entry": spec.entry,
        "trainer_args": " ".join(q(arg) for arg in spec.trainer_argv()),
    }

    def substitute(match: re.Match) -> str:
        return values[match.group(1)]

    return _PLACEHOLDER.sub(substitute, Path(template).read_text())
