"""dptrain.accounting against dp_accounting 0.6.0, in one Python process: the speed ratio
of the README's Python section.

Each case gives both libraries the same DpEvent and asks ε at δ = 1e-5. Times are medians
over repeats, after one warm-up call each (dptrain builds its order table once per process;
dp_accounting caches nothing across accountants). The ε of both sides is printed, and must
agree. Run it on an idle machine:

    python python/bench/bench_vs_dp_accounting.py [--quick]

CSV on stdout: case, dp_accounting seconds, dptrain seconds, ratio, both ε.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import dp_accounting
from dp_accounting import pld, rdp

import dptrain
import dptrain.accounting as acc

logging.getLogger("absl").setLevel(logging.ERROR)
DELTA = 1e-5
Q = 256 / 60000


def median_seconds(call: Callable[[], float], repeats: int) -> tuple[float, float]:
    value = call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        value = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def step(q: float, sigma: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))


def homogeneous(steps: int) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(step(Q, 1.1), steps)


def schedule(blocks: int) -> dp_accounting.DpEvent:
    """σ_t = 1.5·exp(−t/n), one step per block (benches/accountant.rs's schedule)."""
    return dp_accounting.ComposedDpEvent(
        [step(Q, 1.5 * math.exp(-t / blocks)) for t in range(blocks)]
    )


def reference_rdp(event: dp_accounting.DpEvent) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(DELTA)


def reference_pld(event: dp_accounting.DpEvent) -> float:
    accountant = pld.PLDAccountant()
    accountant.compose(event)
    return accountant.get_epsilon(DELTA)


def cpu_name() -> str:
    """The CPU model (the figures hold for that CPU only)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, smaller schedule")
    quick = parser.parse_args().quick
    blocks = 100 if quick else 1000
    cases = [
        (
            "rdp homogeneous 1e4 steps",
            lambda: reference_rdp(homogeneous(10_000)),
            lambda: acc.epsilon(Q, 1.1, 10_000, delta=DELTA),
            (3, 200),
        ),
        (
            f"rdp schedule {blocks} blocks (ComposedDpEvent)",
            lambda: reference_rdp(schedule(blocks)),
            lambda: acc.epsilon(events=schedule(blocks), delta=DELTA),
            (1, 20),
        ),
        (
            f"rdp schedule {blocks} blocks (Ledger)",
            lambda: reference_rdp(schedule(blocks)),
            lambda: acc.epsilon(
                events=acc.Ledger(
                    (Q, 1.5 * math.exp(-t / blocks), 1) for t in range(blocks)
                ),
                delta=DELTA,
            ),
            (1, 20),
        ),
        (
            "pld homogeneous 1e4 steps",
            lambda: reference_pld(homogeneous(10_000)),
            lambda: acc.epsilon(Q, 1.1, 10_000, delta=DELTA, accountant="pld"),
            (3, 5),
        ),
        (
            "rdp calibrate sigma for 1e4 steps to eps 3",
            lambda: dp_accounting.calibrate_dp_mechanism(
                rdp.RdpAccountant,
                lambda sigma: dp_accounting.SelfComposedDpEvent(step(Q, sigma), 10_000),
                3.0,
                DELTA,
                bracket_interval=dp_accounting.LowerEndpointAndGuess(0.1, 1.0),
            ),
            lambda: acc.calibrate(3.0, Q, 10_000, delta=DELTA).noise_multiplier,
            (1, 20),
        ),
    ]
    print(f"# {cpu_name()} ({os.cpu_count()} CPUs), Python {platform.python_version()}, "
          f"dptrain {dptrain.__version__}, dp_accounting 0.6.0")
    print("case,dp_accounting_s,dptrain_s,ratio,dp_accounting_value,dptrain_value")
    for name, theirs, ours, (their_repeats, our_repeats) in cases:
        if quick:
            their_repeats, our_repeats = 1, max(3, our_repeats // 4)
        their_s, their_value = median_seconds(theirs, their_repeats)
        our_s, our_value = median_seconds(ours, our_repeats)
        print(f"{name},{their_s:.6g},{our_s:.6g},{their_s / our_s:.0f},"
              f"{float(their_value)!r},{float(our_value)!r}", flush=True)


if __name__ == "__main__":
    main()
