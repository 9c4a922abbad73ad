"""``launch.py sweep``: every combination of the ``--grid`` values as ONE Slurm job array (no torch).

    launch.py sweep --config CFG --grid loss.w_gan=0.05,0.1,0.3 --grid loss.gan_start_fraction=0.5,0.6
        [--name NAME] [--run-dir ROOT] [--max-parallel N] [--evaluate-after TEST_DIR] [submit flags] [--dry-run]

Before anything is written or submitted, every element's config is loaded and checked with the
trainer's own loader (``load_config(CFG, [--set ..., grid overrides])``): one bad value refuses
the whole sweep, naming the element and the key. Then the code snapshot is taken once
(``ROOT/slurm/code``), each element gets its run directory ``ROOT/<name>`` (:mod:`jobs.submit.grid`) with
its frozen config (``slurm/submitted_config.yaml``) and ``slurm/code.json``, and submitit submits one
array (``executor.batch()``; ``--max-parallel`` is the array's ``%N``) whose task i trains element i
with its own :class:`jobs.injob.job.TrainingJob`: its requeue is ``scontrol requeue ARRAYID_i``, that
element only, within the budgets of :func:`jobs.injob.requeue.decide`. The array's submitit files and
logs lie in ``ROOT/slurm``. ``ROOT/sweep.json`` records the grid and element -> run directory and
job id; the submission index gets one record per element (``sweep``: the root).

Resubmitting the same grid to the same root continues the sweep: elements that have trained all
their epochs are skipped (they keep their job ids in ``sweep.json``), and the new array holds the
others in element order (its task i is the i-th element not skipped); a single one left is
submitted as a job of its own, its files and logs in its run directory's ``slurm/``. The snapshot in
``ROOT/slurm/code`` is replaced only once no earlier evaluation job of the sweep, which runs from it,
is still queued or running (:func:`evaluations_in_queue`); ``sweep.json`` lists every evaluation
array (``evaluation_arrays``) so that ``cancel SWEEP`` reaches them all.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from jobs import rundir, runs, sbatch, slurm
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from jobs.slurm import format_slurm_time
from jobs.submit import grid, snapshot, validate
from jobs.submit import jobspec as submit
from jobs.submit.profiles import default_cluster, load_profile
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
        if root.is_dir() and RunDir(root).looks_like_one():
            raise LaunchError(f"{root} is a run directory, not a sweep's root; choose another --name or --run-dir")
        return
    old = [(a.get("key"), list(a.get("values") or [])) for a in previous.get("grid") or [] if isinstance(a, dict)]
    if old != [(axis.key, list(axis.values)) for axis in axes]:
        shown = " ".join(f"--grid {key}={','.join(map(str, values))}" for key, values in old)
        raise LaunchError(f"sweep root {root} holds a sweep with another grid ({shown}); resubmit that grid to "
                          "continue it, or choose another --name or --run-dir")


def element_args(args: argparse.Namespace, root: Path, element: grid.Element, name: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "run_dir": str(root / element.name), "name": name})


def finished_elements(elements: list[grid.Element], specs: list[submit.JobSpec], configs: list) -> dict[int, str]:
    """Element index -> why it is skipped, for the elements that have trained all their epochs: a
    resubmitted sweep continues only the others (raise train.epochs to train the finished ones on)."""
    done = {}
    for element, spec, cfg in zip(elements, specs, configs, strict=True):
        finished = submit.finished_run(spec.run_dir, cfg)
        if finished is not None:
            done[element.index] = f"finished its {finished[0]} epochs (step {finished[1]}): skipped"
    return done


def plan(args: argparse.Namespace):
    """Every check of the sweep -> (profile, axes, elements, configs, specs, root, name, evaluation plan)."""
    from trainer.core.config import load_config, to_dict

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
    grid.check_distinct(elements, [to_dict(cfg) for cfg in configs])
    profile = load_profile(args.cluster or default_cluster())
    root = root_of(args, name)
    check_root(root, axes, args.config)
    specs = [submit.build_spec(element_args(args, root, element, name), profile, cfg)
             for element, cfg in zip(elements, configs, strict=True)]
    evaluation_plan = None
    if args.evaluate_after is not None:
        from jobs.submit import evaluation

        evaluation_plan = evaluation.plan(args.evaluate_after, base.task, name, profile)
    return profile, axes, elements, configs, specs, root, name, evaluation_plan


def executor_parameters(spec: submit.JobSpec, parallel: int) -> dict:
    return {**submit.executor_parameters(spec), "array_parallelism": parallel}


def sbatch_script(spec: submit.JobSpec, count: int, parallel: int, folder: Path) -> str:
    return sbatch.script(folder, executor_parameters(spec, parallel), count)


def _ranks(count: int) -> str:
    return f"{count} rank" if count == 1 else f"{count} ranks"


def describe_elements(elements: list[grid.Element]) -> list[str]:
    width = max(len(e.name) for e in elements)
    return [f"  {e.index:>3}  {e.name.ljust(width)}  --set " + " --set ".join(e.overrides) for e in elements]


def dry_run(args, profile, axes, elements, specs, root, name, evaluation_plan, done: dict[int, str]) -> int:
    from jobs.submit import evaluation

    todo = [i for i, e in enumerate(elements) if e.index not in done]
    parallel = args.max_parallel or len(todo)
    code = snapshot.planned(RunDir(root).slurm)
    spec = submit.with_code(specs[todo[0]], code)
    listed = describe_elements(elements)
    listed = [f"{line}   ({done[e.index]})" if e.index in done else line
              for e, line in zip(elements, listed, strict=True)]
    at_most = f", at most {min(parallel, len(todo))} at once"
    if not done:
        which = f"one job array 0-{len(todo) - 1}{at_most}"
    elif len(todo) == 1:
        which = f"{len(done)} finished, so one job (not an array) for the other"
    else:
        which = (f"{len(done)} finished, so one job array 0-{len(todo) - 1} of the other {len(todo)} (task i runs "
                 f"the i-th element not skipped){at_most}")
    out = [f"# sweep {name}: {len(elements)} elements ({' x '.join(str(len(a.values)) for a in axes)}) under {root}; "
           f"{which}; each element "
           f"{_ranks(spec.num_ranks)}, time {format_slurm_time(spec.time_s)} (cluster profile {profile.name})",
           "# element  run directory  overrides (on top of --config and --set)", *listed,
           f"# {snapshot.describe(code)}",
           "# ---- sbatch script (one job array; each task runs its element's jobs.injob.job.TrainingJob) ----"
           if len(todo) > 1 else "# ---- sbatch script (runs the element's jobs.injob.job.TrainingJob) ----",
           sbatch_script(spec, len(todo), parallel, RunDir(root).slurm) if len(todo) > 1 else
           submit.sbatch_script(spec),
           f"# ---- each task runs: python -m {spec.entry} --config ROOT/<element>/slurm/submitted_config.yaml "
           "--run-dir ROOT/<element>"]
    if evaluation_plan is not None and len(todo) == 1:
        out += ["# ---- evaluation: after the training job (afterok:JOBID) ----",
                evaluation.sbatch_script(evaluation_plan, spec, "afterok:JOBID", RunDir(spec.run_dir).slurm)]
    elif evaluation_plan is not None:
        out += ["# ---- evaluation: one array, task i after training task i (aftercorr:ARRAYID) ----",
                evaluation.sbatch_script(evaluation_plan, spec, "aftercorr:0", RunDir(root).slurm, len(todo))
                .replace("aftercorr:0", "aftercorr:ARRAYID")]
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def write_sweep(root: Path, name: str, args, axes, elements, specs, submitted: dict[int, tuple[str, str | None]],
                code, parallel) -> dict:
    """``submitted``: element index -> (job id, evaluation job id) of this submission; the other
    (finished) elements keep the ids of the submission that trained them."""
    previous = runs.read_sweep(root) or {}
    before = {e.get("index"): e for e in previous.get("elements") or [] if isinstance(e, dict)}
    arrays = list(previous.get("arrays") or [])
    job_ids = [job for job, _ in submitted.values()]
    eval_ids = [job for _, job in submitted.values() if job]

    def ids(index: int) -> dict:
        if index in submitted:
            return {"job_id": submitted[index][0], "evaluation_job_id": submitted[index][1]}
        old = before.get(index) or {}
        return {"job_id": old.get("job_id"), "evaluation_job_id": old.get("evaluation_job_id"), "skipped": "finished"}

    record = {
        "name": name, "root": str(root), "config": str(Path(args.config).resolve()), "set": list(args.overrides),
        "grid": [{"key": axis.key, "values": list(axis.values)} for axis in axes],
        "array_job_id": job_ids[0].split("_", 1)[0], "max_parallel": parallel, "submitted": runs.now_iso(),
        "code": {k: code.get(k) for k in ("snapshot", "revision", "dirty")},
        "evaluation": {"array_job_id": eval_ids[0].split("_", 1)[0], "test_dir": args.evaluate_after}
        if eval_ids else None,
        "evaluation_arrays": runs.evaluation_arrays(previous) + ([eval_ids[0].split("_", 1)[0]] if eval_ids else []),
        "elements": [{"index": e.index, "name": e.name, "overrides": list(e.overrides), "run_dir": str(s.run_dir),
                      **ids(e.index)} for e, s in zip(elements, specs, strict=True)],
        "arrays": arrays + [job_ids[0].split("_", 1)[0]],
        "command": "python launch.py " + shlex.join(sys.argv[1:]),  # what continues the sweep (cancelled elements)
    }
    atomic_write_text(root / rundir.SWEEP_FILE, json.dumps(record, indent=1) + "\n")
    return record


def evaluations_in_queue(root: Path) -> list[str]:
    """The earlier evaluation jobs of the sweep at ``root`` that squeue still shows: they run from
    ``ROOT/slurm/code``, which a new submission would replace under them. Raises LaunchError when
    squeue does not answer (it cannot be known)."""
    arrays = set(runs.evaluation_arrays(runs.read_sweep(root) or {}))
    if not arrays:
        return []
    queue = slurm.queue()
    if queue is None:
        raise LaunchError(f"squeue does not answer, so it cannot be told whether evaluation job(s) "
                          f"{', '.join(sorted(arrays))} of this sweep still run from {root}/slurm/code; "
                          "try again once it answers")
    return sorted(job["JobID"] for job in queue if job["JobID"].split("_", 1)[0] in arrays
                  and job["State"] in slurm.ACTIVE)


def submit_array(specs: list[submit.JobSpec], parallel: int, folder: Path) -> list[str]:
    executor = sbatch.executor(folder, executor_parameters(specs[0], parallel))
    try:
        with executor.batch():
            jobs = [executor.submit(submit.training_job(spec)) for spec in specs]
    except Exception as exc:
        raise runs.sbatch_refused(exc, "the sweep's job array") from None
    return [str(job.job_id) for job in jobs]


def submit_single(spec: submit.JobSpec) -> str:
    """The one element a resubmitted sweep has left: a job of its own (submitit submits a batch of one
    as a plain job), with its files and logs in the element's RUN_DIR/slurm like any single run."""
    executor = submit.make_executor(spec)
    try:
        job = executor.submit(submit.training_job(spec))
    except Exception as exc:
        raise runs.sbatch_refused(exc, "the sweep's job") from None
    return str(job.job_id)


def run(args: argparse.Namespace) -> int:
    profile, axes, elements, configs, specs, root, name, evaluation_plan = plan(args)
    have_slurm = slurm.available()
    if not have_slurm and not args.dry_run:
        sys.stderr.write(submit.sbatch_missing_message() + "\n")
        return 2
    submit.check_spec(specs[0], profile, ask_slurm=have_slurm)  # one partition, account and time for all
    done = finished_elements(elements, specs, configs)
    if len(done) == len(elements):
        raise LaunchError(f"every element of sweep {name} ({root}) has finished its epochs; to train them further "
                          "raise train.epochs (e.g. --set train.epochs=N), or choose another --name or --run-dir")
    todo = [i for i, e in enumerate(elements) if e.index not in done]
    for i in todo:
        try:
            submit.check_run_dir_free(specs[i], configs[i], create=False)
        except LaunchError as exc:
            raise LaunchError(f"sweep element {elements[i].index} ({elements[i].name}): {exc}") from None
    if args.dry_run:
        return dry_run(args, profile, axes, elements, specs, root, name, evaluation_plan, done)
    for i in todo:
        submit.check_run_dir(specs[i].run_dir)
    waiting = evaluations_in_queue(root)
    if waiting:
        raise LaunchError(f"sweep {name}: evaluation job(s) {', '.join(waiting)} of an earlier submission are still "
                          f"queued or running from the code snapshot in {root}/slurm/code, which this submission "
                          "would replace; resubmit once they have ended (python launch.py status "
                          f"{name}), or cancel them (python launch.py cancel JOB)")
    code = snapshot.take(RunDir(root).slurm)
    frozen = []
    for i in todo:
        snapshot.write_record(RunDir(specs[i].run_dir).slurm, code)
        frozen.append(submit.with_code(submit.freeze_config(specs[i], configs[i]), code))
    parallel = args.max_parallel or len(todo)
    single = len(frozen) == 1
    job_ids = [submit_single(frozen[0])] if single else submit_array(frozen, parallel, RunDir(root).slurm)
    for spec, job_id in zip(frozen, job_ids, strict=True):
        runs.record_submission(job_id, spec.run_dir, name, spec.cluster, sweep=str(root))
    eval_ids: list[str] = []
    if evaluation_plan is not None:
        from jobs.submit import evaluation

        try:
            eval_ids = ([evaluation.submit_after(evaluation_plan, frozen[0], job_ids[0])] if single else
                        evaluation.submit_after_array(evaluation_plan, frozen, job_ids, RunDir(root).slurm))
        except LaunchError as exc:
            slurm.cancel(job_ids[0].split("_", 1)[0])
            raise LaunchError(f"{exc}; the sweep's array {job_ids[0].split('_', 1)[0]} was cancelled again, nothing "
                              "is left queued") from None
    submitted = {elements[i].index: (job_id, eval_ids[k] if eval_ids else None)
                 for k, (i, job_id) in enumerate(zip(todo, job_ids, strict=True))}
    for i, spec in zip(todo, frozen, strict=True):
        specs[i] = spec
    record = write_sweep(root, name, args, axes, elements, specs, submitted, code, parallel)
    sys.stdout.write(describe_submission(name, root, elements, record, done, frozen[0], parallel, code) + "\n")
    return 0


def describe_submission(name, root, elements, record, done: dict[int, str], spec, parallel, code) -> str:
    count = len(elements) - len(done)
    width = max(len(e.name) for e in elements)
    what = (f"job {record['array_job_id']} for its one unfinished element (" if count == 1 else
            f"job array {record['array_job_id']} with {count} elements (at most {min(parallel, count)} at once; each ")
    lines = [f"submitted sweep {name}: {what}{_ranks(spec.num_ranks)}, partition {spec.partition}, "
             f"time {format_slurm_time(spec.time_s)})" + (f"; {len(done)} finished, skipped" if done else ""),
             f"sweep root:    {root}  (sweep.json; logs in {RunDir(root).slurm})"]
    for element, entry in zip(elements, record["elements"], strict=True):
        if element.index in done:
            lines.append(f"  {str(entry.get('job_id') or '-'):<10} {element.name.ljust(width)}  {done[element.index]}")
            continue
        evaluation = f"  evaluation {entry['evaluation_job_id']}" if entry.get("evaluation_job_id") else ""
        lines.append(f"  {entry['job_id']:<10} {element.name.ljust(width)}{evaluation}")
    lines += [snapshot.describe(code),
              f"status:        python launch.py status {root}   (one line per element)",
              f"compare:       python launch.py compare {root}"]
    return "\n".join(lines)
