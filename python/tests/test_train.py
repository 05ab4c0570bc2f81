"""dptrain.train: the command line's training run, from Python."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

import dptrain
from conftest import BIN, REPO

CONFIG = REPO / "configs" / "adult-logreg-eps1.toml"


def test_train_returns_the_summary_of_the_same_run_as_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the config's data paths are relative, as for the CLI
    before = signal.getsignal(signal.SIGINT)
    summary = dptrain.train(CONFIG, out=tmp_path / "py", training__epochs=1)
    # Python's Ctrl-C handler is back after the run.
    assert signal.getsignal(signal.SIGINT) is before
    on_disk = json.loads((tmp_path / "py" / "summary.json").read_text())
    assert summary == on_disk
    assert summary["private"] is True and 0 < summary["epsilon"] <= 1.0
    assert summary["accountant"] == "pld"
    subprocess.run(
        [str(BIN), "--quiet", "train", str(CONFIG), "--set", "training.epochs=1",
         "--out", str(tmp_path / "cli")],
        check=True, cwd=REPO, timeout=300,
    )
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    # The same seed gives the same run: every figure but the clock's.
    for key in ("epsilon", "delta", "noise_multiplier", "steps", "test_accuracy", "test_loss"):
        assert summary[key] == cli[key], key
    assert (tmp_path / "py" / "model.safetensors").read_bytes() == (
        tmp_path / "cli" / "model.safetensors"
    ).read_bytes()
    assert (tmp_path / "py" / "report.html").is_file()


def test_overrides_remove_keys_and_take_toml_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    summary = dptrain.train(
        CONFIG,
        out=tmp_path / "fixed",
        set=["training.epochs=1"],
        **{"privacy.target_epsilon": None, "privacy.noise_multiplier": 2.0},
    )
    assert summary["noise_multiplier"] == 2.0
    with pytest.raises(ValueError, match="both"):
        dptrain.train(CONFIG, out=tmp_path / "both", privacy__noise_multiplier=2.0)
    assert not (tmp_path / "both").exists()


def test_ctrl_c_checkpoints_raises_keyboard_interrupt_and_gives_python_its_handler_back(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys
    import time

    run = tmp_path / "run"
    script = f"""
import signal, dptrain
try:
    dptrain.train({str(REPO / "configs" / "quickstart.toml")!r}, out={str(run)!r})
except KeyboardInterrupt as err:
    print("interrupted:", err, flush=True)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    try:
        signal.raise_signal(signal.SIGINT)
    except KeyboardInterrupt:
        print("python's handler is back", flush=True)
else:
    print("finished", flush=True)
"""
    child = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        # The first epoch's checkpoint: training is under way (bounded wait).
        deadline = time.monotonic() + 120
        while not (run / "checkpoint").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 0, err
    assert "interrupted: interrupted after step" in out, out
    assert f"--resume {run}" in out
    assert "python's handler is back" in out
    # No report of an unfinished run; the checkpoint to continue from.
    assert not (run / "summary.json").exists()
    assert (run / "checkpoint").is_dir()


def test_evaluate_and_predict_are_the_cli_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the run's config names its data relative to the repository
    run = REPO / "reports" / "examples" / "quickstart-cnn"
    images = REPO / "datasets" / "mnist" / "t10k-images-idx3-ubyte.gz"
    labels = REPO / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    evaluation = dptrain.evaluate(run)
    assert evaluation["reproduces_summary"] is True
    summary = json.loads((run / "summary.json").read_text())
    assert evaluation["accuracy"] == summary["test_accuracy"]
    cli = subprocess.run(
        [str(BIN), "--json", "evaluate", str(run)], capture_output=True, text=True,
        check=True, timeout=300, cwd=REPO,
    )
    assert evaluation == json.loads(cli.stdout)
    out = tmp_path / "predictions.csv"
    predicted = dptrain.predict(run, images, out=out, labels=labels)
    assert predicted["rows"] == 10_000 and predicted["written"] == str(out)
    assert predicted["accuracy"] == summary["test_accuracy"]
    assert out.read_text().splitlines()[0].startswith("index,predicted,prob_0")


def test_evaluate_and_predict_refuse_bad_input_as_the_cli_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conftest import cli_error

    monkeypatch.chdir(REPO)

    with pytest.raises(FileNotFoundError) as err:
        dptrain.evaluate(tmp_path / "nothing")
    assert str(err.value) == cli_error("evaluate", str(tmp_path / "nothing"))
    run = REPO / "reports" / "examples" / "quickstart-cnn"
    labels = REPO / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    out = tmp_path / "p.csv"
    with pytest.raises(ValueError) as err:
        dptrain.predict(run, labels, out=out)  # labels given as images
    assert str(err.value) == cli_error("predict", str(run), str(labels), "--out", str(out))
    assert not out.exists()
    with pytest.raises(TypeError):
        dptrain.evaluate(run, skip_rows="2")
    with pytest.raises(TypeError):
        dptrain.predict(run, 42)
