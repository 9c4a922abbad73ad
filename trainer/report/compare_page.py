"""``launch.py compare RUN... --report DIR``: one self-contained page comparing runs (no torch).

DIR holds index.html, report.json (every number the page shows, under ``runs[i]``), curves/ (every
run's validation curves with its kept checkpoints circled, :func:`trainer.plot.validation_figure`,
and the runs overlaid) and runs/NN/ (a copy of each run's own listening report, audio included, when
it has one). Per run: the config values that differ, the divergence alerts, the kept checkpoints,
and the test-set means with 95 % intervals (and paired differences against noisy) from its
evaluation JSON: the chained evaluation's ``test_scores.json``, else the ``report.json`` of its own
report in ``RUN_DIR/report`` (``trainer.evaluate --run-dir RUN --report RUN/report``). Only relative
links; nothing is fetched.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from trainer.core.io import atomic_write, atomic_write_text
from trainer.report.alerts import divergence_alerts
from trainer.report.html import STYLE, _table, kept_table
from trainer.report.kept import kept_points

RUN_REPORT = "report"  # RUN_DIR/report/index.html: a run's own listening report, when made
CHOSEN = ("best_pesq", "best_composite", "last")  # the checkpoint of a run in the table of all runs


@dataclasses.dataclass
class RunEntry:
    label: str
    run_dir: Path
    records: list[dict]  # metrics.jsonl's epoch records
    state: str = "-"
    config: dict[str, str] = dataclasses.field(default_factory=dict)  # the differing values, as shown
    evaluation: Path | None = None  # its evaluation JSON (test_scores.json)


def _read_json(path: Path | None) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (TypeError, OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("statistics"), dict) else None


def run_data(entry: RunEntry) -> dict:
    """What the page shows of one run (its part of report.json)."""
    own_report = entry.run_dir / RUN_REPORT / "report.json"
    source = next((p for p in (entry.evaluation, own_report) if _read_json(p) is not None), None)
    evaluation = _read_json(source) or {}
    return {"label": entry.label, "run_dir": str(entry.run_dir), "state": entry.state, "config": entry.config,
            "evaluation": str(source) if source else None, "statistics": evaluation.get("statistics"),
            "checkpoints": evaluation.get("checkpoints", {}),
            "kept_checkpoints": kept_points(entry.run_dir, entry.records),
            "alerts": divergence_alerts(entry.records)}


def _chosen(statistics: dict | None) -> str | None:
    intervals = (statistics or {}).get("intervals", {})
    return next((c for c in CHOSEN if c in intervals), next((c for c in intervals if c != "noisy"), None))


def _overview(runs: list[dict]) -> str:
    """One row per run: the chosen checkpoint's means with intervals (cells name their place in report.json)."""
    keys = list(dict.fromkeys(k for r in runs if _chosen(r["statistics"])
                              for k in r["statistics"]["intervals"][_chosen(r["statistics"])]))
    if not keys:
        return '<p class="note">No run has an evaluation yet (launch.py --evaluate-after, or trainer.evaluate).</p>'
    rows = []
    for i, run in enumerate(runs):
        column = _chosen(run["statistics"])
        cells = []
        for key in keys:
            entry = (run["statistics"] or {}).get("intervals", {}).get(column, {}).get(key) if column else None
            if not entry:
                cells.append("<td>-</td>")
                continue
            attrs = f'data-field="runs/{i}/statistics/intervals" data-column="{html.escape(column)}" data-key="{key}"'
            ci = entry.get("ci95")
            interval = f' <span class="ci">[{ci[0]:.3f}, {ci[1]:.3f}]</span>' if ci else ""
            cells.append(f'<td><span class="num" {attrs}>{entry["mean"]:.3f}</span>{interval}</td>')
        rows.append(f'<tr><td class="l"><a href="#run{i}">{html.escape(run["label"])}</a></td>'
                    f'<td class="l">{html.escape(column or "-")}</td>{"".join(cells)}</tr>')
    head = "".join(f"<th>{k.upper()}</th>" for k in keys)
    return (f"<h2>Test-set means with 95 % intervals</h2><table><tr><th>run</th><th>checkpoint</th>{head}</tr>"
            f"{''.join(rows)}</table>")


def _section(folder: Path, i: int, run: dict, source: Path) -> str:
    from trainer.plot import validation_figure

    parts = [f'<h2 id="run{i}">{html.escape(run["label"])}</h2><p class="note">{html.escape(run["run_dir"])}, '
             f'state {html.escape(run["state"])}</p>']
    if run["config"]:
        parts.append("<table>" + "".join(f'<tr><td class="l">{html.escape(k)}</td><td class="l">{html.escape(v)}'
                                         "</td></tr>" for k, v in run["config"].items()) + "</table>")
    parts += [f'<div class="alert">{html.escape(a)}</div>' for a in run["alerts"]]
    parts.append(kept_table(run["kept_checkpoints"]))
    fig = validation_figure(run["records"], run["kept_checkpoints"])
    if fig is not None:
        import matplotlib.pyplot as plt

        path = folder / "curves" / f"{i:02d}_validation.png"
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80, bbox_inches="tight"))
        plt.close(fig)
        parts.append(f'<p><img alt="{html.escape(run["label"])} validation curves" src="curves/{path.name}" '
                     'style="max-width:100%"></p>')
    statistics = run["statistics"] or {}
    field = f"runs/{i}/statistics"
    parts.append(_table("Test-set means with 95 % intervals", statistics.get("intervals", {}), f"{field}/intervals"))
    parts.append(_table("Paired difference against the noisy input", statistics.get("paired_vs_noisy", {}),
                        f"{field}/paired_vs_noisy", signed=True))
    if run["evaluation"] is None:
        parts.append('<p class="note">No evaluation of this run yet.</p>')
    if (source / "index.html").is_file():
        shutil.copytree(source, folder / "runs" / f"{i:02d}", dirs_exist_ok=True)
        parts.append(f'<p><a href="runs/{i:02d}/index.html">listening report of {html.escape(run["label"])}</a> '
                     "(audio, spectrograms; copied here)</p>")
    return "".join(parts)


def write_compare_report(folder: Path, entries: list[RunEntry],
                         draw_overlay: Callable[[Path], None] | None = None) -> Path:
    """Writes ``folder/index.html`` and what it links to; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(folder)
    (folder / "curves").mkdir(parents=True, exist_ok=True)
    runs = [run_data(entry) for entry in entries]
    body = [f"<h1>Comparison of {len(runs)} run(s)</h1><p class='note'>numbers in "
            "<a href='report.json'>report.json</a>; epochs counted from 1.</p>", _overview(runs)]
    if draw_overlay is not None:
        draw_overlay(folder / "curves" / "all_runs.png")
        body.append('<h2>Validation curves of all runs</h2><p><img alt="all runs" src="curves/all_runs.png" '
                    'style="max-width:100%"></p>')
    for i, (entry, run) in enumerate(zip(entries, runs, strict=True)):
        body.append(_section(folder, i, run | {"records": entry.records}, entry.run_dir / RUN_REPORT))
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run comparison</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    atomic_write_text(folder / "report.json", json.dumps({"runs": runs}, indent=1) + "\n")
    atomic_write_text(folder / "index.html", page)
    return folder / "index.html"
