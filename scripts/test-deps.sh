#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust, on Debian (CI and a fresh machine):
# OpenMPI and libclang for the `mpi` feature's tests (tests/it/mpi.rs start real mpirun
# ranks). Idempotent; needs root or sudo for apt-get.
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
