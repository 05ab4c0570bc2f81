"""dptrain.accounting's RDP against dp_accounting 0.6.0, computed live in this process on
200 random (q, σ, steps, δ) settings: through floats, through a dp_accounting event, through
a Ledger and through an incremental Accountant."""

from __future__ import annotations

import math
import random

import dp_accounting
import pytest
from dp_accounting import rdp

import dptrain.accounting as acc
from conftest import close, vectors

# Same orders, same formulas: only rounding differs. The absolute floor is for ε near 1e-4,
# where ε is a difference of terms near 1e-3 at order 1024: there 1e-9 relative is below the
# rounding of those terms (measured: 1.2e-9 relative, 2.4e-13 absolute).
RELATIVE = 1e-9
ABSOLUTE = 1e-12


def settings(count: int, seed: int) -> list[tuple[float, float, int, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        q = 10 ** rng.uniform(-4, 0)
        sigma = 10 ** rng.uniform(math.log10(0.5), 1)
        steps = int(10 ** rng.uniform(0, 5))
        delta = 10 ** rng.uniform(-10, -3)
        out.append((q, sigma, max(steps, 1), delta))
    return out


def dp_event(q: float, sigma: float, steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


def reference(event: dp_accounting.DpEvent, delta: float) -> tuple[float, float]:
    accountant = rdp.RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon_and_optimal_order(delta)


def test_200_random_settings_agree_with_dp_accounting() -> None:
    failures = []
    worst = 0.0
    for q, sigma, steps, delta in settings(200, seed=18):
        event = dp_event(q, sigma, steps)
        ref, order = reference(event, delta)
        details = acc.account(q, sigma, steps, delta=delta)
        ours = {
            "floats": acc.epsilon(q, sigma, steps, delta=delta),
            "event": acc.epsilon(events=event, delta=delta),
            "ledger": acc.epsilon(events=acc.Ledger([(q, sigma, steps)]), delta=delta),
            "account": details["epsilon"],
            "accountant": acc.Accountant().compose(event).get_epsilon(delta),
        }
        label = f"q={q!r} σ={sigma!r} steps={steps} δ={delta!r}"
        for how, value in ours.items():
            if not close(value, ref, RELATIVE, ABSOLUTE):
                failures.append(f"{label} ({how}): {value!r} vs dp_accounting {ref!r}")
        # One code path: every route gives the same float, bit for bit.
        assert len({v for v in ours.values()}) == 1, (label, ours)
        if details["order"] != order:
            failures.append(f"{label}: best order {details['order']} vs {order}")
        worst = max(worst, abs(ours["floats"] - ref) / ref if ref else 0.0)
    print(f"worst relative difference {worst:.3e}")
    assert not failures, "\n".join(failures)


def test_delta_at_epsilon_agrees_with_dp_accounting() -> None:
    for q, sigma, steps, _ in settings(40, seed=5):
        event = dp_event(q, sigma, steps)
        accountant = rdp.RdpAccountant()
        accountant.compose(event)
        for epsilon in (0.5, 2.0, 8.0):
            ref = accountant.get_delta(epsilon)
            ours = acc.delta(q, sigma, steps, epsilon=epsilon)
            assert close(ours, ref, 1e-8, 1e-300), (q, sigma, steps, epsilon, ours, ref)


def test_a_2000_block_schedule_as_a_composed_event() -> None:
    # heterogeneous.csv case ii: σ_t = 1.5·0.999^t for 2000 steps at q = 256/60000, one
    # block per step, as dp_accounting composes it (the reference vector) and live.
    (row,) = [
        r
        for r in vectors("heterogeneous.csv")
        if r["case"] == "ii_exponential_decay" and r["accountant"] == "rdp"
    ]
    q = 256 / 60000
    parts = [
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(1.5 * 0.999**t))
        for t in range(int(row["steps"]))
    ]
    event = dp_accounting.ComposedDpEvent(parts)
    delta = float(row["delta"])
    ours = acc.account(events=event, delta=delta)
    assert close(ours["epsilon"], float(row["epsilon"]), 1e-8), ours
    assert ours["order"] == float(row["best_order"])
    assert ours["steps"] == 2000
    ledger = acc.from_dp_event(event)
    assert ledger.steps == 2000 and len(ledger) == 2000
    # Live on the first 50 blocks (dp_accounting needs ~30 ms a block).
    head = dp_accounting.ComposedDpEvent(parts[:50])
    live, order = reference(head, delta)
    assert close(acc.epsilon(events=head, delta=delta), live, RELATIVE, ABSOLUTE)
    assert acc.account(events=head, delta=delta)["order"] == order


def test_nested_events_compose_like_dp_accounting() -> None:
    g = dp_accounting.GaussianDpEvent
    p = dp_accounting.PoissonSampledDpEvent
    s = dp_accounting.SelfComposedDpEvent
    c = dp_accounting.ComposedDpEvent
    event = c(
        [
            s(c([p(0.01, g(1.2)), dp_accounting.NoOpDpEvent(), p(0.02, g(0.9))]), 300),
            g(5.0),
            s(s(p(0.001, g(0.7)), 10), 20),
        ]
    )
    ref, _ = reference(event, 1e-6)
    assert close(acc.epsilon(events=event, delta=1e-6), ref, RELATIVE, ABSOLUTE)
    # Composed one part at a time, and as count, on an incremental accountant.
    a = acc.Accountant()
    for part in event.events:
        a.compose(part)
    assert close(a.get_epsilon(1e-6), ref, RELATIVE, ABSOLUTE)
    b = acc.Accountant().compose(p(0.01, g(1.2)), 1000)
    assert b.ledger == acc.Ledger([(0.01, 1.2, 1000)])


def test_a_ledger_pickles_with_every_column() -> None:
    import pickle

    ledger = acc.Ledger.from_csv(
        "sample_rate,noise_multiplier,steps,mechanism\n0.01,1.1,100,gaussian\n"
        "0.02,0.9,5,discrete_gaussian\n"
    )
    back = pickle.loads(pickle.dumps(ledger))
    assert back == ledger and back.to_json() == ledger.to_json()


def test_an_accountant_pickles_to_the_same_state() -> None:
    import pickle

    for kind in ("rdp", "pld", "prv"):
        a = acc.Accountant(kind, eps_error=0.05)
        a.compose_steps(0.01, 1.1, 300)
        a.compose_steps(0.02, 0.9, 7)
        b = pickle.loads(pickle.dumps(a))
        assert b.accountant == kind and b.ledger == a.ledger
        assert b.get_epsilon(1e-5) == a.get_epsilon(1e-5)
        b.compose_steps(0.01, 1.1, 1)
        assert b.ledger != a.ledger


def test_a_ledger_round_trips_through_dp_accounting_events() -> None:
    ledger = acc.Ledger([(0.01, 1.1, 100), (0.02, 0.9, 5), (1.0, 3.0, 1)])
    event = acc.to_dp_event(ledger)
    assert isinstance(event, dp_accounting.ComposedDpEvent)
    assert acc.from_dp_event(event) == ledger
    ref, _ = reference(event, 1e-5)
    assert close(acc.epsilon(events=ledger, delta=1e-5), ref, RELATIVE, ABSOLUTE)


@pytest.mark.parametrize("conversion", ["improved", "classic"])
def test_epsilon_is_the_cli_s(conversion: str) -> None:
    import json
    import subprocess

    from conftest import BIN

    args = ["--sample-rate", "0.004", "--noise-multiplier", "1.1", "--steps", "5000"]
    done = subprocess.run(
        [str(BIN), "--json", "account", *args, "--delta", "1e-5", "--conversion", conversion],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert acc.account(0.004, 1.1, 5000, delta=1e-5, conversion=conversion) == json.loads(
        done.stdout
    )
