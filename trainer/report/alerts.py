"""Divergence alerts from a run's validation records (metrics.jsonl, read by trainer.core.runstate).

The seeds' problem: validation loss kept improving while PESQ or STOI fell, and SSNR collapsed from
its best; nobody saw it until reading the logs by hand. Never imports torch (``launch.py status`` may
call it on a login node).
"""

from __future__ import annotations

STREAK = 3  # validations in a row where the loss improved and the metric declined
SSNR_DROP = 0.20  # SSNR below (1 - this) of its best, measured from the best's magnitude


def _epochs(records: list[dict], key: str) -> list[tuple[int, float, float]]:
    return [(r["epoch"], r["valid_loss"], r[key]) for r in records
            if r.get("kind") == "epoch" and isinstance(r.get("valid_loss"), int | float)
            and isinstance(r.get(key), int | float)]


def diverging_streaks(records: list[dict], key: str, streak: int = STREAK) -> list[tuple[int, int]]:
    """``(first_epoch, last_epoch)`` of each run of >= ``streak`` validations in a row where the
    loss went down and ``key`` went down too."""
    series, found, start = _epochs(records, key), [], None
    for (_, loss_before, value_before), (epoch, loss, value) in zip(series, series[1:], strict=False):
        bad = loss < loss_before and value < value_before
        if bad and start is None:
            start, count = epoch, 0
        if bad:
            count += 1
            last = epoch
        if (not bad or epoch == series[-1][0]) and start is not None:
            if count >= streak:
                found.append((start, last))
            start = None
    return found


def ssnr_collapse(records: list[dict], fraction: float = SSNR_DROP) -> tuple[int, float, int, float] | None:
    """``(best_epoch, best, last_epoch, last)`` when the last SSNR is more than ``fraction`` below its best."""
    series = [(r["epoch"], r["valid_ssnr"]) for r in records
              if r.get("kind") == "epoch" and isinstance(r.get("valid_ssnr"), int | float)]
    if len(series) < 2:
        return None
    best_epoch, best = max(series, key=lambda item: item[1])
    last_epoch, last = series[-1]
    if last < best - fraction * abs(best):
        return best_epoch, best, last_epoch, last
    return None


def divergence_alerts(records: list[dict], streak: int = STREAK, fraction: float = SSNR_DROP) -> list[str]:
    """One line per alert, naming the epochs counted from 1 (as the training log, ``status`` and
    ``compare`` count them: the record of ``"epoch": 4`` in metrics.jsonl is epoch 5)."""
    alerts = []
    for key in ("valid_pesq", "valid_stoi"):
        for first, last in diverging_streaks(records, key, streak):
            name = key.removeprefix("valid_").upper()
            alerts.append(f"validation loss improved while {name} declined for {streak}+ validations in a row "
                          f"(epochs {first + 1}-{last + 1}): pick best_{key.removeprefix('valid_')} or best_composite "
                          "rather than best_loss, or stop early knowingly")
    collapse = ssnr_collapse(records, fraction)
    if collapse:
        best_epoch, best, last_epoch, last = collapse
        alerts.append(f"SSNR fell more than {fraction:.0%} from its best: {best:.2f} dB at epoch {best_epoch + 1}, "
                      f"{last:.2f} dB at epoch {last_epoch + 1}")
    return alerts
