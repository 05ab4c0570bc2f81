//! The one-run audit (Steinke, Nasr & Jagielski 2023) catches a broken mechanism and stays
//! below the claim of a correct one.
//!
//! The planted bug lives here only: a DP step loop whose optimizer adds a tenth of the noise
//! the accountant is told about. White-box gradient canaries must then prove an ε above the
//! claim; with the right noise, the same audit must stay below it.

use dptrain::audit::{audit_bound, gradient_coordinates, inclusion};
use dptrain::mechanism::{ClippingConfig, ClippingMode};
use dptrain::model::{Model, ModelConfig, ModelKind};
use dptrain::privacy::{
    Accountant, AccountantSettings, PrivacyEvent, calibrate_noise_multiplier_with,
};
use dptrain::sampling::PoissonSampler;
use dptrain::train::{DpOptimizer, DpSettings, GradientCanaries, NoiseMode, OptimizerConfig};

use crate::support::{head, mnist};

const CANARIES: usize = 1000;

/// The ε lower bound of an audit of `steps` DP-SGD steps on a logistic regression whose
/// optimizer adds noise `actual` (a multiplier) while the claim is made for `claimed`.
fn audited_bound(actual: f64, steps: u64, sample_rate: f64) -> f64 {
    let train = head(&mnist().train, 2000);
    let config = ModelConfig::preset(ModelKind::Logreg);
    let model = Model::new(&config, &train.feature_shape, train.classes, 1).unwrap();
    let sizes: Vec<usize> = model.parameters().iter().map(|p| p.elem_count()).collect();
    let included = inclusion(CANARIES, 11);
    let coordinates = gradient_coordinates(&sizes, CANARIES, 12).unwrap();
    let mut canaries =
        GradientCanaries::new(coordinates, included.clone(), sample_rate, 13).unwrap();
    let mut optimizer = DpOptimizer::new(
        &model,
        DpSettings {
            optimizer: OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.0,
            },
            clipping: ClippingConfig {
                mode: ClippingMode::Flat,
                clip_norm: 1.0,
            },
            noise_multiplier: actual,
            expected_batch_size: sample_rate * train.len() as f64,
            max_physical_batch: 1024,
            private: true,
            noise: NoiseMode::Seeded(14),
        },
    )
    .unwrap();
    let mut sampler = PoissonSampler::new(sample_rate, train.len(), 15).unwrap();
    for _ in 0..steps {
        let batch = sampler.sample();
        optimizer
            .step_with_canaries(&model, &train, &batch, Some(&mut canaries))
            .unwrap();
    }
    audit_bound(canaries.scores(), &included, 1e-5, 0.95).epsilon_lower_bound
}

#[test]
fn a_tenth_of_the_noise_is_caught_and_the_right_noise_is_not() {
    // 200 steps at q = 0.05 (each included canary joins about 10 steps), calibrated to ε = 2.
    let (sample_rate, steps, target) = (0.05, 200u64, 2.0);
    let settings = AccountantSettings::default();
    let sigma = calibrate_noise_multiplier_with(settings, target, 1e-5, sample_rate, steps)
        .unwrap()
        .noise_multiplier;
    let mut accountant = Accountant::new(settings).unwrap();
    accountant
        .compose(PrivacyEvent::new(sample_rate, sigma, steps).unwrap())
        .unwrap();
    let claimed = accountant.epsilon(1e-5).unwrap().epsilon;
    assert!(claimed <= target);
    let honest = audited_bound(sigma, steps, sample_rate);
    let broken = audited_bound(sigma / 10.0, steps, sample_rate);
    eprintln!(
        "σ {sigma:.4}, claimed ε {claimed:.3}: honest bound {honest:.3}, 10x less noise {broken:.3}"
    );
    assert!(
        honest <= claimed,
        "a correct run's bound {honest} exceeds its claim {claimed}"
    );
    assert!(
        broken > claimed,
        "the planted bug went unnoticed: {broken} ≤ {claimed}"
    );
}
