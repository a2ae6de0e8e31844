#!/usr/bin/env bash
# A single-node SLURM cluster on localhost for tests/test_slurm.py (docs/design.md §9), run as root.
#   cluster.sh start DIR   installs slurm-wlm and munge if missing, writes DIR/slurm.conf, starts
#                          munged, slurmctld and slurmd; prints the SLURM_CONF to export
#   cluster.sh stop DIR    stops the daemons by their pid files
set -euo pipefail
cmd=$1 dir=$(realpath -m "$2")

stop() {
    SLURM_CONF=$dir/slurm.conf scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    sleep 1
    for pid in "$dir"/slurmd.pid "$dir"/slurmctld.pid; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    [ -f "$dir/munge/munged.pid" ] && kill "$(cat "$dir/munge/munged.pid")" 2>/dev/null || true
    # job steps outlive their slurmd once it is gone (seen after a requeue); only test clusters run here
    pkill -9 -f "$dir/spool" 2>/dev/null || true
    pkill -9 -x slurmstepd 2>/dev/null || true
    pkill -9 -x srun 2>/dev/null || true
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
cat >"$dir/slurm.conf" <<CONF
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
runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munge.seed"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do   # the node is up once sinfo says idle
    sinfo -h -o %T 2>/dev/null | grep -q idle && { echo "$SLURM_CONF"; exit 0; }
    sleep 0.5
done
echo "the test cluster did not come up; logs in $dir" >&2
stop
exit 1
