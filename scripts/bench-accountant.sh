#!/usr/bin/env bash
# The accountant benchmark, side by side with Google's dp_accounting on the same cases.
#
#   scripts/bench-accountant.sh [--quick]
#
# Runs benches/accountant.rs (dptrain) and benches/dp_accounting_bench.py (dp_accounting's
# RdpAccountant) one after the other in this one invocation, then prints the ratio of their
# median wall times per case. Needs a Python with dp-accounting installed:
#   python3 -m venv ~/venv-dpacc && ~/venv-dpacc/bin/pip install dp-accounting==0.6.0
#   DP_ACCOUNTING_PYTHON=~/venv-dpacc/bin/python scripts/bench-accountant.sh
# Run it on an otherwise idle machine. dp_accounting takes ~25 s per 1e3-block schedule,
# so its 1e5-block time is extrapolated (x100) from the 1e3-block run, and marked so;
# DP_ACCOUNTING_BLOCKS=1000,10000 adds a 1e4-block run (~4 min) to check that it is linear.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${DP_ACCOUNTING_PYTHON:-python3}
out=reports/bench-accountant
mkdir -p "$out"
cargo bench --bench accountant -- "$@" | grep '^{' | tee "$out/dptrain.jsonl"
"$python" benches/dp_accounting_bench.py --blocks "${DP_ACCOUNTING_BLOCKS:-1000}" "$@" \
  | tee "$out/dp_accounting.jsonl"
python3 - "$out/dptrain.jsonl" "$out/dp_accounting.jsonl" <<'PY' | tee "$out/ratios.md"
import json, sys
ours = {r["case"]: r for r in map(json.loads, open(sys.argv[1]))}
theirs = {r["case"]: r for r in map(json.loads, open(sys.argv[2]))}
print("| case | dptrain median s | dp_accounting median s | ratio | epsilon (ours / theirs) |")
print("| --- | --- | --- | --- | --- |")
for case, r in ours.items():
    t = theirs.get(case)
    note = ""
    if t is None and case == "schedule_1e5" and "schedule_1e3" in theirs:
        t = dict(theirs["schedule_1e3"], median_s=100 * theirs["schedule_1e3"]["median_s"], value=None)
        note = " (extrapolated x100 from 1e3 blocks)"
    if t is None:
        continue
    value = "" if t["value"] is None else f'{r["value"]:.12g} / {t["value"]:.12g}'
    print(f'| {case} | {r["median_s"]:.3g} | {t["median_s"]:.3g}{note} | '
          f'{t["median_s"] / r["median_s"]:.0f}x | {value} |')
PY
