#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need beyond Rust
# (scripts/test-deps.sh: OpenMPI for the `mpi` feature's tests, which start real mpirun
# ranks; Flower 1.42 for the tests that start a real SuperLink), then the ServerApp's
# Python tests, every Rust test with every feature, and the Python package's tests (its wheel
# built, installed into a fresh venv, and pytest against dp_accounting:
# scripts/python-test.sh). A missing dependency fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
# The dptrain ServerApp's own tests (Python, against a fake Grid), with Flower's venv.
"$(scripts/flower-venv.sh)/bin/python" -m unittest discover -s flower/tests
cargo test --release --features mpi "$@"
# The Python package: its wheel, a fresh install, pytest against dp_accounting.
scripts/python-test.sh
