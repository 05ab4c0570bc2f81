//! A run's privacy plan: the ledger its noise schedule will write, calibrated to a target.
//!
//! σ_t = s · shape(t). Given a target (ε, δ), the scale s is the smallest whose planned
//! ledger meets the target ([`calibrate_scale`]: bracket and bisection, returning the side
//! that meets it, so the plan never exceeds the target and lies within 1e-9 of it). A
//! plateau schedule is planned at its floor: every step at s · floor, the most it can spend.

use serde::Serialize;

use super::{Schedule, ShapeKind, Timeline};
use crate::error::{Error, Result};
use crate::privacy::{
    Accountant, AccountantSettings, Ledger, Mechanism, PrivacyEvent, calibrate_scale,
};

/// The noise of the planned steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseSpec<'a> {
    /// The shape of σ over the run.
    pub schedule: &'a Schedule,
    /// Poisson sampling probability q.
    pub sample_rate: f64,
    /// Steps and epochs.
    pub timeline: Timeline,
    /// With adaptive clipping: the count query's noise multiplier 2σ_b (recorded with each
    /// step; the step's total multiplier stays σ_t).
    pub count_noise_multiplier: Option<f64>,
    /// The noise distribution (secure mode: the discrete Gaussian, accounted at integer
    /// orders only).
    pub mechanism: Mechanism,
    /// The accountant that calibrates and plans.
    pub accountant: AccountantSettings,
}

/// A plan: σ of the first and last steps, ε after each epoch and at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The scale s (σ of the first step of a closed-form schedule).
    pub scale: f64,
    /// σ of the first planned step.
    pub first_noise_multiplier: f64,
    /// σ of the last planned step.
    pub last_noise_multiplier: f64,
    /// ε at δ after each epoch (the last may be partial).
    pub epsilon_per_epoch: Vec<f64>,
    /// ε at δ after all planned steps.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// True when the plan is a worst case (plateau: every step at the floor).
    pub worst_case: bool,
}

/// σ of step `step` in the plan at scale `scale` (a plateau at its floor).
pub fn planned_noise_multiplier(spec: &NoiseSpec, scale: f64, step: u64) -> f64 {
    match spec.schedule.kind {
        ShapeKind::Plateau => scale * spec.schedule.floor.unwrap_or(1.0),
        _ => scale * spec.schedule.factor(step, &spec.timeline),
    }
}

/// The event of one step with total noise multiplier `sigma`.
pub fn step_event(spec: &NoiseSpec, sigma: f64) -> Result<PrivacyEvent> {
    let event = PrivacyEvent::new(spec.sample_rate, sigma, 1)?.with_mechanism(spec.mechanism);
    match spec.count_noise_multiplier {
        Some(count) => event.with_count_query(count),
        None => Ok(event),
    }
}

/// The ledger of all planned steps at scale `scale`.
pub fn planned_ledger(spec: &NoiseSpec, scale: f64) -> Result<Ledger> {
    let mut ledger = Ledger::new();
    for step in 0..spec.timeline.steps {
        ledger.push(step_event(
            spec,
            planned_noise_multiplier(spec, scale, step),
        )?);
    }
    Ok(ledger)
}

fn ledger_epsilon(ledger: &Ledger, settings: AccountantSettings, delta: f64) -> Result<f64> {
    Ok(Accountant::from_ledger(settings, ledger)?
        .epsilon(delta)?
        .epsilon)
}

/// The scale whose plan meets `target_epsilon` at `delta`, as closely as the search allows
/// from below.
///
/// # Privacy
/// The planned ε at the returned scale is at most the target (it was computed, not
/// interpolated).
pub fn calibrate(spec: &NoiseSpec, target_epsilon: f64, delta: f64) -> Result<Plan> {
    let calibration = calibrate_scale(target_epsilon, delta, |scale| {
        ledger_epsilon(&planned_ledger(spec, scale)?, spec.accountant, delta)
    })
    .map_err(|e| match e {
        Error::Unreachable { .. } => Error::invalid(
            "privacy.noise_schedule",
            format!("{:?}", spec.schedule.kind).to_lowercase(),
            format!("a schedule that can meet ε = {target_epsilon} ({e})"),
        ),
        other => other,
    })?;
    plan(spec, calibration.noise_multiplier, delta)
}

/// The plan at a given scale.
pub fn plan(spec: &NoiseSpec, scale: f64, delta: f64) -> Result<Plan> {
    let timeline = spec.timeline;
    let mut accountant = Accountant::new(spec.accountant)?;
    let mut epsilon_per_epoch = Vec::new();
    let mut epoch = 1;
    for step in 0..timeline.steps {
        accountant.compose(step_event(
            spec,
            planned_noise_multiplier(spec, scale, step),
        )?)?;
        let taken = step + 1;
        if taken == timeline.epoch_end(epoch).min(timeline.steps) {
            epsilon_per_epoch.push(accountant.epsilon(delta)?.epsilon);
            epoch += 1;
        }
    }
    let epsilon = accountant.epsilon(delta)?.epsilon;
    Ok(Plan {
        scale,
        first_noise_multiplier: planned_noise_multiplier(spec, scale, 0),
        last_noise_multiplier: planned_noise_multiplier(
            spec,
            scale,
            timeline.steps.saturating_sub(1),
        ),
        epsilon_per_epoch,
        epsilon,
        delta,
        worst_case: spec.schedule.kind == ShapeKind::Plateau,
    })
}
