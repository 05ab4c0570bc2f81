#!/usr/bin/env bash
# The PLD and PRV accountants, side by side with dp_accounting's PLDAccountant and
# prv_accountant's PRVAccountant on the same cases, in this one invocation.
#
#   scripts/bench-pld-prv.sh [--quick]
#
# Runs benches/pld_prv.rs (dptrain) then benches/pld_prv_bench.py, and prints the ratio of
# their median wall times and both ε per case. Needs a Python with both libraries:
#   python3 -m venv ~/venv-acct && ~/venv-acct/bin/pip install dp-accounting==0.6.0 prv-accountant==0.2.0
#   ACCOUNTING_PYTHON=~/venv-acct/bin/python scripts/bench-pld-prv.sh
# Run it on an otherwise idle machine. dp_accounting takes more than 10 minutes on the
# 1e3-block schedule, so the reference side runs 100 blocks and the ratio uses x10 (an
# underestimate of its time: its per-step cost grows with the composed PLD);
# REFERENCE_BLOCKS=1000 runs the real case.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${ACCOUNTING_PYTHON:-python3}
out=reports/bench-pld-prv
mkdir -p "$out"
cargo bench --bench pld_prv -- "$@" | grep '^{' | tee "$out/dptrain.jsonl"
"$python" benches/pld_prv_bench.py --blocks "${REFERENCE_BLOCKS:-100}" "$@" | tee "$out/reference.jsonl"
python3 - "$out/dptrain.jsonl" "$out/reference.jsonl" <<'PY' | tee "$out/ratios.md"
import json, sys
ours = {r["case"]: r for r in map(json.loads, open(sys.argv[1]))}
theirs = {r["case"]: r for r in map(json.loads, open(sys.argv[2]))}
print("| case | dptrain median s | reference | reference median s | ratio | epsilon (ours / theirs) |")
print("| --- | --- | --- | --- | --- | --- |")
for case, r in ours.items():
    t = theirs.get(case)
    note = ""
    if t is None and case.endswith("_schedule_1e3"):
        small = theirs.get(case.replace("1e3", "100_blocks"))
        if small is not None:
            t = dict(small, median_s=10 * small["median_s"], value=float("nan"))
            note = " (100 blocks x10)"
    if t is None:
        continue
    print(f'| {case} | {r["median_s"]:.3g} | {t["implementation"]} | {t["median_s"]:.3g}{note} | '
          f'{t["median_s"] / r["median_s"]:.0f}x | {r["value"]:.6f} / {t["value"]:.6f} |')
PY
