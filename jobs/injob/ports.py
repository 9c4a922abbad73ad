"""MASTER_PORT for a job: the one formula, plus a probe on the first node (no torch).

    python -m jobs.ports [--job-id J] [--restart R]   prints a free port (first node, batch shell)

The port lies in 20000-32767, below Linux's ephemeral range (32768-60999 by default), so no
outgoing connection of any program can be holding it by chance. :func:`master_port` derives a
preferred port from the job id and the restart count (the parity avoids rebinding a port the
previous attempt of the same job may still hold in TIME_WAIT). Job ids that are equal modulo
:data:`SPAN` // 2 share a preferred port, so :func:`free_port` also tries to bind it on the node
that will host the rendezvous (the batch shell runs on the job's first node) and walks on to the
next free port of the range when it is taken.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

LOW = 20000
HIGH = 32768  # exclusive: Linux's ephemeral ports start here (net.ipv4.ip_local_port_range)
SPAN = HIGH - LOW


def _job_number(job_id: str | int) -> int:
    digits = "".join(c for c in str(job_id) if c.isdigit())
    return int(digits) if digits else 0


def master_port(job_id: str | int, restart_count: int = 0) -> int:
    """The preferred port of attempt ``restart_count`` of job ``job_id`` (no probe)."""
    return LOW + (_job_number(job_id) % (SPAN // 2)) * 2 + int(restart_count) % 2


def candidates(job_id: str | int, restart_count: int = 0):
    """Every port of the range once, starting at the preferred one (same parity first)."""
    first = master_port(job_id, restart_count) - LOW
    for offset in range(0, SPAN, 2):
        yield LOW + (first + offset) % SPAN
    for offset in range(1, SPAN, 2):
        yield LOW + (first + offset) % SPAN


def port_is_free(port: int) -> bool:
    """Can a listening socket bind ``port`` on every address of this host right now?

    Without SO_REUSEADDR, so a port still in TIME_WAIT counts as taken."""
    families = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        families.append((socket.AF_INET6, "::"))
    for family, address in families:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 on this host
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
        except OSError:
            return False
        finally:
            sock.close()
    return True


def free_port(job_id: str | int, restart_count: int = 0) -> int:
    """The first port of :func:`candidates` that is free on this host."""
    for port in candidates(job_id, restart_count):
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port in {LOW}-{HIGH - 1} on {socket.gethostname()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.ports",
                                     description="print a free MASTER_PORT for this job on this node")
    parser.add_argument("--job-id", default=os.environ.get("SLURM_JOB_ID", "0"),
                        help="default: $SLURM_JOB_ID")
    parser.add_argument("--restart", type=int, default=int(os.environ.get("SLURM_RESTART_COUNT") or 0),
                        help="default: $SLURM_RESTART_COUNT")
    args = parser.parse_args(argv)
    try:
        port = free_port(args.job_id, args.restart)
    except RuntimeError as exc:
        sys.stderr.write(f"jobs.ports: error: {exc}\n")
        return 1
    sys.stdout.write(f"{port}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
