#!/usr/bin/env bash
# stop.sh DIR - stop exactly the daemons scripts/slurm/start.sh DIR started (their pids are in
# DIR/pids/<comm>.pid). A pid is signalled only while /proc/PID/comm still names that daemon, so a pid
# reused by another process is never touched. Jobs still queued or running on the cluster are cancelled
# first. Safe to run twice, or after a start.sh that failed half-way. Leaves DIR in place (logs).
set -uo pipefail
DIR=${1:?usage: stop.sh DIR}
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "[slurm-stop $(date +%T)] $*"; }
alive() { [ -n "$1" ] && [ "$(cat /proc/"$1"/comm 2>/dev/null)" = "$2" ]; }
[ -d "$DIR/pids" ] || { log "nothing recorded in $DIR/pids"; exit 0; }

if [ -s "$DIR/pids/slurmctld.pid" ] && alive "$(cat "$DIR/pids/slurmctld.pid")" slurmctld; then
  export SLURM_CONF="$DIR/etc/slurm.conf"
  jobs=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs
    for _ in $(seq 1 40); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.25; done
  fi
fi

status=0
for comm in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$DIR/pids/$comm.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if alive "$pid" "$comm"; then
    kill -TERM "$pid"
    for _ in $(seq 1 120); do alive "$pid" "$comm" || break; sleep 0.25; done
    if alive "$pid" "$comm"; then
      log "$comm (pid $pid) ignored TERM -> KILL"
      kill -KILL "$pid"
      sleep 0.5
    fi
    if alive "$pid" "$comm"; then log "could not stop $comm (pid $pid)"; status=1; continue; fi
    log "stopped $comm (pid $pid)"
  else
    log "$comm (pid $pid) was not running any more"
  fi
  rm -f "$f"
done
exit $status
