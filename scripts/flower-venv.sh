#!/usr/bin/env bash
# Installs Flower 1.42 (flwr from PyPI, Python 3.11 or newer) into a venv outside the
# repository, $DPTRAIN_FLWR_VENV (default ~/.cache/dptrain/flwr-1.42), unless it is there,
# and prints the venv's path on the last line. It holds flower-superlink and the flwr CLI
# for the ServerApp's side; dptrain's silos need none of it. Idempotent.
set -euo pipefail
venv=${DPTRAIN_FLWR_VENV:-$HOME/.cache/dptrain/flwr-1.42}
if [[ ! -x $venv/bin/flower-superlink ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'flwr==1.42.*'
fi
"$venv/bin/python" -c 'import flwr; print("flwr", flwr.__version__)' >&2
echo "$venv"
