"""What ``trainer.evaluate`` prints and writes of its scores: the table of means side by side, the
per-utterance CSV, and the package versions and git revision of the summary JSON. Torch-free."""

from __future__ import annotations

import csv
import io
import math
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from trainer.metrics.dnsmos import DNSMOS_KEYS
from trainer.metrics.quality import METRIC_KEYS
from trainer.report.stats import BAND_KEYS

ROW_KEYS = ("name", "seconds") + METRIC_KEYS + ("error",)
PACKAGES = ("numpy", "scipy", "pesq", "pystoi", "soundfile")


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def shown_keys(summaries: dict[str, dict]) -> tuple[str, ...]:
    """The table's rows: the intrusive metrics (unless none was computed) and any DNSMOS score."""
    has = {k for s in summaries.values() for k in METRIC_KEYS + BAND_KEYS + DNSMOS_KEYS if s.get(k) is not None}
    intrusive = METRIC_KEYS if has & set(METRIC_KEYS + BAND_KEYS) or not has else ()
    return intrusive + tuple(k for k in BAND_KEYS + DNSMOS_KEYS if k in has)


def csv_columns(rows: list[dict], base: tuple[str, ...]) -> tuple[str, ...]:
    """``base`` (name first, error last) with the DNSMOS and sample-rate columns when rows carry them."""
    extra = tuple(k for k in DNSMOS_KEYS + ("sample_rate",) if any(k in r for r in rows))
    if not any(r.get(k) is not None for r in rows for k in METRIC_KEYS) and any(k in DNSMOS_KEYS for k in extra):
        base = ("name", "seconds", "error")  # reference-free: no intrusive columns
    return base[:-1] + extra + base[-1:]


def format_table(summaries: dict[str, dict], rows: list[dict] | None = None, *, max_failures: int = 10) -> str:
    """Means side by side, one column per summary (e.g. one per checkpoint), then the failures."""
    names = list(summaries)
    width = max([8] + [len(n) for n in names])
    lines = ["metric".ljust(8) + "".join(n.rjust(width + 2) for n in names)]
    for key in shown_keys(summaries):
        lines.append(key.upper().ljust(8) + "".join(_fmt(summaries[n].get(key)).rjust(width + 2) for n in names))
    for label, key in (("valid", "num_valid"), ("failed", "num_failed")):
        lines.append(label.ljust(8) + "".join(str(summaries[n][key]).rjust(width + 2) for n in names))
    failed = [r for r in rows or [] if r.get("error")]
    if failed:
        lines.append(f"failed files ({len(failed)}):")
        lines += [f"  {r['name']}: {r['error']}" for r in failed[:max_failures]]
        if len(failed) > max_failures:
            lines.append(f"  ... and {len(failed) - max_failures} more (see the CSV)")
    return "\n".join(lines)


def rows_to_csv(rows: list[dict]) -> str:
    keys = csv_columns(rows, ROW_KEYS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in keys})
    return buffer.getvalue()


def environment_info() -> dict:
    """Package versions and the git revision (with a ``-dirty`` mark) for the summary JSON."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    root = Path(__file__).resolve().parents[2]
    try:
        revision = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        revision += "-dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        revision = None
    return {"versions": versions, "git_revision": revision}
