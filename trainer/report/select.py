"""Which files the report lets a reader hear: a fixed set, plus where the best checkpoint gains least and most."""

from __future__ import annotations

FIXED_FILES = 3  # the first names in sorted order: the same files in every report of a test set
EXTREMES = 2  # files where the best checkpoint gains least / most (or scores lowest / highest)
RANK_KEYS = ("pesq", "si_sdr", "dnsmos_ovrl")  # the first present ranks checkpoints and files


def rank_key(rows_by_column: dict[str, list[dict]]) -> str | None:
    for key in RANK_KEYS:
        if any(r.get(key) is not None for rows in rows_by_column.values() for r in rows):
            return key
    return None


def _scores(rows: list[dict], key: str) -> dict[str, float]:
    return {r["name"]: r[key] for r in rows if not r.get("error") and r.get(key) is not None}


def best_column(rows_by_column: dict[str, list[dict]], baseline: str | None) -> str | None:
    """The column (checkpoint) with the highest mean of the ranking metric, the baseline excluded."""
    key = rank_key(rows_by_column)
    means = {c: sum(v.values()) / len(v) for c, rows in rows_by_column.items() if c != baseline
             for v in [_scores(rows, key or "")] if v}
    return max(means, key=means.get) if means else None


def gains(rows_by_column: dict[str, list[dict]], baseline: str | None) -> list[tuple[str, float]]:
    """``(name, gain)`` of the best column over the baseline (or its plain score), lowest first."""
    key, best = rank_key(rows_by_column), best_column(rows_by_column, baseline)
    if key is None or best is None:
        return []
    ours = _scores(rows_by_column[best], key)
    base = _scores(rows_by_column[baseline], key) if baseline in rows_by_column else dict.fromkeys(ours, 0.0)
    return sorted(((n, ours[n] - base[n]) for n in ours if n in base), key=lambda item: (item[1], item[0]))


def report_files(rows_by_column: dict[str, list[dict]], baseline: str | None) -> list[str]:
    """The fixed files, then the lowest and highest gains (no name twice)."""
    valid = sorted({r["name"] for rows in rows_by_column.values() for r in rows if not r.get("error")})
    ranked = [name for name, _ in gains(rows_by_column, baseline)]
    chosen = valid[:FIXED_FILES] + ranked[:EXTREMES] + ranked[-EXTREMES:]
    return list(dict.fromkeys(chosen))
