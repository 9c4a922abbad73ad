"""Process pools for the metrics: the discriminator's PESQ labels during training, and the
validation/evaluation scoring. The metric functions themselves are :mod:`trainer.metrics.quality`.
"""

from __future__ import annotations

import multiprocessing.resource_tracker
import os
from collections import Counter
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from trainer.core.log import get_logger
from trainer.core.signals import blocked, helper_signals, init_helper
from trainer.metrics.quality import MetricInputError, pesq_score, prepare_pair

log = get_logger("metrics")


def _pesq_or_reason(clean: np.ndarray, enhanced: np.ndarray, sr: int) -> tuple[float, str | None]:
    try:
        clean, enhanced, sr = prepare_pair(clean, enhanced, sr)
        return pesq_score(clean, enhanced, sr), None
    except MetricInputError as exc:
        return float("nan"), str(exc)


def _pesq_chunk(cleans: list, enhanceds: list, sr: int) -> list[tuple[float, str | None]]:
    return [_pesq_or_reason(c, e, sr) for c, e in zip(cleans, enhanceds, strict=True)]


def process_pool(num_workers: int):
    """A process pool whose workers are fresh interpreters (loky, as vendored by joblib).

    Unlike 'fork' it is safe in a process that already runs threads (a DDP rank, torch's
    intra-op pool); unlike 'spawn'/'forkserver' the workers do not re-import the caller's
    ``__main__`` (no torch import per worker, no ``if __name__ == "__main__"`` requirement).
    Each worker's BLAS/OpenMP is limited to one thread: the parallelism is the pool.

    SLURM signals every process of the job step. The workers ignore the stop signals (and a
    terminal's Ctrl-C when the trainer handles it) so that they outlive the rank's save
    (trainer.signals); they also start with those signals blocked, because a worker is an
    interpreter that imports for a while before its initializer runs, and one signalled then dies
    and breaks the pool (e.g. a validation's pool starting at the moment of a requeue's USR2).
    Workers end with this process whichever way it ends (``init_helper``: PR_SET_PDEATHSIG), and
    then so do the resource trackers (they exit when the last holder of their pipe is gone).
    """
    from joblib.externals.loky import ProcessPoolExecutor

    signums = helper_signals()
    start_resource_trackers(signums)

    class SignalSafePool(ProcessPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            # Workers are started (and restarted, by the manager thread created here, which keeps
            # this mask) inside submit; a blocked mask is inherited across fork and exec.
            with blocked(signums):
                return super().submit(fn, *args, **kwargs)

    one_thread = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return SignalSafePool(max_workers=num_workers, env=one_thread, initializer=init_helper,
                          initargs=(signums, os.getpid()))


def start_resource_trackers(signums: tuple[int, ...]) -> None:
    """Start loky's and multiprocessing's resource-tracker processes with ``signums`` blocked.

    The trackers ignore only SIGINT/SIGTERM; SLURM's SIGUSR2 (sent to every process of the step)
    killed them, and every stopped attempt's log then had "resource_tracker: process died
    unexpectedly ... Some resources might leak" and KeyError tracebacks. A blocked mask is inherited
    across fork and exec, and the trackers never unblock SIGUSR2. Here the signals are only
    blocked while the trackers start: one that arrives meanwhile is delivered right after.
    """
    from joblib.externals.loky.backend import resource_tracker as loky_tracker

    with blocked(signums):
        loky_tracker.ensure_running()
        multiprocessing.resource_tracker.ensure_running()


class PendingLabels:
    """The labels of one batch being computed (:meth:`PesqLabeler.submit`); :meth:`result` waits.

    In a pool the items are scored from the moment of the submit; with ``num_workers=0`` they are
    scored in this process by :meth:`result`. A dead pool is replaced and the batch submitted once
    more, then masked. The labeller's counters are updated by the first :meth:`result` (calling it
    again returns the same arrays).
    """

    def __init__(self, labeler: PesqLabeler, cleans: list, enhanceds: list, sr: int):
        self._labeler, self._items, self._sr = labeler, (cleans, enhanceds), sr
        self._attempt = 0
        self._futures = self._start() if labeler.num_workers else None
        self._result: tuple[np.ndarray, np.ndarray] | None = None

    def _start(self) -> list | None:
        """Futures of the batch's chunks in the pool; None once both attempts found it dead."""
        while self._attempt < 2:
            self._attempt += 1
            try:
                return self._labeler._submit_chunks(*self._items, self._sr)
            except BrokenProcessPool as exc:
                self._labeler._drop_pool(exc, self._attempt)
        return None

    def done(self) -> bool:
        """True when :meth:`result` will not block (in-process scoring runs inside :meth:`result`)."""
        if self._result is not None:
            return True
        return self._labeler.num_workers > 0 and (self._futures is None or all(f.done() for f in self._futures))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Normalised ``(PESQ - 1) / 3.5`` (float32, shape (B,)) and the validity mask (bool, (B,))."""
        if self._result is None:
            self._result = self._labeler._count(self._outcomes())
            self._items = self._futures = None
        return self._result

    def _outcomes(self) -> list[tuple[float, str | None]]:
        cleans, enhanceds = self._items
        if self._labeler.num_workers == 0:
            return [_pesq_or_reason(c, e, self._sr) for c, e in zip(cleans, enhanceds, strict=True)]
        while self._futures is not None:
            try:
                return [outcome for future in self._futures for outcome in future.result()]
            except BrokenProcessPool as exc:
                self._labeler._drop_pool(exc, self._attempt)
                self._futures = self._start()
        return [(float("nan"), "pesq worker crashed")] * len(cleans)


class PesqLabeler:
    """A persistent process pool that scores PESQ for the discriminator, one batch at a time.

    Workers are started once, lazily (:func:`process_pool`: fresh interpreters, safe in a
    threaded DDP rank process, no fork after threads) and reused by every call. ``num_workers=0``
    scores in this process. A crashed pool is replaced and the batch retried once, then masked.

    :meth:`score` waits for the labels. :meth:`submit` returns at once with a :class:`PendingLabels`
    whose ``result()`` waits: the caller computes something else meanwhile (the training loop: the
    generator's backward). Both give the same labels.
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
        return self.submit(clean, enhanced, lengths, sr).result()

    def submit(self, clean, enhanced, lengths=None, sr: int = 16000) -> PendingLabels:
        """Start labelling a batch (arguments as :meth:`score`) and return at once.

        The items are copied first, so the caller may change its arrays (or the tensors whose
        memory they share) right after the call.
        """
        clean, enhanced = np.asarray(clean, dtype=np.float32), np.asarray(enhanced, dtype=np.float32)
        if clean.ndim != 2 or clean.shape != enhanced.shape:
            raise ValueError(f"expected two (B, T) arrays of one shape, got {clean.shape} and {enhanced.shape}")
        batch = clean.shape[0]
        lengths = np.full(batch, clean.shape[1]) if lengths is None else np.asarray(lengths).astype(int)
        cleans = [clean[i, : lengths[i]].copy() for i in range(batch)]
        enhanceds = [enhanced[i, : lengths[i]].copy() for i in range(batch)]
        return PendingLabels(self, cleans, enhanceds, sr)

    def _submit_chunks(self, cleans: list, enhanceds: list, sr: int) -> list:
        """One future per chunk of items (raises BrokenProcessPool when the pool is dead)."""
        chunk = max(1, len(cleans) // (4 * self.num_workers))
        pool = self._pool()
        return [pool.submit(_pesq_chunk, cleans[i:i + chunk], enhanceds[i:i + chunk], sr)
                for i in range(0, len(cleans), chunk)]

    def _drop_pool(self, exc: BaseException, attempt: int) -> None:
        log.warning("PESQ worker pool died (%s); starting a new one (attempt %d of 2)", type(exc).__name__, attempt)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._executor = None

    def _count(self, outcomes: list[tuple[float, str | None]]) -> tuple[np.ndarray, np.ndarray]:
        raw = np.array([value for value, _ in outcomes], dtype=np.float64)
        valid = np.isfinite(raw)
        self.num_items += len(outcomes)
        self.num_failed += int(len(outcomes) - valid.sum())
        self.failure_reasons.update(reason for _, reason in outcomes if reason is not None)
        labels = np.where(valid, (np.where(valid, raw, 1.0) - 1.0) / 3.5, 0.0).astype(np.float32)
        return labels, valid

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> PesqLabeler:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
