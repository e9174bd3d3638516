#!/usr/bin/env bash
# A single-node Grid Engine (sge_qmaster + sge_execd) on this machine, for the factory tests.
#   sge.sh install   packages from Debian (needs root and apt)
#   sge.sh start     configure and start the daemons unless they already answer
# Recipe and its three gotchas: ../shared/batch-systems.md. Idempotent; prints "sge up".
set -euo pipefail
host="$(hostname)"
export SGE_ROOT=/var/lib/gridengine SGE_CELL=default

install() {
    export DEBIAN_FRONTEND=noninteractive
    debconf-set-selections <<SEL
gridengine-master shared/gridenginemaster string ${host}
gridengine-master shared/gridenginecell string default
gridengine-master shared/gridengineconfig boolean true
gridengine-common shared/gridenginemaster string ${host}
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridengineconfig boolean true
gridengine-client shared/gridenginemaster string ${host}
gridengine-client shared/gridenginecell string default
gridengine-client shared/gridengineconfig boolean true
SEL
    apt-get install -y -q gridengine-master gridengine-exec gridengine-client >/dev/null
}

up() { qstat -f 2>/dev/null | grep -q "all.q@${host}"; }

start() {
    mkdir -p "$SGE_ROOT/default/common"
    echo "${host} localhost" > "$SGE_ROOT/default/common/host_aliases"
    pgrep -x sge_qmaster >/dev/null || /usr/sbin/sge_qmaster
    for _ in $(seq 30); do qconf -sh >/dev/null 2>&1 && break; sleep 1; done
    if up && pgrep -x sge_execd >/dev/null; then echo "sge up"; return 0; fi
    qconf -ah "$host" >/dev/null 2>&1 || true
    qconf -as "$host" >/dev/null 2>&1 || true
    work="$(mktemp -d)"
    (cd "$work"
     qconf -sconf > global
     sed -i -E 's/^min_uid .*/min_uid                      0/; s/^min_gid .*/min_gid                      0/' global
     qconf -Mconf global >/dev/null
     if ! qconf -sp smp >/dev/null 2>&1; then
         printf '%s\n' "pe_name smp" "slots 999" "user_lists NONE" "xuser_lists NONE" \
             "start_proc_args NONE" "stop_proc_args NONE" 'allocation_rule $pe_slots' \
             "control_slaves FALSE" "job_is_first_task TRUE" "urgency_slots min" \
             "accounting_summary FALSE" "qsort_args NONE" > smp
         qconf -Ap smp >/dev/null
     fi
     if ! qconf -shgrp @allhosts >/dev/null 2>&1; then
         printf '%s\n' "group_name @allhosts" "hostlist ${host}" > allhosts
         qconf -Ahgrp allhosts >/dev/null
     fi
     if ! qconf -sq all.q >/dev/null 2>&1; then
         cat > all.q <<Q
qname                 all.q
hostlist              @allhosts
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $(nproc)
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
Q
         qconf -Aq all.q >/dev/null
     else
         qconf -mattr queue pe_list smp all.q >/dev/null 2>&1 || true
     fi
     # scheduling every second, not every 15 s
     qconf -ssconf | sed -E 's/^schedule_interval .*/schedule_interval 0:0:1/' > sched
     qconf -Msconf sched >/dev/null 2>&1 || true)
    rm -rf "$work"
    pkill -x sge_execd 2>/dev/null || true
    for _ in $(seq 20); do pgrep -x sge_execd >/dev/null || break; sleep 0.5; done
    /usr/sbin/sge_execd
    for _ in $(seq 60); do
        if up && ! qstat -f | grep -A1 "all.q@${host}" | grep -qE ' (au|E|d)\b'; then
            echo "sge up"; return 0
        fi
        sleep 1
    done
    echo "sge did not come up" >&2; qstat -f >&2 || true; return 1
}

"$@"
