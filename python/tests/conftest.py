"""Shared helpers of the Python package's tests: the repository, its reference vectors, and
the command-line binary whose messages the package must repeat."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(os.environ.get("DPTRAIN_REPO", Path(__file__).resolve().parents[2]))
BIN = Path(os.environ.get("DPTRAIN_BIN", REPO / "target" / "release" / "dptrain"))

# dp_accounting logs a warning for every order whose series did not converge.
logging.getLogger("absl").setLevel(logging.ERROR)


def vectors(name: str) -> list[dict[str, str]]:
    """The rows of tests/data/accounting/NAME (the Rust tests' reference files)."""
    with open(REPO / "tests" / "data" / "accounting" / name, newline="") as f:
        return list(csv.DictReader(f))


def cli_error(*args: str) -> str:
    """What `dptrain ARGS` prints as its error, without the `error: ` prefix; the command
    must fail."""
    if not BIN.is_file():
        pytest.fail(f"{BIN} is missing: build it (cargo build --release) or set DPTRAIN_BIN")
    done = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, f"dptrain {' '.join(args)} succeeded: {done.stdout}"
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), done.stderr
    return line.removeprefix("error: ")


def close(ours: float, reference: float, relative: float, absolute: float = 0.0) -> bool:
    """|ours − reference| ≤ relative·|reference| + absolute."""
    return abs(ours - reference) <= relative * abs(reference) + absolute
