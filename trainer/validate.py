"""Deterministic validation: every rank scores its disjoint share, rank 0 summarises.

Metrics per utterance come from ``trainer.metrics.compute_metrics`` (a reusable loky pool when
more than one core is available). Failed utterances (e.g. a silent reference) are counted and
left out of the means; no NaN reaches a summary.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from trainer import dist
from trainer.metrics import compute_metrics


def composite_score(pesq: float, stoi: float, loss: float) -> float:
    """0.5*(PESQ-1)/3.5 + 0.3*STOI - 0.2*loss: one number to pick the checkpoint to ship."""
    return 0.5 * (pesq - 1.0) / 3.5 + 0.3 * stoi - 0.2 * loss


def _pearson(x: list[float], y: list[float]) -> float | None:
    if len(x) < 2:
        return None
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.std() == 0 or ya.std() == 0:
        return None
    return float(np.corrcoef(xa, ya)[0, 1])


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def run_validation(task, generator, discriminator, loader, *, which: tuple[str, ...], sample_rate: int,
                   pool=None) -> dict:
    """Validate on this rank's share, gather to all ranks, return the summary (same on every rank).

    ``pool``: a persistent process pool (``trainer.metrics.process_pool``) for the metrics, or None.
    """
    was_training = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    items = []
    with torch.no_grad():
        for batch in loader:
            items.append(task.validate_item(generator, discriminator, batch))
    generator.train(was_training[0])
    discriminator.train(was_training[1])

    rows = []
    if which:
        cleans, enhanceds = [item["clean"] for item in items], [item["enhanced"] for item in items]
        score = partial(compute_metrics, sr=sample_rate, which=which)
        scores = list(pool.map(score, cleans, enhanceds) if pool is not None and len(items) > 1
                      else map(score, cleans, enhanceds))
    else:
        scores = [{} for _ in items]
    for item, score in zip(items, scores, strict=True):
        row = {k: v for k, v in item.items() if k not in ("clean", "enhanced")}
        row.update({k: score.get(k) for k in which})
        row["error"] = score.get("error")
        rows.append(row)
    all_rows = [row for rank_rows in dist.all_gather_objects(rows) for row in rank_rows]
    return summarise(all_rows, which)


def summarise(rows: list[dict], which: tuple[str, ...]) -> dict:
    """Means of every numeric per-utterance value; metrics in ``which`` over the valid rows only."""
    ok = [row for row in rows if not row.get("error")]
    summary: dict = {"num_utterances": len(rows), "num_failed": len(rows) - len(ok)}
    numeric = sorted({k for row in rows for k, v in row.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in which})
    for key in numeric:  # losses and D outputs are defined for every utterance, failed metrics or not
        summary[key] = _mean([row.get(key) for row in rows])
    for key in which:
        summary[key] = _mean([row[key] for row in ok])
    if "pesq" in which and "d_estimate" in numeric:
        true_norm = [(row["pesq"] - 1.0) / 3.5 for row in ok]
        summary["pesq_normalised"] = _mean(true_norm)
        summary["d_pesq_correlation"] = _pearson([row["d_estimate"] for row in ok], true_norm)
    if summary.get("pesq") is not None and summary.get("stoi") is not None and summary.get("loss") is not None:
        summary["composite"] = composite_score(summary["pesq"], summary["stoi"], summary["loss"])
    return summary
