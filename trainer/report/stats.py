"""Means with seeded bootstrap 95 % intervals, paired differences and per-condition breakdowns.

Rows are ``trainer.evaluate``'s per-file dicts (``name``, metric columns, ``error``); a row with an
error is left out, as in the means. The bootstrap resamples files (percentile interval, 2000
resamples) from ``numpy.random.default_rng(seed)``: the same rows and seed give the same interval.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
LEVEL = 0.95
SNR_BAND_DB = 5
PESQ_DEPENDENT = ("pesq", "csig", "cbak", "covl")  # the composites are regressions on PESQ
BAND_KEYS = tuple(f"{k}_{band}" for band in ("nb", "wb") for k in PESQ_DEPENDENT)


def _values(rows: list[dict], key: str) -> dict[str, float]:
    return {r["name"]: float(r[key]) for r in rows
            if not r.get("error") and isinstance(r.get(key), int | float) and math.isfinite(r[key])}


def bootstrap_interval(values, seed: int = 0) -> list[float] | None:
    """Percentile bootstrap 95 % interval of the mean (None for fewer than two values)."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(low), float(high)]


def interval_summary(rows: list[dict], keys, seed: int = 0) -> dict[str, dict]:
    """``{key: {"mean", "ci95", "n"}}`` for each key with at least one value."""
    out = {}
    for key in keys:
        values = list(_values(rows, key).values())
        if values:
            out[key] = {"mean": float(np.mean(values)), "ci95": bootstrap_interval(values, seed), "n": len(values)}
    return out


def paired_difference(rows: list[dict], baseline: list[dict], keys, seed: int = 0) -> dict[str, dict]:
    """``{key: {"mean", "ci95", "n"}}`` of ``row - baseline`` over the files valid in both."""
    out = {}
    for key in keys:
        ours, theirs = _values(rows, key), _values(baseline, key)
        common = sorted(set(ours) & set(theirs))
        if common:
            diffs = [ours[n] - theirs[n] for n in common]
            out[key] = {"mean": float(np.mean(diffs)), "ci95": bootstrap_interval(diffs, seed), "n": len(diffs)}
    return out


def snr_band(value) -> str:
    """``"5-10 dB"`` for 7.3: bands of 5 dB (lower edge included)."""
    low = math.floor(float(value) / SNR_BAND_DB) * SNR_BAND_DB
    return f"{low}-{low + SNR_BAND_DB} dB"


def read_conditions(path: Path) -> dict[str, dict[str, str]]:
    """``{name: {column: value}}`` from a CSV with a ``name`` column; ``snr_db`` is banded by 5 dB."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = [c for c in reader.fieldnames or [] if c != "name"]
            if "name" not in (reader.fieldnames or []) or not columns:
                raise ValueError(f"--conditions {path}: needs a 'name' column and at least one condition column "
                                 f"(got {reader.fieldnames})")
            table = {}
            for line, row in enumerate(reader, start=2):
                if "snr_db" in row:
                    try:
                        row["snr_db"] = snr_band(row["snr_db"])
                    except (TypeError, ValueError):
                        raise ValueError(f"--conditions {path}: line {line}: snr_db {row['snr_db']!r} "
                                         "is not a number") from None
                table[row["name"]] = {c: row[c] for c in columns}
            return table
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"--conditions {path}: cannot read it ({exc})") from None


def breakdown(rows: list[dict], conditions: dict[str, dict[str, str]], keys, seed: int = 0) -> dict:
    """``{column: {value: {key: {"mean", "ci95", "n"}}}}``: the summary per condition value."""
    columns = sorted({c for per_file in conditions.values() for c in per_file})
    out: dict = {}
    for column in columns:
        groups: dict[str, list[dict]] = {}
        for row in rows:
            value = conditions.get(row["name"], {}).get(column)
            if value not in (None, ""):
                groups.setdefault(value, []).append(row)
        out[column] = {value: interval_summary(group, keys, seed) for value, group in sorted(groups.items(),
                                                                                              key=_natural)}
    return out


def _natural(item: tuple[str, list]) -> tuple:
    """"5-10 dB" before "10-15 dB": numbers by value, other labels by text."""
    match = re.match(r"^(-?\d+(?:\.\d+)?)", item[0])
    try:
        return (0, float(match.group(1)), item[0]) if match else (1, 0.0, item[0])
    except ValueError:
        return (1, 0.0, item[0])


def mixed_bands(rows: list[dict]) -> bool:
    rates = {r.get("sample_rate") for r in rows if not r.get("error") and r.get("pesq") is not None}
    return 8000 in rates and bool(rates - {8000})


def band_rows(rows: list[dict]) -> list[dict]:
    """Rows whose PESQ-based columns are renamed ``_nb`` (8 kHz) or ``_wb`` when the bands are mixed,
    so that no interval pools them; other rows unchanged."""
    if not mixed_bands(rows):
        return rows
    out = []
    for row in rows:
        band = "nb" if row.get("sample_rate") == 8000 else "wb"
        renamed = {k: v for k, v in row.items() if k not in PESQ_DEPENDENT}
        out.append(renamed | {f"{k}_{band}": row.get(k) for k in PESQ_DEPENDENT})
    return out


def separate_pesq_bands(rows: list[dict], summary: dict) -> str | None:
    """Mixed 8 kHz and wide-band files: PESQ (and the composites built on it) per band, never pooled.

    Sets ``summary[key]`` to None and adds ``summary[key + "_nb"]`` / ``[key + "_wb"]``; returns a note.
    """
    if not mixed_bands(rows):
        return None
    for band, keep in (("nb", lambda sr: sr == 8000), ("wb", lambda sr: sr != 8000)):
        chosen = [r for r in rows if keep(r.get("sample_rate"))]
        for key in PESQ_DEPENDENT:
            values = list(_values(chosen, key).values())
            summary[f"{key}_{band}"] = float(np.mean(values)) if values else None
    for key in PESQ_DEPENDENT:
        summary[key] = None
    counts = {band: sum(1 for r in rows if not r.get("error") and (r.get("sample_rate") == 8000) == (band == "nb"))
              for band in ("nb", "wb")}
    return (f"PESQ: {counts['nb']} narrow-band (8 kHz) and {counts['wb']} wide-band files are not averaged "
            "together; PESQ/CSIG/CBAK/COVL means are given per band (_nb, _wb)")
