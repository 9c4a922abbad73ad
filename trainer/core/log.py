"""One rank-aware logger for the whole toolkit (no bare ``print`` in library code).

``setup_logging(rank=…)`` is called once per process (the training loop calls it after
``trainer.dist`` has read the environment). By default only rank 0 writes INFO and below;
warnings and errors from every rank are shown, prefixed with the rank.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

_ROOT = "segan"
_state = {"rank": 0, "configured": False}
_warned: set[str] = set()


class _RankFilter(logging.Filter):
    def __init__(self, rank: int, all_ranks: bool):
        super().__init__()
        self.rank, self.all_ranks = rank, all_ranks

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return self.all_ranks or self.rank == 0 or record.levelno >= logging.WARNING


class _LogFile(logging.FileHandler):
    """A log file that, when it cannot be written (a full disk), says so once on stderr and keeps
    quiet after that, instead of logging's traceback per record; stderr still gets every record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            sys.stderr.write(f"{self.baseFilename}: cannot write the log ({getattr(error, 'strerror', error)}); "
                             "logging to stderr only\n")


def setup_logging(rank: int = 0, *, all_ranks: bool = False, level: int = logging.INFO,
                  log_file: str | Path | None = None) -> logging.Logger:
    """(Re)configure the toolkit logger for this process."""
    logger = logging.getLogger(_ROOT)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s [rank %(rank)s] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(_LogFile(log_file))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(_RankFilter(rank, all_ranks))
        logger.addHandler(handler)
    _state.update(rank=rank, configured=True)
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """The toolkit logger (or a child of it); configures rank 0 defaults on first use."""
    if not _state["configured"]:
        setup_logging(0)
    return logging.getLogger(_ROOT if not name else f"{_ROOT}.{name}")


def warn_once(logger: logging.Logger, key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key in _warned:
        return
    _warned.add(key)
    logger.warning(message)
