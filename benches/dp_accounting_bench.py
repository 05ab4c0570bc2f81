"""dp_accounting's RdpAccountant on the cases of benches/accountant.rs, timed the same way.

Prints one JSON object per case (median, min and max wall seconds over repeats), like the
Rust benchmark. Needs `pip install dp-accounting` (0.6.0 was measured). The schedule
formula, q, delta and targets are those of benches/accountant.rs.

    python benches/dp_accounting_bench.py [--quick] [--blocks 1000,10000]
"""

import argparse
import json
import math
import statistics
import time

import dp_accounting
from dp_accounting import dp_event, mechanism_calibration
from dp_accounting.rdp import RdpAccountant

Q = 256 / 60000
DELTA = 1e-5


def step(sigma):
    return dp_event.PoissonSampledDpEvent(Q, dp_event.GaussianDpEvent(sigma))


def homogeneous():
    accountant = RdpAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(step(1.1), 100_000))
    return accountant.get_epsilon(DELTA)


def schedule(blocks):
    def run():
        accountant = RdpAccountant()
        for t in range(blocks):
            accountant.compose(step(1.5 * math.exp(-t / blocks)))
        return accountant.get_epsilon(DELTA)

    return run


def calibrate():
    return mechanism_calibration.calibrate_dp_mechanism(
        RdpAccountant,
        lambda sigma: dp_event.SelfComposedDpEvent(step(sigma), 10_000),
        target_epsilon=3.0,
        target_delta=DELTA,
    )


def time_case(name, run, repeats):
    seconds = []
    value = None
    for _ in range(repeats):
        start = time.perf_counter()
        value = run()
        seconds.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "case": name,
                "implementation": f"dp_accounting {dp_accounting.__version__}"
                if hasattr(dp_accounting, "__version__")
                else "dp_accounting",
                "value": value,
                "median_s": statistics.median(seconds),
                "min_s": min(seconds),
                "max_s": max(seconds),
                "repeats": repeats,
            }
        ),
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one repeat per case")
    parser.add_argument(
        "--blocks",
        default="1000",
        help="comma-separated schedule lengths to time (1e3 takes ~20 s; 1e5 would take ~1 h)",
    )
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    time_case("homogeneous_1e5", homogeneous, repeats)
    for blocks in (int(b) for b in args.blocks.split(",")):
        name = f"schedule_1e{round(math.log10(blocks))}"
        time_case(name, schedule(blocks), 1 if blocks > 1000 else min(repeats, 3))
    time_case("calibrate_1e4", calibrate, repeats)


if __name__ == "__main__":
    main()
