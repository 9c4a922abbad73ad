"""Process exit codes of ``python -m trainer.train`` (the launcher's requeue logic reads them).

Only ``EXIT_REQUEUE`` asks for a requeue (and ``EXIT_CRASHED`` may be retried); every other
non-zero code means "a person has to look": requeueing would fail the same way.
"""

EXIT_FINISHED = 0  # all epochs done
EXIT_CRASHED = 1  # an unexpected exception (traceback in the log)
EXIT_BAD_INPUT = 2  # bad config, data or checkpoint, or a run directory in use: a one-line message says what to fix
EXIT_DIVERGED = 3  # too many consecutive non-finite losses; the last good checkpoint is kept
EXIT_DISK_FULL = 4  # no space left on the device or quota exceeded while writing: the file being written is
#                     named with the bytes it needed, `last` is intact. Do not requeue (the disk is still full):
#                     free space or raise the quota, then run the same command again.
EXIT_REQUEUE = 42  # a stop was requested (SIGUSR2/SIGTERM): `last` is saved, please requeue
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT; 128 + 2, the shell's convention): the first saved `last` at a step
#                         boundary, a second one stopped at once. The user asked to stop: do not requeue.


def stop_exit_code(interrupted: bool) -> int:
    """The exit code after a stop at a step boundary: a user's Ctrl-C on any rank ends the run
    (no requeue); otherwise the stop came from SLURM (time limit, preemption) and asks for a requeue."""
    return EXIT_INTERRUPTED if interrupted else EXIT_REQUEUE
