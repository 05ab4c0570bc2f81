//! RDP is an upper bound: never below the tighter PLD and PRV accountants' values.
//!
//! PLD (dp_accounting, pessimistic) and PRV (prv_accountant) are near-exact for the
//! Poisson-subsampled Gaussian; RDP composition plus conversion is looser. An RDP ε below
//! PRV's certified lower bound, or below PLD's estimate, would mean a bug in ours.

use dptrain::privacy::{Conversion, Orders, RdpAccountant};

use crate::accounting_vectors::heterogeneous_cases;
use crate::support::{epsilon, rows};

/// Above this ε, dp_accounting's PLD ε-from-δ underflows and overstates ε by 0.94-0.99
/// (README, pld_epsilon.csv); those rows are compared with that slack.
const PLD_UNDERFLOW_EPSILON: f64 = 700.0;

#[test]
fn rdp_epsilon_is_never_below_pld() {
    let mut tighter = 0;
    for row in rows("accounting/pld_epsilon.csv") {
        let (q, sigma, steps, delta) = (
            row.f64("q"),
            row.f64("noise_multiplier"),
            row.u64("steps"),
            row.f64("delta"),
        );
        let pld = row.f64("epsilon_pld");
        let ours = epsilon(q, sigma, steps, delta);
        let slack = if pld > PLD_UNDERFLOW_EPSILON {
            1.0
        } else {
            1e-9 * pld
        };
        assert!(
            ours >= pld - slack,
            "q={q} sigma={sigma} steps={steps} delta={delta}: RDP {ours} < PLD {pld}"
        );
        tighter += usize::from(pld < ours);
    }
    assert!(
        tighter > 100,
        "PLD should be tighter almost everywhere ({tighter})"
    );
}

#[test]
fn rdp_epsilon_is_never_below_prv() {
    for row in rows("accounting/prv_epsilon.csv") {
        let (q, sigma, steps, delta) = (
            row.f64("q"),
            row.f64("noise_multiplier"),
            row.u64("steps"),
            row.f64("delta"),
        );
        let ours = epsilon(q, sigma, steps, delta);
        // eps_low is a certified lower bound on the true ε; the estimate is near-exact.
        for column in ["eps_low", "eps_estimate"] {
            let theirs = row.f64(column);
            assert!(
                ours >= theirs,
                "q={q} sigma={sigma} steps={steps} delta={delta}: RDP {ours} < PRV {column} {theirs}"
            );
        }
    }
}

#[test]
fn heterogeneous_rdp_epsilon_is_never_below_pld() {
    for (case, ledger) in heterogeneous_cases() {
        if case.accountant != "pld" {
            continue;
        }
        let ours = RdpAccountant::from_ledger(
            &ledger,
            Orders::dp_accounting_default(),
            Conversion::Improved,
        )
        .unwrap()
        .epsilon(case.delta)
        .unwrap()
        .epsilon;
        assert!(
            ours >= case.epsilon,
            "{}: RDP {ours} < PLD {}",
            case.name,
            case.epsilon
        );
    }
}

#[test]
fn known_settings_rdp_is_above_pld_and_prv() {
    for row in rows("accounting/known_values.csv") {
        let ours = epsilon(
            row.f64("q"),
            row.f64("noise_multiplier"),
            row.u64("steps"),
            row.f64("delta"),
        );
        assert!(ours >= row.f64("epsilon_pld"), "{}", row.text("source"));
        assert!(
            ours >= row.f64("eps_prv_estimate"),
            "{}",
            row.text("source")
        );
    }
}
