#!/usr/bin/env bash
# tests/cluster/run_slurm_integration.sh - the workflow on a REAL single-node SLURM cluster.
#
#  1. installs (idempotent) and starts the local cluster: tools/slurm_cluster.sh
#  2. copies the repository to a temp dir and runs there
#       snakemake --profile profiles/slurm --configfile config/test.yaml
#     with only the local cluster's specifics overridden on the command line: its partition,
#     fast status polling, no retries, and no conda (`--sdm env-modules`: conda is not installed
#     here). The profile's own `cores` (8) applies: the node advertises at least 8 CPUs
#  3. asserts the workflow is complete: `snakemake -n` has nothing to do, and every output
#     listed by `snakemake --summary` exists
#  4. asserts through sacct that every SLURM job of the run COMPLETED, that the job of rule
#     train_nre, and of every other rule whose resources ask for a GPU (read from the dry-run),
#     carried the GPU request (ReqTRES and AllocTRES contain gres/gpu) and no other job did, and
#     that the simulate_shard jobs were grouped (fewer SLURM jobs than shards)
#  5. stops the daemons on exit (trap), unless LENSINFER_SLURM_KEEP_RUNNING=1
#
# Usage: tests/cluster/run_slurm_integration.sh [extra snakemake options]
#
# Needs root and Debian (apt-get) the first time. Every wait is bounded; the snakemake run by
# LENSINFER_SLURM_RUN_TIMEOUT (default 1200 s). A job that SLURM can never schedule (e.g. a memory
# request above the node's) is detected within seconds and fails the test instead of hanging.
#
# Environment (all optional):
#   SNAKEMAKE                     snakemake executable (default: .venv/bin/snakemake, else PATH)
#   LENSINFER_SLURM_REPO          workflow checkout to test (default: this repository)
#   LENSINFER_SLURM_CONFIGFILE    workflow config (default config/test.yaml)
#   LENSINFER_SLURM_RUN_TIMEOUT   seconds for the snakemake run (default 1200)
#   LENSINFER_SLURM_TARGETS       space-separated targets (default: the whole DAG, rule all); every check
#                                 below (nothing left to do, outputs, accounting) applies to these targets' DAG
#   LENSINFER_SLURM_KEEP_RUNNING  1: leave the cluster running afterwards
#   LENSINFER_SLURM_KEEP_WORKDIR  1: keep the temp copy (printed) for inspection
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# the workflow to test (default: this repository; another checkout only for debugging)
REPO=$(cd "${LENSINFER_SLURM_REPO:-$HERE}" && pwd)
CLUSTER=(bash "$HERE/tools/slurm_cluster.sh")
CONFIGFILE=${LENSINFER_SLURM_CONFIGFILE:-config/test.yaml}
RUN_TIMEOUT=${LENSINFER_SLURM_RUN_TIMEOUT:-1200}
read -r -a TARGETS <<<"${LENSINFER_SLURM_TARGETS:-}"
PROFILE_REL=profiles/slurm
GPU_RULE=train_nre
T0=$SECONDS

if [[ -n ${SNAKEMAKE:-} ]]; then
  :
elif [[ -x $HERE/.venv/bin/snakemake ]]; then
  SNAKEMAKE=$HERE/.venv/bin/snakemake
else
  SNAKEMAKE=$(command -v snakemake) || { echo "snakemake not found" >&2; exit 1; }
fi
PYTHON=$(dirname "$SNAKEMAKE")/python
[[ -x $PYTHON ]] || PYTHON=python3

say() { printf '[slurm-it %s +%ss] %s\n' "$(date +%T)" "$((SECONDS - T0))" "$*" >&2; }
fail() {
  say "FAIL: $*"
  exit 1
}

WORK=""
SM_PGID=""
cleanup() {
  local rc=$?
  set +e
  # a still-running snakemake (only on an early exit): its own process group, started by us
  if [[ -n $SM_PGID ]] && kill -0 "$SM_PGID" 2>/dev/null; then
    kill -TERM -- "-$SM_PGID" 2>/dev/null
    sleep 3
    kill -KILL -- "-$SM_PGID" 2>/dev/null
  fi
  if [[ ${LENSINFER_SLURM_KEEP_RUNNING:-0} == 1 ]]; then
    say "leaving the cluster running (LENSINFER_SLURM_KEEP_RUNNING=1)"
  else
    timeout 120 "${CLUSTER[@]}" stop || say "WARNING: cluster stop failed"
  fi
  if [[ -n $WORK && -d $WORK ]]; then
    if [[ ${LENSINFER_SLURM_KEEP_WORKDIR:-0} == 1 || $rc -ne 0 ]]; then
      say "work dir kept for inspection: $WORK"
    else
      rm -rf "$WORK"
    fi
  fi
  if ((rc == 0)); then say "PASSED in $((SECONDS - T0)) s"; else say "FAILED (exit $rc) after $((SECONDS - T0)) s"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. cluster ------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || fail "needs root (it starts slurm daemons)"
[[ -f $REPO/Snakefile || -f $REPO/workflow/Snakefile ]] || fail "no Snakefile in $REPO"
[[ -f $REPO/$CONFIGFILE ]] || fail "no $CONFIGFILE in $REPO"
# The profile's `cores` (8) sizes the grouped simulation jobs (up to 8 CPUs each). The run uses the profile as a
# user would, without --cores, so the local node advertises at least that many CPUs (slurm.conf CPUs=, with
# SlurmdParameters=config_overrides on a machine that has fewer; the tiny config's jobs are light).
PROFILE_CORES=$("$PYTHON" -c 'import sys, yaml; print(int(yaml.safe_load(open(sys.argv[1]))["cores"]))' \
  "$REPO/$PROFILE_REL/config.v8+.yaml") || fail "could not read cores from the profile"
if [[ -z ${LENSINFER_SLURM_CPUS:-} ]] && (($(nproc) < PROFILE_CORES)); then
  export LENSINFER_SLURM_CPUS=$PROFILE_CORES
fi
t=$SECONDS
timeout 1200 "${CLUSTER[@]}" install
say "install: $((SECONDS - t)) s"
t=$SECONDS
timeout 300 "${CLUSTER[@]}" start
say "start: $((SECONDS - t)) s"

PARTITION=$(timeout 10 sinfo -h -o '%P' | sed -n 's/\*$//p' | head -n 1)
NODE_CPUS=$(timeout 10 sinfo -h -o '%c' | head -n 1)
[[ -n $PARTITION && $NODE_CPUS =~ ^[0-9]+$ ]] || fail "could not read partition/CPUs from sinfo"
say "partition $PARTITION, node CPUs $NODE_CPUS"

# ---- 2. run the workflow in a temp copy -----------------------------------------------------
WORK=$(mktemp -d /tmp/lensinfer-slurm-it.XXXXXX)
# tracked + untracked-but-not-ignored files (so local outputs, .venv, .snakemake are left out;
# files deleted in the work tree are skipped)
if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do
      if [[ -e $REPO/$f ]]; then printf '%s\0' "$f"; fi
    done |
    tar -C "$REPO" --null -T - -cf - | tar -C "$WORK" -xf -
else
  tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=.snakemake --exclude=results \
    --exclude=__pycache__ -cf - . | tar -C "$WORK" -xf -
fi
cd "$WORK"
say "work dir: $WORK ($(du -sh . | cut -f1))"

# The profile's default-resources, plus the local partition. (A --default-resources on the
# command line replaces the profile's whole mapping, so its values are carried over here.)
mapfile -t DEFAULT_RES < <("$PYTHON" - "$PROFILE_REL/config.v8+.yaml" "$PARTITION" <<'EOF'
import sys, yaml
prof = yaml.safe_load(open(sys.argv[1]))
res = dict(prof.get("default-resources") or {})
res["slurm_partition"] = sys.argv[2]
for k, v in res.items():
    print(f"{k}={v}")
EOF
)

SM_ARGS=(
  --profile "$PROFILE_REL"
  --configfile "$CONFIGFILE"
  --default-resources "${DEFAULT_RES[@]}"
  # no --cores: the profile's cores (8) bound threads and group jobs, as for a user (the node advertises them)
  --sdm env-modules                             # no conda here: the profile's documented opt-out of its conda envs
  --retries 0                                   # a failure here is a bug: fail fast
  --latency-wait 10
  --slurm-init-seconds-before-status-checks 2   # poll soon: jobs here take seconds
  --slurm-keep-successful-logs
  "$@"                                          # extra snakemake options (debugging)
  "${TARGETS[@]}"                               # none: rule all
)
# Which rules ask for a GPU, as this profile + workflow resolve them (the dry-run's resources)
timeout 300 "$SNAKEMAKE" -n "${SM_ARGS[@]}" >"$WORK/dryrun-before.log" 2>&1 ||
  { tail -n 40 "$WORK/dryrun-before.log" >&2; fail "dry-run with the profile failed"; }
GPU_RULES=$("$PYTHON" - "$WORK/dryrun-before.log" <<'EOF'
import re, sys
rule, gpu = None, set()
for line in open(sys.argv[1]):
    m = re.match(r"(?:local)?rule (\S+):$", line.strip())
    if m:
        rule = m.group(1)
    elif rule and line.strip().startswith("resources:"):
        if re.search(r"\bgpu=[1-9]", line) or re.search(r"\bgres=\S*gpu", line):
            gpu.add(rule)
print(",".join(sorted(gpu)))
EOF
)
[[ ,$GPU_RULES, == *,$GPU_RULE,* ]] || fail "the dry-run shows no GPU request for rule $GPU_RULE (GPU rules: '${GPU_RULES}')"
say "rules asking for a GPU: $GPU_RULES"

say "running: snakemake ${SM_ARGS[*]}"
t=$SECONDS
# own process group (setsid) so that it can be stopped as a whole; `timeout -k`: the plugin has
# been seen to ignore SIGTERM while it loops on status queries
setsid timeout -k 15 "$RUN_TIMEOUT" "$SNAKEMAKE" "${SM_ARGS[@]}" >"$WORK/snakemake.log" 2>&1 &
SM_PGID=$!

# Watchdog: the plugin waits forever for a job SLURM can never start (e.g. --mem or --cpus above
# the node's); squeue shows such a job PENDING with one of these reasons.
stuck=""
while kill -0 "$SM_PGID" 2>/dev/null; do
  stuck=$(timeout 10 squeue -h -t PD -o '%i %r' 2>/dev/null |
    awk '$2 ~ /^(PartitionConfig|ReqNodeNotAvail|BadConstraints|PartitionNodeLimit|InvalidAccount|InvalidQOS|AssocMaxJobsLimit|QOSMaxMemoryPerJob|MaxMemPerLimit)/' || true)
  if [[ -n $stuck ]]; then
    say "job(s) that SLURM can never start: $stuck"
    while read -r id _; do timeout 10 scontrol show job "$id" >&2 || true; done <<<"$stuck"
    kill -TERM -- "-$SM_PGID" 2>/dev/null || true
    break
  fi
  sleep 3
done
rc=0
wait "$SM_PGID" || rc=$?
SM_PGID=""
RUN_S=$((SECONDS - t))
if [[ -n $stuck || $rc -ne 0 ]]; then
  tail -n 60 "$WORK/snakemake.log" >&2
  for f in $(find .snakemake/slurm_logs -name '*.log' 2>/dev/null | head -n 20); do
    grep -qiE 'error|exception|fail' "$f" && { echo "----- $f" >&2; tail -n 30 "$f" >&2; }
  done
  [[ -n $stuck ]] && fail "unschedulable job(s); see scontrol output above"
  ((rc == 124 || rc == 137)) && fail "snakemake did not finish within ${RUN_TIMEOUT}s"
  fail "snakemake exited $rc (log: $WORK/snakemake.log)"
fi
say "workflow on SLURM: ${RUN_S} s"

# ---- 3. every output exists, nothing left to do ----------------------------------------------
LOCAL_ARGS=(--configfile "$CONFIGFILE" --cores 1 "${TARGETS[@]}")
timeout 300 "$SNAKEMAKE" -n "${LOCAL_ARGS[@]}" >"$WORK/dryrun.log" 2>&1 ||
  { tail -n 30 "$WORK/dryrun.log" >&2; fail "dry-run after the run failed"; }
grep -q 'Nothing to be done' "$WORK/dryrun.log" ||
  { grep -A30 'Job stats' "$WORK/dryrun.log" >&2; fail "workflow incomplete: the dry-run still has jobs"; }

timeout 300 "$SNAKEMAKE" --summary "${LOCAL_ARGS[@]}" >"$WORK/summary.tsv" 2>"$WORK/summary.err" ||
  { tail -n 30 "$WORK/summary.err" >&2; fail "snakemake --summary failed"; }
# columns: output_file date rule log-file(s) status plan; temp() outputs are gone by design
"$PYTHON" - "$WORK/summary.tsv" "$GPU_RULE" <<'EOF' || fail "output check failed"
import csv, os, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
if not rows:
    sys.exit("snakemake --summary listed no outputs")
missing = [r["output_file"] for r in rows
           if not os.path.exists(r["output_file"]) and "temp" not in r.get("status", "")]
rules = sorted({r["rule"] for r in rows})
print(f"{len(rows)} outputs of {len(rules)} rules: {', '.join(rules)}", file=sys.stderr)
if missing:
    sys.exit(f"{len(missing)} output(s) missing, e.g. {missing[:5]}")
if sys.argv[2] not in rules:
    sys.exit(f"rule {sys.argv[2]} produced no output")
EOF
N_SHARDS=$(awk -F'\t' 'NR > 1 && $3 == "simulate_shard"' "$WORK/summary.tsv" | wc -l)
say "all outputs present; simulate_shard outputs: $N_SHARDS"

# ---- 4. the SLURM jobs: states, GPU request, grouping -----------------------------------------
RUN_ID=$(sed -n 's/.*SLURM run ID: \([A-Za-z0-9_-]*\).*/\1/p' "$WORK/snakemake.log" | head -n 1)
[[ -n $RUN_ID ]] || fail "no 'SLURM run ID' in the snakemake log"
# slurmctld reports finished jobs to slurmdbd asynchronously: poll (bounded) until all are final
deadline=$((SECONDS + 60))
while :; do
  timeout 20 sacct -X -n -P --name "$RUN_ID" -S now-1days \
    --format=JobID,State,Comment,ReqTRES,AllocTRES >"$WORK/sacct.txt" 2>"$WORK/sacct.err" || true
  if [[ -s $WORK/sacct.txt ]] && ! awk -F'|' '$2 ~ /PENDING|RUNNING|COMPLETING/ {f=1} END {exit !f}' "$WORK/sacct.txt"; then
    break
  fi
  ((SECONDS < deadline)) || { cat "$WORK/sacct.txt" "$WORK/sacct.err" >&2; fail "sacct shows no final job states for run $RUN_ID within 60s"; }
  sleep 2
done
sed 's/^/  sacct: /' "$WORK/sacct.txt" >&2
"$PYTHON" - "$WORK/sacct.txt" "$GPU_RULE" "$N_SHARDS" "$GPU_RULES" <<'EOF' || fail "SLURM accounting check failed"
import sys
path, gpu_rule, n_shards, gpu_rules = sys.argv[1], sys.argv[2], int(sys.argv[3]), set(sys.argv[4].split(","))
jobs = [line.rstrip("\n").split("|") for line in open(path) if line.strip()]
errors = []
per_rule: dict[str, list[str]] = {}
sim_jobs = []
for jobid, state, comment, req, alloc in jobs:
    # the plugin's --comment: rule_<rule>[_wildcards_<wc>]; group jobs: rule_<group>_<rules>
    name = comment.removeprefix("rule_").split("_wildcards_")[0]
    per_rule.setdefault(name, []).append(jobid)
    if state != "COMPLETED":
        errors.append(f"job {jobid} ({comment}) is {state}")
    if name in gpu_rules:
        if not ("gres/gpu" in req and "gres/gpu" in alloc):
            errors.append(f"job {jobid} ({comment}) has no gres/gpu: ReqTRES={req} AllocTRES={alloc}")
    elif "gres/gpu" in req or "gres/gpu" in alloc:
        errors.append(f"job {jobid} ({comment}) asked for a GPU: ReqTRES={req} AllocTRES={alloc}")
    if "simulate_shard" in comment:
        sim_jobs.append(jobid)
if len(per_rule.get(gpu_rule, [])) != 1:
    errors.append(f"expected exactly 1 SLURM job for {gpu_rule}, found {per_rule.get(gpu_rule, [])}")
if n_shards > 1 and not (1 <= len(sim_jobs) < n_shards):
    errors.append(f"{n_shards} shards ran as {len(sim_jobs)} SLURM jobs: grouping did not apply")
gpu_jobs = {r: j for r, j in per_rule.items() if r in gpu_rules}
print(f"{len(jobs)} SLURM jobs; with gres/gpu: {gpu_jobs}; "
      f"{n_shards} shards in {len(sim_jobs)} group job(s)", file=sys.stderr)
if errors:
    sys.exit("\n".join(errors))
EOF
say "accounting: all jobs COMPLETED, GPU only on the GPU rules ($GPU_RULES), shards grouped"
