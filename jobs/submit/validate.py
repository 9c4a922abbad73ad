"""Every value ``launch.py`` hands to Slurm or to the job's command line, checked in one place.

Values reach Slurm as ``#SBATCH`` lines (submitit writes them unquoted; in the plain template a
quoted value with a newline still starts a new directive: ``--constraint $'a\\n#SBATCH --nodes=64'``),
as file name patterns (``--output``: ``%`` is a pattern, whitespace ends the directive's value)
and as numbers Slurm reads its own way (``--signal=USR2@-5``). Each rule below accepts only what
Slurm accepts for that value; anything else is a :class:`LaunchError`: one line naming the flag
(or the profile setting it came from), the value, and what to use instead. No torch.
"""

from __future__ import annotations

import re

from jobs.runs import LaunchError

# Slurm's own limit for --signal=SIG@SECONDS (sbatch: "sig_time must be between 0 and 65535").
MAX_SIGNAL_LEAD_S = 65535

_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# Account and partition names: Slurm stores them as plain words (',' separates lists, ':' and
# whitespace end a directive's value).
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
# Node features joined by Slurm's constraint operators: & | [ ] ( ) *count !not.
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.=&|\[\]()*!-]{1,256}")
_CONSTRAINT_START = re.compile(r"[A-Za-z0-9_\[(!]")
# Paths inside #SBATCH --output/--chdir: no whitespace, no '%' (Slurm's file name patterns),
# no quotes or backslashes (Slurm unquotes directive values).
_PATH = re.compile(r"[\w./+@:,=~-]+")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _show(value: object) -> str:
    return repr(value)  # a newline shows as \n: the one line stays one line


def job_name(value: str, label: str = "--name") -> str:
    if not _JOB_NAME.fullmatch(value):
        raise LaunchError(f"{label} {_show(value)}: use letters, digits, '.', '_' or '-' only (no spaces or "
                          "shell metacharacters), at most 128 characters")
    return value


def word(value: str, label: str) -> str:
    """An account or partition name."""
    if not _WORD.fullmatch(value):
        raise LaunchError(f"{label} {_show(value)}: Slurm takes one name of letters, digits, '_', '.' or '-' "
                          "here (no spaces, commas or newlines)")
    return value


def constraint(value: str, label: str = "--constraint") -> str:
    if not _CONSTRAINT.fullmatch(value) or not _CONSTRAINT_START.match(value):
        raise LaunchError(f"{label} {_show(value)}: use node features (letters, digits, '_', '.', '-', '=') "
                          "joined by Slurm's operators & | [ ] ( ) * ! only, e.g. a100_80 or 'a100_40|a100_80'")
    return value


def path(value: str, label: str) -> str:
    """A path that Slurm reads inside an #SBATCH directive (--output, --chdir)."""
    if _PATH.fullmatch(value):
        return value
    if "%" in value:
        why = "Slurm reads '%' in a log path as a file name pattern"
    elif _CONTROL.search(value) or any(c.isspace() for c in value):
        why = "a space or newline ends (or injects) an #SBATCH directive"
    else:
        why = "Slurm unquotes #SBATCH values"
    raise LaunchError(f"{label} {_show(value)}: {why}; use a path of letters, digits and _ . / - + @ : , = ~ only")


def module(value: str, label: str = "--entry") -> str:
    if not _MODULE.fullmatch(value):
        raise LaunchError(f"{label} {_show(value)}: expected a module name such as trainer.train")
    return value


_DEPENDENCY = re.compile(r"(afterok|aftercorr|afterany):\d+(_\d+)?")


def dependency(value: str, label: str = "the evaluation job's dependency") -> str:
    """An ``#SBATCH --dependency`` value the launcher builds from a job id Slurm gave it."""
    if not _DEPENDENCY.fullmatch(value):
        raise LaunchError(f"{label} {_show(value)}: expected afterok:JOBID or aftercorr:ARRAYID")
    return value


def argument(value: str, label: str) -> str:
    """A value passed on the job's command line (quoted, never run by a shell): no control characters."""
    if _CONTROL.search(value):
        raise LaunchError(f"{label} {_show(value)}: contains a control character (newline, tab, ...); "
                          "write the value on one line")
    return value


def at_least(value: int, minimum: int, label: str, hint: str = "") -> int:
    if value < minimum:
        raise LaunchError(f"{label} {value}: must be at least {minimum}{hint}")
    return value


def signal_lead(value: int, time_s: int, label: str = "--signal-lead") -> int:
    if not 1 <= value <= MAX_SIGNAL_LEAD_S:
        raise LaunchError(f"{label} {value}: Slurm takes 1 to {MAX_SIGNAL_LEAD_S} seconds before the time limit")
    if value >= time_s:
        from jobs.slurm import format_slurm_time

        raise LaunchError(f"{label} {value}s is not shorter than the time limit {format_slurm_time(time_s)}; give "
                          "a lead of a few minutes (the time a save takes, with margin)")
    return value


def time(text: str, label: str = "--time") -> int:
    """A Slurm time limit -> seconds (see :func:`jobs.slurm.parse_slurm_time`); 0 is refused."""
    from jobs.slurm import parse_slurm_time
    from trainer.core.settings import ConfigError

    try:
        seconds = parse_slurm_time(text)
    except ConfigError as exc:
        detail = str(exc).split(": ", 2)[-1]
        raise LaunchError(f"{label} {_show(text)}: {detail}") from None
    if seconds < 1:
        raise LaunchError(f"{label} {_show(text)}: must be longer than 0 (Slurm reads 0 as 'no limit'); "
                          "e.g. 04:00:00")
    return seconds


# JobSpec field -> (launch.py flag, cluster profile key)
SOURCES = {
    "name": ("--name", None), "partition": ("--partition", "partition"), "account": ("--account", "account"),
    "constraint": ("--constraint", "constraint"), "entry": ("--entry", None), "run_dir": ("--run-dir", None),
    "config": ("--config", None), "nodes": ("--nodes", None), "gpus_per_node": ("--gpus-per-node", "gpus_per_node"),
    "cpus_per_task": ("--cpus-per-task", "cpus_per_task"), "time": ("--time", "time"),
    "signal_lead_s": ("--signal-lead", "signal_lead_s"), "max_requeues": ("--max-requeues", "max_requeues"),
}


def check_spec(spec, profile, from_profile: frozenset[str] | set[str] = frozenset()) -> None:
    """All value checks of a :class:`jobs.submit.jobspec.JobSpec` that need neither Slurm nor the file system.

    ``from_profile``: the fields whose value came from the cluster profile, not from a flag (the
    message then names the profile setting)."""
    from jobs import ROOT  # the job's --chdir

    def label(field: str) -> str:
        flag, key = SOURCES[field]
        if field in from_profile and key:
            return f"{key} of cluster profile {profile.name!r}"
        return flag

    job_name(spec.name, label("name"))
    word(spec.partition, label("partition"))
    if spec.account is not None:
        word(spec.account, label("account"))
    if spec.constraint is not None:
        constraint(spec.constraint, label("constraint"))
    module(spec.entry, label("entry"))
    path(str(spec.run_dir), label("run_dir"))
    path(str(ROOT), "the toolkit's folder (the job's --chdir)")
    argument(str(spec.config), label("config"))
    for item in spec.overrides:
        argument(item, "--set")
    at_least(spec.nodes, 1, label("nodes"))
    at_least(spec.gpus_per_node, 1, label("gpus_per_node"), " (one rank per GPU)")
    if spec.gpus_per_node > profile.max_gpus_per_node:
        raise LaunchError(f"{label('gpus_per_node')} {spec.gpus_per_node}: a node of {profile.name!r} has "
                          f"{profile.max_gpus_per_node} GPUs; use more --nodes instead")
    at_least(spec.cpus_per_task, 1, label("cpus_per_task"), " (cores per rank)")
    signal_lead(spec.signal_lead_s, spec.time_s, label("signal_lead_s"))
    at_least(spec.policy.max_requeues, 0, label("max_requeues"), " (0: never requeue automatically)")
