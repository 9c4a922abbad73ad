"""``python -m jobs.ports``: the name the batch shells of submitted jobs and of the plain sbatch template
call to pick MASTER_PORT; the code is :mod:`jobs.injob.ports`."""

import sys

from jobs.injob.ports import main

if __name__ == "__main__":
    sys.exit(main())
