"""Bad input from Python: ValueError or TypeError, with the command line's message wherever
the command line can say the same thing, and never a crash of the interpreter."""

from __future__ import annotations

import math

import dp_accounting
import pytest

import dptrain
import dptrain.accounting as acc
from conftest import REPO, cli_error

GOOD = {"sample_rate": 0.01, "noise_multiplier": 1.1, "steps": 1000, "delta": 1e-5}
FLAGS = {
    "sample_rate": "--sample-rate",
    "noise_multiplier": "--noise-multiplier",
    "steps": "--steps",
    "delta": "--delta",
}


def cli_account(*extra: str, **values: object) -> str:
    args = ["account"]
    for name, value in {**GOOD, **values}.items():
        args.append(f"{FLAGS[name]}={value}")
    return cli_error(*args, *extra)


@pytest.mark.parametrize(
    ("name", "value", "flag_value"),
    [
        ("sample_rate", 1.5, "1.5"),
        ("sample_rate", 0.0, "0"),
        ("sample_rate", -0.1, "-0.1"),
        ("sample_rate", math.nan, "NaN"),
        ("sample_rate", math.inf, "inf"),
        ("noise_multiplier", 0.0, "0"),
        ("noise_multiplier", -1.0, "-1"),
        ("noise_multiplier", math.inf, "inf"),
        ("noise_multiplier", math.nan, "NaN"),
        ("delta", 2.0, "2"),
        ("delta", 0.0, "0"),
        ("delta", math.nan, "NaN"),
        ("steps", 0, "0"),
    ],
)
def test_bad_values_raise_the_cli_s_message(name: str, value: object, flag_value: str) -> None:
    args = {**GOOD, name: value}
    delta = args.pop("delta")
    for accountant in ("rdp", "pld", "prv"):
        with pytest.raises(ValueError) as err:
            acc.epsilon(**args, delta=delta, accountant=accountant)
        expected = cli_account(f"--accountant={accountant}", **{name: flag_value})
        assert str(err.value) == expected


@pytest.mark.parametrize(
    ("python", "cli"),
    [
        (
            lambda: acc.epsilon(0.01, 1.1, 100, delta=1e-5, accountant="pld",
                                discretization_interval=0.0),
            ["--accountant=pld", "--discretization-interval=0"],
        ),
        (
            lambda: acc.epsilon(0.01, 1.1, 100, delta=1e-5, accountant="prv", eps_error=-1.0),
            ["--accountant=prv", "--eps-error=-1"],
        ),
        (
            lambda: acc.epsilon(0.01, 1.1, 100, delta=1e-10, accountant="prv"),
            ["--accountant=prv", "--delta=1e-10"],
        ),
    ],
)
def test_bad_accountant_settings_raise_the_cli_s_message(python, cli) -> None:
    with pytest.raises(ValueError) as err:
        python()
    base = {**GOOD, "steps": 100}
    if any(c.startswith("--delta=") for c in cli):
        base.pop("delta")
    flags = [f"{FLAGS[k]}={v}" for k, v in base.items()]
    assert str(err.value) == cli_error("account", *flags, *cli)


def test_delta_at_a_bad_epsilon_has_one_message_for_rdp_and_pld() -> None:
    for accountant in ("rdp", "pld"):
        with pytest.raises(ValueError) as err:
            acc.delta(0.01, 1.1, 100, epsilon=-1.0, accountant=accountant)
        assert str(err.value) == cli_error(
            "account", "--sample-rate=0.01", "--noise-multiplier=1.1", "--steps=100",
            "--epsilon=-1", f"--accountant={accountant}",
        )
        assert str(err.value) == "invalid epsilon = -1: expected a finite number at least 0"


def test_calibration_errors_are_the_cli_s() -> None:
    with pytest.raises(ValueError) as err:
        acc.calibrate(-1.0, 0.01, 100, delta=1e-5)
    assert str(err.value) == cli_error(
        "calibrate", "--target-epsilon=-1", "--sample-rate=0.01", "--steps=100", "--delta=1e-5"
    )
    with pytest.raises(ValueError) as err:  # unreachable: even σ = 1e4 spends more
        acc.calibrate(1e-6, 1.0, 100000, delta=1e-5)
    assert str(err.value) == cli_error(
        "calibrate", "--target-epsilon=1e-6", "--sample-rate=1", "--steps=100000",
        "--delta=1e-5",
    )
    assert "cannot be reached" in str(err.value)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: acc.epsilon("0.01", 1.1, 10, delta=1e-5), "sample_rate must be a number, not str"),
        (lambda: acc.epsilon(True, 1.1, 10, delta=1e-5), "sample_rate must be a number, not bool"),
        (lambda: acc.epsilon(0.01, None, 10, delta=1e-5), "needs sample_rate, noise_multiplier"),
        (lambda: acc.epsilon(0.01, [1.1], 10, delta=1e-5), "noise_multiplier must be a number"),
        (lambda: acc.epsilon(0.01, 1.1, 10.0, delta=1e-5), "steps must be an int, not float"),
        (lambda: acc.epsilon(0.01, 1.1, True, delta=1e-5), "steps must be an int, not bool"),
        (lambda: acc.epsilon(0.01, 1.1, 10, delta="1e-5"), "delta must be a number, not str"),
        (lambda: acc.epsilon(0.01, 1.1, 10, delta=1e-5, accountant=3), "accountant must be a str"),
        (lambda: acc.epsilon(events=42, delta=1e-5), "events must be a Ledger"),
        (lambda: acc.epsilon(events=[(0.1, 1.0)], delta=1e-5), "triple"),
        (lambda: acc.epsilon(0.1, 1.0, 3, events=[(0.1, 1.0, 3)], delta=1e-5), "drop sample_rate"),
        (lambda: acc.epsilon(0.1, 1.0, epochs=1, delta=1e-5), "not both"),
        (lambda: acc.epsilon(noise_multiplier=1.0, epochs=1, delta=1e-5), "go together"),
        (lambda: acc.account(0.1, 1.0, 3), "delta=D"),
        (lambda: dptrain.train(REPO / "configs" / "quickstart.toml", training__epochs=object()),
         "override training.epochs must be"),
    ],
)
def test_wrong_types_raise_type_errors(call, fragment: str) -> None:
    with pytest.raises(TypeError) as err:
        call()
    assert fragment in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: acc.epsilon(0.01, 1.1, -3, delta=1e-5),
         "invalid steps = -3: expected a whole number at least 1"),
        (lambda: acc.epsilon(0.01, 1.1, 2**70, delta=1e-5),
         f"invalid steps = {2**70}: expected a whole number at least 1"),
        (lambda: acc.epsilon(10**400, 1.1, 10, delta=1e-5),
         "invalid sample_rate = inf: expected a probability in (0, 1]"),
        (lambda: acc.epsilon(0.01, 1.1, 10, delta=1e-5, accountant="gdp"),
         "invalid accountant = gdp: expected one of rdp, pld, prv"),
        (lambda: acc.epsilon(0.01, 1.1, 10, delta=1e-5, conversion="best"),
         "invalid conversion = best: expected one of improved, classic"),
        (lambda: acc.Accountant().compose(0.5), "cannot account float"),
        (lambda: acc.Accountant("prv").delta(1.0),
         "delta() at a given epsilon works with accountant 'rdp' or 'pld'"),
        (lambda: acc.delta(0.01, 1.1, 10, epsilon=1.0, accountant="prv"),
         "delta() at a given epsilon works with accountant 'rdp' or 'pld'"),
    ],
)
def test_values_without_a_cli_twin_raise_value_errors(call, message: str) -> None:
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value).startswith(message), str(err.value)


def test_events_dptrain_cannot_account_are_refused_by_name() -> None:
    laplace = dp_accounting.LaplaceDpEvent(1.0)
    with pytest.raises(ValueError, match="cannot account LaplaceDpEvent"):
        acc.epsilon(events=laplace, delta=1e-5)
    with pytest.raises(ValueError, match="cannot account NonPrivateDpEvent"):
        acc.epsilon(
            events=dp_accounting.ComposedDpEvent([dp_accounting.NonPrivateDpEvent()]), delta=1e-5
        )
    # A sample of a sample has no proof here: the crate's Unaccountable message.
    inner = dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0))
    with pytest.raises(ValueError, match="cannot account"):
        acc.epsilon(events=dp_accounting.PoissonSampledDpEvent(0.5, inner), delta=1e-5)
    bad_count = dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(1.0), -2)
    with pytest.raises(ValueError, match=r"invalid SelfComposed.count = -2"):
        acc.epsilon(events=bad_count, delta=1e-5)
    # Nothing is composed when any part is refused.
    a = acc.Accountant()
    with pytest.raises(ValueError):
        a.compose(dp_accounting.ComposedDpEvent([inner, laplace]))
    assert a.ledger.steps == 0


def test_a_very_deep_event_tree_is_an_error_not_a_crash() -> None:
    event = dp_accounting.GaussianDpEvent(1.0)
    for _ in range(5000):
        event = dp_accounting.ComposedDpEvent([event])
    with pytest.raises(ValueError, match="nested deeper than"):
        acc.epsilon(events=event, delta=1e-5)


def test_file_errors_name_the_file() -> None:
    with pytest.raises(FileNotFoundError) as err:
        acc.Ledger.read_csv("/nonexistent/ledger.csv")
    assert "/nonexistent/ledger.csv" in str(err.value)
    with pytest.raises(ValueError) as err:
        acc.Ledger.from_csv("sample_rate,noise_multiplier,steps\n0.1,x,3\n")
    assert "<string>:line 2" in str(err.value)
    with pytest.raises(FileNotFoundError) as err:
        dptrain.train("/nonexistent/run.toml")
    assert str(err.value) == cli_error("train", "/nonexistent/run.toml")
    with pytest.raises(ValueError) as err:
        dptrain.train(REPO / "configs" / "quickstart.toml", training__epochs="many")
    assert str(err.value) == cli_error(
        "train", str(REPO / "configs" / "quickstart.toml"), "--set", 'training.epochs="many"'
    )


BAD = [None, "x", [], math.nan, math.inf, -math.inf, -1, 0, 2, 1e308, True, 10**400, object()]


def test_fuzzed_arguments_raise_value_or_type_errors() -> None:
    calls = 0
    for accountant in ("rdp", "pld"):
        for name in ("sample_rate", "noise_multiplier", "steps", "delta"):
            for value in BAD:
                args = {**GOOD, "steps": 20, name: value}
                delta = args.pop("delta")
                try:
                    eps = acc.epsilon(**args, delta=delta, accountant=accountant)
                except (TypeError, ValueError):
                    pass
                else:
                    assert isinstance(eps, float) and eps >= 0 and not math.isnan(eps)
                calls += 1
    for value in BAD:
        for position in range(3):
            args = [1.0, 0.01, 20]
            args[position] = value
            try:
                acc.calibrate(args[0], args[1], args[2], delta=1e-5)
            except (TypeError, ValueError):
                pass
            calls += 1
    assert calls == 2 * 4 * len(BAD) + 3 * len(BAD)
