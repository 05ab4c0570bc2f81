#!/usr/bin/env bash
# The Python package (python/): a wheel built by maturin, installed into a fresh venv (the
# import check of a clean install) and into a cached test venv with dp-accounting 0.6.0,
# then pytest against the installed wheel. Needs target/release/dptrain (the tests compare
# error messages with the command line's). Nothing is skipped: a missing tool fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tools=${DPTRAIN_PY_VENV:-$HOME/.cache/dptrain/py-tools}
if ! cmp -s python/requirements-test.txt "$tools/requirements-test.txt" 2>/dev/null; then
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet -r python/requirements-test.txt
    cp python/requirements-test.txt "$tools/"
fi
rm -rf target/wheels
"$tools/bin/maturin" build --release --locked -m python/Cargo.toml -i "$tools/bin/python" \
    --compatibility linux --out target/wheels
wheel=$(echo target/wheels/dptrain-*.whl)

fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
python3 -m venv "$fresh/venv"
"$fresh/venv/bin/pip" install --quiet --no-index "$wheel"   # no runtime dependencies
# From / so that the source tree's python/dptrain (no compiled module) cannot shadow it.
(cd / && "$fresh/venv/bin/python" -c '
import dptrain, dptrain.accounting as acc
print("dptrain", dptrain.__version__, "from a fresh venv: epsilon",
      acc.epsilon(256 / 60000, 1.1, 14063, delta=1e-5))')

"$tools/bin/pip" install --quiet --force-reinstall --no-deps "$wheel"
cd python/tests
DPTRAIN_REPO=$root DPTRAIN_BIN=${DPTRAIN_BIN:-$root/target/release/dptrain} \
    "$tools/bin/python" -m pytest -q -p no:cacheprovider .
