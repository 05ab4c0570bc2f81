"""dptrain: differential privacy for machine learning, from Rust.

- :mod:`dptrain.accounting`: ε and δ of DP-SGD under the RDP, PLD and PRV accountants,
  noise calibration, ledgers, and dp_accounting's ``DpEvent`` trees.
- :func:`train`: a whole private training run from a config file, as ``dptrain train``.
- :func:`evaluate` and :func:`predict`: a finished run's model used again, as
  ``dptrain evaluate`` and ``dptrain predict``.

Bad values raise ``ValueError`` with the command line's message; wrong types raise
``TypeError``.
"""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from typing import Any

# candle's worker pool must not spin between ops on few cores (dptrain::runtime); set before
# the extension starts any thread, unless the caller chose a value.
os.environ.setdefault("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0")

from . import _dptrain  # noqa: E402
from . import accounting  # noqa: E402

__version__: str = _dptrain.__version__

__all__ = ["__version__", "accounting", "evaluate", "predict", "train"]


def _toml_value(value: Any, key: str) -> str:
    """``value`` as a TOML literal for ``--set key=…`` (None removes the key)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 'inf' and '-inf' are TOML too
    if isinstance(value, (str, os.PathLike)):
        # A JSON string is a TOML basic string (the escapes are the same).
        return json.dumps(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, key) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))} = {_toml_value(v, key)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }"
    raise TypeError(
        f"override {key} must be a bool, int, float, str, list, dict or None, "
        f"not {type(value).__name__}"
    )


def train(
    config_path: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    resume: str | os.PathLike[str] | None = None,
    quiet: bool = True,
    set: list[str] | tuple[str, ...] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """Trains the run of ``config_path`` and returns its summary.json as a dict.

    The same as ``dptrain train CONFIG``: the run directory (model, ledger, privacy
    statement, report.html) goes to ``out`` (default ``reports/<name>``, relative to the
    current directory, as are the config's data paths); ``resume`` continues an
    interrupted run from its checkpoint.

    Overrides are config keys: ``train(cfg, privacy__target_epsilon=1.0)`` or
    ``train(cfg, **{"privacy.target_epsilon": 1.0})``; a double underscore stands for a
    dot. None removes a key (``privacy__target_epsilon=None`` with
    ``privacy__noise_multiplier=1.1`` switches a run to a fixed σ). ``set`` takes the
    command line's ``KEY=VALUE`` strings as they are.

    A Ctrl-C checkpoints after the current step and raises ``KeyboardInterrupt`` naming
    the checkpoint. The GIL is released while training.
    """
    if not isinstance(quiet, bool):
        raise TypeError(f"quiet must be a bool, not {type(quiet).__name__}")
    if isinstance(set, str):
        raise TypeError("set must be a list of 'KEY=VALUE' strings, not one str")
    sets = [str(s) for s in set]
    for key, value in overrides.items():
        dotted = key.replace("__", ".")
        sets.append(f"{dotted}={_toml_value(value, dotted)}")
    config = os.fspath(config_path)
    main = threading.current_thread() is threading.main_thread()
    # The run installs its own Ctrl-C handler (checkpoint, then stop); Python's comes back.
    saved = signal.getsignal(signal.SIGINT) if main else None
    try:
        return _dptrain.train(
            config,
            sets,
            None if out is None else os.fspath(out),
            None if resume is None else os.fspath(resume),
            quiet,
        )
    finally:
        if main and saved is not None:
            signal.signal(signal.SIGINT, saved)


def _path(value: str | os.PathLike[str] | None, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    return os.fspath(value)


def _rows(skip_rows: int) -> int:
    if isinstance(skip_rows, bool) or not isinstance(skip_rows, int):
        raise TypeError(f"skip_rows must be an int, not {type(skip_rows).__name__}")
    if skip_rows < 0:
        raise ValueError(f"invalid skip_rows = {skip_rows}: expected a whole number at least 0")
    return skip_rows


def evaluate(
    run_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | None = None,
    skip_rows: int = 0,
) -> dict[str, Any]:
    """A finished run's model (rebuilt from its config.toml, weights loaded strictly) on its
    test split, or on ``data`` (another config's test split, or a CSV file of the run's
    schema, ``skip_rows`` lines skipped first), as ``dptrain --json evaluate``: accuracy,
    loss, confusion matrix, AUC for two classes, and on its own split whether it reproduces
    summary.json."""
    return _dptrain.evaluate(_path(run_dir, "run_dir"), _path(data, "data"), _rows(skip_rows))


def predict(
    run_dir: str | os.PathLike[str],
    input: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    skip_rows: int = 0,
) -> dict[str, Any]:
    """Class and probabilities per row of ``input`` (IDX images, or a CSV table with or
    without its label column) through the run's own preprocessing, written as CSV to
    ``out`` (default RUN_DIR/predictions.csv), as ``dptrain --json predict``; with IDX
    ``labels``, also the accuracy."""
    return _dptrain.predict(
        _path(run_dir, "run_dir"),
        _path(input, "input"),
        _path(out, "out"),
        _path(labels, "labels"),
        _rows(skip_rows),
    )
