"""``python -m jobs.requeue``: the name the plain sbatch template (``slurm_templates/levante.sbatch``)
and every script rendered from it call; the policy and its CLI are :mod:`jobs.injob.requeue`."""

import sys

from jobs.injob.requeue import main

if __name__ == "__main__":
    sys.exit(main())
