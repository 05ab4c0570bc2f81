//! Schedules against independent references: the heterogeneous vectors of dp_accounting and
//! PLD, calibration to random targets, adaptive clipping on a known norm distribution, and
//! the hard budget in the trainer.

use dptrain::mechanism::{AdaptiveClipper, AdaptiveClippingConfig};
use dptrain::model::{ModelConfig, ModelKind};
use dptrain::privacy::{PrivacyEvent, RdpAccountant};
use dptrain::schedule::plan::{NoiseSpec, calibrate, plan, planned_ledger};
use dptrain::schedule::{Schedule, ShapeKind, Timeline, Unit};
use dptrain::train::{OptimizerConfig, PrivacyConfig, TrainingConfig, train};

use crate::support::{head, mnist, relative_error, rows};

fn spec(schedule: &Schedule, sample_rate: f64, timeline: Timeline) -> NoiseSpec<'_> {
    NoiseSpec {
        schedule,
        sample_rate,
        timeline,
        count_noise_multiplier: None,
        mechanism: dptrain::privacy::Mechanism::Gaussian,
        accountant: dptrain::privacy::AccountantSettings::rdp(),
    }
}

#[test]
fn the_reference_schedules_are_accounted_as_the_references_do() {
    // Case ii of heterogeneous.csv, σ_t = 1.5·0.999^t at q = 256/60000 for 2000 steps:
    // as a step schedule (factor 0.999 per step: the same powers, bit for bit) and as an
    // exponential (e^(−k t), k = −ln 0.999: equal up to rounding).
    let vectors = rows("accounting/heterogeneous.csv");
    let reference = |case: &str, accountant: &str| {
        vectors
            .iter()
            .find(|r| r.text("case") == case && r.text("accountant") == accountant)
            .unwrap()
            .f64("epsilon")
    };
    let timeline = Timeline {
        steps: 2000,
        steps_per_epoch: 60_000.0 / 256.0,
    };
    let step = Schedule {
        kind: ShapeKind::Step,
        factor: Some(0.999),
        period: Some(1.0),
        ..Schedule::default()
    };
    let exponential = Schedule {
        kind: ShapeKind::Exponential,
        rate: Some(-(0.999f64.ln())),
        ..Schedule::default()
    };
    let expected = reference("ii_exponential_decay", "rdp");
    for (schedule, tolerance) in [(step, 1e-10), (exponential, 1e-8)] {
        let ours = plan(&spec(&schedule, 256.0 / 60000.0, timeline), 1.5, 1e-5)
            .unwrap()
            .epsilon;
        assert!(
            relative_error(ours, expected) < tolerance,
            "{:?}: {ours} vs {expected}",
            schedule.kind
        );
    }
    // Case iii, σ = 1.5 for 500 steps then 1.0, q = 0.02: a step schedule with factor 2/3;
    // dp_accounting gives only its PLD ε, which RDP must never undercut.
    let step = Schedule {
        kind: ShapeKind::Step,
        factor: Some(2.0 / 3.0),
        period: Some(500.0),
        ..Schedule::default()
    };
    let timeline = Timeline {
        steps: 1000,
        steps_per_epoch: 50.0,
    };
    let ledger = planned_ledger(&spec(&step, 0.02, timeline), 1.5).unwrap();
    assert_eq!(ledger.events().len(), 2, "{ledger:?}");
    assert!((ledger.events()[1].noise_multiplier - 1.0).abs() < 1e-15);
    let ours = plan(&spec(&step, 0.02, timeline), 1.5, 1e-5)
        .unwrap()
        .epsilon;
    assert!(ours >= reference("iii_step_schedule", "pld"), "{ours}");
}

/// A small deterministic generator (tests never read OS entropy).
struct Lcg(u64);

impl Lcg {
    fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn calibrated_schedules_land_within_1e_3_below_their_targets() {
    let mut rng = Lcg(20261124);
    let kinds = [
        ShapeKind::Constant,
        ShapeKind::Step,
        ShapeKind::Exponential,
        ShapeKind::Linear,
        ShapeKind::Cosine,
        ShapeKind::Plateau,
    ];
    for case in 0..24 {
        let kind = kinds[case % kinds.len()];
        let unit = if rng.uniform() < 0.5 {
            Unit::Steps
        } else {
            Unit::Epochs
        };
        let steps = 50 + (rng.uniform() * 450.0) as u64;
        let steps_per_epoch = 10.0 + rng.uniform() * 40.0;
        let t_max = match unit {
            Unit::Steps => steps as f64,
            Unit::Epochs => steps as f64 / steps_per_epoch,
        };
        let mut schedule = Schedule {
            kind,
            unit,
            ..Schedule::default()
        };
        match kind {
            ShapeKind::Step => {
                schedule.factor = Some(0.5 + rng.uniform());
                schedule.period = Some((t_max / (1.0 + rng.uniform() * 4.0)).max(1.0));
            }
            ShapeKind::Exponential => schedule.rate = Some((rng.uniform() - 0.3) * 2.0 / t_max),
            ShapeKind::Linear | ShapeKind::Cosine => schedule.end = Some(0.3 + rng.uniform()),
            ShapeKind::Plateau => {
                schedule.unit = Unit::Steps;
                schedule.factor = Some(0.5);
                schedule.patience = Some(2);
                schedule.floor = Some(0.2 + 0.8 * rng.uniform());
            }
            ShapeKind::Constant => {}
        }
        let sample_rate = 1.0 / (5.0 + rng.uniform() * 200.0);
        let target = 0.3 + rng.uniform() * 8.0;
        let timeline = Timeline {
            steps,
            steps_per_epoch,
        };
        let noise = spec(&schedule, sample_rate, timeline);
        let planned = calibrate(&noise, target, 1e-5).unwrap();
        assert!(
            planned.epsilon <= target && planned.epsilon >= target - 1e-3,
            "case {case} {schedule:?}: ε {} for target {target}",
            planned.epsilon
        );
        // Independently: the ledger of the σ sequence, composed by a fresh accountant.
        let mut accountant = RdpAccountant::default();
        for step in 0..steps {
            let factor = match kind {
                ShapeKind::Plateau => schedule.floor.unwrap(),
                _ => schedule.factor(step, &timeline),
            };
            accountant
                .compose(PrivacyEvent::new(sample_rate, planned.scale * factor, 1).unwrap())
                .unwrap();
        }
        let recomputed = accountant.epsilon(1e-5).unwrap().epsilon;
        assert!(
            relative_error(recomputed, planned.epsilon) < 1e-12,
            "case {case}: {recomputed} vs {}",
            planned.epsilon
        );
        assert_eq!(planned.epsilon_per_epoch.len() as u64, timeline.epochs());
        assert_eq!(*planned.epsilon_per_epoch.last().unwrap(), planned.epsilon);
    }
}

#[test]
fn adaptive_clipping_tracks_the_quantile_of_a_norm_distribution() {
    // Norms uniform on [0, 10]: the γ-quantile is 10γ. Poisson batches of expected size
    // 256, σ_b = 256/20, η = 0.2, C from 0.1: within 10% after 200 steps.
    for (gamma, seed) in [(0.5, 1u64), (0.8, 2), (0.2, 3)] {
        let config = AdaptiveClippingConfig {
            target_quantile: gamma,
            ..AdaptiveClippingConfig::default()
        };
        let mut clipper = AdaptiveClipper::new(config, 0.1, 256.0, seed).unwrap();
        let mut rng = Lcg(seed * 7919);
        for _ in 0..200 {
            let size = (0..60_000)
                .filter(|_| rng.uniform() < 256.0 / 60_000.0)
                .count();
            let norms: Vec<f64> = (0..size).map(|_| 10.0 * rng.uniform()).collect();
            let c = clipper.clip_norm();
            let within = norms.iter().filter(|&&n| n <= c).count();
            clipper.update(within, norms.len());
        }
        let quantile = 10.0 * gamma;
        let error = (clipper.clip_norm() - quantile).abs() / quantile;
        assert!(
            error < 0.1,
            "γ = {gamma}: C = {} vs {quantile}",
            clipper.clip_norm()
        );
    }
}

fn logreg() -> ModelConfig {
    ModelConfig::preset(ModelKind::Logreg)
}

fn privacy() -> PrivacyConfig {
    PrivacyConfig {
        private: true,
        target_epsilon: None,
        noise_multiplier: Some(1.0),
        delta: 1e-5,
        clip_norm: 1.0,
        clipping: Default::default(),
        noise_schedule: Schedule::default(),
        clip_schedule: Schedule::default(),
        adaptive_clipping: None,
        max_epsilon: None,
        secure_noise: false,
        accountant: None,
        discretization_interval: None,
    }
}

fn training(epochs: f64) -> TrainingConfig {
    TrainingConfig {
        epochs,
        expected_batch_size: 100,
        max_physical_batch: 1000,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.0,
        },
        lr_schedule: Schedule::default(),
        dist_parts: None,
    }
}

#[test]
fn the_budget_stops_a_run_at_the_last_step_that_fits() {
    // σ = 1 at q = 100/2000: the budget of ε = 2 allows exactly k steps, where k is found
    // here by composing one step at a time, under RDP and under PLD (whose trainer checks
    // many planned steps at once and bisects).
    use dptrain::privacy::{Accountant, AccountantKind, AccountantSettings};
    let (train_set, test_set) = (head(&mnist().train, 2000), head(&mnist().test, 200));
    let q = 100.0 / 2000.0;
    let mut found = Vec::new();
    for kind in [AccountantKind::Rdp, AccountantKind::Pld] {
        let step = PrivacyEvent::new(q, 1.0, 1).unwrap();
        let mut accountant = Accountant::new(AccountantSettings::new(kind)).unwrap();
        let mut fits = 0u64;
        while accountant
            .epsilon_after_planned(&[step], 1e-5)
            .unwrap()
            .epsilon
            <= 2.0
        {
            accountant.compose(step).unwrap();
            fits += 1;
        }
        assert!(fits > 5 && fits < 400, "{fits}");
        let privacy = PrivacyConfig {
            max_epsilon: Some(2.0),
            secure_noise: false,
            accountant: Some(kind),
            ..privacy()
        };
        let record = train(
            &train_set,
            &test_set,
            None,
            &logreg(),
            &privacy,
            &training(20.0),
            5,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(record.steps, fits, "{kind:?}");
        assert!(record.planned_steps > fits);
        let spent = record.spent.unwrap().epsilon;
        assert!(spent <= 2.0, "{spent}");
        let why = record.stopped_early.unwrap();
        assert!(why.contains(&format!("step {}", fits + 1)), "{why}");
        // The last metrics row is the state at the stop, with the ε actually spent.
        assert_eq!(record.epochs.last().unwrap().step, fits);
        assert_eq!(record.epochs.last().unwrap().epsilon, spent);
        found.push(fits);
    }
    // The tighter accountant affords more steps at the same budget.
    assert!(found[1] > found[0], "{found:?}");
}

#[test]
fn adaptive_clipping_in_training_moves_c_and_records_the_count_queries() {
    let (train_set, test_set) = (head(&mnist().train, 2000), head(&mnist().test, 200));
    let privacy = PrivacyConfig {
        target_epsilon: Some(4.0),
        noise_multiplier: None,
        clip_norm: 0.01,
        adaptive_clipping: Some(AdaptiveClippingConfig::default()),
        ..privacy()
    };
    let record = train(
        &train_set,
        &test_set,
        None,
        &logreg(),
        &privacy,
        &training(2.0),
        3,
        &mut |_| {},
    )
    .unwrap();
    // Almost every logreg gradient exceeds 0.01 at first, so C must have grown.
    let last = record.epochs.last().unwrap();
    assert!(last.clip_norm > 0.05, "C = {}", last.clip_norm);
    let event = record.ledger.events()[0];
    assert_eq!(event.count_noise_multiplier, Some(2.0 * 100.0 / 20.0));
    let spent = record.spent.unwrap().epsilon;
    assert!(spent <= 4.0 && spent > 4.0 - 1e-3, "{spent}");
    assert!(
        record
            .ledger
            .to_csv()
            .starts_with("sample_rate,noise_multiplier,steps,count_noise_multiplier\n")
    );
}

#[test]
fn impossible_or_unsafe_schedules_are_refused_before_training() {
    let (train_set, test_set) = (head(&mnist().train, 500), head(&mnist().test, 100));
    let run = |privacy: PrivacyConfig| {
        train(
            &train_set,
            &test_set,
            None,
            &logreg(),
            &privacy,
            &training(1.0),
            0,
            &mut |_| {},
        )
        .err()
        .expect("refused")
        .to_string()
    };
    // σ_b = 0.4 leaves nothing for the gradients at z = 1 (z ≥ 2σ_b).
    let message = run(PrivacyConfig {
        adaptive_clipping: Some(AdaptiveClippingConfig {
            count_noise: Some(0.4),
            ..AdaptiveClippingConfig::default()
        }),
        ..privacy()
    });
    assert!(
        message.contains("privacy.adaptive_clipping.count_noise") && message.contains("z/2"),
        "{message}"
    );
    // A plateau needs a public validation split.
    let message = run(PrivacyConfig {
        noise_schedule: Schedule {
            kind: ShapeKind::Plateau,
            factor: Some(0.5),
            patience: Some(1),
            floor: Some(0.5),
            ..Schedule::default()
        },
        ..privacy()
    });
    assert!(
        message.contains("privacy.noise_schedule.kind") && message.contains("validation"),
        "{message}"
    );
}

#[test]
fn a_plateau_schedule_reads_only_the_public_validation_split_and_stays_in_budget() {
    // Validation labels are shuffled, so its loss soon stops improving and σ must fall to
    // its floor; the run still ends within its target, which was planned at that floor.
    let (train_set, test_set) = (head(&mnist().train, 2000), head(&mnist().test, 200));
    let mut validation = mnist().train.split_at(59_000).1;
    validation.labels.rotate_left(7);
    let privacy = PrivacyConfig {
        target_epsilon: Some(3.0),
        noise_multiplier: None,
        noise_schedule: Schedule {
            kind: ShapeKind::Plateau,
            factor: Some(0.5),
            patience: Some(1),
            floor: Some(0.5),
            ..Schedule::default()
        },
        ..privacy()
    };
    let record = train(
        &train_set,
        &test_set,
        Some(&validation),
        &logreg(),
        &privacy,
        &training(6.0),
        2,
        &mut |_| {},
    )
    .unwrap();
    let scale = record.noise_multiplier;
    let sigmas: Vec<f64> = record.epochs.iter().map(|e| e.noise_multiplier).collect();
    assert_eq!(sigmas[0], scale);
    assert!(
        sigmas.iter().all(|&s| s == scale || s == 0.5 * scale),
        "{sigmas:?}"
    );
    assert_eq!(*sigmas.last().unwrap(), 0.5 * scale, "{sigmas:?}");
    let spent = record.spent.unwrap().epsilon;
    assert!(spent <= 3.0, "{spent}");
    assert!(record.stopped_early.is_none());
}

#[test]
fn a_clip_schedule_sets_c_step_by_step() {
    let (train_set, test_set) = (head(&mnist().train, 1000), head(&mnist().test, 100));
    let clip_schedule = Schedule {
        kind: ShapeKind::Exponential,
        rate: Some(0.5),
        unit: Unit::Epochs,
        ..Schedule::default()
    };
    let privacy = PrivacyConfig {
        clip_schedule,
        ..privacy()
    };
    let record = train(
        &train_set,
        &test_set,
        None,
        &logreg(),
        &privacy,
        &training(3.0),
        4,
        &mut |_| {},
    )
    .unwrap();
    // Each metrics row carries the C of the epoch's last step: e^(−0.5·k) in epoch k.
    for (k, row) in record.epochs.iter().enumerate() {
        let expected = (-0.5 * k as f64).exp();
        assert!(
            (row.clip_norm - expected).abs() < 1e-12,
            "epoch {}: {} vs {expected}",
            k + 1,
            row.clip_norm
        );
    }
}
