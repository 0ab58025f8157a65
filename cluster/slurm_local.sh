#!/usr/bin/env bash
# Start, stop or inspect a real single-node SLURM cluster (with accounting)
# on this machine, so the klomflow workflow can be run through Snakemake's
# SLURM executor plugin exactly as on a real cluster.
#
#   cluster/slurm_local.sh start    # (as root) install (if needed), configure, start, smoke-test
#   cluster/slurm_local.sh status   # what runs, sinfo, squeue
#   cluster/slurm_local.sh stop     # (as root) stop only the daemons this script started
#
# Assumptions (see docs/cluster.md): Debian 12, run as root, no systemd
# (daemons are plain background processes), slurm-wlm 22.05 from Debian.
#
# Environment knobs:
#   KLOMFLOW_SLURM_STATE   state dir (pids, logs, spool)   [/tmp/klomflow-slurm]
#   KLOMFLOW_SLURM_MEM_MB  RealMemory of the node in MiB   [80% of available memory]
#   KLOMFLOW_SLURM_TIMEOUT seconds to wait for each step   [120]
#   KLOMFLOW_SLURM_FORCE=1 overwrite Slurm configs not written by this script
set -euo pipefail

readonly CLUSTER=klomflow          # ClusterName in slurm.conf and slurmdbd
readonly PARTITION=debug           # the profile's default slurm_partition
readonly ACCOUNT=klomflow          # the profile's default slurm_account
readonly STATE=${KLOMFLOW_SLURM_STATE:-/tmp/klomflow-slurm}
readonly TIMEOUT=${KLOMFLOW_SLURM_TIMEOUT:-120}
readonly LOGS=$STATE/logs
readonly PIDS=$STATE/pids
readonly ETC=/etc/slurm
# Marker in every config file we write: we only overwrite files carrying it,
# so a hand-made Slurm config on a real machine is never clobbered.
readonly MARKER="# written by klomflow cluster/slurm_local.sh"
# Daemons in start order; stop goes in reverse.
readonly DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

HOST=$(hostname -s)   # slurmd finds its NodeName via `hostname -s`
readonly HOST

log() { printf '[slurm_local] %s\n' "$*" >&2; }
die() { printf '[slurm_local] ERROR: %s\n' "$*" >&2; exit 1; }

# ----------------------------------------------------------------------------
# helpers: pid files, liveness, waiting, logs
# ----------------------------------------------------------------------------

# pid recorded for a daemon we started, if it is still that daemon.
# Checking /proc/PID/comm guards against a recycled pid after a reboot/crash;
# setsid/setpriv are the names it has for a moment before it execs the daemon.
our_pid() {
    local name=$1 pid comm
    launched_alive "$name" || return 1
    pid=$(<"$PIDS/$name.pid")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$name" || $comm == setsid || $comm == setpriv ]] || return 1
    echo "$pid"
}

# Is this pid a live process? A zombie (dead, not yet reaped) is not.
pid_alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }   # fields after "pid (comm) "; the first is the state
    [[ ${stat%% *} != Z ]]
}

# Is a live process with exactly this name running (ours or somebody else's)?
# Zombies do not count: a daemon killed hard can linger as one until reaped,
# and taking it for a running daemon would skip starting a new one.
running_any() {
    local pid
    for pid in $(pgrep -x "$1" 2>/dev/null); do
        pid_alive "$pid" && return 0
    done
    return 1
}

# Is the process that `launch` started for this daemon still alive? Checked by
# pid, not by name: right after the fork it is still called setsid/setpriv
# until it execs the daemon, so a name check can report a healthy daemon as
# dead. A zombie (died, not yet reaped by this shell) counts as dead.
launched_alive() {
    local f=$PIDS/$1.pid pid
    [[ -f $f ]] || return 1
    pid=$(<"$f")
    [[ -n $pid ]] && pid_alive "$pid"
}

# wait_for DESCRIPTION DAEMON-NAME CMD...: poll CMD until it succeeds; on
# timeout, or if the daemon died meanwhile, show its log and fail.
wait_for() {
    local what=$1 name=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ -n $name ]] && ! launched_alive "$name"; then
            show_log "$name"
            die "$name exited while waiting for: $what"
        fi
        if ((SECONDS >= deadline)); then
            [[ -n $name ]] && show_log "$name"
            die "timed out after ${TIMEOUT}s waiting for: $what"
        fi
        sleep 1
    done
}

show_log() {
    local f=$LOGS/$1.log
    if [[ -s $f ]]; then
        printf '[slurm_local] ---- last lines of %s ----\n' "$f" >&2
        tail -n 40 "$f" >&2
        printf '[slurm_local] ---- end of %s ----\n' "$f" >&2
    else
        log "(no log at $f)"
    fi
}

# launch NAME CMD...: start CMD in the background in its own session (so it
# survives this shell and gets no terminal signals), output to LOGS/NAME.log,
# and record its pid. Every daemon runs in the foreground (-D/-F) so that the
# recorded pid is the daemon itself and stop can signal it directly.
launch() {
    local name=$1; shift
    log "starting $name (log: $LOGS/$name.log)"
    # Logs are appended across starts; mark where this start begins.
    printf '==== [slurm_local] %s: starting %s ====\n' "$(date -u '+%F %T UTC')" "$name" >>"$LOGS/$name.log"
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    echo $! >"$PIDS/$name.pid"
}

# ensure NAME START-FUNCTION: start the daemon unless it already runs.
# A daemon running without our pid file was started by someone else: we use it
# but never record it, so `stop` leaves it alone.
ensure() {
    local name=$1 starter=$2 pid
    if pid=$(our_pid "$name"); then
        log "$name already running (pid $pid, started by this script)"
    elif running_any "$name"; then
        log "$name already running (not started by this script; leaving it alone)"
        rm -f "$PIDS/$name.pid"
    else
        rm -f "$PIDS/$name.pid"
        "$starter"
    fi
}

# ----------------------------------------------------------------------------
# installation
# ----------------------------------------------------------------------------

install_packages() {
    local missing=0 cmd
    for cmd in munged mariadbd slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
        command -v "$cmd" >/dev/null 2>&1 || missing=1
    done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "Slurm is not installed and apt-get is missing (this script expects Debian 12)"
    log "installing slurm-wlm munge slurmdbd mariadb-server (apt-get; takes 10-60 s)"
    # Without systemd, the packages' postinst would try to start the services
    # through init scripts; a policy-rc.d that answers 101 forbids that, so
    # every daemon is started (and later stopped) by this script only.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1
    fi
    local rc=0
    {
        apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            slurm-wlm munge slurmdbd mariadb-server
    } >"$LOGS/apt.log" 2>&1 || rc=$?
    ((made_policy)) && rm -f "$policy"
    if ((rc)); then show_log apt; die "apt-get install failed (exit $rc)"; fi
}

# ----------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------

# install_conf PATH MODE < content: write a config unless an unmarked one exists.
install_conf() {
    local path=$1 mode=$2 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -e $path ]] && ! grep -qF "$MARKER" "$path" && [[ ${KLOMFLOW_SLURM_FORCE:-0} != 1 ]]; then
        rm -f "$tmp"
        die "$path exists and was not written by this script; move it away or set KLOMFLOW_SLURM_FORCE=1"
    fi
    install -m "$mode" -o root -g root "$tmp" "$path"
    rm -f "$tmp"
}

# RealMemory must not exceed what slurmd detects (else the node is drained as
# "Low RealMemory"); 80% of *available* memory leaves room for everything else
# and is rounded to 256 MiB. Jobs' --mem requests must fit below it.
node_memory_mb() {
    if [[ -n ${KLOMFLOW_SLURM_MEM_MB:-} ]]; then echo "$KLOMFLOW_SLURM_MEM_MB"; return; fi
    awk '/^MemAvailable:/ { m = int($2 / 1024 * 0.8); print m - m % 256 }' /proc/meminfo
}

# The DB password lives only in slurmdbd.conf (mode 600); reuse it on re-runs
# so the MariaDB user and the config stay in step.
db_password() {
    local f=$ETC/slurmdbd.conf
    if [[ -r $f ]] && grep -qF "$MARKER" "$f" && grep -q '^StoragePass=' "$f"; then
        sed -n 's/^StoragePass=//p' "$f"
    else
        head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'
    fi
}

write_configs() {
    local cpus mem pass
    cpus=$(nproc)
    mem=$(node_memory_mb)
    pass=$(db_password)
    mkdir -p "$ETC" "$STATE/spool/slurmctld" "$STATE/spool/slurmd" "$STATE/run"

    install_conf "$ETC/slurm.conf" 644 <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$HOST
# Everything runs as root on this throwaway machine: no slurm user setup needed.
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroup enforcement in containers without systemd: track processes by
# /proc, no task binding, no per-job resource sampling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# State and pids under the state dir, so stop/start keeps job-id history.
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
# A restarted node comes back to service by itself instead of staying DOWN.
ReturnToService=2
# Accounting through slurmdbd: the Snakemake plugin polls job states via sacct.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# Record GPU allocations so sacct's AllocTRES shows gres/gpu=N.
AccountingStorageTRES=gres/gpu
# Reject jobs whose --account has no association (like a real site does).
AccountingStorageEnforce=associations
# Store sbatch --comment in accounting: the Snakemake plugin puts the rule name
# there ("rule_<rule>[_wildcards_...]"); without this flag sacct's Comment is empty.
AccountingStoreFlags=job_comment
# No mail on this machine; the default /usr/bin/mail is missing (ctld logs an error).
MailProg=/bin/true
# Cores and memory are consumable, so several small jobs share the node.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without this a job lacking --mem would take the whole node's memory.
DefMemPerCPU=512
# A stand-in GPU (gres.conf points it at /dev/null) so GPU requests are
# scheduled and accounted for real; jobs see CUDA_VISIBLE_DEVICES=0.
GresTypes=gpu
NodeName=$HOST CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

    install_conf "$ETC/gres.conf" 644 <<EOF
$MARKER
# Count must equal the number of File= entries; /dev/null stands in for a GPU.
NodeName=$HOST Name=gpu Count=1 File=/dev/null
EOF

    install_conf "$ETC/cgroup.conf" 644 <<EOF
$MARKER
# slurmd 22.05 insists on reading this file even with proctrack/linuxproc;
# "CgroupPlugin=disabled" is unknown to 22.05, so name v1 but constrain nothing.
CgroupPlugin=cgroup/v1
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

    # slurmdbd refuses a config readable by others (it holds the DB password).
    install_conf "$ETC/slurmdbd.conf" 600 <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$pass
EOF
    log "wrote $ETC/{slurm,gres,cgroup,slurmdbd}.conf (node $HOST: CPUs=$cpus RealMemory=${mem}MiB Gres=gpu:1)"
}

# ----------------------------------------------------------------------------
# daemons
# ----------------------------------------------------------------------------

munge_ok() { munge -n | unmunge; }
start_munged() {
    # munged refuses to run as root; the package made the munge user and key.
    [[ -r /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing (reinstall munge or run mungekey)"
    install -d -o munge -g munge -m 755 /run/munge
    launch munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    wait_for "munge credentials (munge -n | unmunge)" munged munge_ok
}

mariadb_ok() { mariadb-admin --protocol=socket ping; }
start_mariadbd() {
    install -d -o mysql -g mysql -m 755 /run/mysqld
    # The package normally initialises the data dir; do it if it did not.
    if [[ ! -d /var/lib/mysql/mysql ]]; then
        log "initialising MariaDB data dir"
        mariadb-install-db --user=mysql >>"$LOGS/mariadbd.log" 2>&1 || { show_log mariadbd; die "mariadb-install-db failed"; }
    fi
    # Socket only: slurmdbd reaches "localhost" via /run/mysqld/mysqld.sock,
    # and no TCP port can clash with another MariaDB/MySQL.
    launch mariadbd /usr/sbin/mariadbd --user=mysql --skip-networking
    wait_for "MariaDB to answer ping" mariadbd mariadb_ok
}

setup_database() {
    local pass
    pass=$(sed -n 's/^StoragePass=//p' "$ETC/slurmdbd.conf")
    # root@localhost authenticates by unix socket on Debian, no password needed.
    # ALTER USER keeps the password in step with slurmdbd.conf on every start.
    mariadb --protocol=socket -u root >>"$LOGS/mariadbd.log" 2>&1 <<EOF || { show_log mariadbd; die "creating the accounting database failed"; }
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF
}

slurmdbd_ok() { sacctmgr -n -P show cluster format=cluster; }
start_slurmdbd() {
    launch slurmdbd /usr/sbin/slurmdbd -D
    wait_for "slurmdbd to answer sacctmgr" slurmdbd slurmdbd_ok
}

# Cluster, account and user associations; each added only if missing, since
# `sacctmgr add` of an existing entity exits non-zero.
setup_accounting() {
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        log "registering cluster $CLUSTER"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    if ! sacctmgr -n -P show account "$ACCOUNT" format=account | grep -qx "$ACCOUNT"; then
        log "adding account $ACCOUNT"
        sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="klomflow workflow" organization=klomflow >/dev/null
    fi
    if ! sacctmgr -n -P show assoc where cluster="$CLUSTER" account="$ACCOUNT" user=root format=user | grep -qx root; then
        log "adding user root to account $ACCOUNT"
        sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    fi
}

slurmctld_ok() { scontrol ping | grep -q 'is UP'; }
start_slurmctld() {
    launch slurmctld /usr/sbin/slurmctld -D
    wait_for "slurmctld to answer scontrol ping" slurmctld slurmctld_ok
}

start_slurmd() {
    launch slurmd /usr/sbin/slurmd -D
}

# slurmd is either ours (check the launched pid) or was already running.
slurmd_alive() { launched_alive slurmd || { [[ ! -f $PIDS/slurmd.pid ]] && running_any slurmd; }; }

node_state() { sinfo -h -n "$HOST" -o '%T' 2>/dev/null | head -n1; }
node_idle() { [[ $(node_state) =~ ^(idle|mixed|allocated) ]]; }

wait_node_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state resumed=0
    until node_idle; do
        state=$(node_state)
        # A node left DOWN/DRAINED from an earlier run (e.g. killed slurmd)
        # may need one explicit resume once slurmd has registered.
        if ((!resumed)) && [[ $state =~ ^(down|drain) ]] && slurmd_alive; then
            log "node $HOST is $state ($(sinfo -h -n "$HOST" -o '%E')); resuming it"
            scontrol update nodename="$HOST" state=resume 2>/dev/null || true
            resumed=1
        fi
        if ! slurmd_alive; then show_log slurmd; die "slurmd exited"; fi
        if ((SECONDS >= deadline)); then
            show_log slurmd; show_log slurmctld
            sinfo -R >&2 || true
            die "node $HOST not idle after ${TIMEOUT}s (state: ${state:-unknown})"
        fi
        sleep 1
    done
    log "node $HOST is $(node_state)"
}

# Submit a tiny job through the whole stack (ctld -> slurmd -> dbd) and check
# that accounting recorded it, including the stand-in GPU.
smoke_test() {
    local out=$STATE/smoke-%j.out jobid deadline state tres
    log "smoke test: sbatch --wait --account=$ACCOUNT --partition=$PARTITION --gpus=1 --wrap hostname"
    # shellcheck disable=SC2016  # $CUDA_VISIBLE_DEVICES must expand inside the job
    jobid=$(timeout "$TIMEOUT" sbatch --parsable --wait --account="$ACCOUNT" --partition="$PARTITION" \
        --gpus=1 --time=1 --mem=64 -J klomflow-smoke -o "$out" \
        --wrap 'hostname; echo CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}') ||
        { show_log slurmctld; show_log slurmd; die "smoke-test job failed or did not finish within ${TIMEOUT}s"; }
    jobid=${jobid%%;*}
    # The dbd gets job records asynchronously; give it a few seconds.
    deadline=$((SECONDS + 30))
    until state=$(sacct -X -n -P -j "$jobid" --format=State 2>/dev/null | head -n1) && [[ $state == COMPLETED ]]; do
        if ((SECONDS >= deadline)); then
            show_log slurmdbd
            die "sacct does not show smoke-test job $jobid as COMPLETED (got: ${state:-nothing})"
        fi
        sleep 1
    done
    tres=$(sacct -X -n -P -j "$jobid" --format=AllocTRES | head -n1)
    [[ $tres == *gres/gpu=1* ]] || die "smoke-test job $jobid got no GPU in accounting (AllocTRES=$tres)"
    log "smoke test ok: job $jobid COMPLETED, AllocTRES=$tres, output: $(tr '\n' ' ' <"${out/\%j/$jobid}")"
}

# ----------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------

cmd_start() {
    local t0=$SECONDS
    [[ $(id -u) == 0 ]] || die "start must run as root (it installs packages and writes /etc/slurm)"
    mkdir -p "$LOGS" "$PIDS"
    export PATH=$PATH:/usr/sbin:/sbin
    install_packages

    # Configs are (re)written only while no Slurm daemon runs: a live cluster
    # keeps the config it was started with (re-running start just checks).
    if running_any slurmdbd || running_any slurmctld || running_any slurmd; then
        [[ -r $ETC/slurm.conf ]] || die "Slurm daemons run but $ETC/slurm.conf is missing"
        log "Slurm daemons already running; keeping the existing configs"
    else
        write_configs
    fi

    ensure munged start_munged
    ensure mariadbd start_mariadbd
    setup_database
    ensure slurmdbd start_slurmdbd
    setup_accounting
    ensure slurmctld start_slurmctld
    ensure slurmd start_slurmd
    wait_node_idle
    smoke_test
    log "cluster $CLUSTER ready in $((SECONDS - t0))s: partition=$PARTITION account=$ACCOUNT; logs in $LOGS"
}

# Stop one daemon we started: TERM, wait, then KILL as a last resort.
stop_one() {
    local name=$1 pid i
    if ! pid=$(our_pid "$name"); then
        if [[ -f $PIDS/$name.pid ]]; then log "$name: recorded pid no longer running"; fi
        rm -f "$PIDS/$name.pid"
        running_any "$name" && log "$name runs but was not started by this script; leaving it"
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 1
    done
    if [[ -d /proc/$pid ]]; then
        log "$name (pid $pid) ignored SIGTERM for 30s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDS/$name.pid"
}

cmd_stop() {
    local i jobs
    export PATH=$PATH:/usr/sbin:/sbin
    # Jobs would outlive slurmd as orphaned slurmstepd processes; cancel them
    # first, but only on a controller this script started.
    if our_pid slurmctld >/dev/null && jobs=$(squeue -h -o %i 2>/dev/null) && [[ -n $jobs ]]; then
        log "cancelling jobs still queued/running: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        scancel $jobs || true
        for ((i = 0; i < 15; i++)); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 1
        done
    fi
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_one "${DAEMONS[i]}"
    done
    log "stopped; logs and spool kept in $STATE"
}

cmd_status() {
    local name pid rc=0
    export PATH=$PATH:/usr/sbin:/sbin
    for name in "${DAEMONS[@]}"; do
        if pid=$(our_pid "$name"); then
            printf '%-10s running (pid %s, started by slurm_local.sh)\n' "$name" "$pid"
        elif running_any "$name"; then
            printf '%-10s running (not started by slurm_local.sh)\n' "$name"
        else
            printf '%-10s stopped\n' "$name"; rc=1
        fi
    done
    if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q 'is UP'; then
        echo; sinfo
        echo; squeue
    fi
    return $rc
}

# Sourced (tests/test_slurm_local.py checks the helpers on stand-in daemons): define only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    case ${1:-} in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
    esac
fi
