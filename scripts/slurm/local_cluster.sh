#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1, for trying `launcher=slurm` without a real cluster (and
# for the test suite). Needs root and Debian's slurm-wlm, slurmctld, slurmd, slurm-client and munge.
#
#   scripts/slurm/local_cluster.sh start DIR   # config, state, logs and pids in DIR; prints the env to use
#   scripts/slurm/local_cluster.sh stop DIR    # stops only the daemons that `start DIR` started
#
# Works without systemd and cgroups (containers, CI): each daemon runs in the foreground under
# setsid with its pid recorded; process tracking is linuxproc and there is no accounting database,
# so `sacct` comes from scripts/slurm/bin (answers from `squeue`); put it first on PATH.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
state=$(mkdir -p "$2" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
conf=$state/slurm.conf

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start_daemon() {  # name, command...: run in the foreground in its own session, remember the pid
  local name=$1; shift
  setsid "$@" >"$state/$name.out" 2>&1 < /dev/null &
  echo $! >"$state/$name.pid"
}

wait_for() {  # seconds, description, command...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq "$((seconds * 5))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "local SLURM: $what did not come up within ${seconds}s; logs in $state" >&2
  return 1
}

start() {
  [[ $(id -u) -eq 0 ]] || { echo "local SLURM: slurmd must run as root" >&2; exit 1; }
  for binary in munged slurmctld slurmd sbatch squeue scontrol; do
    command -v "$binary" >/dev/null || { echo "local SLURM: $binary missing: apt-get install slurm-wlm slurmctld slurmd slurm-client munge" >&2; exit 1; }
  done
  if [[ -f $state/slurmctld.pid ]] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null; then
    echo "local SLURM: already running from $state" >&2; exit 1
  fi
  mkdir -p "$state/ctld" "$state/slurmd"

  # munge: reuse a running munged, else start one as the munge user (the package made the key)
  if ! (munge -n | unmunge) >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0755 /run/munge
    start_daemon munged setpriv --reuid=munge --regid=munge --clear-groups munged --foreground
    wait_for 10 munged sh -c 'munge -n | unmunge'
  fi

  local host cpus memory
  host=$(hostname -s)
  cpus=$(nproc)
  memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  cat >"$conf" <<CONF
# Written by scripts/slurm/local_cluster.sh: one node, no cgroups, no accounting database.
ClusterName=samtune-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.daemon.pid
SlurmdPidFile=$state/slurmd.daemon.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# refuse jobs larger than the node instead of letting them pend forever
EnforcePartLimits=ALL
MailProg=/bin/true
ReturnToService=2
SchedulerParameters=sched_interval=2
# finished jobs stay visible to squeue (and so to the sacct stand-in) for 30 minutes
MinJobAge=1800
# a stopped job gets SIGTERM, then SIGKILL this many seconds later: time to finish a step and save,
# also on a busy machine (SLURM's default)
KillWait=30
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((memory * 8 / 10)) State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF=$conf
  start_daemon slurmctld slurmctld -D -i -f "$conf"
  wait_for 30 slurmctld scontrol ping
  start_daemon slurmd slurmd -D -N "$host" -f "$conf"
  wait_for 30 "node $host" sh -c "sinfo -h -N -o %t | grep -qx idle"
  cat <<ENV
# local SLURM is up ($state); use it with:
export SLURM_CONF=$conf PATH=$here/bin:\$PATH
ENV
}

stop() {
  local name pid
  # jobs first: with linuxproc tracking, a job's processes would outlive slurmd
  if [[ -f $state/slurmctld.pid ]] && kill -0 "$(cat "$state/slurmctld.pid")" 2>/dev/null; then
    export SLURM_CONF=$conf
    scancel --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 150); do
      [[ -z $(squeue -h -t RUNNING,COMPLETING,CONFIGURING -o %A 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  for name in slurmd slurmctld munged; do
    [[ -f $state/$name.pid ]] || continue
    pid=$(cat "$state/$name.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$state/$name.pid"
  done
}

case $action in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
