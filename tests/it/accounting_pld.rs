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

/// The schedule of a heterogeneous.csv case, rebuilt from its rules (step t, 0-based).
fn schedule(case: &str, steps: u64) -> Vec<(f64, f64)> {
    (0..steps)
        .map(|t| {
            let tf = t as f64;
            match case {
                "i_linear_decay" => (0.01, 2.0 + (0.8 - 2.0) * tf / 999.0),
                "ii_exponential_decay" => (256.0 / 60000.0, 1.5 * 0.999f64.powf(tf)),
                "iii_step_schedule" => (0.02, if t < 500 { 1.5 } else { 1.0 }),
                "iv_two_sampling_rates" => match t < 300 {
                    true => (0.01, 1.0),
                    false => (0.05, 2.0),
                },
                other => panic!("unknown case {other}"),
            }
        })
        .collect()
}

/// The ledger of a schedule: one block per step, or runs of equal steps merged.
fn ledger_of(schedule: &[(f64, f64)]) -> Ledger {
    let mut ledger = Ledger::new();
    for &(q, sigma) in schedule {
        ledger.push(PrivacyEvent::new(q, sigma, 1).unwrap());
    }
    ledger
}

#[test]
fn pld_epsilon_matches_dp_accounting_heterogeneous_cases() {
    let mut checked = 0;
    for row in rows("accounting/heterogeneous.csv") {
        if row.text("accountant") != "pld" {
            continue;
        }
        let case = row.text("case");
        let steps = row.u64("steps");
        let plan = schedule(case, steps);
        // The rebuilt schedule is the file's: its sums agree.
        let sum_q: f64 = plan.iter().map(|s| s.0).sum();
        let sum_sigma: f64 = plan.iter().map(|s| s.1).sum();
        assert!((sum_q - row.f64("sum_q")).abs() < 1e-9 * sum_q, "{case}");
        assert!(
            (sum_sigma - row.f64("sum_sigma")).abs() < 1e-9 * sum_sigma,
            "{case}"
        );
        let interval = row.f64("value_discretization_interval");
        let delta = row.f64("delta");
        let reference = row.f64("epsilon");
        let ours = ledger_pld(&ledger_of(&plan), interval)
            .unwrap()
            .epsilon(delta)
            .unwrap();
        assert!(
            close(ours.epsilon, reference),
            "{case}: {} vs {reference}",
            ours.epsilon
        );
        // Blocks in any order: the reversed schedule spends the same.
        let mut reversed = plan.clone();
        reversed.reverse();
        let back = ledger_pld(&ledger_of(&reversed), interval)
            .unwrap()
            .epsilon(delta)
            .unwrap();
        assert!(
            (back.epsilon - ours.epsilon).abs() <= 1e-9 * ours.epsilon,
            "{case}: reversed {} vs {}",
            back.epsilon,
            ours.epsilon
        );
        eprintln!("{case}: ε {} vs dp_accounting {reference}", ours.epsilon);
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn prv_bounds_match_prv_accountant_vectors_and_bracket_the_pld() {
    use dptrain::privacy::prv::ledger_prv;
    let table = rows("accounting/prv_epsilon.csv");
    let mut cases: BTreeMap<(u64, u64, u64), Vec<&crate::support::Row>> = BTreeMap::new();
    for row in &table {
        let key = (
            row.f64("q").to_bits(),
            row.f64("noise_multiplier").to_bits(),
            row.u64("steps"),
        );
        cases.entry(key).or_default().push(row);
    }
    let mut failures = Vec::new();
    let mut worst = 0.0f64;
    let pld_reference: BTreeMap<(u64, u64, u64, u64), f64> = rows("accounting/pld_epsilon.csv")
        .iter()
        .map(|r| {
            let key = (
                r.f64("q").to_bits(),
                r.f64("noise_multiplier").to_bits(),
                r.u64("steps"),
                r.f64("delta").to_bits(),
            );
            (key, r.f64("epsilon_pld"))
        })
        .collect();
    let mut exceptions = 0;
    for ((q, sigma, steps), rows) in &cases {
        let (q, sigma) = (f64::from_bits(*q), f64::from_bits(*sigma));
        let start = std::time::Instant::now();
        let eps_error = rows[0].f64("eps_error");
        let delta_error = rows[0].f64("delta_error");
        let ledger = single(q, sigma, *steps);
        let prv = ledger_prv(&ledger, eps_error, delta_error).unwrap();
        let pld = ledger_pld(&ledger, DEFAULT_DISCRETIZATION_INTERVAL).unwrap();
        for row in rows {
            let delta = row.f64("delta");
            let ours = prv.epsilon(delta).unwrap();
            let (low, estimate, upper) = (
                row.f64("eps_low"),
                row.f64("eps_estimate"),
                row.f64("eps_upper"),
            );
            let label = format!("q={q} σ={sigma} steps={steps} δ={delta}");
            // A known defect of the reference: at q = 0.01, σ = 0.5, 10,000 steps,
            // prv_accountant's eps_low (43.3678 at δ 1e-5) is above dp_accounting's
            // pessimistic PLD (43.3665), an upper bound, so its interval misses the true ε.
            // There, our estimate must agree with dp_accounting's PLD instead.
            if (q, sigma, *steps) == (0.01, 0.5, 10000) {
                let key = (q.to_bits(), sigma.to_bits(), *steps, delta.to_bits());
                let pld_value = pld_reference[&key];
                assert!(
                    (ours.eps_estimate - pld_value).abs() < 0.001,
                    "{label}: estimate {} vs dp_accounting's PLD {pld_value}",
                    ours.eps_estimate
                );
                assert!(
                    ours.eps_low <= pld_value && pld_value <= ours.eps_upper,
                    "{label}"
                );
                // And the reference is still within twice its error of ours.
                assert!(
                    (ours.eps_estimate - estimate).abs() < 2.0 * eps_error,
                    "{label}"
                );
                exceptions += 1;
                continue;
            }
            worst = worst.max((ours.eps_estimate - estimate).abs());
            if (ours.eps_estimate - estimate).abs() > eps_error {
                failures.push(format!(
                    "{label}: estimate {} vs {estimate}",
                    ours.eps_estimate
                ));
            }
            if ours.eps_low > ours.eps_upper || ours.eps_low.is_nan() {
                failures.push(format!(
                    "{label}: low {} > upper {}",
                    ours.eps_low, ours.eps_upper
                ));
            }
            if !(ours.eps_low <= estimate && estimate <= ours.eps_upper) {
                failures.push(format!(
                    "{label}: reference {estimate} outside [{}, {}]",
                    ours.eps_low, ours.eps_upper
                ));
            }
            // The PLD is an upper bound: never below the PRV's lower bounds.
            let pld_epsilon = pld.epsilon(delta).unwrap().epsilon;
            if pld_epsilon < low || pld_epsilon < ours.eps_low {
                failures.push(format!("{label}: PLD {pld_epsilon} below eps_low {low}"));
            }
            let _ = upper;
        }
        eprintln!(
            "q={q} σ={sigma} steps={steps}: {:.2}s",
            start.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "prv_epsilon.csv: {} rows, worst estimate difference {worst:e}",
        table.len()
    );
    assert_eq!(exceptions, 2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
