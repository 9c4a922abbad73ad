"""The one sbatch renderer of the launcher: a submitit executor and the exact script it hands to
``sbatch``, from one dict of sbatch parameters (login node; no torch).

Training jobs, sweeps (job arrays) and the evaluation chained after training all submit through
:func:`executor` and show their script (``--emit-sbatch``, ``--dry-run``, the golden files in
``tests/golden/``) through :func:`script`, the only caller of submitit's private renderer.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def executor(folder: Path, parameters: dict):
    """A submitit SlurmExecutor writing into ``folder`` with these sbatch ``parameters``; submitit's
    own requeue on timeout is off (``max_num_timeout=0``): the requeue policy is :mod:`jobs.injob.requeue`'s."""
    import submitit

    slurm_executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    slurm_executor.update_parameters(**parameters)
    return slurm_executor


def script(folder: Path, parameters: dict, count: int | None = None) -> str:
    """The script :func:`executor` hands to sbatch (rendered without needing srun here); ``count``:
    the number of jobs of a job array (None: one job)."""
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=count, **parameters)
