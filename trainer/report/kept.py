"""Where a run's kept checkpoints sit on its validation curves (torch-free: login-node commands use it).

A kept checkpoint (``checkpoints/best_pesq.pt``, ``last.pt``, ...) is placed at the epoch record of
``metrics.jsonl`` it was saved with: the one whose ``step`` equals the step in the checkpoint's JSON
sidecar (:mod:`trainer.core.ckptinfo`, trusted only while it describes the file there now). Without
a trustworthy sidecar, the last epoch record whose ``checkpoints`` list names it (the trainer writes
that list after each save). A checkpoint saved between validations (a stop mid-epoch) has no point
on the curves and is left out.
"""

from __future__ import annotations

from pathlib import Path

from trainer.core import ckptinfo

CURVE_KEYS = ("valid_loss", "valid_pesq", "valid_stoi", "valid_ssnr")


def kept_points(run_dir: str | Path, records: list[dict]) -> dict[str, dict]:
    """``{name: {"epoch": record epoch (0-based, as in metrics.jsonl), "step", "source", valid_* values}}``
    for every kept checkpoint with a validation record; ``best_*`` sorted by name, then ``last``."""
    folder = Path(run_dir) / "checkpoints"
    epochs = [r for r in records if r.get("kind") == "epoch" and isinstance(r.get("epoch"), int)]
    names = sorted(p.stem for p in folder.glob("*.pt") if p.stem.startswith("best_") or p.stem == "last")
    names.sort(key=lambda name: name == "last")
    found = {}
    for name in names:
        info = ckptinfo.read(folder / f"{name}.pt")
        record, source = None, "sidecar"
        if info is not None:
            record = next((r for r in reversed(epochs) if r.get("step") == info.get("step")), None)
        else:
            source = "metrics.jsonl"
            record = next((r for r in reversed(epochs) if name in (r.get("checkpoints") or ())), None)
        if record is None:
            continue
        found[name] = {"epoch": record["epoch"], "step": record.get("step"), "source": source,
                       **{k: record[k] for k in CURVE_KEYS if isinstance(record.get(k), int | float)}}
    return found
