"""``python -m trainer.plot RUN_DIR [--out DIR]``: PNG curves from a run's metrics.jsonl.

Writes (into RUN_DIR/plots unless --out is given), each only when the run has the data:
- ``losses.png``: total generator loss and each term, discriminator loss, GAN weight (per step);
- ``validation.png``: validation PESQ, STOI, SSNR and loss (per epoch, counted from 1 as every
  command counts them), each kept checkpoint (``best_*``, ``last``) marked where it was saved;
- ``discriminator.png``: mean D(clean, clean), mean D(clean, estimate) next to the true normalised
  PESQ, their correlation, and the share of items the discriminator trained on;
- ``creative.png``: the creative variant's mask means, correlations, balance and complementarity.
Needs no torch; safe to run on a login node while the job writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.core.io import atomic_write
from trainer.core.runstate import read_metrics
from trainer.report.kept import kept_points

CREATIVE_KEYS = ("mask_input_mean", "mask_target_mean", "corr_input", "corr_target", "balance_raw",
                 "complementarity", "temporal_diversity")


def _series(records: list[dict], x_key: str, y_key: str) -> tuple[list, list]:
    xs, ys = [], []
    for record in records:
        value = record.get(y_key)
        if isinstance(value, (int, float)) and x_key in record:
            xs.append(record[x_key])
            ys.append(value)
    return xs, ys


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110, bbox_inches="tight"))


def _panel(ax, records, x_key, keys, title, *, log_y=False) -> bool:
    drawn = False
    for key in keys:
        xs, ys = _series(records, x_key, key)
        if xs:
            ax.plot(xs, ys, label=key.removeprefix("valid_"), marker="." if len(xs) < 30 else None)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel(x_key)
    if drawn:
        ax.legend(fontsize=8)
        if all(key.endswith("rate") for key in keys):
            ax.set_ylim(-0.02, 1.02)
        if log_y and all(y > 0 for key in keys for y in _series(records, x_key, key)[1]):
            ax.set_yscale("log")
    return drawn


def _mark_kept(ax, kept: dict[str, dict], key: str) -> int:
    """A circle at each kept checkpoint's point of ``key``'s curve, one label per point (names
    sharing an epoch joined); returns how many were marked."""
    at: dict[int, list[str]] = {}
    for name, point in kept.items():
        if key in point:
            ax.plot([point["epoch"] + 1], [point[key]], marker="o", markersize=8, markerfacecolor="none",
                    markeredgecolor="crimson", linestyle="none", gid=f"kept:{name}")
            at.setdefault(point["epoch"], []).append(name)
    for epoch, names in at.items():
        ax.annotate(", ".join(names), (epoch + 1, kept[names[0]][key]), textcoords="offset points",
                    xytext=(4, 6), fontsize=7, color="crimson")
    return sum(len(names) for names in at.values())


def validation_figure(epochs: list[dict], kept: dict[str, dict]):
    """The four validation panels (x: epoch counted from 1) with the kept checkpoints marked; None
    when no epoch record has a validation value."""
    import matplotlib.pyplot as plt

    shifted = [dict(r, epoch=r["epoch"] + 1) for r in epochs if isinstance(r.get("epoch"), int)]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    drawn = False
    for ax, key in zip(axes, ("valid_pesq", "valid_stoi", "valid_ssnr", "valid_loss"), strict=True):
        drawn |= _panel(ax, shifted, "epoch", (key,), key.removeprefix("valid_").upper())
        _mark_kept(ax, kept, key)
    if not drawn:
        plt.close(fig)
        return None
    return fig


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'} has no records yet (is this a run directory?)")
    out = Path(out_dir) if out_dir else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    drawn = _panel(axes[0], steps, "step", ("loss", "ri", "mag", "time"), "generator loss terms", log_y=True)
    drawn |= _panel(axes[1], steps, "step", ("gan", "d_loss"), "adversarial terms")
    drawn |= _panel(axes[2], steps, "step", ("gan_weight", "pesq_valid_rate"), "GAN weight, D label rate")
    if drawn:
        _save(fig, out / "losses.png")
        written.append(out / "losses.png")
    plt.close(fig)

    fig = validation_figure(epochs, kept_points(run_dir, records))
    if fig is not None:
        _save(fig, out / "validation.png")
        written.append(out / "validation.png")
        plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    drawn = _panel(axes[0], epochs, "epoch", ("valid_d_clean", "valid_d_estimate", "valid_pesq_normalised"),
                   "D(clean,clean) ~ 1; D(clean,est) vs true PESQ")
    drawn |= _panel(axes[1], epochs, "epoch", ("valid_d_pesq_correlation",), "corr(D(clean,est), PESQ)")
    drawn |= _panel(axes[2], epochs, "epoch", ("pesq_valid_rate",), "share of D items with a PESQ label")
    if drawn:
        _save(fig, out / "discriminator.png")
        written.append(out / "discriminator.png")
    plt.close(fig)

    if any(key in r for r in steps for key in CREATIVE_KEYS):
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        _panel(axes[0], steps, "step", ("mask_input_mean", "mask_target_mean"), "mask means (target 0.5)")
        _panel(axes[1], steps, "step", ("corr_input", "corr_target"), "output correlation with sources")
        _panel(axes[2], steps, "step", ("balance_raw", "complementarity", "temporal_diversity"), "balance")
        _save(fig, out / "creative.png")
        written.append(out / "creative.png")
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.plot", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="folder for the PNGs (default RUN_DIR/plots)")
    args = parser.parse_args(argv)
    try:
        written = plot_run(args.run_dir, args.out)
    except FileNotFoundError as exc:
        sys.stderr.write(f"trainer.plot: error: {exc}\n")
        return 2
    for path in written:
        sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
