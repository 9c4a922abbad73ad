"""Process exit codes of ``python -m trainer.train`` (the launcher's requeue logic reads them)."""

EXIT_FINISHED = 0  # all epochs done
EXIT_CRASHED = 1  # an unexpected exception (traceback in the log)
EXIT_BAD_INPUT = 2  # bad config, data or checkpoint: a one-line message says what to fix
EXIT_DIVERGED = 3  # too many consecutive non-finite losses; the last good checkpoint is kept
EXIT_REQUEUE = 42  # a stop was requested (SIGUSR2/SIGTERM): `last` is saved, please requeue
