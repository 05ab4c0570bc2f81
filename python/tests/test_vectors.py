"""dptrain.accounting against the reference vectors the Rust tests use (tests/data/accounting:
dp_accounting 0.6.0 and prv_accountant 0.2.0), and PLD against dp_accounting live."""

from __future__ import annotations

import random
from collections import defaultdict

import dp_accounting
from dp_accounting import pld

import dptrain.accounting as acc
from conftest import close, vectors


def test_rdp_vectors() -> None:
    rows = vectors("rdp_epsilon.csv")
    assert len(rows) == 384
    for row in rows:
        q, sigma = float(row["q"]), float(row["noise_multiplier"])
        steps, delta = int(row["steps"]), float(row["delta"])
        out = acc.account(q, sigma, steps, delta=delta)
        assert close(out["epsilon"], float(row["epsilon_rdp"]), 1e-8), (row, out)
        assert out["order"] == float(row["best_order"]), (row, out)


def test_calibration_vectors() -> None:
    for row in vectors("calibration.csv"):
        q, steps, delta = float(row["q"]), int(row["steps"]), float(row["delta"])
        target = float(row["target_epsilon"])
        c = acc.calibrate(target, q, steps, delta=delta)
        assert close(c.noise_multiplier, float(row["noise_multiplier"]), 1e-4), (row, c)
        assert c.epsilon <= target and c.delta == delta
        # The calibrated σ accounts to the ε it reports.
        assert acc.epsilon(q, c.noise_multiplier, steps, delta=delta) == c.epsilon


def test_known_published_values() -> None:
    for row in vectors("known_values.csv"):
        q, sigma = float(row["q"]), float(row["noise_multiplier"])
        steps, delta = int(row["steps"]), float(row["delta"])
        assert close(acc.epsilon(q, sigma, steps, delta=delta), float(row["epsilon_rdp"]), 1e-8)


def grid_cases(name: str) -> dict[tuple[float, float, int], list[dict[str, str]]]:
    """The rows of NAME with q < 1 and at most 1,000 steps, by setting: the bindings pass the
    settings through (the Rust tests check every row of these files)."""
    cases: dict[tuple[float, float, int], list[dict[str, str]]] = defaultdict(list)
    for row in vectors(name):
        key = (float(row["q"]), float(row["noise_multiplier"]), int(row["steps"]))
        if key[0] < 1 and key[2] <= 1_000:
            cases[key].append(row)
    return cases


def test_pld_vectors() -> None:
    cases = grid_cases("pld_epsilon.csv")
    assert len(cases) >= 30
    for (q, sigma, steps), rows in cases.items():
        accountant = acc.Accountant("pld")
        accountant.compose_steps(q, sigma, steps)
        for row in rows:
            ours = accountant.epsilon(float(row["delta"]))
            ref = float(row["epsilon_pld"])
            # The Rust tests' tolerance (tests/it/accounting_pld.rs): 1% or 0.01.
            assert abs(ours - ref) <= max(0.01, 0.01 * ref), (row, ours)


def test_prv_vectors() -> None:
    cases = grid_cases("prv_epsilon.csv")
    assert len(cases) >= 30
    for (q, sigma, steps), rows in cases.items():
        for row in rows:
            delta = float(row["delta"])
            eps_error = float(row["eps_error"])
            out = acc.account(
                q,
                sigma,
                steps,
                delta=delta,
                accountant="prv",
                eps_error=eps_error,
                delta_error=float(row["delta_error"]),
            )
            assert out["eps_low"] <= out["eps_estimate"] <= out["eps_upper"] == out["epsilon"]
            estimate = float(row["eps_estimate"])
            assert abs(out["eps_estimate"] - estimate) <= eps_error, (row, out)
            assert out["eps_low"] <= estimate <= out["eps_upper"], (row, out)


def test_pld_agrees_with_dp_accounting_live() -> None:
    rng = random.Random(11)
    failures = []
    for _ in range(12):
        q = 10 ** rng.uniform(-3, -0.5)
        sigma = 10 ** rng.uniform(-0.2, 0.6)
        steps = int(10 ** rng.uniform(0, 3))
        delta = 10 ** rng.uniform(-8, -4)
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
        reference = pld.PLDAccountant()
        reference.compose(event)
        ref = reference.get_epsilon(delta)
        ours = acc.epsilon(events=event, delta=delta, accountant="pld")
        if not close(ours, ref, 1e-6, 1e-9):
            failures.append(f"q={q} σ={sigma} steps={steps} δ={delta}: {ours} vs {ref}")
        back = acc.delta(events=event, epsilon=ours, accountant="pld")
        ref_back = reference.get_delta(ours)
        if not close(back, ref_back, 1e-6, 1e-15):
            failures.append(f"δ at ε={ours}: {back} vs {ref_back}")
    assert not failures, "\n".join(failures)


def test_the_three_accountants_order_as_they_should() -> None:
    # RDP's conversion is looser than the PLD's; PRV's upper bound is above the PLD's ε by at
    # most its error; on the MNIST DP-SGD setting of the README.
    q, sigma, steps, delta = 256 / 60000, 1.1, 14063, 1e-5
    rdp = acc.epsilon(q, sigma, steps, delta=delta)
    pld_eps = acc.epsilon(q, sigma, steps, delta=delta, accountant="pld")
    prv = acc.account(q, sigma, steps, delta=delta, accountant="prv")
    assert pld_eps < rdp
    assert prv["eps_low"] <= pld_eps + 1e-3 and prv["eps_upper"] >= pld_eps - 0.02
    assert acc.epsilon(
        epochs=60, dataset_size=60000, batch_size=256, noise_multiplier=sigma, delta=delta
    ) == rdp
