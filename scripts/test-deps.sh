#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, on Debian (CI and a fresh machine):
# - OpenMPI and libclang for the `mpi` feature's tests (tests/it/mpi.rs start real mpirun
#   ranks), from Debian's packages (root or sudo);
# - Flower 1.42 (flwr from PyPI) in a venv outside the repository, for the tests that start
#   a real SuperLink on 127.0.0.1 (tests/it/flower.rs): $DPTRAIN_FLWR_VENV, by default
#   ~/.cache/dptrain/flwr-1.42.
# Idempotent.
set -euo pipefail
packages=(openmpi-bin libopenmpi-dev libclang-dev)
missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [[ $(id -u) -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
mpirun --version | head -1
venv=${DPTRAIN_FLWR_VENV:-$HOME/.cache/dptrain/flwr-1.42}
if [[ ! -x $venv/bin/flower-superlink ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'flwr==1.42.*'
fi
"$venv/bin/python" -c 'import flwr; print("flwr", flwr.__version__)'

