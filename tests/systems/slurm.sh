#!/usr/bin/env bash
# A single-node Slurm (slurmctld + slurmd) on this machine, for the factory tests.
#   slurm.sh install   packages from Debian (needs root and apt)
#   slurm.sh start     configure and start the daemons unless they already answer
# Recipe: ../shared/batch-systems.md. Idempotent; prints nothing on success but "slurm up".
set -euo pipefail
host="$(hostname)"

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
}

start() {
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "slurm up"; return 0
    fi
    mkdir -p /run/munge /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
    chown munge:munge /run/munge
    [ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    cat > /etc/slurm/slurm.conf <<CONF
ClusterName=test
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
MpiDefault=none
ReturnToService=2
# 8 CPUs on a 2-core machine: workers mostly wait on the network; room for a pool of 4+
SlurmdParameters=config_overrides
SchedulerParameters=sched_interval=1
NodeName=${host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 TmpDisk=20000 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 60); do
        if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
            echo "slurm up"; return 0
        fi
        sleep 1
    done
    echo "slurm did not come up" >&2; sinfo >&2 || true; return 1
}

"$@"
