#!/usr/bin/env bash
# start.sh DIR - a throw-away single-node SLURM cluster on localhost, for tests and CI (Debian 12, root,
# no systemd). Adapted from ../shared/notes/slurm/start-slurm.sh.
#
# Everything lives under DIR (created if missing; use a fresh temporary directory): configs (DIR/etc),
# the munge key and socket, the MariaDB data, SLURM state, spool, logs and pid files. Nothing is written to
# /etc, /run or /var: the daemons get their config paths on the command line or through SLURM_CONF, which
# SLURM also uses to find slurmdbd.conf and gres.conf beside slurm.conf.
#
# Started, each recorded in DIR/pids/<comm>.pid as soon as it runs (so stop.sh can stop exactly these,
# even when this script fails half-way):
#   munged      own key and socket (SLURM is pointed at it with AuthInfo=socket=...)
#   mariadbd    own datadir, 127.0.0.1 on a free port; user `slurm` with a random password
#   slurmdbd    accounting, so that `sacct` answers (snakemake-executor-plugin-slurm's default status query)
#   slurmctld   controller
#   slurmd      the one node: this machine's CPUs and memory (minus a margin), plus DP_SLURM_GPUS
#               "gpu" GRES (default 1) with /dev/null standing in for the device file, so that a job
#               asking for a GPU (--gpus=1) is scheduled here too - it simply runs on the CPU.
# All daemons run as root (no other user needs to read DIR). Ports are picked free at start.
#
# Afterwards DIR/env holds `export SLURM_CONF=... PATH=DIR/bin:...` (see the srun note below); source it
# before sbatch/squeue/sacct/snakemake.
# Stop with scripts/slurm/stop.sh DIR. Packages needed: munge slurmctld slurmd slurm-client slurmdbd
# mariadb-server (.ci/run installs them; this script does not).
# Exit status: 0 ready; 2 packages missing (nothing started); 1 anything else (see DIR/log/*.log).
set -euo pipefail

DIR=${1:?usage: start.sh DIR}
GPUS=${DP_SLURM_GPUS:-1}
MEM_MARGIN_MB=${DP_SLURM_MEM_MARGIN_MB:-1024}
CLUSTER=deeppuppets
PARTITION=debug
T0=$(date +%s%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}'; }
log() { echo "[slurm-start $(date +%T)] $*"; }
die() {
  echo "[slurm-start] ERROR: $*" >&2
  for f in "$DIR"/log/*.log; do [ -s "$f" ] && { echo "--- $f (tail)" >&2; tail -n 15 "$f" >&2; }; done
  exit 1
}

[ "$(id -u)" = 0 ] || { echo "[slurm-start] must run as root" >&2; exit 2; }
missing=""
for exe in munged mungekey slurmctld slurmd slurmdbd sbatch sacct sacctmgr mariadbd mariadb-install-db; do
  command -v "$exe" >/dev/null 2>&1 || [ -x "/usr/sbin/$exe" ] || missing="$missing $exe"
done
[ -z "$missing" ] || { echo "[slurm-start] not installed:$missing (apt-get install munge slurmctld slurmd slurm-client slurmdbd mariadb-server)" >&2; exit 2; }
export PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
case "$DIR" in *[[:space:]\'\"\\\$\`]*) die "DIR must not contain spaces or quotes: $DIR" ;; esac
install -d -m 0700 "$DIR"/{etc,run,log,pids,munge,state,spool,mysql}

# ------------------------------------------------------------------ helpers
# alive PID COMM: PID runs a process named COMM
alive() { [ -n "$1" ] && [ "$(cat /proc/"$1"/comm 2>/dev/null)" = "$2" ]; }
wait_for() { # wait_for SECONDS DESCRIPTION CMD... (wall-clock limit; each attempt at most 10 s)
  local t=$1 what=$2
  local end=$(($(date +%s) + t))
  shift 2
  while [ "$(date +%s)" -lt "$end" ]; do
    if declare -F "$1" >/dev/null; then "$@" >/dev/null 2>&1 && return 0
    else timeout -k 2 10 "$@" >/dev/null 2>&1 && return 0; fi
    sleep 0.25
  done
  die "timed out after ${t}s waiting for: $what"
}
pidfile_alive() { [ -s "$1" ] && alive "$(cat "$1")" "$2"; }
# record COMM DAEMON_PIDFILE: wait for the daemon's own pid file, then record the pid for stop.sh
record() {
  wait_for 30 "$1 pid file $2" pidfile_alive "$2" "$1"
  cat "$2" >"$DIR/pids/$1.pid"
  log "started $1 (pid $(cat "$2"))"
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
for f in "$DIR"/pids/*.pid; do
  [ -e "$f" ] || continue
  c=$(basename "$f" .pid)
  alive "$(cat "$f")" "$c" && die "$DIR already has a running $c (pid $(cat "$f")); stop it with stop.sh first"
done

NODE=$(hostname -s)
CTLD_PORT=$(free_port)
SLURMD_PORT=$(free_port)
DBD_PORT=$(free_port)
DB_PORT=$(free_port)
DB_PASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
MEM_TOTAL=$(awk '/^MemTotal:/{print int($2/1024)}' /proc/meminfo)
REAL_MEM=$((MEM_TOTAL - MEM_MARGIN_MB))
# CPUs / topology exactly as slurmd detects it, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1"
TOPO=$(slurmd -C | head -1 | grep -o 'CPUs=.*ThreadsPerCore=[0-9]*')
[ -n "$TOPO" ] || die "slurmd -C did not report the CPU topology"

# ------------------------------------------------------------------ munge
MUNGE_SOCKET="$DIR/munge/munge.socket"
mungekey --create --keyfile="$DIR/munge/munge.key" --force
chmod 0600 "$DIR/munge/munge.key"
munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$DIR/run/munged.pid" \
  --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" --force
record munged "$DIR/run/munged.pid"
wait_for 15 "munge round trip" sh -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"

# ------------------------------------------------------------------ configs
cat >"$DIR/etc/slurm.conf" <<EOF
# generated by scripts/slurm/start.sh
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups: works without systemd and inside sandboxes
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# the munge socket for talking to slurmdbd (AuthInfo covers only the controller and nodes)
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
# keep the job comment (the plugin puts rule and wildcards there) for sacct
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE $TOPO RealMemory=$REAL_MEM Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
if [ "$GPUS" -gt 0 ]; then
  # gres/gpu needs device files; /dev/null stands in (no cgroups here, so nothing is bound to it)
  { for i in $(seq 1 "$GPUS"); do echo "NodeName=$NODE Name=gpu File=/dev/null"; done; } >"$DIR/etc/gres.conf"
else
  sed -i -e 's/ Gres=gpu:0//' -e '/^GresTypes=/d' -e '/^AccountingStorageTRES=/d' "$DIR/etc/slurm.conf"
  : >"$DIR/etc/gres.conf"
fi
install -m 0600 /dev/null "$DIR/etc/slurmdbd.conf"
cat >"$DIR/etc/slurmdbd.conf" <<EOF
# generated by scripts/slurm/start.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
DebugLevel=info
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
export SLURM_CONF="$DIR/etc/slurm.conf"
# Inside a job, snakemake-executor-plugin-slurm-jobstep runs the rule with a nested `srun` whose environment
# it strips of every SLURM_* variable but a few - SLURM_CONF included. Real clusters keep slurm.conf at
# /etc/slurm or run "configless", so srun finds it anyway; this cluster's config is only under DIR, and
# rather than writing /etc/slurm/slurm.conf (machine-wide, clashing with any other cluster here) the env
# file puts DIR/bin first on PATH, where `srun` sets SLURM_CONF and runs the real srun.
mkdir -p "$DIR/bin"
cat >"$DIR/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF='$SLURM_CONF' exec $(command -v srun) "\$@"
EOF
chmod 0755 "$DIR/bin/srun"
cat >"$DIR/env" <<EOF
export SLURM_CONF='$SLURM_CONF'
export PATH='$DIR/bin':"\$PATH"
EOF

# ------------------------------------------------------------------ accounting: MariaDB + slurmdbd
DB_SOCKET="$DIR/run/mysqld.sock"
mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
  --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DB_SOCKET" \
  --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$DIR/run/mysqld.pid" \
  --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
  </dev/null >/dev/null 2>&1 &
record mariadbd "$DIR/run/mysqld.pid"
wait_for 60 "MariaDB ping" mariadb-admin --no-defaults --socket="$DB_SOCKET" ping
mariadb --no-defaults --socket="$DB_SOCKET" -e "
  CREATE DATABASE slurm_acct_db;
  CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

slurmdbd
record slurmdbd "$DIR/run/slurmdbd.pid"
wait_for 60 "slurmdbd answering sacctmgr" sacctmgr -n list cluster
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null

# ------------------------------------------------------------------ slurmctld + slurmd
slurmctld -f "$SLURM_CONF"
record slurmctld "$DIR/run/slurmctld.pid"
wait_for 30 "slurmctld UP" sh -c 'scontrol ping | grep -q UP'
slurmd -f "$SLURM_CONF" -N "$NODE"
record slurmd "$DIR/run/slurmd.pid"

state=""
for _ in $(seq 1 240); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1)
  case "$state" in
    idle | mixed | allocated) break ;;
    down* | drain* | fail*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
  esac
  sleep 0.25
done
case "$state" in idle | mixed | allocated) ;; *) die "node $NODE not ready (state '$state')" ;; esac
sinfo
log "cluster '$CLUSTER' ready after $(elapsed)s (SLURM_CONF=$SLURM_CONF)"
