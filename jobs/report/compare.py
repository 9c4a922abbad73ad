"""``launch.py compare RUN_OR_SWEEP... [--metric pesq] [--plot out.png] [--csv out.csv] [--report DIR]`` (no torch).

One row per run: the config values that differ between the runs (a diff of their ``config.yaml``,
or ``slurm/submitted_config.yaml`` before the trainer wrote one; ``run.dir`` is left out), the best
validation PESQ, STOI, SSNR and composite with the epoch of each (counted from 1, as ``status``,
``list`` and the training log count them: the record of ``"epoch": 10`` in ``metrics.jsonl`` is
epoch 11), the last validated epoch, the run's state
(``state.json``) and, when an evaluation wrote ``test_scores.json``, the test scores of the
checkpoint chosen on validation (``best_<metric>``, else ``last``). Rows are sorted by the best
value of ``--metric`` (higher is better; lower for a metric whose name contains ``loss``); runs
without it come last. ``--plot`` draws every run's validation curves into one PNG (matplotlib is
imported only then), ``--csv`` writes the table with one column per value, ``--report DIR`` a
self-contained page (:mod:`trainer.report.compare_page`; an unwritable DIR is refused first). A run without a config
file is listed with ``-`` in the config columns and a note; its (missing) values are not compared.

Only the epoch records of ``metrics.jsonl`` are parsed (:func:`trainer.core.runstate.read_epoch_records`,
the reader of the file's writer, skips the step records unread), so 50 runs of a few MB each compare
in well under a second (``benchmarks/bench_compare.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from pathlib import Path

import yaml

from jobs import runs
from jobs.rundir import RunDir
from jobs.runs import LaunchError
from trainer.core.io import atomic_write, atomic_write_text
from trainer.core.runstate import read_epoch_records

SHOWN = ("pesq", "stoi", "ssnr", "composite")  # best validation values in the table
TEST_SHOWN = ("pesq", "stoi", "ssnr")
TEST_ALL = ("pesq", "csig", "cbak", "covl", "ssnr", "stoi")
IGNORED_KEYS = ("run.dir",)
_METRIC = re.compile(r"[a-z][a-z0-9_]*")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass
class Run:
    run_dir: Path
    label: str = ""
    config: dict = dataclasses.field(default_factory=dict)  # flattened: section.key -> value
    epochs: list[dict] = dataclasses.field(default_factory=list)  # the epoch records
    state: str = "-"
    total_epochs: object = None
    test: dict | None = None  # test_scores.json's summaries (checkpoint -> metrics)
    _best: dict = dataclasses.field(default_factory=dict, repr=False)

    def best(self, metric: str) -> tuple[float, int] | None:
        """(best value, its epoch) of ``valid_<metric>``; None when no epoch record has it."""
        if metric not in self._best:
            self._best[metric] = self._find_best(metric)
        return self._best[metric]

    def _find_best(self, metric: str) -> tuple[float, int] | None:
        key, lower = f"valid_{metric}", lower_is_better(metric)
        found = None
        for record in self.epochs:
            value = record.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                continue
            if found is None or (value < found[0] if lower else value > found[0]):
                found = (float(value), record.get("epoch"))
        return found

    @property
    def last_epoch(self) -> int | None:
        epochs = [r.get("epoch") for r in self.epochs if isinstance(r.get("epoch"), int)]
        return max(epochs) if epochs else None

    def test_column(self, metric: str) -> tuple[str, dict] | None:
        """The checkpoint chosen on validation and its test scores."""
        if not self.test:
            return None
        for name in (f"best_{metric}", "last"):
            if isinstance(self.test.get(name), dict):
                return name, self.test[name]
        return None

    def curve(self, metric: str) -> list[tuple[int, float]]:
        key = f"valid_{metric}"
        return [(r["epoch"], float(r[key])) for r in self.epochs if isinstance(r.get("epoch"), int)
                and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)
                and math.isfinite(r[key])]


def shown(epoch: object) -> str:
    """An epoch index of metrics.jsonl (0-based) as every command shows it (1-based)."""
    return str(epoch + 1) if isinstance(epoch, int) and not isinstance(epoch, bool) else "-"


def lower_is_better(metric: str) -> bool:
    return "loss" in metric


def flatten(tree: object, prefix: str = "") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def read_config(run_dir: Path) -> dict:
    for path in (run_dir / "config.yaml", RunDir(run_dir).slurm / "submitted_config.yaml"):
        try:
            return flatten(yaml.load(path.read_text(), Loader=_Loader) or {})
        except (OSError, yaml.YAMLError):
            continue
    return {}


def load_run(run_dir: Path) -> Run:
    run = Run(run_dir=run_dir, config=read_config(run_dir), epochs=read_epoch_records(run_dir))
    state, problem = RunDir(run_dir).load_state()
    run.state = str(state.get("status", "-")) if not problem else "unreadable"
    if not state and not problem and RunDir(run_dir).slurm.is_dir():
        run.state = "submitted"
    run.total_epochs = state.get("epochs") or run.config.get("train.epochs")
    try:
        scores = json.loads((run_dir / "test_scores.json").read_text())
        run.test = scores.get("summaries") if isinstance(scores, dict) else None
    except (OSError, ValueError):
        run.test = None
    return run


def differing_keys(configs: list[dict]) -> list[str]:
    """Keys whose value is not the same in every config (missing counts as a value), in config order."""
    keys: dict[str, None] = {}
    for config in configs:
        keys.update(dict.fromkeys(config))
    missing = object()
    out = []
    for key in keys:
        if key in IGNORED_KEYS:
            continue
        values = [config.get(key, missing) for config in configs]
        if any(v != values[0] or (v is missing) != (values[0] is missing) for v in values[1:]):
            out.append(key)
    return out


def labels(paths: list[Path]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (a sweep's element: sweep/element)."""
    parts = [p.parts for p in paths]
    depth = {i: 1 for i in range(len(paths))}
    while True:
        shown = ["/".join(parts[i][-depth[i]:]) for i in range(len(paths))]
        clashes = {i for i in range(len(paths)) if shown.count(shown[i]) > 1 and depth[i] < len(parts[i])}
        if not clashes:
            return shown
        for i in clashes:
            depth[i] += 1


def expand_targets(targets: list[str]) -> list[Path]:
    """Run directories of the targets: a sweep (root, name or array job id) gives all its elements."""
    found: list[Path] = []
    for target in targets:
        path = Path(target)
        if "/" in target and path.is_dir() and not runs.is_sweep_root(path) and RunDir(path).looks_like_one():
            found.append(path)  # a run directory given as a path: no index lookup
            continue
        swept = runs.sweep_target(target)
        if swept is not None:
            found += [Path(e["run_dir"]) for e in swept[1]["elements"] if isinstance(e, dict) and e.get("run_dir")]
        else:
            found.append(runs.resolve(target)[1])
    unique: dict[Path, None] = {}
    for path in found:
        unique.setdefault(Path(path).resolve(), None)
    return list(unique)


def sort_runs(items: list[Run], metric: str) -> list[Run]:
    lower = lower_is_better(metric)

    def key(run: Run):
        best = run.best(metric)
        if best is None:
            return (1, 0.0, run.label)
        return (0, best[0] if lower else -best[0], run.label)

    return sorted(items, key=key)


def show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def _num(value: object, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def columns(metric: str) -> tuple[str, ...]:
    return SHOWN if metric in SHOWN else (metric, *SHOWN)


def table(items: list[Run], keys: list[str], metric: str) -> list[tuple[str, ...]]:
    with_test = any(run.test for run in items)
    header = ["RUN", *keys, *(f"{m.upper()} (ep)" for m in columns(metric)), "LAST_EPOCH", "STATE"]
    if with_test:
        header += ["TEST_CKPT", *(f"TEST_{m.upper()}" for m in TEST_SHOWN)]
    rows = [tuple(header)]
    for run in items:
        row = [run.label, *(show(run.config[k]) if k in run.config else "-" for k in keys)]
        for m in columns(metric):
            best = run.best(m)
            row.append(f"{_num(best[0])} ({shown(best[1])})" if best else "-")
        row += [shown(run.last_epoch), run.state]
        if with_test:
            chosen = run.test_column(metric)
            row += [chosen[0], *(_num(chosen[1].get(m)) for m in TEST_SHOWN)] if chosen else ["-"] * 4
        rows.append(tuple(row))
    return rows


def csv_text(items: list[Run], keys: list[str], metric: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names = columns(metric)
    writer.writerow(["run", "run_dir", *keys, *(f"{k}_{m}" for m in names for k in ("best", "epoch")),
                     "last_epoch", "epochs", "state", "test_checkpoint", *(f"test_{m}" for m in TEST_ALL)])
    for run in items:
        best = [run.best(m) for m in names]
        chosen = run.test_column(metric)
        writer.writerow([run.label, str(run.run_dir), *(show(run.config[k]) if k in run.config else "" for k in keys),
                         *(x for b in best for x in ((b[0], shown(b[1])) if b else ("", ""))),
                         shown(run.last_epoch) if run.last_epoch is not None else "",
                         run.total_epochs if run.total_epochs is not None else "", run.state,
                         chosen[0] if chosen else "", *((chosen[1].get(m, "") if chosen else "") for m in TEST_ALL)])
    return buffer.getvalue()


def plot(items: list[Run], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = columns(metric)
    cols = 2
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows + 0.3 * min(len(items), 30) / 2),
                             squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for run in items:
            curve = run.curve(name)
            if curve:
                ax.plot([e + 1 for e, _ in curve], [v for _, v in curve], marker="o", markersize=2.5, linewidth=1.2,
                        label=run.label)
        ax.set_title(f"validation {name}" + (" (lower is better)" if lower_is_better(name) else ""))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.set_visible(False)
    handles, legend = axes.flat[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, legend, loc="lower center", ncol=max(1, min(3, len(handles))), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.018 * math.ceil(len(handles) / 3), 1, 1))
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)


def main(targets: list[str], metric: str = "pesq", plot_path: str | None = None, csv_path: str | None = None,
         report_dir: str | None = None) -> int:
    import sys

    from trainer.report.folder import report_folder_problem

    if report_dir and report_folder_problem(Path(report_dir)):
        raise LaunchError(report_folder_problem(Path(report_dir)))
    if not _METRIC.fullmatch(metric):
        raise LaunchError(f"--metric {metric!r}: give a validation metric name such as pesq, stoi, ssnr, composite "
                          "or loss")
    paths = expand_targets(targets)
    items = [load_run(path) for path in paths]
    for run, label in zip(items, labels([p for p in paths]), strict=True):
        run.label = label
    if metric not in SHOWN and not any(run.best(metric) for run in items):
        known = sorted({k[len("valid_"):] for run in items for r in run.epochs for k in r if k.startswith("valid_")})
        raise LaunchError(f"--metric {metric!r}: no run has validation values valid_{metric} "
                          f"(they have: {', '.join(known) or 'no validation records yet'})")
    items = sort_runs(items, metric)
    keys = differing_keys([run.config for run in items if run.config])  # a run without one: not compared
    rows = table(items, keys, metric)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [f"{len(items)} run(s), sorted by best validation {metric} "
           f"({'lower' if lower_is_better(metric) else 'higher'} "
           "is better; epochs counted from 1; config values that differ between the runs as columns)"]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    without = [run.label for run in items if not run.config]
    if not keys and len(items) - len(without) > 1:
        out.append("(the runs' configs do not differ)")
    for label in without:
        out.append(f"({label}: no config.yaml or slurm/submitted_config.yaml: its config is not compared)")
    if csv_path:
        atomic_write_text(csv_path, csv_text(items, keys, metric))
        out.append(f"wrote {csv_path}")
    if plot_path:
        plot(items, metric, Path(plot_path))
        out.append(f"wrote {plot_path}")
    if report_dir:
        out.append(f"wrote {write_report(items, keys, metric, Path(report_dir))}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def write_report(items: list[Run], keys: list[str], metric: str, folder: Path) -> Path:
    """``--report DIR``: the page of :mod:`trainer.report.compare_page` (curves, alerts, test intervals)."""
    from jobs.injob.evaluation import SCORES
    from trainer.report.compare_page import RunEntry, write_compare_report

    entries = [RunEntry(run.label, run.run_dir, run.epochs, run.state,
                        {k: show(run.config[k]) for k in keys if k in run.config}, run.run_dir / SCORES)
               for run in items]
    return write_compare_report(folder, entries, lambda path: plot(items, metric, path))
