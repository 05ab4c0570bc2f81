#!/usr/bin/env bash
# Issue 4's experiment: the cnn at epsilon 3 (delta 1e-5, 40 epochs, batch 2048) with a
# constant noise multiplier, an exponential decay, a step decay, and adaptive quantile
# clipping from C = 0.1 (configs/schedules/). Runs them one after another (about 3-4 min
# each on 2 cores) and writes reports/schedule-experiment/results.csv and a Markdown table.
#
#   scripts/schedule-experiment.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=reports/schedule-experiment
mkdir -p "$out"
cargo build --release --quiet
echo "config,test_accuracy,epsilon,steps,first_noise_multiplier,final_clip_norm,wall_seconds" > "$out/results.csv.tmp"
for name in constant exponential step adaptive-clip; do
  target/release/dptrain train "configs/schedules/$name.toml" --out "$out/$name" --json > "$out/$name.json"
  python3 - "$out/$name" "$name" >> "$out/results.csv.tmp" <<'PY'
import csv, json, sys
run, name = sys.argv[1], sys.argv[2]
s = json.load(open(f"{run}/summary.json"))
rows = list(csv.DictReader(open(f"{run}/metrics.csv")))
print(f"{name},{s['test_accuracy']:.4f},{s['epsilon']:.4f},{s['steps']},{s['noise_multiplier']:.4f},{float(rows[-1]['clip_norm']):.4f},{s['wall_seconds']:.0f}")
PY
done
mv "$out/results.csv.tmp" "$out/results.csv"
python3 - "$out/results.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| config | test accuracy | final ε | σ of the first step | final C | wall time |")
print("| --- | --- | --- | --- | --- | --- |")
for r in rows:
    print(f"| `configs/schedules/{r['config']}.toml` | {100*float(r['test_accuracy']):.2f}% | {r['epsilon']} | {r['first_noise_multiplier']} | {r['final_clip_norm']} | {r['wall_seconds']} s |")
PY
