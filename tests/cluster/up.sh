#!/usr/bin/env bash
# Bring up a one-machine SLURM test cluster (Debian 12, Slurm 22.05) as root, idempotently:
# munge, MariaDB + slurmdbd (accounting, AccountingStorageEnforce=associations), slurmctld and
# two slurmd nodes `n1`, `n2` (one `slurmd -N` each, on its own port), each with Gres=gpu:4
# (character devices, no real GPUs), in partition `gpu`. Partition `urgent` (same nodes, higher
# PriorityTier) preempts jobs of `gpu` with PreemptMode=REQUEUE and no grace time, as a cluster's
# preemptible partition does; only tests that submit to `urgent` ever preempt anything.
# An account `testacct` holds root, so `sbatch --account testacct` works and a job without a
# valid account is refused, as on Levante. Re-running starts only what is not running.
#   bash tests/cluster/up.sh        tear down with: bash tests/cluster/down.sh
set -euo pipefail

STATE=${SEGAN_SLURM_STATE:-/var/lib/segan-slurm}
CLUSTER=segantest
ACCOUNT=testacct
NODES=(n1 n2)
NODE_CPUS=16
DB_PORT=${SEGAN_SLURM_DB_PORT:-3307}
CONF_DIR=/etc/slurm

say() { echo "cluster/up.sh: $*"; }
die() { echo "cluster/up.sh: error: $*" >&2; exit 1; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  die "$what did not come up within ${limit}s (logs in $STATE/log)"
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"

pkgs=(slurm-wlm slurmdbd munge mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$STATE"/{log,run,ctld,spool,dev,mysql-run} "$CONF_DIR"
HOST=$(hostname -s 2>/dev/null || uname -n)

# --- munge -------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge && chown munge:munge /run/munge
if ! alive /run/munge/munged.pid; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
fi
wait_for 20 munge sh -c 'munge -n | unmunge'

# --- MariaDB for slurmdbd --------------------------------------------------------------------
DATADIR=$STATE/mysql
if [ ! -d "$DATADIR/mysql" ]; then
  say "initialising MariaDB in $DATADIR"
  mkdir -p "$DATADIR" && chown mysql:mysql "$DATADIR"
  mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1
fi
chown mysql:mysql "$STATE/mysql-run"
SOCK=$STATE/mysql-run/mysqld.sock
if ! alive "$STATE/mysql-run/mysqld.pid"; then
  say "starting mariadbd on 127.0.0.1:$DB_PORT"
  setsid runuser -u mysql -- /usr/sbin/mariadbd --no-defaults --datadir="$DATADIR" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --socket="$SOCK" --pid-file="$STATE/mysql-run/mysqld.pid" \
    --log-error="$STATE/log/mariadb.log" --skip-name-resolve >/dev/null 2>&1 &
fi
wait_for 60 mariadb mysql --socket="$SOCK" -uroot -e "SELECT 1"
mysql --socket="$SOCK" -uroot <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmtest';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmtest';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- config files (rewritten every time: same content, so re-running is harmless) ----------
for i in 0 1 2 3 4 5 6 7; do
  [ -c "$STATE/dev/gpu$i" ] || { rm -f "$STATE/dev/gpu$i"; mknod "$STATE/dev/gpu$i" c 1 3; }
done
# submitit's torch-distributed environment uses the first node's *name* as MASTER_ADDR
for node in "${NODES[@]}"; do
  grep -qE "^127\.0\.0\.1[[:space:]].*\b$node\b" /etc/hosts || echo "127.0.0.1 $node" >>/etc/hosts
done

new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by tests/cluster/up.sh: a one-machine test cluster (no cgroups, fake GPU devices).
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd-%n.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
ReturnToService=2
GresTypes=gpu
KillWait=15
UnkillableStepTimeout=180
MinJobAge=600
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStorageEnforce=associations
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/none
NodeName=n1 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17001 CPUs=$NODE_CPUS RealMemory=64000 Gres=gpu:4 State=UNKNOWN
NodeName=n2 NodeHostname=$HOST NodeAddr=127.0.0.1 Port=17002 CPUs=$NODE_CPUS RealMemory=64000 Gres=gpu:4 State=UNKNOWN
PartitionName=gpu Nodes=n1,n2 Default=YES MaxTime=12:00:00 State=UP PriorityTier=1
PartitionName=urgent Nodes=n1,n2 MaxTime=12:00:00 State=UP PriorityTier=10 PreemptMode=OFF
EOF
# UnkillableStepTimeout: on a loaded shared test machine a 4-rank torch step has taken more than the
# default 60 s to die after SIGKILL; Slurm then drains the node ("Kill task failed") and every later
# test that needs it waits until its own timeout.
# A changed node layout (e.g. a cluster left by an older up.sh) needs the daemons restarted.
if [ -s "$CONF_DIR/slurm.conf" ] && ! cmp -s "$new_conf" "$CONF_DIR/slurm.conf" && alive "$STATE/run/slurmctld.pid"; then
  say "slurm.conf changed: restarting slurmctld and slurmd"
  for pidfile in "$STATE"/run/slurmd-*.pid "$STATE/run/slurmctld.pid"; do
    alive "$pidfile" && kill "$(cat "$pidfile")"
    for _ in $(seq 30); do alive "$pidfile" || break; sleep 0.5; done
    rm -f "$pidfile"
  done
fi
mv "$new_conf" "$CONF_DIR/slurm.conf"
chmod 644 "$CONF_DIR/slurm.conf"
cat >"$CONF_DIR/gres.conf" <<EOF
NodeName=n1 Name=gpu File=$STATE/dev/gpu[0-3]
NodeName=n2 Name=gpu File=$STATE/dev/gpu[4-7]
EOF
cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurmtest
StorageLoc=slurm_acct_db
EOF
chmod 600 "$CONF_DIR/slurmdbd.conf"
export SLURM_CONF=$CONF_DIR/slurm.conf

# --- slurmdbd, then the cluster/account, then slurmctld (this order matters) -------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
  say "starting slurmdbd"
  slurmdbd
fi
wait_for 60 slurmdbd sacctmgr -n list cluster
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" || \
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="launcher tests" >/dev/null
sacctmgr -n -P list association user=root account="$ACCOUNT" format=user | grep -qx root || \
  sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null

if ! alive "$STATE/run/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld
fi
wait_for 30 slurmctld scontrol ping
for node in "${NODES[@]}"; do
  if ! alive "$STATE/run/slurmd-$node.pid"; then
    say "starting slurmd ($node)"
    slurmd -N "$node"
  fi
done

nodes_ready() {
  local node
  for node in "${NODES[@]}"; do
    sinfo -h -n "$node" -o %T | grep -qE "^(idle|mixed|allocated)" || return 1
  done
}
for _ in $(seq 30); do
  nodes_ready && break
  for node in "${NODES[@]}"; do
    if sinfo -h -n "$node" -o %T | grep -qE "down|drain"; then
      scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    fi
  done
  sleep 1
done
nodes_ready || die "nodes not ready: $(sinfo -h -N -o '%N %T %E' | tr '\n' ';') (logs in $STATE/log)"
say "ready: partitions gpu and urgent (preempts gpu), nodes ${NODES[*]} (Gres=gpu:4 each), account $ACCOUNT; conf $CONF_DIR/slurm.conf"
