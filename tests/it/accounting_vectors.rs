//! The accountant against dp_accounting 0.6.0's published vectors (tests/data/accounting).
//!
//! Same orders and formulas, so only rounding differs: RDP values and ε must agree to 1e-8
//! relative, best orders exactly, calibrated noise to 1e-4 relative (and never above target).

use dptrain::privacy::{
    Conversion, Ledger, Orders, PrivacyEvent, RdpAccountant, calibrate_noise_multiplier,
    poisson_gaussian_rdp,
};

use crate::support::{relative_error, rows, spent};

const RELATIVE: f64 = 1e-8;

#[test]
fn default_orders_are_dp_accountings() {
    let orders = Orders::dp_accounting_default();
    let values = orders.values();
    assert_eq!(values.len(), 156);
    assert_eq!(values[0], 1.1);
    assert_eq!(values[98], 10.9);
    assert_eq!(values[99], 11.0);
    assert_eq!(values[151], 63.0);
    assert_eq!(&values[152..], &[128.0, 256.0, 512.0, 1024.0]);
    // Each 1 + x/10 is the f64 of its one-decimal literal.
    assert_eq!(values[2], 1.3);
    assert_eq!(values[62], 7.3);
}

#[test]
fn epsilon_matches_dp_accounting_rdp_vectors() {
    let mut worst = 0.0f64;
    let table = rows("accounting/rdp_epsilon.csv");
    assert_eq!(table.len(), 384);
    for row in &table {
        let (q, sigma, steps, delta) = (
            row.f64("q"),
            row.f64("noise_multiplier"),
            row.u64("steps"),
            row.f64("delta"),
        );
        let ours = spent(q, sigma, steps, delta, Conversion::Improved);
        let expected = row.f64("epsilon_rdp");
        let error = relative_error(ours.epsilon, expected);
        worst = worst.max(error);
        assert!(
            error < RELATIVE,
            "q={q} sigma={sigma} steps={steps} delta={delta}: {} vs {expected} ({error:e})",
            ours.epsilon
        );
        assert_eq!(
            ours.order,
            row.f64("best_order"),
            "best order, q={q} sigma={sigma} steps={steps}"
        );
    }
    eprintln!("rdp_epsilon.csv: worst relative error {worst:e}");
}

#[test]
fn per_order_rdp_matches_dp_accounting_values() {
    let table = rows("accounting/rdp_values.csv");
    let mut worst = 0.0f64;
    for row in &table {
        let (q, sigma, order) = (row.f64("q"), row.f64("noise_multiplier"), row.f64("order"));
        let orders = Orders::new(vec![order]).unwrap();
        let ours = poisson_gaussian_rdp(q, sigma, &orders).unwrap()[0];
        let expected = row.f64("rdp");
        let error = relative_error(ours, expected);
        worst = worst.max(error);
        assert!(
            error < RELATIVE,
            "q={q} sigma={sigma} order={order}: {ours:e} vs {expected:e} ({error:e})"
        );
    }
    // The two non-converged fractional series are dropped (+inf), as dp_accounting does.
    assert_eq!(table.iter().filter(|r| r.text("rdp") == "inf").count(), 2);
    eprintln!("rdp_values.csv: worst relative error {worst:e}");
}

#[test]
fn non_converged_orders_are_the_ones_dp_accounting_drops() {
    // README: orders with +inf RDP by (q, sigma); e.g. (0.05, 0.5): 1.1-1.5 only.
    let orders = Orders::dp_accounting_default();
    for (q, sigma, last_inf) in [
        (0.05, 0.5, 1.5),
        (0.05, 0.8, 1.3),
        (0.1, 0.5, 1.6),
        (0.1, 0.8, 1.6),
        (0.1, 1.0, 1.5),
        (0.1, 1.1, 1.4),
    ] {
        let rdp = poisson_gaussian_rdp(q, sigma, &orders).unwrap();
        for (&alpha, &r) in orders.values().iter().zip(&rdp) {
            let dropped = alpha <= last_inf + 1e-9;
            assert_eq!(
                r.is_infinite(),
                dropped,
                "q={q} sigma={sigma} alpha={alpha}: {r}"
            );
        }
    }
}

#[test]
fn calibration_matches_dp_accounting_and_never_overshoots() {
    let mut worst = 0.0f64;
    for row in rows("accounting/calibration.csv") {
        let (q, steps, delta, target) = (
            row.f64("q"),
            row.u64("steps"),
            row.f64("delta"),
            row.f64("target_epsilon"),
        );
        let c =
            calibrate_noise_multiplier(target, delta, q, steps, &RdpAccountant::default()).unwrap();
        let expected = row.f64("noise_multiplier");
        let error = relative_error(c.noise_multiplier, expected);
        worst = worst.max(error);
        assert!(
            error < 1e-4,
            "q={q} steps={steps} target={target}: {} vs {expected}",
            c.noise_multiplier
        );
        assert!(c.epsilon <= target, "{c:?} overshoots {target}");
        // The returned ε is the accountant's ε at the returned multiplier.
        let again = spent(q, c.noise_multiplier, steps, delta, Conversion::Improved);
        assert_eq!(again.epsilon, c.epsilon);
        // And their multiplier's ε, recomputed by us, is theirs.
        let theirs = spent(q, expected, steps, delta, Conversion::Improved);
        assert!(relative_error(theirs.epsilon, row.f64("epsilon_at_noise_multiplier")) < RELATIVE);
    }
    eprintln!("calibration.csv: worst relative error of the noise multiplier {worst:e}");
}

/// The per-step schedules of heterogeneous.csv, rebuilt from their rules. The rule text in
/// the file must be exactly the one implemented here.
fn schedule(case: &str, q_rule: &str, sigma_rule: &str, steps: u64) -> Vec<(f64, f64)> {
    (0..steps)
        .map(|t| {
            let tf = t as f64;
            match (case, q_rule, sigma_rule) {
                ("i_linear_decay", "0.01", "2.0 + (0.8 - 2.0) * t / 999") => {
                    (0.01, 2.0 + (0.8 - 2.0) * tf / 999.0)
                }
                ("ii_exponential_decay", "256 / 60000", "1.5 * 0.999 ** t") => {
                    (256.0 / 60000.0, 1.5 * 0.999f64.powf(tf))
                }
                ("iii_step_schedule", "0.02", "1.5 if t < 500 else 1.0") => {
                    (0.02, if t < 500 { 1.5 } else { 1.0 })
                }
                (
                    "iv_two_sampling_rates",
                    "0.01 if t < 300 else 0.05",
                    "1.0 if t < 300 else 2.0",
                ) => {
                    if t < 300 {
                        (0.01, 1.0)
                    } else {
                        (0.05, 2.0)
                    }
                }
                other => panic!("unknown schedule {other:?}"),
            }
        })
        .collect()
}

/// Σ with Neumaier compensation (close to Python's correctly rounded `math.fsum`).
fn compensated_sum(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut compensation) = (0.0f64, 0.0f64);
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            compensation += (sum - t) + v;
        } else {
            compensation += (v - t) + sum;
        }
        sum = t;
    }
    sum + compensation
}

/// Each heterogeneous case as a ledger of one-step blocks, checked against `sum_q`, `sum_sigma`.
pub fn heterogeneous_cases() -> Vec<(dptrain_row::Case, Ledger)> {
    rows("accounting/heterogeneous.csv")
        .into_iter()
        .map(|row| {
            let steps = row.u64("steps");
            let case = row.text("case").to_string();
            let per_step = schedule(&case, row.text("q_rule"), row.text("sigma_rule"), steps);
            let sum_q = compensated_sum(per_step.iter().map(|s| s.0));
            let sum_sigma = compensated_sum(per_step.iter().map(|s| s.1));
            assert!(
                relative_error(sum_q, row.f64("sum_q")) < 1e-14,
                "{case} sum_q"
            );
            assert!(
                relative_error(sum_sigma, row.f64("sum_sigma")) < 1e-14,
                "{case} sum_sigma {sum_sigma} vs {}",
                row.f64("sum_sigma")
            );
            let mut ledger = Ledger::new();
            for (q, sigma) in per_step {
                ledger.push(PrivacyEvent::new(q, sigma, 1).unwrap());
            }
            let case = dptrain_row::Case {
                name: case,
                accountant: row.text("accountant").to_string(),
                delta: row.f64("delta"),
                epsilon: row.f64("epsilon"),
                best_order: row.text("best_order").parse().ok(),
            };
            (case, ledger)
        })
        .collect()
}

/// A heterogeneous reference case (one row of heterogeneous.csv).
pub mod dptrain_row {
    /// What the file says about one case.
    pub struct Case {
        pub name: String,
        pub accountant: String,
        pub delta: f64,
        pub epsilon: f64,
        pub best_order: Option<f64>,
    }
}

#[test]
fn heterogeneous_schedules_match_dp_accounting() {
    let mut checked = 0;
    for (case, ledger) in heterogeneous_cases() {
        if case.accountant != "rdp" {
            continue;
        }
        let mut accountant = RdpAccountant::from_ledger(
            &ledger,
            Orders::dp_accounting_default(),
            Conversion::Improved,
        )
        .unwrap();
        let ours = accountant.epsilon(case.delta).unwrap();
        let error = relative_error(ours.epsilon, case.epsilon);
        assert!(
            error < RELATIVE,
            "{}: {} vs {} ({error:e})",
            case.name,
            ours.epsilon,
            case.epsilon
        );
        assert_eq!(Some(ours.order), case.best_order, "{}", case.name);
        // The same steps composed one at a time give the same ε.
        let mut stepwise = RdpAccountant::default();
        for &event in ledger.events() {
            stepwise.compose(event).unwrap();
        }
        assert!(
            relative_error(stepwise.epsilon(case.delta).unwrap().epsilon, ours.epsilon) < 1e-12
        );
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn known_values_match_under_both_conversions() {
    // TF Privacy's compute_dp_sgd_privacy orders (README: known_values.csv).
    let tfp_orders: Vec<f64> = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5]
        .into_iter()
        .chain((5..64).map(f64::from))
        .chain([128.0, 256.0, 512.0])
        .collect();
    let tfp_orders = Orders::new(tfp_orders).unwrap();
    for row in rows("accounting/known_values.csv") {
        let (q, sigma, steps, delta) = (
            row.f64("q"),
            row.f64("noise_multiplier"),
            row.u64("steps"),
            row.f64("delta"),
        );
        let source = row.text("source");
        let improved = spent(q, sigma, steps, delta, Conversion::Improved);
        assert!(
            relative_error(improved.epsilon, row.f64("epsilon_rdp")) < RELATIVE,
            "{source}"
        );
        assert_eq!(improved.order, row.f64("best_order"), "{source}");
        let classic = spent(q, sigma, steps, delta, Conversion::Classic);
        assert!(
            relative_error(classic.epsilon, row.f64("epsilon_rdp_basic_bound")) < RELATIVE,
            "{source}: {} vs {}",
            classic.epsilon,
            row.f64("epsilon_rdp_basic_bound")
        );
        let mut tfp = RdpAccountant::new(tfp_orders.clone(), Conversion::Classic);
        tfp.compose(PrivacyEvent::new(q, sigma, steps).unwrap())
            .unwrap();
        let tfp = tfp.epsilon(delta).unwrap();
        assert!(
            relative_error(tfp.epsilon, row.f64("epsilon_rdp_basic_bound_tfp_orders")) < RELATIVE,
            "{source}: {} vs {}",
            tfp.epsilon,
            row.f64("epsilon_rdp_basic_bound_tfp_orders")
        );
        // Published numbers were rounded from the classic bound: within 0.035 of it.
        if let Ok(published) = row.text("published_epsilon").parse::<f64>() {
            assert!(
                (tfp.epsilon - published).abs() < 0.035,
                "{source}: {} vs {published}",
                tfp.epsilon
            );
        }
    }
}

/// Issue 28: every ledger kept under reports/examples/ (written by earlier versions, before
/// the ledger became the normal form of an event tree) still reads, and accounts to the ε
/// its summary.json recorded, under the accountant and δ the run used.
#[test]
fn every_kept_run_ledger_still_accounts_to_its_recorded_epsilon() {
    use dptrain::privacy::{Accountant, AccountantKind, AccountantSettings, Ledger};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reports/examples");
    let mut dirs = vec![root];
    let mut checked = 0;
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.file_name().is_none_or(|n| n != "ledger.csv") {
                continue;
            }
            let summary: serde_json::Value = serde_json::from_slice(
                &std::fs::read(path.with_file_name("summary.json")).unwrap(),
            )
            .unwrap();
            let Some(recorded) = summary["epsilon"].as_f64() else {
                continue; // a non-private run: nothing spent
            };
            let delta = summary["delta"].as_f64().unwrap();
            // A distributed-DP run (issue 15) keeps a ledger of its own kind.
            let bytes = std::fs::read(&path).unwrap();
            if dptrain::privacy::distributed::DistributedLedger::is_one(&bytes) {
                let ledger =
                    dptrain::privacy::distributed::DistributedLedger::parse_csv(&bytes, &path)
                        .unwrap();
                let epsilon = ledger.epsilon(delta).unwrap().0;
                assert!(
                    (epsilon - recorded).abs() <= 1e-12 * recorded,
                    "{}: {epsilon} now, {recorded} recorded",
                    path.display()
                );
                checked += 1;
                continue;
            }
            let kind: AccountantKind = summary["accountant"].as_str().unwrap().parse().unwrap();
            let ledger = Ledger::read_csv(&path).unwrap();
            // A round trip through the event tree leaves the ledger as it was.
            assert_eq!(
                Ledger::from_event(&ledger.to_event()).unwrap().steps(),
                ledger.steps()
            );
            let epsilon = Accountant::from_ledger(AccountantSettings::new(kind), &ledger)
                .unwrap()
                .epsilon(delta)
                .unwrap()
                .epsilon;
            assert!(
                (epsilon - recorded).abs() <= 1e-12 * recorded,
                "{}: {epsilon} by {} now, {recorded} recorded",
                path.display(),
                kind.name()
            );
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} kept ledgers found");
}

/// Distributed DP (issue 15): Skellam and distributed discrete Gaussian ε, Δ₂, Δ₁ and τ
/// against the independent reference (scripts/reference/distributed_dp_accounting.py,
/// 60-digit arithmetic, itself within 1.2e-13 of google-research's accounting_utils.py),
/// 12 parameter sets per mechanism, to 1e-9 relative.
#[test]
fn distributed_dp_epsilon_matches_the_reference_vectors() {
    use dptrain::privacy::distributed::{
        DistributedEntry, DistributedLedger, DistributedMechanism, DistributedRound, epsilon,
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/distributed_dp_vectors.csv");
    let mut reader = csv::Reader::from_path(&path).unwrap();
    let headers = reader.headers().unwrap().clone();
    let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let close = |got: f64, want: f64, what: &str, row: &str| {
        let scale = want.abs().max(1e-300);
        assert!(
            (got - want).abs() <= 1e-9 * scale,
            "{row}: {what} {got} against {want}"
        );
    };
    let mut rows = 0;
    for record in reader.records() {
        let record = record.unwrap();
        let get = |name: &str| record[column(name)].parse::<f64>().unwrap();
        let name = record[column("name")].to_string();
        let round = DistributedRound {
            mechanism: match &record[column("mechanism")] {
                "skellam" => DistributedMechanism::Skellam,
                "ddgauss" | "discrete_gaussian" | "ddg" => DistributedMechanism::DiscreteGaussian,
                other => panic!("{name}: unknown mechanism {other}"),
            },
            l2_clip: get("l2_clip"),
            dim: get("dim") as u64,
            beta: get("beta"),
            clients: get("num_clients") as u64,
            local_stddev: get("local_stddev"),
            scale: get("scale"),
        };
        let (l2, l1) = round.sensitivities();
        close(l2, get("l2_sens_scaled"), "Δ₂", &name);
        close(l1, get("l1_sens_scaled"), "Δ₁", &name);
        let tau = get("tau");
        if tau > 0.0 {
            close(round.tau(), tau, "τ", &name);
        } else {
            assert!(round.tau() < 1e-300, "{name}: τ {}", round.tau());
        }
        let (eps, order) = epsilon(&round, get("q"), get("steps") as u64, get("delta")).unwrap();
        close(eps, get("epsilon"), "ε", &name);
        assert_eq!(f64::from(order), get("opt_order"), "{name}");
        // The same rounds booked one by one in a run's ledger, written and read back.
        let mut ledger = DistributedLedger::new();
        for r in 0..get("steps") as u64 {
            ledger
                .push(DistributedEntry {
                    round: r + 1,
                    sample_rate: get("q"),
                    params: round,
                })
                .unwrap();
        }
        let text = ledger.to_csv();
        assert!(DistributedLedger::is_one(text.as_bytes()));
        let back = DistributedLedger::parse_csv(text.as_bytes(), &path).unwrap();
        assert_eq!(back, ledger);
        close(
            back.epsilon(get("delta")).unwrap().0,
            get("epsilon"),
            "ledger ε",
            &name,
        );
        rows += 1;
    }
    assert_eq!(rows, 24);
}
