"""MASTER_PORT: one formula below Linux's ephemeral range, and a probe that skips a live port."""

import socket
import subprocess
import sys

from jobs.injob.ports import HIGH, LOW, candidates, free_port, master_port, port_is_free


def test_master_port_lies_below_the_ephemeral_range_and_differs_between_jobs_and_restarts():
    ports = {master_port(str(job), restart) for job in range(1000, 1100) for restart in (0, 1)}
    assert len(ports) == 200 and all(20000 <= p < 32768 for p in ports)
    assert (LOW, HIGH) == (20000, 32768)
    # the old formula's range (20000-59999) reached into 32768-60999
    assert all(LOW <= master_port(job, 0) < HIGH for job in (0, 6383, 6384, 19999, 20000, 10**9 + 7, "12_3"))


def test_candidates_visit_every_port_of_the_range_once_starting_at_the_preferred_one():
    ports = list(candidates("123456", 1))
    assert ports[0] == master_port("123456", 1)
    assert sorted(ports) == list(range(LOW, HIGH))


def test_a_live_port_is_skipped():
    """Job ids equal modulo the span share a preferred port; the probe walks past the one in use."""
    job = "4242"
    preferred = master_port(job, 0)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            holder.bind(("0.0.0.0", preferred))
        except OSError:  # something else on this machine holds it already: the probe must skip it all the same
            pass
        else:
            holder.listen(1)
        assert not port_is_free(preferred)
        port = free_port(job, 0)
        assert port != preferred and LOW <= port < HIGH and port_is_free(port)
    finally:
        holder.close()


def test_the_cli_prints_a_free_port_for_the_job(repo_root):
    proc = subprocess.run([sys.executable, "-m", "jobs.ports", "--job-id", "777", "--restart", "1"], cwd=repo_root,
                          capture_output=True, text=True, check=True)
    assert LOW <= int(proc.stdout) < HIGH
