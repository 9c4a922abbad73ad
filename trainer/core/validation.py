"""Deterministic validation: every rank runs its disjoint share, all ranks get the same summary.

Per utterance the task computes a row (:meth:`Task.validate_item`) and scores its rows
(:meth:`Task.score`, e.g. PESQ/STOI in a process pool); the rows of all ranks are gathered and the
task summarises them. Failed utterances are counted and left out of the means; no NaN reaches a
summary.
"""

from __future__ import annotations

import torch

from trainer.core import dist
from trainer.core.task import Task


def run_validation(task: Task, generator, discriminator, loader, *, which: tuple[str, ...]) -> dict:
    """Validate this rank's share, gather every rank's rows, return the task's summary."""
    was_training = generator.training, discriminator.training
    generator.eval()
    discriminator.eval()
    with torch.no_grad():
        rows = [task.validate_item(generator, discriminator, batch) for batch in loader]
    generator.train(was_training[0])
    discriminator.train(was_training[1])
    rows = task.score(rows, which)
    all_rows = [row for rank_rows in dist.all_gather_objects(rows) for row in rank_rows]
    return task.summarise(all_rows, which)


def improved_metrics(summary: dict, best: dict[str, float], keep_best: list[str],
                     maximise: tuple[str, ...]) -> tuple[str, ...]:
    """The ``keep_best`` metrics that improved on ``best`` (which is updated in place)."""
    improved = []
    for metric in keep_best:
        value = summary.get(metric)
        if value is None:  # not computed this time (e.g. STOI every few validations)
            continue
        previous = best.get(metric)
        if previous is None or (value > previous if metric in maximise else value < previous):
            best[metric] = value
            improved.append(metric)
    return tuple(improved)
