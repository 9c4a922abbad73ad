"""What runs inside the SLURM job: one :class:`TrainingJob` call per rank (srun task).

Each task exports the torchrun contract (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE,
MASTER_ADDR, MASTER_PORT) and calls ``trainer.train.main(argv)`` in-process.

Save and requeue: Slurm sends ``--signal=USR2@LEAD`` (and ``scancel --signal=USR2``) to every
process of the step. Before the trainer starts we replace submitit's handler (which would act
on rank 0 alone, from inside a signal handler) by one that only asks the trainer to stop; the
trainer installs the same kind of handler itself, and at the next step boundary all ranks save
``last`` together and return EXIT_REQUEUE. Only then does global rank 0 decide, outside any
signal handler, whether to ``scontrol requeue`` the job and records the attempt in
``RUN_DIR/attempts.jsonl``: the policy of :mod:`jobs.injob.requeue`, which the plain sbatch template
runs too. A job the user cancelled is never requeued. In a sweep's job array the job id is
``ARRAYID_TASK``: the requeue (``scontrol requeue ARRAYID_TASK``) is that element's alone. When the
decision is a final stop, the evaluation job chained after training (``--evaluate-after``) is
cancelled (:func:`jobs.injob.evaluation.cancel_dependent`). What follows each decision is
:func:`jobs.injob.requeue.act_on`, the same for the plain template.

MASTER_PORT: the batch shell (first node) probes a free port with ``python -m jobs.ports`` and
exports it as SEGAN_MASTER_PORT to every task (see ``jobs.submit.jobspec``); without it, the port
derived from the job id (:func:`jobs.injob.ports.master_port`) is used.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import sys
import traceback
from pathlib import Path

from jobs import runs
from jobs.injob.ports import master_port
from jobs.injob.requeue import RequeuePolicy, act_on, describe_end, end_attempt, start_attempt
from trainer.core import signals as trainer_signals
from trainer.core.exitcodes import EXIT_CRASHED, EXIT_FINISHED, EXIT_REQUEUE

PORT_VARIABLE = "SEGAN_MASTER_PORT"  # set by the batch shell's probe (jobs.submit.jobspec.port_setup_line)


@dataclasses.dataclass
class TrainingJob:
    """The pickled callable submitit runs in every task of the job."""

    argv: list[str]
    run_dir: str
    policy: RequeuePolicy = dataclasses.field(default_factory=RequeuePolicy)
    entry: str = "trainer.train"  # a module with main(argv) -> exit code

    def __call__(self) -> int:
        trainer_signals.install()  # flag-only USR2/TERM handlers, replacing submitit's
        import submitit

        env = submitit.JobEnvironment()
        job_id = str(env.job_id)
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        port = os.environ.get(PORT_VARIABLE) or str(master_port(job_id, restart))
        os.environ.update(MASTER_ADDR=env.hostnames[0], MASTER_PORT=port,
                          RANK=str(env.global_rank), LOCAL_RANK=str(env.local_rank),
                          WORLD_SIZE=str(env.num_tasks), LOCAL_WORLD_SIZE=str(env.num_tasks // env.num_nodes))
        run_dir = Path(self.run_dir)
        is_leader = env.global_rank == 0
        header = (f"===== attempt {restart + 1} of job {job_id} · rank {env.global_rank}/{env.num_tasks} "
                  f"· {socket.gethostname()} · {runs.now_iso()} =====\n")
        for stream in (sys.stdout, sys.stderr):
            stream.write(header)
            stream.flush()
        step_start = start_attempt(run_dir, job_id, restart, env.num_tasks)["step"] if is_leader else 0
        code = self._run_entry()
        if is_leader:
            self._finish_attempt(job_id, restart, step_start, code)
        if code in (EXIT_FINISHED, EXIT_REQUEUE):
            return code
        sys.exit(code)

    def _run_entry(self) -> int:
        try:
            code = importlib.import_module(self.entry).main(list(self.argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_CRASHED)
        except Exception:
            traceback.print_exc()
            code = EXIT_CRASHED
        return int(code)

    def _finish_attempt(self, job_id: str, restart: int, step_start: int, code: int) -> None:
        run_dir = Path(self.run_dir)
        # Recorded before the requeue: `scontrol requeue` ends this process within moments.
        record = end_attempt(run_dir, job_id, restart, code, self.policy, step_start=step_start,
                             stop_signal=trainer_signals.stop_reason())
        sys.stderr.write(describe_end(record) + "\n")
        sys.stderr.flush()
        act_on(run_dir, job_id, record, sys.stderr)
