#!/usr/bin/env bash
# Stop the one-machine SLURM test cluster started by tests/cluster/up.sh (daemons by pid file).
#   bash tests/cluster/down.sh          stop the daemons, keep state (accounting DB, job state)
#   bash tests/cluster/down.sh --purge  also delete the state folder (next up.sh starts afresh)
set -euo pipefail
STATE=${SEGAN_SLURM_STATE:-/var/lib/segan-slurm}
purge=0
[ "${1:-}" = --purge ] && purge=1

stop() {  # stop NAME PIDFILE
  local pidfile=$2 pid
  [ -s "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "cluster/down.sh: stopping $1 (pid $pid)"
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$pidfile"
}

if command -v scancel >/dev/null && [ -s "$STATE/run/slurmctld.pid" ]; then
  scancel --user=root >/dev/null 2>&1 || true
fi
for pidfile in "$STATE"/run/slurmd-*.pid; do
  [ -e "$pidfile" ] && stop slurmd "$pidfile"
done
stop slurmctld "$STATE/run/slurmctld.pid"
stop slurmdbd "$STATE/run/slurmdbd.pid"
stop mariadbd "$STATE/mysql-run/mysqld.pid"
stop munged /run/munge/munged.pid
if [ "$purge" = 1 ]; then
  rm -rf "$STATE"
  echo "cluster/down.sh: removed $STATE"
fi
echo "cluster/down.sh: stopped"
