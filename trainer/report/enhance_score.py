"""``trainer.enhance --score``: DNSMOS of what it wrote, through ``trainer.evaluate``'s reference-free mode."""

from __future__ import annotations

from pathlib import Path

from trainer.metrics.dnsmos import MISSING, missing_packages


def score_problem() -> str | None:
    """Checked before any enhancing: the optional DNSMOS packages."""
    return f"--score: {MISSING} (missing: {', '.join(missing_packages())})" if missing_packages() else None


def score_outputs(out_dir: Path, no_progress: bool) -> int:
    """Scores every audio file in ``out_dir`` (OUT/scores.csv, OUT/scores.json); evaluate's exit code."""
    from trainer import evaluate

    argv = ["--enhanced-dir", str(out_dir), "--dnsmos", "--csv", str(out_dir / "scores.csv"),
            "--json", str(out_dir / "scores.json")] + (["--no-progress"] if no_progress else [])
    return evaluate.main(argv)
