#!/usr/bin/env bash
# slurm-local.sh — a real one-node SLURM cluster on this (Debian/Ubuntu) machine, for tests and demos.
#
#   scripts/slurm-local.sh start    install (if missing) munge + slurmctld + slurmd, write the config, start the
#                                   daemons and wait until the node is idle. Idempotent: a second start only checks.
#   scripts/slurm-local.sh stop     stop the daemons this script started (by their pid files).
#   scripts/slurm-local.sh status   print sinfo/squeue; exit 1 when the cluster is not up.
#   scripts/slurm-local.sh restart  stop + start (e.g. after changing the settings below).
#
# Settings (environment):
#   SLURM_LOCAL_DIR        state/spool/log/pid directory owned by this script   (default /var/lib/neuromf-slurm)
#   SLURM_LOCAL_PARTITION  partition name (the default partition)               (default local)
#   SLURM_LOCAL_CONF       where slurm.conf goes; the SLURM commands read /etc/slurm/slurm.conf unless SLURM_CONF
#                          is set, so that is the default. An existing slurm.conf not written by this script is
#                          never overwritten.                                   (default /etc/slurm/slurm.conf)
#   SLURM_LOCAL_CRED_EXPIRE  seconds a requeued job waits before it may start again (SLURM's default: 120)
#                                                                               (default 10)
#
# Needs root (or passwordless sudo) and apt. No systemd needed: the daemons are started directly, so this works in
# containers and on a freshly booted CI machine (which is how CI uses it: the test fixture calls `start`).
# Jobs may be requeued (JobRequeue=1), which submitit relies on for timeouts and preemption.
set -euo pipefail

DIR=${SLURM_LOCAL_DIR:-/var/lib/neuromf-slurm}
PARTITION=${SLURM_LOCAL_PARTITION:-local}
CONF=${SLURM_LOCAL_CONF:-/etc/slurm/slurm.conf}
CRED_EXPIRE=${SLURM_LOCAL_CRED_EXPIRE:-10}
MARKER="# written by neuromf scripts/slurm-local.sh"
NODE=$(hostname -s)

log() { echo "[slurm-local] $*" >&2; }
die() { echo "[slurm-local] ERROR: $*" >&2; exit 1; }

if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
  # Re-run as root: installing packages and starting slurmd (which runs jobs as their users) needs it.
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=SLURM_LOCAL_DIR,SLURM_LOCAL_PARTITION,SLURM_LOCAL_CONF,SLURM_LOCAL_CRED_EXPIRE "$0" "$@"
  fi
  die "needs root or passwordless sudo (to install packages and start slurmd)"
fi

# A pid file names a live (not zombie) process whose command is $2 (pid files outlive a crash or reboot).
alive() {
  local pidfile=$1 name=$2 pid
  [[ -s $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$name" ]] || return 1
  [[ "$(awk '{print $3}' /proc/"$pid"/stat 2>/dev/null)" != Z ]]
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d or a missing init may stop the packages' own services from starting; we start the daemons ourselves.
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

start_munge() {
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
    else dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none; fi
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  if alive /run/munge/munged.pid munged && munge -n </dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

write_config() {
  local cpus mem_mb tmp
  cpus=$(nproc)
  # RealMemory a bit under the memory available now: slurmd drains a node that has less than it is configured with.
  mem_mb=$(awk '/^MemAvailable:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  mkdir -p "$DIR"/{state,spool,log,run} "$(dirname "$CONF")"
  if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; set SLURM_LOCAL_CONF (and SLURM_CONF) to another path"
  fi
  tmp=$(mktemp "$CONF.XXXXXX")
  cat >"$tmp" <<EOF
$MARKER — regenerated by every start; edit the script, not this file.
ClusterName=neuromf-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job may start again only once its old credential expired (default 120 s): keep that short here.
AuthInfo=cred_expire=$CRED_EXPIRE
CryptoType=crypto/munge
MpiDefault=none
# No cgroups (containers, CI): track processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# Schedule batch jobs at once (default: batched every 3 s); full scheduling and backfill passes every 5 s
# (defaults 60 s / 30 s), so a requeued job starts soon after its begin time.
SchedulerParameters=batch_sched_delay=0,bf_interval=5,sched_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=512
# Requeue: submitit requeues its own job (scontrol requeue) on timeout/preemption signals.
JobRequeue=1
# Enforce time limits exactly (no grace minutes); kill quickly after SIGTERM; keep finished jobs visible 5 min.
OverTimeLimit=0
KillWait=5
MinJobAge=300
CompleteWait=0
InactiveLimit=0
WaitTime=0
MessageTimeout=20
SlurmdTimeout=60
SlurmctldTimeout=60
# A node that was down (machine restart) comes back by itself once slurmd registers.
ReturnToService=2
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  # Keep the running config if only the memory figure moved (it changes with every start).
  if [[ -e $CONF ]] && diff -q <(grep -v '^NodeName=' "$CONF") <(grep -v '^NodeName=' "$tmp") >/dev/null; then
    rm -f "$tmp"; return 1
  fi
  chmod 0644 "$tmp"
  mv -f "$tmp" "$CONF"
  return 0
}

# Accounting is off, so the real `sacct` fails and submitit would then wait forever for a job that died without
# writing its result (timeout, scancel, OOM). This small stand-in answers the one query submitit makes
# (`sacct -o JobID,State,NodeList --parsable2 -j ID ...`) from slurmctld's memory of jobs (kept MinJobAge seconds).
install_sacct_shim() {
  local shim=/usr/local/bin/sacct tmp
  if [[ -e $shim ]] && ! grep -qF "$MARKER" "$shim"; then
    log "leaving $shim alone (not written by this script)"; return 0
  fi
  tmp=$(mktemp "$shim.XXXXXX")
  cat >"$tmp" <<'EOS'
#!/usr/bin/env bash
MARKER_LINE
# Stand-in for sacct on the local cluster (no accounting database): prints JobID|State|NodeList of the given jobs
# (-j/--jobs, comma lists allowed) from `squeue --states=all`; other options are accepted and ignored.
ids=()
while [[ $# -gt 0 ]]; do
  case $1 in
    -j|--jobs) ids+=("$2"); shift 2 ;;
    --jobs=*) ids+=("${1#--jobs=}"); shift ;;
    -j*) ids+=("${1#-j}"); shift ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
if [[ ${#ids[@]} -gt 0 ]]; then
  joined=$(IFS=,; echo "${ids[*]}")
  exec squeue -h -r --states=all -j "$joined" -o '%i|%T|%N' 2>/dev/null
fi
exec squeue -h -r --states=all -o '%i|%T|%N'
EOS
  sed -i "s|^MARKER_LINE$|$MARKER|" "$tmp"
  chmod 0755 "$tmp"
  mv -f "$tmp" "$shim"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1; }

start() {
  install_packages
  start_munge
  install_sacct_shim
  local changed=0
  write_config && changed=1
  if [[ $changed == 1 ]] && alive "$DIR/run/slurmctld.pid" slurmctld; then
    log "config changed: restarting the daemons"
    stop_slurm
  fi
  export SLURM_CONF=$CONF
  if ! alive "$DIR/run/slurmctld.pid" slurmctld; then
    log "starting slurmctld"
    slurmctld -f "$CONF"
  fi
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.2; done
  scontrol ping | grep -q 'is UP' || die "slurmctld did not come up (see $DIR/log/slurmctld.log)"
  if ! alive "$DIR/run/slurmd.pid" slurmd; then
    log "starting slurmd -N $NODE"
    slurmd -f "$CONF" -N "$NODE"
  fi
  local state=""
  for _ in $(seq 150); do
    state=$(node_state)
    case $state in
      idle*|mixed*|allocated*|completing*) break ;;
      down*|drain*|fail*|inval*)
        # Left over from a previous boot / stop: bring the node back.
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  case $state in
    idle*|mixed*|allocated*|completing*) ;;
    *) die "node $NODE is '${state:-unknown}' (see $DIR/log/slurmd.log and $DIR/log/slurmctld.log)" ;;
  esac
  log "up: partition $PARTITION, node $NODE ($(nproc) CPUs), state $state"
}

# Stop by pid file only (never by process name).
stop_pid() {
  local pidfile=$1 name=$2 pid
  alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }
  pid=$(<"$pidfile")
  log "stopping $name ($pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pidfile" "$name" || { rm -f "$pidfile"; return 0; }; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

stop_slurm() {
  stop_pid "$DIR/run/slurmd.pid" slurmd
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
}

stop() {
  stop_slurm
  stop_pid /run/munge/munged.pid munged
}

status() {
  export SLURM_CONF=$CONF
  local ok=0
  alive "$DIR/run/slurmctld.pid" slurmctld || { echo "slurmctld: not running"; ok=1; }
  alive "$DIR/run/slurmd.pid" slurmd || { echo "slurmd: not running"; ok=1; }
  alive /run/munge/munged.pid munged || { echo "munged: not running"; ok=1; }
  if [[ $ok == 0 ]]; then
    sinfo
    squeue
  fi
  return $ok
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
