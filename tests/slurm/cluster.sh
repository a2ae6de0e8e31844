#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for tests/test_slurm.py (docs/design.md §9), run as root
# and only when asked for (MIA_TEST_SLURM=1 or `make test-slurm`): it may install system packages.
#   cluster.sh start DIR   installs slurm-wlm and munge if missing, writes DIR/slurm.conf, starts
#                          munged, slurmctld and slurmd; prints the SLURM_CONF to export
#   cluster.sh stop DIR    cancels this cluster's jobs, then stops this cluster's own processes by
#                          pid: the daemons of its pid files, every process whose environment holds
#                          its SLURM_CONF (a path unique to DIR: the daemons, the job steps, and
#                          slurmstepd, which is re-parented away from slurmd), and their descendants.
#                          Nothing is matched by name: other SLURM jobs on the machine are left alone.
set -euo pipefail
cmd=$1 dir=$(realpath -m "$2")
conf=$dir/slurm.conf

starttime() {  # field 22 of /proc/PID/stat: with the pid, it names one process even if pids are reused
    local line
    read -r line 2>/dev/null <"/proc/$1/stat" || return 1
    read -r -a line <<<"${line##*) }"  # from field 3 on
    [[ ${line[0]} != [ZX] ]] && echo "${line[19]}"  # a zombie is gone already (init may never reap it)
}

daemons() {  # "pid starttime" of each pid file's process, while it still runs that daemon
    local f pid st
    for f in munge/munged slurmctld slurmd; do
        pid=$(cat "$dir/$f.pid" 2>/dev/null) && st=$(starttime "$pid") || continue
        if [ "$(readlink "/proc/$pid/exe")" = "$(realpath "$(command -v "${f#*/}")")" ]; then echo "$pid $st"; fi
    done
}

# "pid starttime" of each live process of this cluster: the lines of KNOWN still alive, every process
# whose environment holds SLURM_CONF=$conf (the daemons, job steps, slurmstepd; not with a second
# argument "known"), and the descendants of all of these.
owned() {
    local f line pid st grew=1
    local -A parent=() start=() mine=()
    for f in /proc/[0-9]*/stat; do
        read -r line 2>/dev/null <"$f" || continue
        pid=${line%% *}
        read -r -a line <<<"${line##*) }"
        [[ ${line[0]} = [ZX] ]] && continue
        parent[$pid]=${line[1]} start[$pid]=${line[19]}
    done
    while read -r pid st; do
        if [ -n "$st" ] && [ "${start[$pid]:-}" = "$st" ]; then mine[$pid]=1; fi
    done <<<"$1"
    for f in $([ "${2:-}" = known ] || grep -lzxF "SLURM_CONF=$conf" /proc/[0-9]*/environ 2>/dev/null); do
        pid=${f#/proc/} pid=${pid%/environ}
        if [ -n "${start[$pid]:-}" ]; then mine[$pid]=1; fi
    done
    while [ $grew = 1 ]; do
        grew=0
        for pid in "${!parent[@]}"; do
            if [ -z "${mine[$pid]:-}" ] && [ -n "${mine[${parent[$pid]}]:-}" ]; then mine[$pid]=1 grew=1; fi
        done
    done
    unset "mine[$$]" "mine[$BASHPID]"  # never this script (start's failure path exports SLURM_CONF)
    for pid in "${!mine[@]}"; do echo "$pid ${start[$pid]}"; done
}

signal() {  # send SIG to each "pid starttime" line of PROCS whose process has not changed
    local pid st
    while read -r pid st; do
        if [ -n "$st" ] && [ "$(starttime "$pid")" = "$st" ]; then kill "-$1" "$pid" 2>/dev/null || true; fi
    done <<<"$2"
}

stop() {
    local jobs daemons family procs
    unset SLURM_CONF  # what this script runs must not match itself
    if [ -f "$conf" ] && command -v scancel >/dev/null; then
        jobs=$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null) || jobs=
        if [ -n "$jobs" ]; then
            SLURM_CONF=$conf scancel --full --quiet $jobs 2>/dev/null || true
            for _ in $(seq 10); do  # give the jobs a moment to end cleanly while slurmd still runs
                sleep 0.5
                if [ -z "$(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)" ]; then break; fi
            done
        fi
    fi
    daemons=$(daemons)
    family=$(owned "$daemons" known)  # the daemons and their children (slurmctld's slurmscriptd)
    procs=$(owned "$daemons")
    # the rest, what is left of the jobs, has had its SIGTERM from scancel (submitit's tasks ignore it)
    signal KILL "$(grep -vxF -e "${family:-none}" <<<"$procs" || true)"
    signal TERM "$daemons"
    for _ in $(seq 20); do
        procs=$(owned "$procs")
        if [ -z "$procs" ]; then return 0; fi
        sleep 0.5
    done
    signal KILL "$procs"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$dir.apt.log" 2>&1 \
        || { apt-get update -q >>"$dir.apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$dir.apt.log" 2>&1; } \
        || { echo "apt-get install slurm-wlm munge failed: see $dir.apt.log" >&2; exit 1; }
fi
mkdir -p "$dir" && chmod 755 "$dir"
mkdir -p "$dir"/state "$dir"/spool "$dir"/munge
chown munge: "$dir"/munge
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
chown munge: /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
host=$(hostname -s)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat >"$conf" <<CONF
ClusterName=miatest
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=$(( 16817 + RANDOM % 1000 ))
SlurmdPort=$(( 17818 + RANDOM % 1000 ))
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf  # before munged too: every daemon of this cluster carries it (see stop)
runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do   # the node is up once sinfo says idle
    sinfo -h -o %T 2>/dev/null | grep -q idle && { echo "$SLURM_CONF"; exit 0; }
    sleep 0.5
done
echo "the test cluster did not come up; logs in $dir" >&2
stop
exit 1
