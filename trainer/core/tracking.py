"""TensorBoard tracking of a run: ``RUN_DIR/tensorboard/``, written by rank 0 only, no network.

``metrics.jsonl`` stays the source of truth; the tracker mirrors it. What is written:

- every number of every ``metrics.jsonl`` record as a scalar at the record's global ``step``: step
  records as ``train/<name>`` (``train/loss``, ``train/d_loss``, ...), the ``valid_*`` fields of
  epoch records as ``valid/<name>`` (``valid/pesq``), the other epoch fields as ``epoch/<name>``;
  text fields (the creative copy alert) and the list of checkpoints saved as text under the same
  tags. Non-finite numbers (``null`` in metrics.jsonl) are left out, as there;
- at each validation, for ``valid.num_audio_samples`` fixed validation utterances (evenly spaced
  over the split, read by a small loader of its own: the training loader and every RNG the
  training uses stay untouched), what the task's :meth:`~trainer.core.task.Task.media` returns:
  ``audio/<k>_<name>/<signal>``, ``image/<k>_<name>/<picture>``, ``utterance/<k>_<name>/<value>``.
  The model's output every time; the task's reference signals (noisy/clean, input/target) and their
  pictures only while the run directory's log has no such tag, i.e. once.

Resume (:meth:`TensorBoardTracker.start`): the events after the checkpoint's step are removed from
the files (the work an interrupted run did past its last checkpoint, as ``metrics.jsonl`` drops
it), everything for a fresh run; the new writer starts with a ``purge_step`` so that a TensorBoard
that already loaded the removed events forgets them too. Steps are never duplicated or out of order.

``train.tensorboard: false`` gives a :class:`NullTracker` and never imports tensorboard.
"""

from __future__ import annotations

import contextlib
import errno
import math
import re
import threading
import time
from pathlib import Path

import numpy as np

from trainer.core.config import Config, ConfigError
from trainer.core.io import atomic_write
from trainer.core.log import get_logger
from trainer.core.task import Task

TENSORBOARD_DIR = "tensorboard"
FLUSH_SECONDS = 30  # the writer's own period; write() and validation() also flush, as metrics.jsonl does
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")

log = get_logger("tracking")


def require_tensorboard() -> None:
    """The one clear error when tracking is on but the package is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ConfigError("train.tensorboard is true but the tensorboard package is not installed: "
                          "pip install tensorboard (or set train.tensorboard=false)") from None


def build_tracker(cfg: Config, run_dir: str | Path, is_main: bool) -> NullTracker | TensorBoardTracker:
    """Rank 0's tracker, or a no-op one (other ranks, or ``train.tensorboard: false``).

    Every rank checks that tensorboard is installed, so that all ranks stop with the same error."""
    if not cfg.train.tensorboard:
        return NullTracker()
    require_tensorboard()
    return TensorBoardTracker(cfg, run_dir) if is_main else NullTracker()


class NullTracker:
    """Tracking off (or not rank 0): every call does nothing."""

    def start(self, step: int) -> int:
        return 0

    def write(self, record: dict) -> None:
        pass

    def validation(self, task, generator, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def event_files(log_dir: str | Path) -> list[Path]:
    """The event files of ``log_dir`` in the order TensorBoard reads them (by name)."""
    log_dir = Path(log_dir)
    return sorted(p for p in log_dir.glob("*tfevents*") if p.is_file()) if log_dir.is_dir() else []


def truncate_events(log_dir: str | Path, step: int) -> tuple[int, set[str]]:
    """Remove every event with a step after ``step`` from the event files of ``log_dir``.

    ``step`` 0 (a fresh run) removes the files. A file that keeps no summary is removed; a file
    that loses events (or ends in a record cut by a crash) is rewritten atomically; the rest stay
    as they are. Returns (number of events removed, or of files for ``step`` 0; tags of the
    summaries kept).
    """
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    num_dropped, tags = 0, set()
    for path in event_files(log_dir):
        if step <= 0:
            path.unlink()
            num_dropped += 1
            continue
        kept, size, has_summary, dropped_here = [], 0, False, 0
        for raw in RawEventFileLoader(str(path)).Load():
            size += len(raw) + 16  # length (8), its CRC (4), data, data CRC (4)
            event = event_pb2.Event.FromString(raw)
            if event.step > step:
                dropped_here += 1
                continue
            kept.append(raw)
            if event.HasField("summary"):
                has_summary = True
                tags.update(value.tag for value in event.summary.value)
        num_dropped += dropped_here
        if not has_summary:
            path.unlink()
        elif dropped_here or size != path.stat().st_size:
            def write(fh, records=kept):
                writer = RecordWriter(fh)
                for raw in records:
                    writer.write(raw)
            atomic_write(path, write)
    return num_dropped, tags


def record_values(record: dict) -> tuple[dict[str, float], dict[str, str]]:
    """A metrics.jsonl record -> ({tag: number}, {tag: text}) as the tracker writes them."""
    kind = record.get("kind")
    scalars, texts = {}, {}
    for key, value in record.items():
        if key in ("kind", "step"):
            continue
        if kind == "step":
            tag = f"train/{key}"
        elif key.startswith("valid_"):
            tag = f"valid/{key[len('valid_'):]}"
        else:
            tag = f"epoch/{key}"
        if isinstance(value, (bool, int, float, np.integer, np.floating)):
            if math.isfinite(float(value)):
                scalars[tag] = float(value)
        elif isinstance(value, str):
            texts[tag] = value
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            texts[tag] = ", ".join(value)
    return scalars, texts


def utterance_label(position: int, name: str) -> str:
    return f"{position}_{_SAFE.sub('_', str(name))[:60]}"


def _quiet_writer_thread_on_full_disk() -> None:
    """TensorBoard writes events on a thread that re-raises its error, which Python prints as a
    traceback, and hands it to the next write on the main thread. A full disk is reported there
    (:meth:`TensorBoardTracker._disk_full_turns_off`), as is a log folder removed during the run:
    the thread's copy is not printed."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "_tensorboard_disk_full", False):
        return

    def hook(args):
        if isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError) \
                and args.exc_value.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOENT):
            return
        previous(args)

    hook._tensorboard_disk_full = True
    threading.excepthook = hook


class TensorBoardTracker:
    """Rank 0's TensorBoard writer (see the module docstring)."""

    def __init__(self, cfg: Config, run_dir: str | Path, media_batches: list[dict] | None = None):
        """``media_batches``: the fixed utterances (batches of 1) to show instead of the first
        ``valid.num_audio_samples`` of the validation split (tests)."""
        self.cfg = cfg
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = None
        self.tags: set[str] = set()  # the tags the log holds (reference media are written once)
        self._batches = media_batches

    # ----- lifetime ----------------------------------------------------------------------------------
    def start(self, step: int) -> int:
        """Drop the events after ``step`` (0: a fresh run, all of them), then open the writer.
        Returns the number of events dropped (of event files for a fresh run)."""
        from torch.utils.tensorboard import SummaryWriter

        dropped, self.tags = truncate_events(self.log_dir, step)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._after_last_file()
        # purge_step: the writer's first event is a SessionLog.START at step + 1, which tells a
        # TensorBoard that already loaded events of the interrupted run to forget those >= step + 1.
        _quiet_writer_thread_on_full_disk()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=step + 1, flush_secs=FLUSH_SECONDS)
        if dropped and step > 0:
            log.info("tensorboard: dropped %d events written after step %d", dropped, step)
        elif dropped:
            log.info("tensorboard: a new run: removed %d event files of an earlier one", dropped)
        return dropped

    def _after_last_file(self) -> None:
        """Event files are read in name order and named events.out.tfevents.<seconds>...: a restart
        within the second of the previous file waits a moment, so that its file sorts after it
        (at most 2 s: a clock far off on another node is not worth waiting for)."""
        stamps = [int(m.group(1)) for p in event_files(self.log_dir)
                  if (m := re.search(r"tfevents\.(\d+)\.", p.name))]
        deadline = time.monotonic() + 2.0
        while stamps and int(time.time()) <= max(stamps) and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        if self.writer is not None:
            with self._disk_full_turns_off():
                self.writer.close()
            self.writer = None

    @contextlib.contextmanager
    def _disk_full_turns_off(self):
        """A full disk (or quota) while writing events turns TensorBoard off for this attempt, with
        one warning: it mirrors metrics.jsonl, and the next checkpoint save names the full disk and
        ends the run with EXIT_DISK_FULL (``last`` intact). Other errors propagate."""
        try:
            yield
        except OSError as exc:
            if exc.errno == errno.ENOENT and not self.log_dir.is_dir():
                self._reopen()
                return
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            writer, self.writer = self.writer, None
            log.warning("tensorboard: %s while writing to %s; TensorBoard is off for the rest of this "
                        "attempt (metrics.jsonl keeps every record)", exc.strerror, self.log_dir)
            if writer is not None:
                with contextlib.suppress(OSError):
                    writer.close()

    def _reopen(self) -> None:
        """RUN_DIR/tensorboard was removed during the run (by hand, a clean-up script): the writer's
        file is gone. Start a new log there, with one warning; the training goes on."""
        from torch.utils.tensorboard import SummaryWriter

        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
        self.tags = set()  # the reference media go into the new log again
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.log_dir), flush_secs=FLUSH_SECONDS)
        except OSError as exc:
            log.warning("tensorboard: %s was removed during the run and cannot be made again (%s); TensorBoard "
                        "is off for the rest of this attempt (metrics.jsonl keeps every record)", self.log_dir,
                        exc.strerror or exc)
            return
        log.warning("tensorboard: %s was removed during the run; a new log starts there (its earlier events "
                    "are gone; metrics.jsonl keeps every record)", self.log_dir)

    # ----- scalars --------------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        """Mirror one metrics.jsonl record (same names, grouped by kind) at its step; flushed at once
        (one record every train.log_every steps), so the log on disk follows metrics.jsonl."""
        if self.writer is None:
            return
        step = int(record["step"])
        scalars, texts = record_values(record)
        with self._disk_full_turns_off():
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, step)
            for tag, text in texts.items():
                self.writer.add_text(tag, text, step)
            self.writer.flush()
        self.tags.update(scalars, texts)

    # ----- media ------------------------------------------------------------------------------------
    def _media_batches(self) -> list[dict]:
        """The fixed utterances, read once by a loader of their own (no workers, no sampler)."""
        if self._batches is None:  # read once, kept (a few utterances); closed at once
            from trainer.core.registry import data_loaders

            num = self.cfg.valid.num_audio_samples
            loader = data_loaders(self.cfg).build_eval_loader(None, self.cfg, 0, 1,
                                       max_seconds=self.cfg.data.valid_max_seconds,
                                       max_utterances=num, num_workers=0)
            self._batches = list(loader)
            loader.close()
        return self._batches

    def validation(self, task, generator, step: int) -> None:
        """The task's media of the fixed validation utterances at ``step``; flushes the log."""
        if self.writer is None:
            return
        if self.cfg.valid.num_audio_samples > 0 and type(task).media is not Task.media:  # the task shows some
            import torch

            batches = self._media_batches()
            device = next(generator.parameters()).device
            was_training = generator.training
            generator.eval()
            # No RNG the training uses may move: media runs on rank 0 only and must leave the
            # per-rank streams (and so every later step) exactly as they were.
            devices = [device.index if device.index is not None else torch.cuda.current_device()] \
                if device.type == "cuda" else []
            try:
                with self._disk_full_turns_off(), torch.no_grad(), torch.random.fork_rng(devices=devices):
                    for position, batch in enumerate(batches[:self.cfg.valid.num_audio_samples]):
                        media = task.media(generator, batch)
                        if media is not None:
                            self._write_media(utterance_label(position, batch["names"][0]), media, step)
            finally:
                generator.train(was_training)
        if self.writer is not None:
            with self._disk_full_turns_off():
                self.writer.flush()

    def _write_media(self, label: str, media, step: int) -> None:
        w = self.writer
        for references, name, wave in [(False, k, v) for k, v in media.audio.items()] + \
                                      [(True, k, v) for k, v in media.reference_audio.items()]:
            tag = f"audio/{label}/{name}"
            wave = np.asarray(wave, dtype=np.float32).reshape(-1)
            if (references and tag in self.tags) or wave.size < 2:
                continue
            # clipped here: the summary would clip too, but print a warning on stdout
            w.add_audio(tag, np.clip(np.nan_to_num(wave), -1.0, 1.0), step, sample_rate=media.sample_rate)
            self.tags.add(tag)
        for references, name, image in [(False, k, v) for k, v in media.images.items()] + \
                                       [(True, k, v) for k, v in media.reference_images.items()]:
            tag = f"image/{label}/{name}"
            if references and tag in self.tags:
                continue
            w.add_image(tag, np.asarray(image, dtype=np.uint8), step, dataformats="HWC")
            self.tags.add(tag)
        for name, value in media.scalars.items():
            if value is not None and math.isfinite(value):
                w.add_scalar(f"utterance/{label}/{name}", float(value), step)
        for name, text in media.text.items():
            w.add_text(f"utterance/{label}/{name}", text, step)
