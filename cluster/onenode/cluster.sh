#!/usr/bin/env bash
# iclscope's CI cluster: a real SLURM 22.05 (Debian/Ubuntu packages) on this one machine, for
# `make slurm-check` (tests/test_slurm.py). Needs root; no systemd, no slurmdbd.
#
#   cluster/onenode/cluster.sh install  apt-get install munge slurmctld slurmd slurm-client
#   cluster/onenode/cluster.sh start    start munged, write /etc/slurm/slurm.conf and gres.conf
#                                       from the templates beside this script, start slurmctld
#                                       and the two node daemons, wait until both nodes are idle
#   cluster/onenode/cluster.sh stop     cancel every job, stop the daemons it started (never fails)
#   cluster/onenode/cluster.sh status   the daemons, the nodes and the queue (exit 1: not running)
#
# The nodes (see slurm.conf.template): <host> with one fake GPU in partition `gpu`, and
# <host>-cpu without GRES in partition `cpu`; both are this machine (two slurmd processes).
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER=iclscope-onenode
STATE_DIR=/var/spool/$CLUSTER
RUN_DIR=/run/$CLUSTER
LOG_DIR=/var/log/$CLUSTER
MUNGE_PID=/run/munge/$CLUSTER-munged.pid
CONF=/etc/slurm/slurm.conf
PACKAGES=(munge slurmctld slurmd slurm-client)
COMMANDS=(munged munge unmunge slurmctld slurmd sbatch squeue sinfo scancel scontrol)
START_TIMEOUT=60
# each node declares this share (%) of the machine's memory (two nodes: 80 % in all)
NODE_MEMORY_PERCENT=40

HOST=$(hostname -s)
NODES=("$HOST" "$HOST-cpu")

say() { echo "cluster.sh: $*"; }
die() { echo "cluster.sh: error: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "$1 needs root (it runs the SLURM and munge daemons as root/munge)"; }
# PATH may lack the sbin directories for a non-login root shell
export PATH="$PATH:/usr/sbin:/sbin"

installed() {
    local c
    for c in "${COMMANDS[@]}"; do command -v "$c" >/dev/null 2>&1 || return 1; done
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_install() {
    if installed; then
        say "SLURM and munge are already installed ($(slurmctld -V 2>/dev/null))"
        return 0
    fi
    need_root "install"
    command -v apt-get >/dev/null 2>&1 || die "install needs apt-get (a Debian/Ubuntu machine)"
    local log t0
    log=$(mktemp)
    t0=$(date +%s)
    say "apt-get install ${PACKAGES[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${PACKAGES[@]}"; } >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "apt-get install ${PACKAGES[*]} failed"
    fi
    rm -f "$log"
    installed || die "installed ${PACKAGES[*]}, but some of ${COMMANDS[*]} are still missing"
    say "installed $(slurmctld -V) in $(( $(date +%s) - t0 )) s"
}

start_munge() {
    # a munged that already answers (a system service) is used as it is, and left running
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already running"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key || die "could not create the munge key"
    fi
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged --pid-file="$MUNGE_PID" || die "munged did not start: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
    local _
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "munged does not answer: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
}

fill() {
    # a template with this machine's values
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk -v p="$NODE_MEMORY_PERCENT" '/^MemTotal:/ {print int($2 / 1024 * p / 100)}' /proc/meminfo)
    sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" -e "s|@NODE_MEMORY_MB@|$mem_mb|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@RUN_DIR@|$RUN_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" "$1"
}

log_tails() {
    local f
    for f in "$LOG_DIR"/*.log /var/log/munge/munged.log; do
        [ -f "$f" ] || continue
        echo "--- $f (last 15 lines)" >&2
        tail -n 15 "$f" >&2
    done
}

nodes_idle() {
    # every node of this cluster answers and is idle
    local states
    states=$(sinfo -h -N -o '%N %T' 2>/dev/null | sort -u) || return 1
    local n
    for n in "${NODES[@]}"; do
        grep -qx "$n idle" <<<"$states" || return 1
    done
}

cmd_start() {
    need_root "start"
    installed || die "SLURM or munge is not installed: run '$0 install' first"
    if [ -e "$CONF" ] && ! grep -q "^ClusterName=$CLUSTER\$" "$CONF"; then
        die "$CONF belongs to another cluster; not overwriting it"
    fi
    local f
    for f in "$RUN_DIR"/*.pid; do
        if alive "$f"; then
            say "already running: restarting it with an empty queue"
            cmd_stop
            break
        fi
    done
    start_munge
    mkdir -p /etc/slurm "$RUN_DIR" "$LOG_DIR"
    # a fresh cluster: no jobs, job ids from 1, logs of this start only
    rm -rf "$STATE_DIR" "$RUN_DIR"/*.pid "$LOG_DIR"/*.log
    mkdir -p "$STATE_DIR/slurmctld" "${NODES[@]/#/$STATE_DIR/slurmd-}"
    fill "$HERE/slurm.conf.template" >"$CONF"
    fill "$HERE/gres.conf.template" >/etc/slurm/gres.conf
    slurmctld || { log_tails; die "slurmctld did not start"; }
    local n
    for n in "${NODES[@]}"; do
        slurmd -N "$n" || { log_tails; die "slurmd for node $n did not start"; }
    done
    local t0=$SECONDS
    until nodes_idle; do
        # (its pid file appears once it has daemonized)
        if (( SECONDS - t0 >= 3 )) && ! alive "$RUN_DIR/slurmctld.pid"; then
            log_tails
            die "slurmctld exited (see its log above)"
        fi
        if (( SECONDS - t0 >= START_TIMEOUT )); then
            sinfo -N >&2 2>&1 || true
            log_tails
            die "the nodes (${NODES[*]}) are not idle after $START_TIMEOUT s"
        fi
        sleep 0.5
    done
    say "cluster $CLUSTER is up ($(( SECONDS - t0 )) s after the daemons started):"
    sinfo -N -o '%N %P %T %c %m %G'
}

stop_pid() {
    # stop the process of a pid file: SIGTERM, then SIGKILL after 10 s
    local file=$1 pid _
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$file"
}

cmd_stop() {
    if alive "$RUN_DIR/slurmctld.pid"; then
        local jobs _
        jobs=$(squeue -h -o %i 2>/dev/null)
        if [ -n "$jobs" ]; then
            say "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null
            # let the nodes kill the jobs' processes (KillWait) before their daemons go
            for _ in $(seq 30); do
                [ -z "$(squeue -h -o %i -t PENDING,RUNNING,COMPLETING,SUSPENDED 2>/dev/null)" ] && break
                sleep 1
            done
        fi
    fi
    local f
    for f in "$RUN_DIR"/slurmd-*.pid "$RUN_DIR/slurmctld.pid" "$MUNGE_PID"; do
        [ -e "$f" ] && stop_pid "$f"
    done
    say "stopped"
    return 0
}

cmd_status() {
    local f running=0
    for f in "$RUN_DIR"/slurmctld.pid "$RUN_DIR"/slurmd-*.pid "$MUNGE_PID"; do
        [ -e "$f" ] || continue
        if alive "$f"; then echo "$(basename "$f" .pid): running (pid $(cat "$f"))"; else echo "$(basename "$f" .pid): dead"; fi
    done
    if sinfo -N -o '%N %P %T %c %m %G' 2>/dev/null; then
        squeue -o '%.8i %.9P %.30k %.10T %.8M %R' 2>/dev/null
    else
        echo "cluster $CLUSTER: not running (sinfo gets no answer)"
        running=1
    fi
    return $running
}

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop || true; exit 0 ;;
    status) cmd_status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
