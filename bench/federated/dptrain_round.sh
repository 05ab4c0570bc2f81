#!/usr/bin/env bash
# dptrain's side of the federated round benchmark: the InProcess simulation of
# configs/federated-mnist.toml for 11 rounds, pinned to 2 cores; rounds/s over rounds 2-11
# (round 1 is the warm-up, as in torch_round.py and flower_round.py) from metrics.csv's
# `seconds` column (each round without the test evaluation).
#
#   cargo build --release && bench/federated/dptrain_round.sh [REPEATS]
set -eu
cd "$(dirname "$0")/../.."
REPEATS=${1:-3}
BIN=${BIN:-target/release/dptrain}
echo "date: $(date -Is)"
lscpu | grep 'Model name'
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (dirty)')"
for i in $(seq "$REPEATS"); do
  out=$(mktemp -d)
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  taskset -c 0,1 "$BIN" federate configs/federated-mnist.toml \
    --set federated.client_level.rounds=11 --out "$out/run" -q > /dev/null
  awk -F, -v i="$i" 'NR > 2 { s += $8; n++ }
    END { printf "repeat %d: %.3f rounds/s (mean round %.3f s over %d rounds)\n", i, n / s, s / n, n }' \
    "$out/run/metrics.csv"
  rm -rf "$out"
done
