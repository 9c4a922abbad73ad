"""``launch.py sweep``: every combination of the ``--grid`` values as ONE Slurm job array (no torch).

    launch.py sweep --config CFG --grid loss.w_gan=0.05,0.1,0.3 --grid loss.gan_start_fraction=0.5,0.6
        [--name NAME] [--run-dir ROOT] [--max-parallel N] [--evaluate-after TEST_DIR] [submit flags] [--dry-run]

Before anything is written or submitted, every element's config is loaded and checked with the
trainer's own loader (``load_config(CFG, [--set ..., grid overrides])``): one bad value refuses
the whole sweep, naming the element and the key. Then the code snapshot is taken once
(``ROOT/slurm/code``), each element gets its run directory ``ROOT/<name>`` (:mod:`jobs.grid`) with
its frozen config (``slurm/submitted_config.yaml``) and ``slurm/code.json``, and submitit submits one
array (``executor.batch()``; ``--max-parallel`` is the array's ``%N``) whose task i trains element i
with its own :class:`jobs.job.TrainingJob`: its requeue is ``scontrol requeue ARRAYID_i``, that
element only, within the budgets of :func:`jobs.requeue.decide`. The array's submitit files and
logs lie in ``ROOT/slurm``. ``ROOT/sweep.json`` records the grid and element -> run directory and
job id; the submission index gets one record per element (``sweep``: the root).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from jobs import grid, runs, slurm, snapshot, submit, validate
from jobs.profiles import default_cluster, format_slurm_time, load_profile
from jobs.runs import LaunchError
from trainer.core.io import atomic_write_text
from trainer.core.settings import ConfigError


def element_configs(config: str, fixed: list[str], elements: list[grid.Element]) -> list:
    """Each element's resolved config (the trainer's loader); a bad value refuses the whole sweep."""
    from trainer.core.config import load_config

    configs = []
    for element in elements:
        try:
            configs.append(load_config(config, [*fixed, *element.overrides]))
        except ConfigError as exc:
            raise LaunchError(f"sweep element {element.index} ({element.name}): {exc}; nothing was submitted") from None
    return configs


def root_of(args: argparse.Namespace, name: str) -> Path:
    return Path(args.run_dir if args.run_dir else Path("logs") / "runs" / name).resolve()


def check_root(root: Path, axes: list[grid.Axis], config: str) -> None:
    """The root is a folder that is not a run directory; an existing sweep there has the same grid."""
    if root.exists() and not root.is_dir():
        raise LaunchError(f"sweep root {root} is a file, not a directory; choose another --run-dir or --name")
    validate.path(str(root), "the sweep's root (--run-dir or logs/runs/NAME)")
    previous = runs.read_sweep(root)
    if previous is None:
        if root.is_dir() and runs.is_run_dir(root):
            raise LaunchError(f"{root} is a run directory, not a sweep's root; choose another --name or --run-dir")
        return
    old = [(a.get("key"), list(a.get("values") or [])) for a in previous.get("grid") or [] if isinstance(a, dict)]
    if old != [(axis.key, list(axis.values)) for axis in axes]:
        shown = " ".join(f"--grid {key}={','.join(map(str, values))}" for key, values in old)
        raise LaunchError(f"sweep root {root} holds a sweep with another grid ({shown}); resubmit that grid to "
                          "continue it, or choose another --name or --run-dir")


def element_args(args: argparse.Namespace, root: Path, element: grid.Element, name: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "run_dir": str(root / element.name), "name": name})


def plan(args: argparse.Namespace):
    """Every check of the sweep -> (profile, axes, elements, configs, specs, root, name, evaluation plan)."""
    from trainer.core.config import load_config

    if not args.config:
        raise LaunchError("--config is required (e.g. launch.py sweep --config configs/se_balanced.yaml --grid ...)")
    axes = grid.parse_grid(args.grid, args.overrides)
    elements = grid.expand(axes)
    if len(elements) < 2:
        raise LaunchError(f"the grid has one combination ({elements[0].name}); submit it as one run: "
                          f"launch.py --config {args.config} " + " ".join(f"--set {o}" for o in elements[0].overrides))
    base = load_config(args.config, args.overrides)
    name = validate.job_name(args.name if args.name is not None else base.run.name,
                             "--name" if args.name is not None else "run.name of the config (or give --name)")
    if args.max_parallel is not None:
        validate.at_least(args.max_parallel, 1, "--max-parallel")
    limit = slurm.max_array_size() if slurm.available() else 1001
    if len(elements) > limit:
        raise LaunchError(f"the grid has {len(elements)} combinations; Slurm's MaxArraySize {limit} allows task ids "
                          f"0-{limit - 1}: split the sweep")
    configs = element_configs(args.config, args.overrides, elements)
    profile = load_profile(args.cluster or default_cluster())
    root = root_of(args, name)
    check_root(root, axes, args.config)
    specs = [submit.build_spec(element_args(args, root, element, name), profile, cfg)
             for element, cfg in zip(elements, configs, strict=True)]
    evaluation_plan = None
    if args.evaluate_after is not None:
        from jobs import evaluation

        evaluation_plan = evaluation.plan(args.evaluate_after, base.task, name, profile)
    return profile, axes, elements, configs, specs, root, name, evaluation_plan


def executor_parameters(spec: submit.JobSpec, parallel: int) -> dict:
    return {**submit.executor_parameters(spec), "array_parallelism": parallel}


def sbatch_script(spec: submit.JobSpec, count: int, parallel: int, folder: Path) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    return _make_sbatch_string(command=command, folder=folder, map_count=count, **executor_parameters(spec, parallel))


def _ranks(count: int) -> str:
    return f"{count} rank" if count == 1 else f"{count} ranks"


def describe_elements(elements: list[grid.Element]) -> list[str]:
    width = max(len(e.name) for e in elements)
    return [f"  {e.index:>3}  {e.name.ljust(width)}  --set " + " --set ".join(e.overrides) for e in elements]


def dry_run(args, profile, axes, elements, configs, specs, root, name, evaluation_plan) -> int:
    from jobs import evaluation

    parallel = args.max_parallel or len(elements)
    code = snapshot.planned(runs.slurm_folder(root))
    spec = submit.with_code(specs[0], code)
    out = [f"# sweep {name}: {len(elements)} elements ({' x '.join(str(len(a.values)) for a in axes)}) under {root}; "
           f"one job array 0-{len(elements) - 1}, at most {min(parallel, len(elements))} at once; each element "
           f"{_ranks(spec.num_ranks)}, time {format_slurm_time(spec.time_s)} (cluster profile {profile.name})",
           "# element  run directory  overrides (on top of --config and --set)", *describe_elements(elements),
           f"# {snapshot.describe(code)}",
           "# ---- sbatch script (one job array; task i runs element i's jobs.job.TrainingJob) ----",
           sbatch_script(spec, len(elements), parallel, runs.slurm_folder(root)),
           f"# ---- task i runs: python -m {spec.entry} --config ROOT/<element>/slurm/submitted_config.yaml "
           "--run-dir ROOT/<element>"]
    if evaluation_plan is not None:
        out += ["# ---- evaluation: one array, task i after training task i (aftercorr:ARRAYID) ----",
                evaluation.sbatch_script(evaluation_plan, spec, "aftercorr:0", runs.slurm_folder(root), len(elements))
                .replace("aftercorr:0", "aftercorr:ARRAYID")]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def write_sweep(root: Path, name: str, args, axes, elements, specs, job_ids, eval_ids, code, parallel) -> dict:
    previous = runs.read_sweep(root) or {}
    arrays = list(previous.get("arrays") or [])
    record = {
        "name": name, "root": str(root), "config": str(Path(args.config).resolve()), "set": list(args.overrides),
        "grid": [{"key": axis.key, "values": list(axis.values)} for axis in axes],
        "array_job_id": job_ids[0].split("_", 1)[0], "max_parallel": parallel, "submitted": runs.now_iso(),
        "code": {k: code.get(k) for k in ("snapshot", "revision", "dirty")},
        "evaluation": {"array_job_id": eval_ids[0].split("_", 1)[0], "test_dir": args.evaluate_after}
        if eval_ids else None,
        "elements": [{"index": e.index, "name": e.name, "overrides": list(e.overrides), "run_dir": str(s.run_dir),
                      "job_id": job_id, "evaluation_job_id": eval_ids[e.index] if eval_ids else None}
                     for e, s, job_id in zip(elements, specs, job_ids, strict=True)],
        "arrays": arrays + [job_ids[0].split("_", 1)[0]],
    }
    atomic_write_text(root / runs.SWEEP_FILE, json.dumps(record, indent=1) + "\n")
    return record


def submit_array(specs: list[submit.JobSpec], parallel: int, folder: Path) -> list[str]:
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**executor_parameters(specs[0], parallel))
    try:
        with executor.batch():
            jobs = [executor.submit(submit.training_job(spec)) for spec in specs]
    except Exception as exc:  # submitit wraps sbatch's refusal; keep its last line
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise LaunchError(f"sbatch refused the sweep's job array: {lines[-1] if lines else exc}") from None
    return [str(job.job_id) for job in jobs]


def run(args: argparse.Namespace) -> int:
    profile, axes, elements, configs, specs, root, name, evaluation_plan = plan(args)
    have_slurm = slurm.available()
    if not have_slurm and not args.dry_run:
        sys.stderr.write(submit.sbatch_missing_message() + "\n")
        return 2
    submit.check_spec(specs[0], profile, ask_slurm=have_slurm)  # one partition, account and time for all
    for element, spec, cfg in zip(elements, specs, configs, strict=True):
        try:
            submit.check_run_dir_free(spec, cfg, create=False)
        except LaunchError as exc:
            raise LaunchError(f"sweep element {element.index} ({element.name}): {exc}") from None
    if args.dry_run:
        return dry_run(args, profile, axes, elements, configs, specs, root, name, evaluation_plan)
    for spec in specs:
        submit.check_run_dir(spec.run_dir)
    code = snapshot.take(runs.slurm_folder(root))
    frozen = []
    for spec, cfg in zip(specs, configs, strict=True):
        snapshot.write_record(runs.slurm_folder(spec.run_dir), code)
        frozen.append(submit.with_code(submit.freeze_config(spec, cfg), code))
    parallel = args.max_parallel or len(elements)
    job_ids = submit_array(frozen, parallel, runs.slurm_folder(root))
    for spec, job_id in zip(frozen, job_ids, strict=True):
        runs.record_submission(job_id, spec.run_dir, name, spec.cluster, sweep=str(root))
    eval_ids: list[str] = []
    if evaluation_plan is not None:
        from jobs import evaluation

        try:
            eval_ids = evaluation.submit_after_array(evaluation_plan, frozen, job_ids, runs.slurm_folder(root))
        except LaunchError as exc:
            slurm.run(["scancel", job_ids[0].split("_", 1)[0]])
            raise LaunchError(f"{exc}; the sweep's array {job_ids[0].split('_', 1)[0]} was cancelled again, nothing "
                              "is left queued") from None
    write_sweep(root, name, args, axes, elements, frozen, job_ids, eval_ids, code, parallel)
    sys.stdout.write(describe_submission(name, root, elements, job_ids, eval_ids, frozen[0], parallel, code) + "\n")
    return 0


def describe_submission(name, root, elements, job_ids, eval_ids, spec, parallel, code) -> str:
    array_id = job_ids[0].split("_", 1)[0]
    width = max(len(e.name) for e in elements)
    lines = [f"submitted sweep {name}: job array {array_id} with {len(elements)} elements (at most "
             f"{min(parallel, len(elements))} at once; each {_ranks(spec.num_ranks)}, partition {spec.partition}, "
             f"time {format_slurm_time(spec.time_s)})",
             f"sweep root:    {root}  (sweep.json; logs in {runs.slurm_folder(root)})"]
    for element, job_id in zip(elements, job_ids, strict=True):
        evaluation = f"  evaluation {eval_ids[element.index]}" if eval_ids else ""
        lines.append(f"  {job_id:<10} {element.name.ljust(width)}{evaluation}")
    lines += [snapshot.describe(code),
              f"status:        python launch.py status {root}   (one line per element)",
              f"compare:       python launch.py compare {root}"]
    return "\n".join(lines)
