#!/usr/bin/env bash
# A throwaway one-node SLURM cluster (munged + slurmctld + slurmd) on this
# machine, for testing the workflow through snakemake-executor-plugin-slurm.
#
# Usage: tests/slurm/cluster.sh {install|start|stop|status|env} [STATE_DIR]
#
#   install  apt-get install the Debian packages (slurmctld slurmd slurm-client
#            munge) if a binary is missing; needs root (or password-less sudo).
#   start    write slurm.conf + munge key under STATE_DIR, start munged,
#            slurmctld and slurmd in the background, wait until the node is
#            idle. Does nothing if this STATE_DIR's cluster is already up.
#   stop     cancel all jobs, stop the three daemons this script started
#            (pid files under STATE_DIR/run) and leave nothing running.
#   status   exit 0 and print sinfo if the cluster is up, else exit 1.
#   env      print `export SLURM_CONF=...` for `eval "$(cluster.sh env)"`.
#
# STATE_DIR defaults to $VIRNUC_SLURM_DIR, else /tmp/virnuc-slurm.
# Ports: $VIRNUC_SLURM_PORT (slurmctld, default 6817) and that + 1 (slurmd).
#
# No cgroups, no accounting (AccountingStorageType=accounting_storage/none):
# `sacct` exists but fails, so snakemake must run with
# `--slurm-status-command squeue` (MinJobAge=7200 keeps finished jobs visible
# to squeue for 2 hours, longer than any test run). The config is STATE_DIR/etc/slurm.conf, and
# /etc/slurm/slurm.conf is made a symlink to it while the cluster is up
# (removed by stop): the plugin's in-job `srun` runs with SLURM_* stripped
# from its environment, SLURM_CONF included, so it only finds the default path.
# start refuses to run where /etc/slurm/slurm.conf is a real (foreign) config.
# No GRES by default: sbatch rejects a job asking for GPUs (--gpus=N,
# --gres=gpu:N) with "Invalid generic resource (gres) specification".
# VIRNUC_SLURM_FAKE_GPUS=N declares N fake GPUs (gres "gpu", no devices) so
# that such jobs are scheduled (CUDA_VISIBLE_DEVICES is set; CUDA sees none).
set -euo pipefail

cmd=${1:-}
DIR=${2:-${VIRNUC_SLURM_DIR:-/tmp/virnuc-slurm}}
DIR=$(realpath -m "$DIR")
case $DIR in /) echo "cluster.sh: refusing STATE_DIR=/" >&2; exit 2 ;; esac
PORT=${VIRNUC_SLURM_PORT:-6817}
CONF=$DIR/etc/slurm.conf
export SLURM_CONF=$CONF
# Marker in the daemons' environment: lets `stop` find strays it started
# (slurmstepd) by pid, without matching process names.
MARK="VIRNUC_SLURM_OWNER=$DIR"
PKGS=(slurmctld slurmd slurm-client munge)
BINS=(munged slurmctld slurmd sbatch squeue sinfo scontrol scancel srun)
WAIT_S=${VIRNUC_SLURM_WAIT_S:-60}
# optional fake GPUs (a gres "gpu" with this count, no devices); 0/unset: none
GPUS=${VIRNUC_SLURM_FAKE_GPUS:-}
[ "$GPUS" = 0 ] && GPUS=

log() { echo "cluster.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

have_bins() {
    local b
    for b in "${BINS[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

do_install() {
    if have_bins; then log "SLURM binaries present"; return 0; fi
    local SUDO=
    if [ "$(id -u)" != 0 ]; then
        sudo -n true 2>/dev/null || die "not root and no password-less sudo: cannot apt-get install ${PKGS[*]}"
        SUDO="sudo -n"
    fi
    command -v apt-get >/dev/null || die "no apt-get: install ${PKGS[*]} by hand"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}" >/dev/null 2>&1 || {
        $SUDO apt-get update -q >/dev/null
        $SUDO apt-get install -y --no-install-recommends "${PKGS[@]}" >/dev/null
    }
    have_bins || die "binaries still missing after apt-get install"
    log "installed: $(slurmctld -V)"
}

is_ours() {  # pid [marker]: does the process carry our marker (not a recycled pid)?
    tr '\0' '\n' 2>/dev/null <"/proc/$1/environ" | grep -qxF "${2:-$MARK}"
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && is_ours "$(cat "$1")"; }

is_up() {
    pid_alive "$DIR/run/munged.bg" && pid_alive "$DIR/run/slurmctld.bg" &&
        pid_alive "$DIR/run/slurmd.bg" && [ -f "$CONF" ] &&
        timeout 10 scontrol ping >/dev/null 2>&1
}

write_conf() {
    local host cfg mem
    host=$(hostname -s)
    # CPUs / sockets / cores / threads / RealMemory exactly as slurmd sees them
    cfg=$(slurmd -C | head -1 | sed -e 's/^NodeName=[^ ]* //')
    [[ $cfg == *RealMemory=* ]] || die "slurmd -C gave no node line: $cfg"
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$cfg")
    mkdir -p "$DIR"/{etc,munge,spool/ctld,spool/d,log,run}
    chmod 755 "$DIR/munge"
    cat >"$CONF" <<EOF
# written by tests/slurm/cluster.sh - a one-node test cluster, do not edit
ClusterName=virnuc
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket.2
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups, no accounting
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / 4))
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=7200
NodeName=$host NodeAddr=127.0.0.1 $cfg${GPUS:+ Gres=gpu:$GPUS} State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    rm -f "$DIR/etc/gres.conf"
    if [ -n "$GPUS" ]; then
        # fake GPUs, so that jobs with sbatch --gpus=N / --gres=gpu:N are
        # scheduled (SLURM sets CUDA_VISIBLE_DEVICES; no CUDA device exists).
        # gres/gpu needs File= entries (Count= alone registers 0 GPUs): use
        # character devices aliasing /dev/null, or plain files where mknod is
        # not allowed (slurmd then logs "not a valid character or block device").
        local g
        mkdir -p "$DIR/dev"
        for g in $(seq 0 $((GPUS - 1))); do
            mknod "$DIR/dev/gpu$g" c 1 3 2>/dev/null || : >"$DIR/dev/gpu$g"
        done
        sed -i "s|^MpiDefault=|GresTypes=gpu\nMpiDefault=|" "$CONF"
        echo "NodeName=$host Name=gpu File=$DIR/dev/gpu[0-$((GPUS - 1))]" >"$DIR/etc/gres.conf"
    fi
}

ETC_CONF=/etc/slurm/slurm.conf
link_etc_conf() {
    # The jobstep executor strips SLURM_* (SLURM_CONF included) from the env of
    # the srun it runs inside each job, so srun only finds the default config
    # path: link it to ours (refuse to replace a real cluster's config).
    if [ -L "$ETC_CONF" ]; then
        # a dangling link or a link to another cluster.sh config: replace it
        if [ ! -e "$ETC_CONF" ] || grep -q '^# written by tests/slurm/cluster.sh' "$ETC_CONF"; then
            # ... unless that other cluster is still running: its jobs need the link
            local other
            other=$(dirname "$(dirname "$(readlink "$ETC_CONF")")")
            if [ "$other" != "$DIR" ] && [ -f "$other/run/slurmctld.bg" ] &&
                is_ours "$(cat "$other/run/slurmctld.bg")" "VIRNUC_SLURM_OWNER=$other"; then
                die "another test cluster is running ($other) and owns $ETC_CONF; stop it first (cluster.sh stop $other)"
            fi
            rm -f "$ETC_CONF"
        else
            die "$ETC_CONF links to a config that is not ours; not touching it"
        fi
    elif [ -e "$ETC_CONF" ]; then
        die "$ETC_CONF exists (a real SLURM config?); not touching it"
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$CONF" "$ETC_CONF"
}

unlink_etc_conf() {
    if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$CONF" ]; then
        rm -f "$ETC_CONF"
    fi
}

start_bg() {  # name, command...: start in its own session, remember its pid
    local name=$1; shift
    # the inner shell writes its own pid, then execs the daemon (same pid)
    # shellcheck disable=SC2016
    env "$MARK" setsid bash -c 'echo $$ >"$0"; exec "$@"' "$DIR/run/$name.bg" "$@" \
        >"$DIR/log/$name.out" 2>&1 </dev/null &

    for _ in $(seq 50); do [ -s "$DIR/run/$name.bg" ] && break; sleep 0.05; done
}

do_start() {
    have_bins || die "SLURM binaries missing (run: $0 install)"
    if is_up; then log "already up ($DIR)"; return 0; fi
    do_stop quiet || true
    rm -rf "${DIR:?}/spool" "${DIR:?}/log" "${DIR:?}/run" "${DIR:?}/munge" "${DIR:?}/dev"
    write_conf
    link_etc_conf
    # munge: own key + socket; root is fine with --force
    mungekey --create --keyfile="$DIR/munge/munge.key" --force 2>/dev/null ||
        { dd if=/dev/urandom bs=1 count=1024 of="$DIR/munge/munge.key" 2>/dev/null; }
    chmod 400 "$DIR/munge/munge.key"
    start_bg munged munged -F --force --socket="$DIR/munge/munge.socket.2" \
        --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"

    for _ in $(seq 50); do [ -S "$DIR/munge/munge.socket.2" ] && break; sleep 0.1; done
    [ -S "$DIR/munge/munge.socket.2" ] || { cat "$DIR/log/munged"*; die "munged did not start"; }
    start_bg slurmctld slurmctld -D -c -i -f "$CONF"
    for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.2; done
    start_bg slurmd slurmd -D -f "$CONF"
    local state=
    for _ in $(seq $((WAIT_S * 2))); do
        state=$(sinfo -h -N -o '%T' 2>/dev/null | head -1)
        case $state in
            idle | mixed | allocated) break ;;
            drain* | down* | inval* | fail*) break ;;
        esac
        for d in munged slurmctld slurmd; do
            pid_alive "$DIR/run/$d.bg" || { state="$d died"; break 2; }
        done
        sleep 0.5
    done
    if [[ $state != idle && $state != mixed && $state != allocated ]]; then
        log "node not idle (state: '${state:-none}'); logs in $DIR/log:"
        sinfo -R 2>/dev/null >&2 || true
        tail -n 20 "$DIR"/log/*.out "$DIR"/log/*.log >&2 2>/dev/null || true
        do_stop quiet || true
        exit 1
    fi
    log "up: $(sinfo -h -N -o '%N %T cpus=%c mem=%m' | head -1) (SLURM_CONF=$CONF)"
}

kill_wait() {  # pid: TERM, wait up to 10 s, then KILL (only our processes)
    local pid=$1
    is_ours "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
}

marked_pids() {  # processes carrying our marker (strays: slurmstepd)
    local e pid
    for e in /proc/[0-9]*/environ; do
        pid=${e#/proc/}; pid=${pid%/environ}
        [ "$pid" = $$ ] && continue
        is_ours "$pid" && echo "$pid"
    done
    return 0
}

do_stop() {
    local quiet=${1:-} n pid
    if [ -f "$CONF" ] && pid_alive "$DIR/run/slurmctld.bg"; then
        # cancel every job so that no slurmstepd / job process outlives us
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            # shellcheck disable=SC2046
            scancel --full $(squeue -h -o %i) 2>/dev/null || true
            for _ in $(seq 50); do
                [ -z "$(squeue -h -t R,CG,PD -o %i 2>/dev/null)" ] && break; sleep 0.2
            done
        fi
    fi
    for n in slurmd slurmctld munged; do
        if [ -f "$DIR/run/$n.bg" ]; then
            kill_wait "$(cat "$DIR/run/$n.bg")"
            rm -f "$DIR/run/$n.bg"
        fi
    done
    for pid in $(marked_pids); do kill_wait "$pid"; done
    unlink_etc_conf
    [ -n "$quiet" ] || log "stopped ($DIR)"
}

do_status() {
    if is_up; then sinfo; squeue; return 0; fi
    log "not running ($DIR)"; return 1
}

case $cmd in
    install) do_install ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 {install|start|stop|status|env} [STATE_DIR]" >&2; exit 2 ;;
esac
