#!/usr/bin/env bash
# Runs two dptrain binaries side by side on the same configs and benchmarks, to show that a
# refactor changed nothing a user sees (same accuracy and ε, digit for digit) and cost no
# speed (bench throughput interleaved, old/new/old/new, in one run on one machine).
#
#   scripts/compare-binaries.sh OLD_BINARY NEW_BINARY OUT_DIR [ROUNDS]
#
# Writes OUT_DIR/runs.csv (config, binary, test_accuracy, epsilon, steps), OUT_DIR/bench.csv
# (model, round, binary, private and non-private samples/s), the run directories, and the
# machine's CPU in OUT_DIR/machine.txt.
set -euo pipefail
old=$1 new=$2 out=$3 rounds=${4:-3}
mkdir -p "$out"
{ date -u; nproc; grep -m1 'model name' /proc/cpuinfo || true; } > "$out/machine.txt"
echo "config,binary,test_accuracy,epsilon,steps" > "$out/runs.csv"
for config in configs/quickstart.toml configs/mnist-cnn-eps3.toml configs/adult-logreg-eps1.toml configs/adult-mlp-eps1.toml; do
  name=$(basename "$config" .toml)
  for which in old new; do
    bin=${!which}
    dir="$out/runs/$name-$which"
    rm -rf "$dir"
    "$bin" -q train "$config" --out "$dir" > /dev/null
    python3 - "$dir/summary.json" "$name" "$which" >> "$out/runs.csv" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]},{sys.argv[3]},{s['test_accuracy']!r},{s.get('epsilon')!r},{s['steps']}")
PY
  done
done
echo "model,round,binary,private_samples_per_sec,nonprivate_samples_per_sec" > "$out/bench.csv"
for model in logreg mlp cnn; do
  for round in $(seq 1 "$rounds"); do
    for which in old new; do
      bin=${!which}
      "$bin" bench --model "$model" --batch-size 256 --steps 30 --json | python3 -c "
import json, sys
b = json.load(sys.stdin)
print(f\"$model,$round,$which,{b['private_samples_per_sec']:.1f},{b['nonprivate_samples_per_sec']:.1f}\")" >> "$out/bench.csv"
    done
  done
done
cat "$out/runs.csv" "$out/bench.csv"
