"""dp_accounting's PLDAccountant and prv_accountant's PRVAccountant on the cases of
benches/pld_prv.rs, timed the same way (one JSON object per case).

    python benches/pld_prv_bench.py [--quick]

Needs `pip install dp-accounting==0.6.0 prv-accountant==0.2.0`.
"""

import argparse
import json
import math
import statistics
import time

from dp_accounting import dp_event
from dp_accounting.pld import PLDAccountant
from prv_accountant import PRVAccountant
from prv_accountant.privacy_random_variables import PoissonSubsampledGaussianMechanism

Q = 256 / 60000
DELTA = 1e-5
EPS_ERROR = 0.01
DELTA_ERROR = 1e-9


def step(sigma):
    return dp_event.PoissonSampledDpEvent(Q, dp_event.GaussianDpEvent(sigma))


def sigmas(blocks):
    return [1.5 * math.exp(-t / blocks) for t in range(blocks)]


def pld_homogeneous():
    accountant = PLDAccountant()
    accountant.compose(dp_event.SelfComposedDpEvent(step(1.1), 10_000))
    return accountant.get_epsilon(DELTA)


def pld_schedule(blocks=1000):
    def run():
        accountant = PLDAccountant()
        for sigma in sigmas(blocks):
            accountant.compose(step(sigma))
        return accountant.get_epsilon(DELTA)

    return run


def prv_homogeneous():
    accountant = PRVAccountant(
        prvs=[PoissonSubsampledGaussianMechanism(sampling_probability=Q, noise_multiplier=1.1)],
        max_self_compositions=[10_000],
        eps_error=EPS_ERROR,
        delta_error=DELTA_ERROR,
    )
    _, _, upper = accountant.compute_epsilon(delta=DELTA, num_self_compositions=[10_000])
    return upper


def prv_schedule(blocks=1000):
    return lambda: prv_schedule_run(blocks)


def prv_schedule_run(blocks):
    prvs = [
        PoissonSubsampledGaussianMechanism(sampling_probability=Q, noise_multiplier=s)
        for s in sigmas(blocks)
    ]
    accountant = PRVAccountant(
        prvs=prvs,
        max_self_compositions=[1] * len(prvs),
        eps_error=EPS_ERROR,
        delta_error=DELTA_ERROR,
    )
    _, _, upper = accountant.compute_epsilon(
        delta=DELTA, num_self_compositions=[1] * len(prvs)
    )
    return upper


def time_case(name, implementation, run, repeats):
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
                "implementation": implementation,
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
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--blocks",
        type=int,
        default=100,
        help="blocks of the per-step schedules (1000 is the case; dp_accounting takes more "
        "than 10 minutes on it, so the default times 100 and the script extrapolates x10, "
        "which underestimates the reference: its per-step cost grows with the PLD)",
    )
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    suffix = "1e3" if args.blocks == 1000 else f"{args.blocks}_blocks"
    time_case("pld_homogeneous_1e4", "dp_accounting", pld_homogeneous, repeats)
    time_case(f"pld_schedule_{suffix}", "dp_accounting", pld_schedule(args.blocks), 1)
    time_case("prv_homogeneous_1e4", "prv_accountant", prv_homogeneous, repeats)
    time_case(f"prv_schedule_{suffix}", "prv_accountant", prv_schedule(args.blocks), 1)


if __name__ == "__main__":
    main()
