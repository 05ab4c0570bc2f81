//! PLD and PRV accountant speed, timed as `benches/pld_prv_bench.py` times dp_accounting's
//! PLDAccountant and prv_accountant's PRVAccountant (run both with
//! `scripts/bench-pld-prv.sh`).
//!
//! Cases (δ = 1e-5, q = 256/60000):
//! - `pld_homogeneous_1e4`, `prv_homogeneous_1e4`: ε of 1e4 identical steps at σ = 1.1;
//! - `pld_schedule_1e3`, `prv_schedule_1e3`: ε of a per-step schedule of 1e3 one-step
//!   blocks, σ_t = 1.5·exp(−t/n) (every step a distinct σ); `*_schedule_100_blocks` the same
//!   with n = 100 (what the reference side times by default: it takes minutes).
//!
//! PLD at interval 1e-4 (dp_accounting's default); PRV with eps_error 0.01 and delta_error
//! 1e-9, reporting eps_upper. Prints one JSON object per case; `-- --quick` runs one repeat.

use std::time::Instant;

use dptrain::privacy::pld::{DEFAULT_DISCRETIZATION_INTERVAL, pld_epsilon};
use dptrain::privacy::prv::{DEFAULT_DELTA_ERROR, DEFAULT_EPS_ERROR, prv_epsilon};
use dptrain::privacy::{Ledger, PrivacyEvent};

const Q: f64 = 256.0 / 60000.0;
const DELTA: f64 = 1e-5;

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
    let repeats = if quick { 1 } else { 5 };
    let mut homogeneous = Ledger::new();
    homogeneous.push(PrivacyEvent::new(Q, 1.1, 10_000).unwrap());
    let per_step = schedule(1_000);
    let short = schedule(100);
    let interval = DEFAULT_DISCRETIZATION_INTERVAL;
    time("pld_homogeneous_1e4", repeats, || {
        pld_epsilon(&homogeneous, DELTA, interval).unwrap().epsilon
    });
    time("pld_schedule_100_blocks", repeats, || {
        pld_epsilon(&short, DELTA, interval).unwrap().epsilon
    });
    time("pld_schedule_1e3", repeats, || {
        pld_epsilon(&per_step, DELTA, interval).unwrap().epsilon
    });
    let (eps_error, delta_error) = (DEFAULT_EPS_ERROR, DEFAULT_DELTA_ERROR);
    time("prv_homogeneous_1e4", repeats, || {
        prv_epsilon(&homogeneous, DELTA, eps_error, delta_error)
            .unwrap()
            .eps_upper
    });
    time("prv_schedule_100_blocks", repeats, || {
        prv_epsilon(&short, DELTA, eps_error, delta_error)
            .unwrap()
            .eps_upper
    });
    time("prv_schedule_1e3", repeats, || {
        prv_epsilon(&per_step, DELTA, eps_error, delta_error)
            .unwrap()
            .eps_upper
    });
}
