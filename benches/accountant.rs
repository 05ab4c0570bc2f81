//! Accountant speed: the cases of issue 2, timed as dp_accounting is timed by
//! `benches/dp_accounting_bench.py` (run both with `scripts/bench-accountant.sh`).
//!
//! Cases (δ = 1e-5, q = 256/60000, dp_accounting's default orders):
//! - `homogeneous_1e5`: ε of 1e5 identical steps at σ = 1.1;
//! - `schedule_1e3`, `schedule_1e5`: ε of a per-step schedule of 1e3 / 1e5 one-step blocks,
//!   σ_t = 1.5·exp(−t/n) (exponential decay from 1.5 to 0.55: every step a distinct σ);
//! - `calibrate_1e4`: the noise multiplier for ε = 3 over 1e4 steps.
//!
//! Prints one JSON object per case: the median, min and max wall time over repeats.
//! `cargo bench --bench accountant -- --quick` runs one repeat each.

use std::time::Instant;

use dptrain::privacy::{Ledger, PrivacyEvent, RdpAccountant, calibrate_noise_multiplier};

const Q: f64 = 256.0 / 60000.0;
const DELTA: f64 = 1e-5;

/// The per-step schedule of `blocks` steps (shared with the Python side: same formula).
fn schedule(blocks: u64) -> Ledger {
    let mut ledger = Ledger::new();
    for t in 0..blocks {
        let sigma = 1.5 * (-(t as f64) / blocks as f64).exp();
        ledger.push(PrivacyEvent::new(Q, sigma, 1).unwrap());
    }
    ledger
}

fn time(name: &str, repeats: usize, mut run: impl FnMut() -> f64) {
    let mut seconds = Vec::with_capacity(repeats);
    let mut value = 0.0;
    for _ in 0..repeats {
        let start = Instant::now();
        value = run();
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    println!(
        "{{\"case\": \"{name}\", \"implementation\": \"dptrain\", \"value\": {value}, \
         \"median_s\": {}, \"min_s\": {}, \"max_s\": {}, \"repeats\": {repeats}, \
         \"threads\": {}}}",
        seconds[seconds.len() / 2],
        seconds[0],
        seconds[seconds.len() - 1],
        rayon::current_num_threads()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let repeats = if quick { 1 } else { 7 };
    // Build the default order tables once, outside the timings (dp_accounting's import
    // is not timed either).
    let _ = RdpAccountant::default();

    time("homogeneous_1e5", repeats * 3, || {
        let mut accountant = RdpAccountant::default();
        accountant
            .compose(PrivacyEvent::new(Q, 1.1, 100_000).unwrap())
            .unwrap();
        accountant.epsilon(DELTA).unwrap().epsilon
    });
    let small = schedule(1_000);
    time("schedule_1e3", repeats, || {
        let mut accountant = RdpAccountant::default();
        accountant.compose_ledger(&small).unwrap();
        accountant.epsilon(DELTA).unwrap().epsilon
    });
    let large = schedule(100_000);
    time("schedule_1e5", repeats.min(3), || {
        let mut accountant = RdpAccountant::default();
        accountant.compose_ledger(&large).unwrap();
        accountant.epsilon(DELTA).unwrap().epsilon
    });
    time("calibrate_1e4", repeats, || {
        calibrate_noise_multiplier(3.0, DELTA, Q, 10_000, &RdpAccountant::default())
            .unwrap()
            .noise_multiplier
    });
}
