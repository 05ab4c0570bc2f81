#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need beyond Rust
# (scripts/test-deps.sh: OpenMPI for the `mpi` feature's tests, which start real mpirun
# ranks), then every test with every feature. A missing dependency fails the run; nothing
# is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo test --release --features mpi "$@"
