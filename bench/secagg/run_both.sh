#!/usr/bin/env bash
# dptrain's and Flower 1.42's SecAgg+ costs side by side in one run (issue 15's cost line):
# the Rust bench on core 0, then Flower's primitives on core 0 (run_flower.sh waits for an
# idle machine first). Output: bench/secagg/results/both-<date-time>.txt.
#
#   bench/secagg/run_both.sh [M] [REPEATS]      (default 1000000 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
m=${1:-1000000}
repeats=${2:-3}
out=bench/secagg/results/both-$(date -u +%Y%m%d-%H%M%S).txt
mkdir -p bench/secagg/results
cargo build --release --bench secagg >/dev/null 2>&1
{
  echo "== dptrain (taskset -c 0 cargo bench --bench secagg -- $m $repeats) =="
  lscpu | grep "Model name"
  date -u
  taskset -c 0 cargo bench --bench secagg -- "$m" "$repeats" 2>/dev/null
  echo
  echo "== Flower 1.42 (bench/secagg/run_flower.sh --m $m --repeats $repeats) =="
  bench/secagg/run_flower.sh --m "$m" --repeats "$repeats"
} 2>&1 | tee "$out"
echo "written: $out"
