"""The in-job side: what runs inside a Slurm job (the submitit job object, the requeue policy and its
CLI for the plain template, MASTER_PORT, the probe entry, the chained evaluation job). No torch is
imported here; the trainer imports it in the job."""
