//! The PLD and PRV accountants against dp_accounting 0.6.0 and prv_accountant 0.2.0
//! (tests/data/accounting, provenance in its README), and against our own RDP accountant.

use std::collections::BTreeMap;

use dptrain::privacy::pld::{DEFAULT_DISCRETIZATION_INTERVAL, ledger_pld};
use dptrain::privacy::{Ledger, PrivacyEvent};

use crate::support::{epsilon, rows};

/// The acceptance tolerance: 1% relative or 0.01 absolute.
fn close(ours: f64, reference: f64) -> bool {
    (ours - reference).abs() <= 0.01 || (ours - reference).abs() <= 0.01 * reference.abs()
}

fn single(q: f64, sigma: f64, steps: u64) -> Ledger {
    let mut ledger = Ledger::new();
    ledger.push(PrivacyEvent::new(q, sigma, steps).unwrap());
    ledger
}

#[test]
fn pld_epsilon_matches_dp_accounting_vectors() {
    let table = rows("accounting/pld_epsilon.csv");
    // One composition per (q, σ, steps): both δ rows read the same distribution.
    let mut cases: BTreeMap<(u64, u64, u64), Vec<(f64, f64)>> = BTreeMap::new();
    for row in &table {
        let key = (
            row.f64("q").to_bits(),
            row.f64("noise_multiplier").to_bits(),
            row.u64("steps"),
        );
        cases
            .entry(key)
            .or_default()
            .push((row.f64("delta"), row.f64("epsilon_pld")));
    }
    let mut worst = 0.0f64;
    let mut failures = Vec::new();
    for ((q, sigma, steps), expected) in &cases {
        let (q, sigma) = (f64::from_bits(*q), f64::from_bits(*sigma));
        let start = std::time::Instant::now();
        let pld = ledger_pld(&single(q, sigma, *steps), DEFAULT_DISCRETIZATION_INTERVAL).unwrap();
        for &(delta, reference) in expected {
            let ours = pld.epsilon(delta).unwrap();
            let error = (ours.epsilon - reference).abs() / reference.abs().max(1.0);
            worst = worst.max(error);
            if !close(ours.epsilon, reference) {
                failures.push(format!("q={q} σ={sigma} steps={steps} δ={delta}: {} vs {reference} (remove {}, add {})", ours.epsilon, ours.epsilon_remove, ours.epsilon_add));
            }
            // Never above our RDP ε beyond the discretisation slack.
            let rdp = epsilon(q, sigma, *steps, delta);
            if ours.epsilon > rdp + 0.01 {
                failures.push(format!(
                    "q={q} σ={sigma} steps={steps} δ={delta}: PLD {} above RDP {rdp}",
                    ours.epsilon
                ));
            }
        }
        eprintln!(
            "q={q} σ={sigma} steps={steps}: {:.2}s, {} points",
            start.elapsed().as_secs_f64(),
            pld.remove.probs.len()
        );
    }
    eprintln!(
        "pld_epsilon.csv: {} rows, worst error {worst:e}",
        table.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
