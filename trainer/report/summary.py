"""The statistics block of ``trainer.evaluate``'s JSON and its printed form (intervals, paired
differences against the noisy input, per-condition breakdowns, notes)."""

from __future__ import annotations

from trainer.metrics.dnsmos import DNSMOS_KEYS
from trainer.metrics.quality import METRIC_KEYS
from trainer.report.stats import (
    BAND_KEYS,
    band_rows,
    breakdown,
    interval_summary,
    paired_difference,
    separate_pesq_bands,
)

ALL_KEYS = METRIC_KEYS + BAND_KEYS + DNSMOS_KEYS


def add_dnsmos_means(summary: dict, rows: list[dict]) -> dict:
    """``summary`` plus the DNSMOS means over the valid rows (only when a row has them)."""
    valid = [r for r in rows if not r.get("error")]
    for key in DNSMOS_KEYS:
        values = [r[key] for r in valid if r.get(key) is not None]
        if values:
            summary[key] = sum(values) / len(values)
    return summary


def notes(rows: list[dict], summary: dict) -> list[str]:
    """What a reader of the means must know: PESQ bands kept apart, files resampled for DNSMOS."""
    out = []
    band_note = separate_pesq_bands(rows, summary)
    if band_note:
        out.append(band_note)
    resampled = sorted({r["sample_rate"] for r in rows if r.get("sample_rate") not in (None, 16000)
                        and any(r.get(k) is not None for k in DNSMOS_KEYS)})
    if resampled:
        count = sum(1 for r in rows if r.get("sample_rate") in resampled and r.get("dnsmos_ovrl") is not None)
        out.append(f"DNSMOS: {count} file(s) at {', '.join(map(str, resampled))} Hz resampled to 16000 Hz "
                   "(DNSMOS is defined at 16 kHz)")
    return out


def statistics(rows_by_column: dict[str, list[dict]], conditions: dict | None, seed: int) -> dict:
    """Intervals per column, paired differences against ``noisy`` (when present) and breakdowns.
    Narrow- and wide-band PESQ (and the composites) are kept apart when a column mixes them."""
    rows_by_column = {column: band_rows(rows) for column, rows in rows_by_column.items()}
    stats: dict = {"seed": seed, "level": 0.95, "method": "percentile bootstrap over files, 2000 resamples",
                   "intervals": {c: interval_summary(rows, ALL_KEYS, seed) for c, rows in rows_by_column.items()}}
    if "noisy" in rows_by_column and len(rows_by_column) > 1:
        stats["paired_vs_noisy"] = {c: paired_difference(rows, rows_by_column["noisy"], ALL_KEYS, seed)
                                    for c, rows in rows_by_column.items() if c != "noisy"}
    if conditions:
        stats["breakdown"] = {c: breakdown(rows, conditions, ALL_KEYS, seed) for c, rows in rows_by_column.items()}
    return stats


def _cell(entry: dict | None, signed: bool = False) -> str:
    if not entry:
        return "-"
    mean = f"{entry['mean']:+.3f}" if signed else f"{entry['mean']:.3f}"
    ci = entry.get("ci95")
    return mean if ci is None else f"{mean} [{ci[0]:.3f}, {ci[1]:.3f}]"


def format_statistics(stats: dict) -> str:
    """The intervals, paired differences and breakdowns as plain text tables."""
    lines = [f"95 % intervals (bootstrap over files, seed {stats['seed']}):"]
    for column, per_key in stats["intervals"].items():
        lines.append(f"  {column}: " + "; ".join(f"{k.upper()} {_cell(v)}" for k, v in per_key.items()))
    for column, per_key in stats.get("paired_vs_noisy", {}).items():
        lines.append(f"  {column} - noisy: " + "; ".join(f"{k.upper()} {_cell(v, True)}" for k, v in per_key.items()))
    for column, per_condition in stats.get("breakdown", {}).items():
        for condition, groups in per_condition.items():
            lines.append(f"  {column} by {condition}:")
            for value, per_key in groups.items():
                count = max((v["n"] for v in per_key.values()), default=0)
                lines.append(f"    {value} (n={count}): " + "; ".join(f"{k.upper()} {_cell(v)}"
                                                                       for k, v in per_key.items()))
    return "\n".join(lines)
