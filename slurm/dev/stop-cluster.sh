#!/usr/bin/env bash
# Stop the single-node SLURM sandbox started by slurm/dev/start-cluster.sh:
# slurmd, slurmctld, slurmdbd, the private MariaDB and munged (only if
# start-cluster.sh started it).  Only processes named in the pid files under
# $QSX_SLURM_STATE_DIR/run are signalled.  Idempotent.
#
# The state directory (job ids, accounting DB, logs) is kept so that job ids
# keep increasing on the next start; `stop-cluster.sh --purge` deletes it.
# Jobs still running keep running in their slurmstepd and are picked up again
# by the next start; set QSX_SLURM_CANCEL_JOBS=1 to scancel all jobs first.
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"   # e.g. invoked as `sh stop-cluster.sh`
set -euo pipefail

STATE_DIR=$(realpath -m "${QSX_SLURM_STATE_DIR:-/var/lib/qsx-slurm}")
RUN_DIR=$STATE_DIR/run
STOP_TIMEOUT=${QSX_SLURM_STOP_TIMEOUT:-30}
export PATH=$PATH:/usr/sbin:/sbin

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log() { printf '[qsx-slurm %5ss] %s\n' "$(elapsed)" "$*"; }
die() { printf '[qsx-slurm] ERROR: %s\n' "$*" >&2; exit 1; }

purge=0
for arg in "$@"; do
    case $arg in
        --purge) purge=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $arg (usage: stop-cluster.sh [--purge])" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root"
cd /
if [[ -d $STATE_DIR ]]; then
    exec 9>"$STATE_DIR/lock"
    flock -w 120 9 || die "another start/stop-cluster.sh holds $STATE_DIR/lock"
fi

# pid_of PIDFILE NAME: print the pid if it names a live process called NAME.
pid_of() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(tr -dc 0-9 <"$1")
    [[ -n $pid ]] && [[ -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$2"* ]] || return 1
    echo "$pid"
}

# stop NAME:PIDFILE...: SIGTERM all given daemons at once, wait, then SIGKILL.
stop() {
    local spec name pidfile pid pids=() names=()
    for spec in "$@"; do
        name=${spec%%:*} pidfile=${spec#*:}
        if pid=$(pid_of "$pidfile" "$name"); then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid") names+=("$name")
        else
            log "$name: not running"
        fi
        rm -f "$pidfile"
    done
    local deadline=$(( $(date +%s) + STOP_TIMEOUT )) i left
    while :; do
        left=0
        for i in "${!pids[@]}"; do [[ -d /proc/${pids[i]} ]] && left=1; done
        (( left )) || return 0
        (( $(date +%s) < deadline )) || break
        sleep 0.1
    done
    for i in "${!pids[@]}"; do
        [[ -d /proc/${pids[i]} ]] || continue
        log "${names[i]} did not exit within ${STOP_TIMEOUT}s: sending SIGKILL"
        kill -KILL "${pids[i]}" 2>/dev/null || true
    done
    sleep 0.5
    for i in "${!pids[@]}"; do
        [[ ! -d /proc/${pids[i]} ]] || die "could not stop ${names[i]} (pid ${pids[i]})"
    done
}

if [[ ${QSX_SLURM_CANCEL_JOBS:-0} == 1 ]] && pid_of "$RUN_DIR/slurmctld.pid" slurmctld >/dev/null; then
    jobs=$(squeue -h -o %A </dev/null 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        log "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        scancel $jobs </dev/null || true
        for _ in $(seq 100); do
            [[ -z $(squeue -h -o %A </dev/null 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi

# slurmctld first: it finishes in-flight RPCs (job launches) with a live
# slurmd instead of dropping them; slurmstepd retries job-completion messages
# until slurmctld is back.  slurmctld flushes accounting records to slurmdbd
# on shutdown, so the database side goes last.  munged.pid only exists if
# start-cluster.sh started munged.
stop "slurmctld:$RUN_DIR/slurmctld.pid"
stop "slurmd:$RUN_DIR/slurmd.pid" "slurmdbd:$RUN_DIR/slurmdbd.pid"
stop "mariadbd:$RUN_DIR/mariadb.pid" "munged:$RUN_DIR/munged.pid"

if (( purge )); then
    case $STATE_DIR in /|/var|/var/lib|"") die "refusing to purge '$STATE_DIR'" ;; esac
    log "purging $STATE_DIR (job ids restart at \$QSX_SLURM_FIRST_JOB_ID)"
    rm -rf -- "$STATE_DIR"
fi
log "stopped"
