#!/usr/bin/env bash
# Runs flower_primitives.py pinned to core 0 once the machine is idle (no rustc/cargo/linker
# or cargo target/ binary running, CPU < 15% busy over 3 s; re-checks every 60 s, at most
# MAX_WAIT seconds). A 1 s monitor notes any such process that appears during the run.
#
#   bench/secagg/run_flower.sh [ARGS for flower_primitives.py]
#
# Raw output: bench/secagg/results/flower-<date>.txt (a time suffix if that exists).
set -u
cd "$(dirname "$0")"
PY=${PY:-/root/venv-flower/bin/python}
MAX_WAIT=${MAX_WAIT:-1200}
BUILDERS='rustc|cargo|cc1|cc1plus|ld|ld.lld|rust-lld|ld.bfd|ld.gold|mold'
mkdir -p results

builder_pids() {
  ps -eo pid=,comm=,args= | awk -v re="^(${BUILDERS})\$" \
    '$2 ~ re || $3 ~ /target\/(release|debug)\// {print $1 "(" $2 ")"}'
}

cpu_busy_pct() {  # % of all-CPU time busy over 3 s
  local a b ta=0 tb=0 i
  read -r -a a < <(head -1 /proc/stat)
  sleep 3
  read -r -a b < <(head -1 /proc/stat)
  for i in 1 2 3 4 5 6 7 8; do ta=$((ta + a[i])); tb=$((tb + b[i])); done
  local dt=$((tb - ta)) di=$((b[4] + b[5] - a[4] - a[5]))
  echo $(( dt > 0 ? 100 * (dt - di) / dt : 0 ))
}

waited=0
while true; do
  builder=$(builder_pids | head -1)
  busy=$(cpu_busy_pct)
  if [ -z "$builder" ] && [ "$busy" -lt 15 ]; then break; fi
  if [ "$waited" -ge "$MAX_WAIT" ]; then
    echo "machine not idle after ${waited} s (builder: ${builder:-none}, busy ${busy}%); not run" >&2
    exit 2
  fi
  echo "$(date +%T) busy (builder: ${builder:-none}, cpu ${busy}%); re-check in 60 s" >&2
  sleep 60
  waited=$((waited + 60))
done

OUT=results/flower-$(date +%Y%m%d).txt
[ -e "$OUT" ] && OUT=results/flower-$(date +%Y%m%d-%H%M%S).txt
SEEN=$(mktemp)
( while true; do builder_pids >> "$SEEN"; sleep 1; done ) &
MON=$!
{
  echo "command: taskset -c 0 $PY flower_primitives.py $*"
  echo "waited for idle: ${waited} s; cpu busy before start: ${busy}%"
} > "$OUT"
taskset -c 0 "$PY" flower_primitives.py "$@" 2>&1 | tee -a "$OUT"
rc=${PIPESTATUS[0]}
kill "$MON" 2>/dev/null
wait "$MON" 2>/dev/null
if [ -s "$SEEN" ]; then
  echo "WARNING: builder process(es) seen during the run: $(sort -u "$SEEN" | tr '\n' ' ')" | tee -a "$OUT"
else
  echo "no rustc/cargo/linker/target process seen during the run" | tee -a "$OUT"
fi
rm -f "$SEEN"
echo "exit status: $rc" >> "$OUT"
exit "$rc"
