"""Process pools for the metrics: the discriminator's PESQ labels during training, and the
validation/evaluation scoring. The metric functions themselves are :mod:`trainer.metrics.quality`.
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import signal
from collections import Counter
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from trainer.core.log import get_logger
from trainer.core.signals import helper_signals, ignore_signals
from trainer.metrics.quality import MetricInputError, pesq_score, prepare_pair

log = get_logger("metrics")


def _pesq_or_reason(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> tuple[float, str | None]:
    try:
        clean, enhanced, sr = prepare_pair(clean, enhanced, sr)
        return pesq_score(clean, enhanced, sr), None
    except MetricInputError as exc:
        return float("nan"), str(exc)


def process_pool(num_workers: int):
    """A process pool whose workers are fresh interpreters (loky, as vendored by joblib).

    Unlike 'fork' it is safe in a process that already runs threads (a DDP rank, torch's
    intra-op pool); unlike 'spawn'/'forkserver' the workers do not re-import the caller's
    ``__main__`` (no torch import per worker, no ``if __name__ == "__main__"`` requirement).
    Each worker's BLAS/OpenMP is limited to one thread: the parallelism is the pool.
    """
    from joblib.externals.loky import ProcessPoolExecutor

    start_resource_trackers(helper_signals())
    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    # SLURM signals every process of the job step; the pool's workers ignore the stop signals (and a
    # terminal's Ctrl-C when the trainer handles it) so that they outlive the rank's save (trainer.signals).
    return ProcessPoolExecutor(max_workers=num_workers, env=one_thread, initializer=ignore_signals,
                               initargs=(helper_signals(),))


def start_resource_trackers(signums: tuple[int, ...]) -> None:
    """Start loky's and multiprocessing's resource-tracker processes with ``signums`` blocked.

    The trackers ignore only SIGINT/SIGTERM; SLURM's SIGUSR2 (sent to every process of the step)
    killed them, and every stopped attempt's log then had "resource_tracker: process died
    unexpectedly ... Some resources might leak" and KeyError tracebacks. A blocked mask is inherited
    across fork and exec, and the trackers never unblock SIGUSR2. Here the signals are only
    blocked while the trackers start: one that arrives meanwhile is delivered right after.
    """
    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signums)
    try:
        loky_tracker.ensure_running()
        multiprocessing.resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class PesqLabeler:
    """A persistent process pool that scores PESQ for the discriminator, one batch at a time.

    Workers are started once, lazily (:func:`process_pool`: fresh interpreters, safe in a
    threaded DDP rank process, no fork after threads) and reused by every :meth:`score` call. ``num_workers=0``
    scores in this process. A crashed pool is replaced on the next call (that batch is masked).
    """

    def __init__(self, num_workers: int):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.num_workers = int(num_workers)
        self.num_items = 0
        self.num_failed = 0
        self.failure_reasons: Counter = Counter()
        self._executor = None

    def _pool(self):
        if self._executor is None:
            self._executor = process_pool(self.num_workers)
        return self._executor

    def score(self, clean, enhanced, lengths=None, sr: int = 16000) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(PESQ - 1) / 3.5`` (float32, shape (B,)) and the validity mask (bool, (B,)).

        ``clean``/``enhanced``: (B, T) arrays (CPU numpy); ``lengths``: valid samples per item.
        Invalid items (silent, too short, PESQ error) get 0.0 and ``False``.
        """
        clean, enhanced = np.asarray(clean, dtype=np.float32), np.asarray(enhanced, dtype=np.float32)
        if clean.ndim != 2 or clean.shape != enhanced.shape:
            raise ValueError(f"expected two (B, T) arrays of one shape, got {clean.shape} and {enhanced.shape}")
        batch = clean.shape[0]
        lengths = np.full(batch, clean.shape[1]) if lengths is None else np.asarray(lengths).astype(int)
        cleans = [clean[i, : lengths[i]] for i in range(batch)]
        enhanceds = [enhanced[i, : lengths[i]] for i in range(batch)]
        if self.num_workers == 0:
            outcomes = [_pesq_or_reason(c, e, sr) for c, e in zip(cleans, enhanceds, strict=True)]
        else:
            outcomes = self._score_in_pool(cleans, enhanceds, sr)
        raw = np.array([value for value, _ in outcomes], dtype=np.float64)
        valid = np.isfinite(raw)
        self.num_items += batch
        self.num_failed += int(batch - valid.sum())
        self.failure_reasons.update(reason for _, reason in outcomes if reason is not None)
        labels = np.where(valid, (np.where(valid, raw, 1.0) - 1.0) / 3.5, 0.0).astype(np.float32)
        return labels, valid

    def _score_in_pool(self, cleans: list, enhanceds: list, sr: int) -> list[tuple[float, str | None]]:
        """Map over the pool; a dead pool is replaced and the batch retried once, then masked."""
        batch = len(cleans)
        chunk = max(1, batch // (4 * self.num_workers))
        for attempt in (1, 2):
            try:
                return list(self._pool().map(_pesq_or_reason, cleans, enhanceds, [sr] * batch, chunksize=chunk))
            except BrokenProcessPool as exc:
                log.warning("PESQ worker pool died (%s); starting a new one (attempt %d of 2)",
                            type(exc).__name__, attempt)
                self._executor.shutdown(wait=False)
                self._executor = None
        return [(float("nan"), "pesq worker crashed")] * batch

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> PesqLabeler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
