#!/usr/bin/env python3
"""Cluster CLI: submit training jobs, follow logs, status, list, cancel, check.

Runs on login nodes: it must start in well under a second, so nothing here (or in
``jobs.cli``) imports torch.
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
