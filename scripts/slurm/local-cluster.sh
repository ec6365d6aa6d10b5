#!/bin/bash
# A throwaway single-node Slurm cluster on this machine, everything under DIR (tests and trying the
# sbatch templates without a cluster): munged with its own key and socket, slurmctld and slurmd as root,
# a slurm.conf naming this host, free TCP ports. Needs Debian's munge, slurmctld, slurmd, slurm-client.
#
#   scripts/slurm/local-cluster.sh start DIR   # prints "export SLURM_CONF=DIR/slurm.conf"; exit 77 if it cannot start
#   scripts/slurm/local-cluster.sh stop DIR    # stops the daemons started in DIR (by their pid files)
set -uo pipefail
cmd="${1:-}" dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,8p' "$0" >&2; exit 2; }
mkdir -p "$dir"
dir="$(realpath "$dir")"

stop() {
  local pidfile pid
  for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$pidfile"
  done
  return 0
}

cannot_start() {
  echo "local-cluster: cannot start Slurm: $*" >&2
  for log in "$dir"/*.log; do [ -f "$log" ] && { echo "--- $log" >&2; tail -n 15 "$log" >&2; }; done
  stop
  exit 77
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000))
}

case "$cmd" in
  stop) stop; exit 0 ;;
  start) ;;
  *) echo "local-cluster: start or stop, not '$cmd'" >&2; exit 2 ;;
esac

for tool in munged slurmctld slurmd sbatch scontrol; do
  command -v "$tool" > /dev/null || cannot_start "$tool is not installed (apt-get install munge slurmctld slurmd slurm-client)"
done
host="$(hostname -s)"
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" ||
  cannot_start "munged did not start"

cpus="$(nproc)"
cat > "$dir/slurm.conf" <<CONF
ClusterName=nscope-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CryptoType=crypto/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld -i || cannot_start "slurmctld did not start"
slurmd || cannot_start "slurmd did not start"
for _ in $(seq 100); do
  state="$(sinfo -h -n "$host" -o %t 2>/dev/null)"
  case "$state" in idle*|mix*|alloc*) echo "export SLURM_CONF=$dir/slurm.conf"; exit 0 ;; esac
  sleep 0.2
done
cannot_start "node $host did not become idle (state '${state:-unknown}')"
