//! Properties every correct accountant has, on random inputs (proptest with a fixed seed;
//! failures are shrunk and reported with their inputs).

use dptrain::privacy::accountant::rdp_lower_bound;
use dptrain::privacy::rdp::poisson_gaussian_rdp_lower_bound;
use dptrain::privacy::{
    Conversion, Ledger, Orders, PrivacyEvent, RdpAccountant, epsilon_from_rdp, ledger_rdp,
    poisson_gaussian_rdp,
};
use proptest::prelude::*;

use crate::support::epsilon;

/// Sample rates from 1e-4 to 0.5, spread evenly in log scale.
fn sample_rate() -> impl Strategy<Value = f64> {
    (-4.0f64..-std::f64::consts::LOG10_2).prop_map(|e| 10f64.powf(e))
}

/// Noise multipliers from 0.5 to 20, even in log scale.
fn noise_multiplier() -> impl Strategy<Value = f64> {
    (0.5f64.ln()..20f64.ln()).prop_map(f64::exp)
}

fn delta() -> impl Strategy<Value = f64> {
    (-10.0f64..-3.0).prop_map(|e| 10f64.powf(e))
}

fn event() -> impl Strategy<Value = PrivacyEvent> {
    (sample_rate(), noise_multiplier(), 1u64..20_000)
        .prop_map(|(q, s, n)| PrivacyEvent::new(q, s, n).unwrap())
}

fn ledger(max_blocks: usize) -> impl Strategy<Value = Ledger> {
    prop::collection::vec(event(), 1..=max_blocks).prop_map(|events| {
        let mut ledger = Ledger::new();
        for e in events {
            ledger.push(e);
        }
        ledger
    })
}

proptest! {
    // A fixed seed: CI runs the same 256 cases every time (set PROPTEST_CASES and edit the
    // seed to explore further locally).
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: proptest::test_runner::RngSeed::Fixed(20_261_124),
        ..ProptestConfig::default()
    })]

    #[test]
    fn epsilon_grows_with_steps(q in sample_rate(), sigma in noise_multiplier(),
                                steps in 1u64..50_000, more in 1u64..50_000, d in delta()) {
        let fewer = epsilon(q, sigma, steps, d);
        let after = epsilon(q, sigma, steps + more, d);
        prop_assert!(after >= fewer, "{fewer} then {after}");
    }

    #[test]
    fn epsilon_grows_with_sample_rate(q in sample_rate(), factor in 1.0f64..4.0,
                                      sigma in noise_multiplier(), steps in 1u64..20_000,
                                      d in delta()) {
        let larger_q = (q * factor).min(1.0);
        let low = epsilon(q, sigma, steps, d);
        let high = epsilon(larger_q, sigma, steps, d);
        prop_assert!(high >= low, "q {q} -> {low}, q {larger_q} -> {high}");
    }

    /// Sample rates up to 0.1 here: above that, dp_accounting's absolute-value series (which
    /// we reproduce) drops fractional orders whose series does not converge in 1000 terms,
    /// and which orders are dropped can change with σ, so its ε is not monotone in σ there
    /// (see `dp_accountings_bound_is_not_monotone_in_noise_at_large_sample_rates`).
    #[test]
    fn epsilon_falls_with_noise(q in (-4.0f64..-1.0).prop_map(|e| 10f64.powf(e)), sigma in noise_multiplier(),
                                factor in 1.0f64..4.0, steps in 1u64..20_000, d in delta()) {
        let noisy = epsilon(q, sigma * factor, steps, d);
        let quiet = epsilon(q, sigma, steps, d);
        prop_assert!(noisy <= quiet, "sigma {sigma} -> {quiet}, {} -> {noisy}", sigma * factor);
    }

    #[test]
    fn composing_two_ledgers_equals_their_concatenation(a in ledger(4), b in ledger(4),
                                                        d in delta()) {
        let mut concatenated = a.clone();
        concatenated.extend(&b);
        let mut whole = RdpAccountant::from_ledger(
            &concatenated, Orders::dp_accounting_default(), Conversion::Improved).unwrap();
        let mut parts = RdpAccountant::from_ledger(
            &a, Orders::dp_accounting_default(), Conversion::Improved).unwrap();
        parts.compose_ledger(&b).unwrap();
        let (w, p) = (whole.epsilon(d).unwrap(), parts.epsilon(d).unwrap());
        prop_assert!((w.epsilon - p.epsilon).abs() <= 1e-12 * w.epsilon.max(1.0), "{w:?} vs {p:?}");
        prop_assert_eq!(w.steps, p.steps);
        prop_assert_eq!(parts.ledger(), &concatenated);
        for (x, y) in whole.rdp().unwrap().iter().zip(&parts.rdp().unwrap()) {
            prop_assert!(x == y || (x - y).abs() <= 1e-12 * x.abs(), "{x} vs {y}");
        }
    }

    /// The accountant skips orders that provably cannot be the minimiser; its answer must be
    /// exactly that of evaluating every order.
    #[test]
    fn skipping_orders_never_changes_the_answer(l in ledger(3), d in delta(), classic: bool) {
        let conversion = if classic { Conversion::Classic } else { Conversion::Improved };
        let orders = Orders::dp_accounting_default();
        let full = epsilon_from_rdp(orders.values(), &ledger_rdp(&l, &orders).unwrap(), d, conversion)
            .unwrap();
        let mut accountant = RdpAccountant::from_ledger(&l, orders, conversion).unwrap();
        let lazy = accountant.epsilon(d).unwrap();
        prop_assert_eq!(lazy.epsilon, full.epsilon);
        prop_assert_eq!(lazy.order, full.order);
    }

    /// A run composes one step at a time and checks the budget before each; its ε must be
    /// the ε recomputed from its saved ledger, bit for bit, and the budget check must
    /// predict it exactly.
    #[test]
    fn step_by_step_equals_the_saved_ledger_bit_for_bit(
        picks in prop::collection::vec((0usize..3, 1u64..40), 1..25), d in delta()) {
        let steps = [(0.01, 1.1), (0.01, 0.9), (0.004, 2.0)];
        let mut running = RdpAccountant::default();
        for (pick, repeat) in picks {
            let (q, sigma) = steps[pick];
            for _ in 0..repeat {
                let event = PrivacyEvent::new(q, sigma, 1).unwrap();
                let predicted = running.epsilon_after(event, d).unwrap();
                running.compose(event).unwrap();
                prop_assert_eq!(running.epsilon(d).unwrap(), predicted);
            }
        }
        let mut saved = RdpAccountant::from_ledger(
            running.ledger(), Orders::dp_accounting_default(), Conversion::Improved).unwrap();
        prop_assert_eq!(saved.epsilon(d).unwrap(), running.epsilon(d).unwrap());
    }

    /// The lower bounds behind the skipping hold at every order.
    #[test]
    fn rdp_lower_bounds_hold(q in sample_rate(), sigma in noise_multiplier()) {
        let orders = Orders::dp_accounting_default();
        let rdp = poisson_gaussian_rdp(q, sigma, &orders).unwrap();
        let pinsker = poisson_gaussian_rdp_lower_bound(q, sigma);
        let eager: Vec<(f64, f64)> = orders.eager_sorted().iter()
            .map(|&j| (orders.values()[j], rdp[j])).collect();
        for (&alpha, &r) in orders.values().iter().zip(&rdp) {
            prop_assert!(pinsker <= r, "alpha {alpha}: Pinsker {pinsker} > {r}");
            let bound = rdp_lower_bound(alpha, &eager);
            prop_assert!(bound <= r, "alpha {alpha}: bound {bound} > {r}");
        }
    }
}

/// The operating range: q from 1e-6 to 1, σ from 0.3 to 100, up to 1e6 steps.
/// Every integer order's RDP is finite and positive, and ε is finite, non-negative and
/// ordered as the inputs are.
#[test]
fn the_whole_operating_range_gives_finite_values() {
    let orders = Orders::dp_accounting_default();
    for q in [1e-6, 1e-3, 0.1, 0.5, 1.0] {
        for sigma in [0.3, 1.0, 10.0, 100.0] {
            let rdp = poisson_gaussian_rdp(q, sigma, &orders).unwrap();
            for (&alpha, &r) in orders.values().iter().zip(&rdp) {
                if alpha.fract() == 0.0 {
                    assert!(
                        r.is_finite() && r > 0.0,
                        "q={q} sigma={sigma} alpha={alpha}: {r}"
                    );
                } else {
                    // Fractional series may be dropped (+inf) where they do not converge,
                    // never NaN or negative.
                    assert!(r > 0.0, "q={q} sigma={sigma} alpha={alpha}: {r}");
                }
            }
            let mut last = 0.0;
            for steps in [1, 1_000, 1_000_000] {
                let e = epsilon(q, sigma, steps, 1e-5);
                assert!(
                    e.is_finite() && e >= last,
                    "q={q} sigma={sigma} steps={steps}: {e}"
                );
                last = e;
            }
        }
    }
}

/// Found by `epsilon_falls_with_noise` when it drew q up to 0.5: more noise, more ε. dp_accounting
/// 0.6.0 gives the same two values (126.93208424407337 at order 1.8 and 128.4235919540344 at
/// order 1.9): an artefact of its absolute-value series, which we match on purpose. Kept so
/// that a change in this behaviour is noticed.
#[test]
fn dp_accountings_bound_is_not_monotone_in_noise_at_large_sample_rates() {
    let q = 0.46806475054301394;
    let low = crate::support::spent(q, 0.9259426073377921, 351, 1e-3, Conversion::Improved);
    let high = crate::support::spent(q, 0.9444195493696473, 351, 1e-3, Conversion::Improved);
    assert!((low.epsilon - 126.93208424407337).abs() < 1e-8 * 127.0);
    assert!((high.epsilon - 128.4235919540344).abs() < 1e-8 * 128.0);
    assert_eq!((low.order, high.order), (1.8, 1.9));
}
