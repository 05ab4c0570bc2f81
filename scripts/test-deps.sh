#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, on Debian (CI and a fresh machine):
# - OpenMPI and libclang for the `mpi` feature's tests (tests/it/mpi.rs start real mpirun
#   ranks), from Debian's packages (root or sudo); openssl and ssh-keygen for the test
#   that sets up Flower's TLS and SuperNode authentication as an operator would;
# - Flower 1.42 (flwr from PyPI) in a venv outside the repository, for the tests that start
#   a real SuperLink on 127.0.0.1 (tests/it/flower.rs) and for the ServerApp's own tests
#   (flower/tests): scripts/flower-venv.sh, $DPTRAIN_FLWR_VENV, by default
#   ~/.cache/dptrain/flwr-1.42.
# Idempotent.
set -euo pipefail
packages=(openmpi-bin libopenmpi-dev libclang-dev openssl openssh-client chromium)
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
"$(dirname "$0")/flower-venv.sh" >/dev/null

