#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to run docs/slurm/ for real (as root, Debian 12 or a
# relative with slurm-wlm 22.05 and munge; no systemd needed).
#
#   tools/slurm_cluster.sh up       # install slurm-wlm and munge when missing, configure, start the
#                                   # daemons, wait until sinfo shows the node idle
#   tools/slurm_cluster.sh status   # the daemons this script started, sinfo and squeue
#   tools/slurm_cluster.sh down     # cancel the cluster's jobs, stop the daemons this script started
#
# Every command can be repeated (up on a running cluster changes nothing).  Files:
#   /etc/slurm/slurm.conf, cgroup.conf  written when absent or written by this script (first line
#                                       "# bids_mdpp test cluster"); a site's own files are refused
#   /etc/munge/munge.key                made (random, owned by munge, mode 400) when absent
#   $SLURM_TEST_DIR                     state, spool, daemon logs and the process ids this script
#                                       recorded (default /var/tmp/bids_mdpp-slurm); down stops only
#                                       those processes
# Without slurmdbd there is no accounting: use squeue and scontrol show job, not sacct (finished
# jobs stay visible to scontrol for an hour, MinJobAge=3600).
set -euo pipefail
state=${SLURM_TEST_DIR:-/var/tmp/bids_mdpp-slurm}
marker="# bids_mdpp test cluster"
conf=/etc/slurm/slurm.conf
cgroup_conf=/etc/slurm/cgroup.conf
wait_s=${SLURM_UP_TIMEOUT:-90}

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: $*" >&2; exit "${2:-1}"; }

# pid_of NAME: the recorded process id of daemon NAME when that process still runs as NAME.
pid_of() {
  local file="$state/$1.pid" pid
  [ -s "$file" ] || return 1
  pid=$(tr -dc '0-9' < "$file")
  [ -n "$pid" ] || return 1
  case "$(ps -o comm= -p "$pid" 2>/dev/null)" in
    "$1"*) echo "$pid" ;;   # Debian's slurmctld is slurmctld-wlm behind a symlink
    *) return 1 ;;
  esac
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sbatch >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm-wlm and munge are not installed and there is no apt-get" 69
  say "installing slurm-wlm and munge (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

# write_ours FILE: stdin becomes FILE unless FILE exists and is not ours.
write_ours() {
  local file=$1 text
  text=$(cat)
  if [ -e "$file" ]; then
    case "$(head -n 1 "$file")" in
      "$marker"*) ;;
      *) die "$file exists and was not written by this script; move it away to test here" 73 ;;
    esac
  fi
  mkdir -p "$(dirname "$file")"
  [ -e "$file" ] && [ "$(cat "$file")" = "$text" ] && return
  printf '%s\n' "$text" > "$file"
}

configure() {
  local host node cgroup_plugin
  mkdir -p "$state/statesave" "$state/spool"
  host=$(hostname -s)
  # slurmd -C prints this machine's NodeName line (CPUs, sockets, cores, RealMemory in MB).
  node=$(slurmd -C | head -n 1)
  case "$node" in NodeName=*) ;; *) die "slurmd -C did not describe this node: $node" ;; esac
  write_ours "$conf" <<EOF
$marker: one node, one partition, no accounting (tools/slurm_cluster.sh)
ClusterName=bidsmdpp
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=$state/statesave
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  # slurm 22.05 has no "disabled" cgroup plugin; v1 loads on a hybrid or legacy hierarchy
  # (linuxproc and task/none use no cgroup), a unified one is left to autodetection.
  if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    cgroup_plugin="CgroupPlugin=autodetect"
  else
    cgroup_plugin="CgroupPlugin=cgroup/v1"
  fi
  write_ours "$cgroup_conf" <<EOF
$marker (tools/slurm_cluster.sh)
$cgroup_plugin
EOF
}

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    install -d -o munge -g munge -m 0700 /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if munge_works; then
    pid_of munged >/dev/null || say "munged already runs (not started here; down leaves it)"
    return
  fi
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
  runuser -u munge -- munged
  cp /run/munge/munged.pid "$state/munged.pid"
  munge_works || die "munged started (pid $(cat "$state/munged.pid")) but munge -n | unmunge fails"
}

start_daemon() {
  local name=$1 pid
  if pid=$(pid_of "$name"); then
    say "$name runs (pid $pid)"
    return
  fi
  "$name"   # daemonizes; its pid file is $state/$name.pid (slurm.conf)
  for _ in $(seq 1 50); do
    pid_of "$name" >/dev/null && return
    sleep 0.2
  done
  die "$name did not start; see $state/$name.log"
}

wait_idle() {
  local node_state deadline=$((SECONDS + wait_s))
  while [ $SECONDS -lt $deadline ]; do
    node_state=$(sinfo -h -N -o '%T' 2>/dev/null | head -n 1 || true)
    case "$node_state" in
      idle|mixed|allocated) say "node $(hostname -s) is $node_state"; return ;;
    esac
    sleep 1
  done
  sinfo -R >&2 || true
  die "the node is not idle after $wait_s s (state: ${node_state:-unknown}); see $state/*.log"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)" 77
  mkdir -p "$state"
  install_packages
  configure
  start_munge
  start_daemon slurmctld
  start_daemon slurmd
  wait_idle
}

stop_pid() {
  local name=$1 pid
  pid=$(pid_of "$name") || { rm -f "$state/$name.pid"; return; }
  say "stopping $name (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 75); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$state/$name.pid"; return; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$state/$name.pid"
}

down() {
  local jobs
  if pid_of slurmctld >/dev/null; then
    jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)
    if [ -n "${jobs// /}" ]; then
      say "cancelling jobs $jobs"
      # shellcheck disable=SC2086  # job ids, one word each
      scancel $jobs || true
      for _ in $(seq 1 30); do
        [ -z "$(squeue -h -o '%A' 2>/dev/null)" ] && break
        sleep 1
      done
    fi
  fi
  stop_pid slurmd
  stop_pid slurmctld
  stop_pid munged
}

status() {
  local name pid
  for name in munged slurmctld slurmd; do
    if pid=$(pid_of "$name"); then say "$name runs (pid $pid)"; else say "$name: none started by this script runs"; fi
  done
  if pid_of slurmctld >/dev/null; then
    sinfo
    squeue
  fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) die "usage: tools/slurm_cluster.sh up|down|status" 64 ;;
esac
