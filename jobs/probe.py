"""``--entry jobs.probe`` (and ``python -m jobs.probe``, what ``--local`` runs): the name the cluster
tests and docs give the trainer's stand-in; the code is :mod:`jobs.injob.probe`."""

import sys

from jobs.injob.probe import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
