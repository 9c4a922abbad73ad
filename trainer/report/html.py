"""``--report DIR``: a self-contained listening report, ``DIR/index.html`` (relative links only).

DIR holds index.html, report.json (every number the page shows), audio/*.wav (16-bit PCM, which
every browser plays), spec/*.png (spectrograms on one colour scale per file) and, for a run,
curves/*.png (``trainer.plot``'s validation curves). Each shown number carries ``data-column``,
``data-key`` and ``data-field`` attributes naming where it is in report.json's ``statistics``.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np

from trainer.core.io import atomic_write, atomic_write_text, atomic_write_wav
from trainer.report.kept import CURVE_KEYS
from trainer.report.select import gains, rank_key

STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}td.l{text-align:left}
.alert{background:#fff3cd;border:1px solid #e0b000;padding:.5em;margin:.5em 0}.note{color:#555}
img.spec{width:260px;height:auto;display:block}audio{width:260px}"""


def _fmt(value: float, signed: bool = False) -> str:
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _cell(entry: dict | None, column: str, key: str, field: str, signed: bool = False) -> str:
    if not entry:
        return "<td>-</td>"
    attrs = f'data-column="{html.escape(column)}" data-key="{key}" data-field="{field}"'
    ci = entry.get("ci95")
    interval = (f' <span class="ci" {attrs} data-part="ci">[{_fmt(ci[0])}, {_fmt(ci[1])}]</span>'
                if ci else "")
    return f'<td><span class="num" {attrs} data-part="mean">{_fmt(entry["mean"], signed)}</span>{interval}</td>'


def _table(title: str, per_column: dict[str, dict], field: str, signed: bool = False) -> str:
    keys = [k for k in dict.fromkeys(k for v in per_column.values() for k in v)]
    if not keys:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in per_column)
    body = "".join(f'<tr><td class="l">{k.upper()}</td>' + "".join(_cell(per_column[c].get(k), c, k, field, signed)
                                                              for c in per_column) + "</tr>" for k in keys)
    return f"<h3>{html.escape(title)}</h3><table><tr><th>metric</th>{head}</tr>{body}</table>"


def _breakdowns(stats: dict) -> str:
    parts = []
    for column, per_condition in stats.get("breakdown", {}).items():
        for condition, groups in per_condition.items():
            parts.append(_table(f"{column} by {condition}", groups, f"breakdown/{column}/{condition}"))
    return "".join(parts)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _spectrogram(path: Path, wave: np.ndarray, sr: int, ref_db: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.2))
    ax.specgram(wave + 1e-9, NFFT=512, Fs=sr, noverlap=384, cmap="magma", vmin=ref_db - 80, vmax=ref_db)
    ax.set_xlabel("s")
    ax.set_ylabel("Hz")
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=80, bbox_inches="tight"))
    plt.close(fig)


def _peak_db(wave: np.ndarray, sr: int) -> float:
    """The loudest bin of ``wave``'s spectrogram in dB: the top of the file's colour scale."""
    from matplotlib import mlab

    spectrum, _, _ = mlab.specgram(wave + 1e-9, NFFT=512, Fs=sr, noverlap=384)
    return float(10 * np.log10(max(float(spectrum.max()), 1e-20)))


def _listening(folder: Path, audio: dict, captions: dict[str, str]) -> str:
    if not audio:
        return ""
    labels = list(dict.fromkeys(label for waves in audio.values() for label in waves))
    rows = []
    for i, (name, waves) in enumerate(audio.items()):
        ref = _peak_db(*next(iter(waves.values())))
        cells = []
        for label in labels:
            if label not in waves:
                cells.append("<td>-</td>")
                continue
            wave, sr = waves[label]
            stem = f"{i:02d}_{_safe(label)}"
            peak = float(np.max(np.abs(wave))) if len(wave) else 0.0
            atomic_write_wav(folder / "audio" / f"{stem}.wav", wave / max(peak, 1.0), sr, subtype="PCM_16")
            _spectrogram(folder / "spec" / f"{stem}.png", wave, sr, ref)
            cells.append(f'<td><audio controls preload="auto" src="audio/{stem}.wav"></audio>'
                         f'<img class="spec" alt="{html.escape(label)} spectrogram" src="spec/{stem}.png"></td>')
        caption = html.escape(captions.get(name, ""))
        rows.append(f'<tr><td class="l">{html.escape(name)}<br><span class="note">{caption}</span></td>'
                    + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    return f"<h2>Listen</h2><table><tr><th>file</th>{head}</tr>{''.join(rows)}</table>"


def _captions(rows_by_column: dict, baseline: str | None) -> dict[str, str]:
    key = rank_key(rows_by_column)
    if baseline in rows_by_column:
        return {n: f"best checkpoint's {key.upper()} gain over noisy: {v:+.3f}"
                for n, v in gains(rows_by_column, baseline)}
    return {n: f"{key.upper()}: {v:.3f}" for n, v in gains(rows_by_column, baseline)}


def kept_table(kept: dict[str, dict]) -> str:
    """The kept checkpoints marked on the curves: epoch (counted from 1, as on the curves) and the
    validation values there; each cell names its place in report.json's ``kept_checkpoints``."""
    if not kept:
        return '<p class="note">No kept checkpoint was saved at a validation.</p>'
    keys = [k for k in CURVE_KEYS if any(k in p for p in kept.values())]
    head = "".join(f"<th>{k.removeprefix('valid_').upper()}</th>" for k in keys)
    rows = "".join(f'<tr class="kept" data-name="{html.escape(name)}"><td class="l">{html.escape(name)}</td>'
                   f'<td data-key="epoch">{point["epoch"] + 1}</td>'
                   + "".join(f'<td data-key="{k}">{_fmt(point[k])}</td>' if k in point else "<td>-</td>"
                             for k in keys) + "</tr>" for name, point in kept.items())
    return (f"<h3>Kept checkpoints (circled on the curves)</h3><table><tr><th>checkpoint</th><th>epoch</th>{head}"
            f"</tr>{rows}</table>")


def _curves(folder: Path, run_dir: Path | None, alerts: list[str], kept: dict[str, dict]) -> str:
    if run_dir is None:
        return ""
    from trainer.plot import plot_run

    try:
        written = plot_run(run_dir, folder / "curves")
    except FileNotFoundError as exc:
        return f'<h2>Training curves</h2><p class="note">{html.escape(str(exc))}</p>'
    images = "".join(f'<p><img alt="{p.stem}" src="curves/{p.name}" style="max-width:100%"></p>'
                     for p in written if p.stem in ("validation", "losses"))
    warnings = "".join(f'<div class="alert">{html.escape(a)}</div>' for a in alerts) or \
        '<p class="note">No divergence between validation loss and PESQ/STOI/SSNR found.</p>'
    return f"<h2>Training curves</h2>{warnings}{kept_table(kept)}{images}"


def write_report(folder: Path, report: dict, rows_by_column: dict[str, list[dict]], audio: dict, *,
                 run_dir: Path | None = None, alerts: list[str] | None = None) -> Path:
    """Writes ``folder/index.html`` and what it links to; returns the page's path."""
    folder = Path(folder)
    (folder / "audio").mkdir(parents=True, exist_ok=True)
    (folder / "spec").mkdir(exist_ok=True)
    stats = report["statistics"]
    baseline = "noisy" if "noisy" in rows_by_column and len(rows_by_column) > 1 else None
    notes = sorted({n for s in (report.get("summaries") or {"": report.get("summary", {})}).values()
                    for n in s.get("notes", [])})
    checkpoints = report.get("checkpoints", {})
    identities = "".join(f"<li>{html.escape(c)}: epoch {i.get('epoch')}, step {i.get('step')}</li>"
                         for c, i in checkpoints.items() if c != "noisy")
    body = [f"<h1>Evaluation report</h1><p class='note'>{html.escape(stats['method'])}, "
            f"seed {stats['seed']}; numbers in <a href='report.json'>report.json</a>.</p>",
            f"<ul>{identities}</ul>" if identities else "",
            "".join(f'<p class="note">note: {html.escape(n)}</p>' for n in notes),
            _table("Means with 95 % intervals", stats["intervals"], "intervals"),
            _table("Paired difference against the noisy input", stats.get("paired_vs_noisy", {}),
                   "paired_vs_noisy", signed=True),
            _breakdowns(stats),
            _curves(folder, run_dir, alerts or [], report.get("kept_checkpoints", {})),
            _listening(folder, audio, _captions(rows_by_column, baseline))]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
            f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")
    atomic_write_text(folder / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(folder / "index.html", page)
    return folder / "index.html"
