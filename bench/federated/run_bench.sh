#!/usr/bin/env bash
# Interleaved repeats of the federated-round benchmarks on 2 pinned cores. Each run
# starts only when the machine is idle (no rustc/cargo/linker or cargo target/ binary
# running, CPU < 15% busy over 3 s); a 1 s monitor flags a run during which such a
# process appeared (the run is kept in the file, flagged, and retried up to twice).
#
#   bench/federated/run_bench.sh [REPEATS] [ROUNDS]
#   CONFIGS="torch:--threads=2 flower:--actors=2,--server-threads=2" run_bench.sh 3 15
#   (configs are space-separated BENCH:ARGS, ARGS comma-separated)
#
# Writes results/runs-<stamp>.jsonl (one JSON line per run, with "builder_seen") and
# results/runs-<stamp>.log (machine header, per-run notes). Summarise: summarize.py FILE.
set -u
cd "$(dirname "$0")"
PY=${PY:-/root/venv-flower/bin/python}
REPEATS=${1:-3}
ROUNDS=${2:-15}
CONFIGS=${CONFIGS:-"torch:--threads=2 flower:--actors=2 flower:--actors=1"}
MAX_WAIT=${MAX_WAIT:-1800}     # total seconds we may wait for an idle machine
RUN_TIMEOUT=${RUN_TIMEOUT:-900}
BUILDERS='rustc|cargo|cc1|cc1plus|ld|ld.lld|rust-lld|ld.bfd|ld.gold|mold'
mkdir -p results
STAMP=$(date +%Y%m%d-%H%M%S)
OUT=results/runs-$STAMP.jsonl
LOG=results/runs-$STAMP.log
waited=0

builder_pids() {  # pids of compilers/linkers and of anything run from a cargo target/
  # folder (the other engineer's builds, tests and dptrain runs)
  ps -eo pid=,comm=,args= | awk -v re="^(${BUILDERS})\$" \
    '$2 ~ re || $3 ~ /target\/(release|debug)\// {print $1 "(" $2 ")"}'
}

{
  echo "date: $(date -Is)"
  lscpu | grep 'Model name'
  echo "nproc: $(nproc)"
  echo "uptime at start: $(uptime)"
  echo "python: $($PY --version 2>&1)"
  echo "configs: $CONFIGS  repeats: $REPEATS  rounds: $ROUNDS"
} | tee "$LOG"

cpu_busy_pct() {  # % of all-CPU time busy over 3 s
  local a b
  read -r -a a < <(head -1 /proc/stat)
  sleep 3
  read -r -a b < <(head -1 /proc/stat)
  local ta=0 tb=0 i
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  local ia=$((a[4] + a[5])) ib=$((b[4] + b[5]))
  local dt=$((tb - ta)) di=$((ib - ia))
  echo $(( dt > 0 ? 100 * (dt - di) / dt : 0 ))
}

wait_idle() {
  while true; do
    local builder busy
    builder=$(builder_pids | head -1)
    busy=$(cpu_busy_pct)
    if [ -z "$builder" ] && [ "$busy" -lt 15 ]; then return 0; fi
    if [ "$waited" -ge "$MAX_WAIT" ]; then
      echo "  WARNING: machine still busy after ${waited}s of waiting (builder pid '${builder}', cpu ${busy}%); running anyway" | tee -a "$LOG"
      return 1
    fi
    echo "  busy (builder pid '${builder}', cpu ${busy}%), waiting 60 s (waited ${waited}s)" | tee -a "$LOG"
    sleep 60
    waited=$((waited + 60))
  done
}

run_one() {  # $1 = bench name, $2 = its extra args, $3 = repeat index
  local bench=$1 extra=${2//,/ } rep=$3 tries=0
  while [ $tries -lt 3 ]; do
    tries=$((tries + 1))
    wait_idle
    local tmp seen
    tmp=$(mktemp); seen=$(mktemp)
    echo "[$(date +%T)] rep $rep try $tries: ${bench}_round.py $extra  (load: $(cut -d' ' -f1-3 /proc/loadavg))" | tee -a "$LOG"
    # shellcheck disable=SC2086
    timeout "$RUN_TIMEOUT" taskset -c 0,1 "$PY" "${bench}_round.py" --rounds "$ROUNDS" $extra \
      --out "$tmp" > "results/last-${bench}.stdout" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
      builder_pids >> "$seen"
      sleep 1
    done
    wait "$pid"; local rc=$?
    local flag=false
    [ -s "$seen" ] && flag=true
    if [ $rc -ne 0 ] || [ ! -s "$tmp" ]; then
      echo "  FAILED rc=$rc; tail of output:" | tee -a "$LOG"
      tail -5 "results/last-${bench}.stdout" | tee -a "$LOG"
      rm -f "$tmp" "$seen"
      return 1
    fi
    ("$PY" - "$tmp" "$OUT" "$flag" "$rep" "$tries" <<'EOF'
import json, sys
tmp, out, flag, rep, tries = sys.argv[1:]
with open(tmp) as f:
    d = json.loads(f.readline())
d.update(builder_seen=(flag == "true"), repeat=int(rep), try_=int(tries))
with open(out, "a") as f:
    f.write(json.dumps(d) + "\n")
print(f"  rounds/s {d['rounds_per_s']:.3f} (with eval {d['rounds_per_s_with_eval']:.3f}), "
      f"acc {d['test_acc_after_timed']:.4f}, builder_seen={d['builder_seen']}")
EOF
    ) | tee -a "$LOG"
    rm -f "$tmp"
    if [ "$flag" = false ]; then rm -f "$seen"; return 0; fi
    echo "  a build process ran during this run (pids: $(sort -u "$seen" | tr '\n' ' ')); retrying" | tee -a "$LOG"
    rm -f "$seen"
  done
}

for rep in $(seq 1 "$REPEATS"); do
  for cfg in $CONFIGS; do
    run_one "${cfg%%:*}" "${cfg#*:}" "$rep"
  done
done
echo "done: $OUT" | tee -a "$LOG"
"$PY" summarize.py "$OUT" | tee -a "$LOG"
