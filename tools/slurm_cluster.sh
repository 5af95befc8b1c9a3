#!/usr/bin/env bash
# tools/slurm_cluster.sh - a real single-node SLURM cluster on loopback, for CI and local tests.
#
# Runs munged, MariaDB, slurmdbd, slurmctld and slurmd on this machine (Debian 12, as root,
# no systemd needed). Everything the cluster owns lives under one directory, $LENSINFER_SLURM_HOME
# (default /var/lib/lensinfer-slurm): config, state, spool, logs, pid files and a private MariaDB
# data dir.
#
# /etc/slurm/slurm.conf: while the cluster runs it is a symlink to our slurm.conf, made by `start`
# and removed by `stop`. Clients (sbatch, sacct, ...) then need no SLURM_CONF, and they must not
# rely on it anyway: the snakemake slurm-jobstep plugin strips every SLURM_* variable before its
# nested `srun`, so that srun only finds the default path. Removing the link on `stop` matters
# too: with a slurm.conf in place but no slurmctld, `scontrol show config` (run by the snakemake
# slurm plugin at import, i.e. on EVERY snakemake call) waits ~9 s; with no config it fails at once.
# A slurm.conf at that path that is not our symlink is never touched: `start` refuses to run.
#
# Usage:
#   tools/slurm_cluster.sh install   # apt-get the Debian packages (idempotent)
#   tools/slurm_cluster.sh start     # write config, start all daemons, wait for an idle node
#   tools/slurm_cluster.sh stop      # cancel jobs, stop the daemons this script started (by PID)
#   tools/slurm_cluster.sh status    # daemons, sinfo, squeue
#   tools/slurm_cluster.sh reset     # stop, then delete all state (job history, DB, logs)
#
# The cluster: node "localhost" (NodeAddr 127.0.0.1, whatever the hostname), CPUs and RealMemory
# read from the machine, one partition (default "lensinfer"), one FAKE GPU (gres gpu:1 backed by
# /dev/null: enough for the scheduler, jobs see CUDA_VISIBLE_DEVICES=0), accounting through
# slurmdbd + MariaDB so `sacct` works (AllocTRES shows gres/gpu), account "lensinfer".
#
# Environment knobs (all optional):
#   LENSINFER_SLURM_HOME       base dir (default /var/lib/lensinfer-slurm)
#   LENSINFER_SLURM_PARTITION  partition name (default lensinfer)
#   LENSINFER_SLURM_ACCOUNT    account created in slurmdbd (default lensinfer)
#   LENSINFER_SLURM_PORT       first of 4 consecutive loopback TCP ports: slurmctld, slurmd,
#                              slurmdbd, mariadb (default 6817)
#   LENSINFER_SLURM_CPUS       node CPUs (default nproc; more than nproc is allowed: config_overrides)
#   LENSINFER_SLURM_MEM_MB     node RealMemory (default 90 % of MemTotal; must not exceed what
#                              slurmd detects or the node is drained)
#   LENSINFER_SLURM_TIMEOUT    seconds allowed for each daemon to come up (default 60; stopping
#                              waits at most 20 s per group of daemons, then KILLs)
#
# Network: slurmctld, slurmd and srun bind to 127.0.0.1 (CommunicationParameters=NoCtldInAddrAny,
# NoInAddrAny); MariaDB binds to 127.0.0.1 only. slurmdbd 22.05 has no bind option and listens on
# all addresses on its port, but only local clients are configured to talk to it.
set -euo pipefail

BASE=${LENSINFER_SLURM_HOME:-/var/lib/lensinfer-slurm}
ETC=$BASE/etc
RUN=$BASE/run
LOG=$BASE/log
STATE=$BASE/state   # slurmctld StateSaveLocation (job id counter, node state)
SPOOL=$BASE/spool   # slurmd spool
DBDIR=$BASE/mysql   # private MariaDB data dir
CLUSTER=lensinfer
NODE=localhost
PARTITION=${LENSINFER_SLURM_PARTITION:-lensinfer}
ACCOUNT=${LENSINFER_SLURM_ACCOUNT:-lensinfer}
PORT0=${LENSINFER_SLURM_PORT:-6817}
CTLD_PORT=$PORT0
SLURMD_PORT=$((PORT0 + 1))
DBD_PORT=$((PORT0 + 2))
DB_PORT=$((PORT0 + 3))
TIMEOUT=${LENSINFER_SLURM_TIMEOUT:-60}
DEFAULT_CONF=/etc/slurm/slurm.conf
# the daemons (and this script's own client calls) use our config dir explicitly; slurmd and
# slurmdbd find gres.conf, cgroup.conf and slurmdbd.conf next to it
export SLURM_CONF=$ETC/slurm.conf

# Debian package names. slurm-wlm = slurmctld + slurmd + slurm-client.
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)

log() { printf '[slurm_cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# show_logs FILE...: tail of each daemon log, for error messages
show_logs() {
  local f
  for f in "$@"; do
    if [[ -s $f ]]; then
      printf -- '----- last lines of %s -----\n' "$f" >&2
      tail -n 25 "$f" >&2
    else
      printf -- '----- %s: empty or missing -----\n' "$f" >&2
    fi
  done
}

# fail_with_logs MESSAGE LOGFILE...: print the logs, then die
fail_with_logs() {
  local msg=$1
  shift
  show_logs "$@"
  die "$msg"
}

# wait_for SECONDS CMD...: run CMD every 0.2 s until it succeeds; false after SECONDS.
# An external CMD is bounded by `timeout` so a hanging client call cannot stall the loop
# (shell functions passed here must bound their own client calls).
wait_for() {
  local secs=$1 deadline
  shift
  deadline=$((SECONDS + secs))
  local bound=(timeout 10)
  [[ $(type -t "$1") == function ]] && bound=()
  while ((SECONDS < deadline)); do
    if "${bound[@]}" "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

# pid_of PIDFILE COMM: print the pid in PIDFILE if that process is alive and named COMM*
pid_of() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/comm ]] || return 1
  [[ $(<"/proc/$pid/comm") == "$2"* ]] || return 1
  echo "$pid"
}

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (daemons, apt-get)"; }

# ---------------------------------------------------------------------------------------------
cmd_install() {
  need_root
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "packages already installed: ${PACKAGES[*]}"
    return 0
  fi
  log "installing: ${missing[*]}"
  # There is no init system here: keep the packages' postinst scripts from starting services
  # (Debian's convention: /usr/sbin/policy-rc.d exiting 101). Removed again if we made it.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0 aptlog
  aptlog=$(mktemp)
  timeout 300 apt-get update -qq || rc=$?
  if ((rc == 0)); then
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
      -o Dpkg::Options::=--force-confold "${missing[@]}" >"$aptlog" 2>&1 || rc=$?
  fi
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  if ((rc != 0)); then
    tail -n 30 "$aptlog" >&2
    rm -f "$aptlog"
    die "apt-get failed (exit $rc)"
  fi
  rm -f "$aptlog"
  log "installed: $(slurmctld -V), munge $(dpkg-query -W -f='${Version}' munge), mariadb $(dpkg-query -W -f='${Version}' mariadb-server)"
}

# ---------------------------------------------------------------------------------------------
CONFIG_CHANGED=0

# install_file STAGED TARGET MODE: copy if different, note the change
install_file() {
  if ! cmp -s "$1" "$2"; then
    install -m "$3" "$1" "$2"
    CONFIG_CHANGED=1
  fi
}

write_config() {
  local cpus mem stage
  cpus=${LENSINFER_SLURM_CPUS:-$(nproc)}
  mem=${LENSINFER_SLURM_MEM_MB:-$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)}
  mkdir -p "$ETC" "$RUN" "$LOG" "$STATE" "$SPOOL"
  chmod 755 "$BASE"
  # MariaDB's password for the slurm DB user: random once, kept (mode 600) for later starts
  if [[ ! -s $ETC/db.pass ]]; then
    (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$ETC/db.pass")
  fi
  stage=$(mktemp -d)
  cat >"$stage/slurm.conf" <<EOF
# Generated by tools/slurm_cluster.sh - single-node cluster on loopback. Do not edit.
ClusterName=${CLUSTER}
SlurmctldHost=localhost(127.0.0.1)
# bind slurmctld, slurmd and srun to 127.0.0.1 instead of 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# no mail on this machine (silences "Configured MailProg is invalid")
MailProg=/bin/true
StateSaveLocation=${STATE}
SlurmdSpoolDir=${SPOOL}
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=${LOG}/slurmctld.log
SlurmdLogFile=${LOG}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroup enforcement: with task/cgroup + ConstrainDevices the fake GPU on /dev/null makes
# /dev/null unusable for non-GPU jobs. Limits are not the point of this test cluster.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
# a node that registers with a valid config returns to service by itself
ReturnToService=2
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=${DBD_PORT}
# record the GPU in the jobs' TRES (sacct AllocTRES/ReqTRES) and keep --comment (the snakemake
# plugin puts rule_<name> there, which is how tests find the job of a rule)
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
# finished jobs stay visible to squeue/scontrol for 5 min (plugin's squeue mode needs >= 3x its poll)
MinJobAge=300
InactiveLimit=0
KillWait=5
Waittime=0
MessageTimeout=10
SlurmdParameters=config_overrides
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF
  # Slurm drops a GPU without File= ("Removing file-less GPU") and the node goes INVAL;
  # /dev/null is a device file every machine has.
  cat >"$stage/gres.conf" <<EOF
# Generated by tools/slurm_cluster.sh: one fake GPU.
NodeName=${NODE} Name=gpu File=/dev/null
EOF
  cat >"$stage/cgroup.conf" <<EOF
# Generated by tools/slurm_cluster.sh. proctrack/linuxproc + task/none are used, so no cgroup
# plugin enforces anything; this file only keeps slurmd from probing/mounting cgroups itself.
CgroupAutomount=no
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
  cat >"$stage/slurmdbd.conf" <<EOF
# Generated by tools/slurm_cluster.sh (mode 600: slurmdbd refuses a world-readable file).
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=${DBD_PORT}
SlurmUser=root
DebugLevel=info
LogFile=${LOG}/slurmdbd.log
PidFile=${RUN}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=${DB_PORT}
StorageUser=slurm
StoragePass=$(<"$ETC/db.pass")
StorageLoc=slurm_acct_db
EOF
  install_file "$stage/slurm.conf" "$ETC/slurm.conf" 644
  install_file "$stage/gres.conf" "$ETC/gres.conf" 644
  install_file "$stage/cgroup.conf" "$ETC/cgroup.conf" 644
  install_file "$stage/slurmdbd.conf" "$ETC/slurmdbd.conf" 600
  rm -rf "$stage"
}

# ---------------------------------------------------------------------------------------------
munge_ok() { timeout 5 bash -c 'munge -n </dev/null | unmunge' >/dev/null 2>&1; }

start_munge() {
  # A munged that already answers (e.g. a system one on a developer machine) is reused and is
  # never stopped by us; only a munged we started gets its pid recorded in $RUN/munged.pid.
  if munge_ok; then
    log "munged: already running"
    return 0
  fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    # the munge package normally creates it; make one if it is missing
    install -d -o munge -g munge -m 700 /etc/munge
    (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
    chown munge:munge /etc/munge/munge.key
  fi
  # no systemd/tmpfiles here: create munged's run/state/log dirs ourselves
  install -d -o munge -g munge -m 755 /run/munge
  install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
  rm -f /run/munge/munged.pid
  runuser -u munge -- /usr/sbin/munged
  wait_for "$TIMEOUT" munge_ok || fail_with_logs "munged did not answer within ${TIMEOUT}s" /var/log/munge/munged.log
  cp /run/munge/munged.pid "$RUN/munged.pid"
  log "munged: up (pid $(<"$RUN/munged.pid"))"
}

db() { mariadb --no-defaults --socket="$RUN/mysql/mysqld.sock" -u root "$@"; }

start_mariadb() {
  if pid_of "$RUN/mysql/mysqld.pid" mariadbd >/dev/null; then
    log "mariadb: already running"
    return 0
  fi
  install -d -o mysql -g mysql -m 755 "$RUN/mysql"
  if [[ ! -d $DBDIR/mysql ]]; then
    # private data dir; root authenticates via the unix socket (OS user root) only
    rm -rf "$DBDIR"
    install -d -o mysql -g mysql -m 750 "$DBDIR"
    timeout "$TIMEOUT" mariadb-install-db --no-defaults --datadir="$DBDIR" --user=mysql \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      fail_with_logs "mariadb-install-db failed" "$LOG/mariadb-install.log"
  fi
  # --no-defaults: ignore the system's my.cnf. TCP on 127.0.0.1 only, small buffers.
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DBDIR" \
    --socket="$RUN/mysql/mysqld.sock" --pid-file="$RUN/mysql/mysqld.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
    --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
    --log-error="$LOG/mariadb.err" </dev/null >/dev/null 2>&1 &
  wait_for "$TIMEOUT" db -e 'SELECT 1' || fail_with_logs "mariadb did not come up within ${TIMEOUT}s" "$LOG/mariadb.err"
  log "mariadb: up on 127.0.0.1:$DB_PORT (pid $(<"$RUN/mysql/mysqld.pid"))"
}

setup_db_user() {
  local pass
  pass=$(<"$ETC/db.pass")
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '${pass}';
         ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '${pass}';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" ||
    fail_with_logs "could not create the slurm DB user" "$LOG/mariadb.err"
}

start_slurmdbd() {
  if pid_of "$RUN/slurmdbd.pid" slurmdbd >/dev/null; then
    log "slurmdbd: already running"
  else
    rm -f "$RUN/slurmdbd.pid"
    # slurmdbd finds slurmdbd.conf next to $SLURM_CONF
    /usr/sbin/slurmdbd || fail_with_logs "slurmdbd failed to start" "$LOG/slurmdbd.log"
    wait_for "$TIMEOUT" sacctmgr -n show cluster ||
      fail_with_logs "slurmdbd did not answer within ${TIMEOUT}s" "$LOG/slurmdbd.log" "$LOG/mariadb.err"
    log "slurmdbd: up on port $DBD_PORT (pid $(<"$RUN/slurmdbd.pid"))"
  fi
  # cluster, account and root's association (idempotent). The cluster must exist before
  # slurmctld registers; with AccountingStorageEnforce=associations root needs an association.
  local s=(timeout 30 sacctmgr -i -n -P)
  "${s[@]}" show cluster format=cluster | grep -qx "$CLUSTER" ||
    "${s[@]}" add cluster "$CLUSTER" >/dev/null || fail_with_logs "sacctmgr add cluster failed" "$LOG/slurmdbd.log"
  "${s[@]}" show account format=account | grep -qx "$ACCOUNT" ||
    "${s[@]}" add account "$ACCOUNT" Cluster="$CLUSTER" Description=lensinfer Organization=lensinfer >/dev/null ||
    fail_with_logs "sacctmgr add account failed" "$LOG/slurmdbd.log"
  "${s[@]}" show assoc cluster="$CLUSTER" user=root account="$ACCOUNT" format=user | grep -qx root ||
    "${s[@]}" add user root Cluster="$CLUSTER" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null ||
    fail_with_logs "sacctmgr add user failed" "$LOG/slurmdbd.log"
}

start_slurmctld() {
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    log "slurmctld: already running"
    return 0
  fi
  rm -f "$RUN/slurmctld.pid"
  /usr/sbin/slurmctld || fail_with_logs "slurmctld failed to start" "$LOG/slurmctld.log"
  wait_for "$TIMEOUT" scontrol ping || fail_with_logs "slurmctld did not answer within ${TIMEOUT}s" "$LOG/slurmctld.log"
  log "slurmctld: up on 127.0.0.1:$CTLD_PORT (pid $(<"$RUN/slurmctld.pid"))"
}

start_slurmd() {
  if pid_of "$RUN/slurmd.pid" slurmd >/dev/null; then
    log "slurmd: already running"
    return 0
  fi
  rm -f "$RUN/slurmd.pid"
  # -N: the node is "localhost" whatever this machine's hostname is
  /usr/sbin/slurmd -N "$NODE" || fail_with_logs "slurmd failed to start" "$LOG/slurmd.log"
  wait_for "$TIMEOUT" pid_of "$RUN/slurmd.pid" slurmd || fail_with_logs "slurmd did not start within ${TIMEOUT}s" "$LOG/slurmd.log"
  log "slurmd: up (pid $(<"$RUN/slurmd.pid"))"
}

node_state() { timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1; }

wait_node_idle() {
  local st="" deadline=$((SECONDS + TIMEOUT)) resumed=0
  while ((SECONDS < deadline)); do
    st=$(node_state || true)
    case $st in
      idle | mixed | allocated | completing) return 0 ;;
      *drain* | down* | inval* | fail*)
        # left over in the saved state from an earlier run/config; resume once per few seconds
        if ((SECONDS >= resumed)); then
          timeout 10 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
          resumed=$((SECONDS + 3))
        fi
        ;;
    esac
    sleep 0.2
  done
  timeout 10 sinfo -R >&2 || true
  fail_with_logs "node $NODE is '${st:-unknown}', not idle after ${TIMEOUT}s" "$LOG/slurmd.log" "$LOG/slurmctld.log"
}

# conf_link_ours: true if /etc/slurm/slurm.conf is our symlink
conf_link_ours() { [[ -L $DEFAULT_CONF && $(readlink "$DEFAULT_CONF") == "$ETC/slurm.conf" ]]; }

link_default_conf() {
  conf_link_ours && return 0
  if [[ -e $DEFAULT_CONF || -L $DEFAULT_CONF ]]; then
    die "$DEFAULT_CONF exists and is not this script's symlink (a real cluster's client config?). " \
      "Not touching it; move it away to use the local test cluster."
  fi
  mkdir -p "$(dirname "$DEFAULT_CONF")"
  ln -s "$ETC/slurm.conf" "$DEFAULT_CONF"
}

unlink_default_conf() {
  if conf_link_ours; then
    rm -f "$DEFAULT_CONF"
    log "removed the $DEFAULT_CONF symlink"
  fi
}

cmd_start() {
  need_root
  local b
  for b in slurmctld slurmd slurmdbd mariadbd munged; do
    command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || die "$b not installed: run '$0 install' first"
  done
  local t0=$SECONDS
  # checked first so that a foreign config stops us before anything is started
  conf_link_ours || [[ ! -e $DEFAULT_CONF && ! -L $DEFAULT_CONF ]] ||
    die "$DEFAULT_CONF exists and is not this script's symlink; not touching it"
  write_config
  # node/gres changes are not taken by `scontrol reconfigure` (the node turns INVAL): restart
  if ((CONFIG_CHANGED)) && pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    log "configuration changed: restarting the slurm daemons"
    stop_pids "$(term_pidfile "$RUN/slurmd.pid" slurmd)" "$(term_pidfile "$RUN/slurmctld.pid" slurmctld)" \
      "$(term_pidfile "$RUN/slurmdbd.pid" slurmdbd)"
  fi
  start_munge
  start_mariadb
  setup_db_user
  start_slurmdbd
  start_slurmctld
  start_slurmd
  link_default_conf
  wait_node_idle
  log "cluster ready in $((SECONDS - t0)) s: $(timeout 10 sinfo -h -o '%P %a %D %T %N %G' | tr '\n' ' ')"
}

# ---------------------------------------------------------------------------------------------
# term_pidfile PIDFILE COMM: send TERM (no wait) and print the pid, if alive
term_pidfile() {
  local pid
  if pid=$(pid_of "$1" "$2"); then
    kill -TERM "$pid" 2>/dev/null || true
    echo "$pid"
  fi
}

# stop_pids PID...: wait (bounded) for the TERMed pids to exit, KILL what is left
stop_pids() {
  local p pids=() deadline
  for p in "$@"; do [[ -n $p ]] && pids+=("$p"); done
  ((${#pids[@]})) || return 0
  deadline=$((SECONDS + 20))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$p" 2>/dev/null; then
      log "pid $p still alive after TERM: KILL"
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
  log "stopped pid(s): ${pids[*]}"
}

cmd_stop() {
  # 1. cancel what is still queued/running so no job step outlives slurmd (bounded)
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    timeout 10 scancel --full --quiet -u root 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)) && [[ -n $(timeout 5 squeue -h -t PD,R,CG -o %i 2>/dev/null || true) ]]; do
      sleep 0.5
    done
  fi
  # 2. slurm daemons first (they flush to slurmdbd / the DB), all TERMed at once, then the DB
  stop_pids "$(term_pidfile "$RUN/slurmd.pid" slurmd)" "$(term_pidfile "$RUN/slurmctld.pid" slurmctld)"
  stop_pids "$(term_pidfile "$RUN/slurmdbd.pid" slurmdbd)"
  # 3. mariadb and (only if we started it) munged
  stop_pids "$(term_pidfile "$RUN/mysql/mysqld.pid" mariadbd)" "$(term_pidfile "$RUN/munged.pid" munged)"
  rm -f "$RUN/munged.pid"
  # no slurm.conf without a slurmctld: keeps `scontrol` (and so every snakemake call) fast
  unlink_default_conf
  log "stopped"
}

cmd_status() {
  local f name pid
  for f in "$RUN/munged.pid:munged" "$RUN/mysql/mysqld.pid:mariadbd" "$RUN/slurmdbd.pid:slurmdbd" \
    "$RUN/slurmctld.pid:slurmctld" "$RUN/slurmd.pid:slurmd"; do
    name=${f##*:}
    if pid=$(pid_of "${f%:*}" "$name"); then echo "$name: running (pid $pid)"; else echo "$name: not running (by this script)"; fi
  done
  if conf_link_ours; then echo "$DEFAULT_CONF -> $ETC/slurm.conf"; else echo "$DEFAULT_CONF: not linked"; fi
  if pid_of "$RUN/slurmctld.pid" slurmctld >/dev/null; then
    timeout 10 sinfo || true
    timeout 10 squeue || true
  fi
}

cmd_reset() {
  need_root
  cmd_stop
  log "deleting $BASE (config, state, logs, database)"
  rm -rf "${BASE:?}"
}

case ${1:-} in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  *)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
    exit 2
    ;;
esac
