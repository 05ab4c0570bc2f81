#!/usr/bin/env bash
# ε of every ledger kept under reports/examples/ by two dptrain binaries, under each of the
# three accountants (`dptrain account --events LEDGER --accountant A`), side by side: a
# change to the ledger or the accountants must leave every one the same (a refusal too).
#
#   scripts/compare-ledgers.sh OLD_BINARY NEW_BINARY > OUT.csv
set -uo pipefail
old=$1 new=$2
epsilon() { # BINARY LEDGER ACCOUNTANT → ε, or "refused: <message>"
  local out
  if out=$("$1" account --events "$2" --delta 1e-5 --accountant "$3" --json 2>&1 < /dev/null); then
    python3 -c 'import json,sys; print(repr(json.loads(sys.argv[1])["epsilon"]))' "$out"
  else
    echo "refused: ${out//,/;}" | tr -d '\n'; echo
  fi
}
echo "ledger,accountant,old_epsilon,new_epsilon,same"
for ledger in $(find reports/examples -name ledger.csv | sort); do
  for accountant in rdp pld prv; do
    a=$(epsilon "$old" "$ledger" "$accountant")
    b=$(epsilon "$new" "$ledger" "$accountant")
    same=no
    if [ "$a" = "$b" ]; then same=yes; fi
    if [[ "$a" == refused* && "$b" == refused* ]]; then same=both-refused; fi
    echo "$ledger,$accountant,$a,$b,$same"
  done
done
