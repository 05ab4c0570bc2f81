//! Schedules: how the noise multiplier σ, the clip norm C and the learning rate evolve over
//! a run, as closed forms of the step (or epoch) t (design.md section 5).
//!
//! A schedule is a *shape*: the factor by which the initial value is multiplied at t
//! (1 at t = 0). The noise schedule's initial value is calibrated so that the planned
//! ledger meets the target ε ([`plan`]); its ε is the composition of the per-step RDP
//! (Mironov 2017, Prop. 1), so any shape is accounted exactly. The plateau shape depends on
//! validation results and cannot be planned; it is planned at its floor (the worst case).
//!
//! This room is on the accountant's side of the privacy claim: no tensors here.

pub mod plan;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The closed forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShapeKind {
    /// 1.
    #[default]
    Constant,
    /// factor^⌊t/period⌋.
    Step,
    /// e^(−rate·t).
    Exponential,
    /// From 1 to `end` in a straight line over the run: 1 + (end − 1)·t/T.
    Linear,
    /// From 1 to `end` along half a cosine: end + (1 − end)·(1 + cos(π t/T))/2.
    Cosine,
    /// Multiplied by `factor` when the validation loss has not improved for `patience`
    /// evaluations, never below `floor` (noise only; needs a public validation split).
    Plateau,
}

/// What t counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Steps taken before the current one (0-based).
    #[default]
    Steps,
    /// Whole epochs completed before the current step.
    Epochs,
}

/// A schedule as written in a config, e.g. `{ kind = "exponential", rate = 0.05, unit =
/// "epochs" }`. Each kind takes exactly its own parameters.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The shape.
    pub kind: ShapeKind,
    /// What t counts (default: steps).
    #[serde(default)]
    pub unit: Unit,
    /// `step`: the factor per period; `plateau`: the factor per plateau (both in (0, 1] for
    /// a decay; a step schedule may also grow, factor > 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `step`: the period in units of t (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<f64>,
    /// `exponential`: the rate k of e^(−k·t) (any finite value; k > 0 decays).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `linear`, `cosine`: the final value over the initial one (> 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<f64>,
    /// `plateau`: evaluations without improvement before the factor is applied (≥ 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patience: Option<u32>,
    /// `plateau`: the smallest factor (in (0, 1]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<f64>,
    /// Learning rate only: steps of linear warm-up from 0 before the shape applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup: Option<u64>,
}

/// What a schedule drives (each allows its own kinds and parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// σ: every kind.
    Noise,
    /// C: every kind but plateau.
    ClipNorm,
    /// The learning rate: every kind but plateau, plus warm-up.
    LearningRate,
}

/// The run's time line: steps and where epochs end (epoch k ends after step ⌈k·N/B⌉, as the
/// trainer and `dptrain account --epochs` count).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeline {
    /// Planned steps.
    pub steps: u64,
    /// N / B: steps per epoch, fractional.
    pub steps_per_epoch: f64,
}

impl Timeline {
    /// The step after which epoch `k` (1-based) ends.
    pub fn epoch_end(&self, k: u64) -> u64 {
        ((k as f64) * self.steps_per_epoch).ceil() as u64
    }

    /// Whole epochs completed before step `step` (0-based).
    pub fn epochs_before(&self, step: u64) -> u64 {
        let mut k = (step as f64 / self.steps_per_epoch).floor() as u64;
        while self.epoch_end(k + 1) <= step {
            k += 1;
        }
        while k > 0 && self.epoch_end(k) > step {
            k -= 1;
        }
        k
    }

    /// Planned epochs, rounded up (the last may be partial).
    pub fn epochs(&self) -> u64 {
        self.epochs_before(self.steps.saturating_sub(1)) + 1
    }
}

impl Schedule {
    /// The constant schedule.
    pub fn constant() -> Self {
        Schedule::default()
    }

    /// Checks that the kind fits the role and has exactly its parameters, in range;
    /// `field` names the config key in messages.
    pub fn validate(&self, role: Role, field: &str) -> Result<()> {
        let name = |p: &str| format!("{field}.{p}");
        let kind = format!("{:?}", self.kind).to_lowercase();
        let required: &[&str] = match self.kind {
            ShapeKind::Constant => &[],
            ShapeKind::Step => &["factor", "period"],
            ShapeKind::Exponential => &["rate"],
            ShapeKind::Linear | ShapeKind::Cosine => &["end"],
            ShapeKind::Plateau => &["factor", "patience", "floor"],
        };
        let given = [
            ("factor", self.factor.is_some()),
            ("period", self.period.is_some()),
            ("rate", self.rate.is_some()),
            ("end", self.end.is_some()),
            ("patience", self.patience.is_some()),
            ("floor", self.floor.is_some()),
        ];
        for (parameter, present) in given {
            if present && !required.contains(&parameter) {
                return Err(Error::invalid(
                    name(parameter),
                    "given",
                    format!("no `{parameter}` for kind = \"{kind}\" (it takes {required:?})"),
                ));
            }
            if !present && required.contains(&parameter) {
                return Err(Error::invalid(
                    name(parameter),
                    "missing",
                    format!("a `{parameter}` for kind = \"{kind}\""),
                ));
            }
        }
        if self.kind == ShapeKind::Plateau && role != Role::Noise {
            return Err(Error::invalid(
                format!("{field}.kind"),
                "plateau",
                "constant, step, exponential, linear or cosine (plateau drives noise only)",
            ));
        }
        if self.warmup.is_some() && role != Role::LearningRate {
            return Err(Error::invalid(
                name("warmup"),
                "given",
                "no warm-up (only the learning rate has one)",
            ));
        }
        if self.kind == ShapeKind::Plateau && self.unit != Unit::Steps {
            return Err(Error::invalid(
                name("unit"),
                "epochs",
                "no unit for a plateau schedule (it moves at evaluations)",
            ));
        }
        let positive = |p: &str, v: Option<f64>| match v {
            Some(v) if !(v > 0.0 && v.is_finite()) => {
                Err(Error::invalid(name(p), v, "a finite number above 0"))
            }
            _ => Ok(()),
        };
        positive("factor", self.factor)?;
        positive("period", self.period)?;
        match (role, self.end) {
            // A learning rate may decay to 0; σ and C may not.
            (Role::LearningRate, Some(end)) if end >= 0.0 && end.is_finite() => {}
            (Role::LearningRate, Some(end)) => {
                return Err(Error::invalid(
                    name("end"),
                    end,
                    "a finite number at least 0",
                ));
            }
            _ => positive("end", self.end)?,
        }
        if let Some(rate) = self.rate
            && !rate.is_finite()
        {
            return Err(Error::invalid(name("rate"), rate, "a finite number"));
        }
        if self.kind == ShapeKind::Plateau {
            for (p, v) in [("factor", self.factor), ("floor", self.floor)] {
                let v = v.unwrap_or(f64::NAN);
                if !(v > 0.0 && v <= 1.0) {
                    return Err(Error::invalid(name(p), v, "a number in (0, 1]"));
                }
            }
            if self.patience == Some(0) {
                return Err(Error::invalid(name("patience"), 0, "at least 1"));
            }
        }
        Ok(())
    }

    /// The factor at step `step` (0-based) of `timeline`: the closed form of the kind
    /// (1 for a plateau, whose factor comes from [`Plateau`]), times the warm-up ramp.
    pub fn factor(&self, step: u64, timeline: &Timeline) -> f64 {
        let (t, total) = match self.unit {
            Unit::Steps => (step as f64, timeline.steps as f64),
            Unit::Epochs => (
                timeline.epochs_before(step) as f64,
                timeline.epochs() as f64,
            ),
        };
        let progress = if total > 0.0 { t / total } else { 0.0 };
        let shape = match self.kind {
            ShapeKind::Constant | ShapeKind::Plateau => 1.0,
            ShapeKind::Step => {
                let (factor, period) = (self.factor.unwrap_or(1.0), self.period.unwrap_or(1.0));
                factor.powf((t / period).floor())
            }
            ShapeKind::Exponential => (-self.rate.unwrap_or(0.0) * t).exp(),
            ShapeKind::Linear => 1.0 + (self.end.unwrap_or(1.0) - 1.0) * progress,
            ShapeKind::Cosine => {
                let end = self.end.unwrap_or(1.0);
                end + (1.0 - end) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        };
        let warmup = match self.warmup {
            Some(w) if w > 0 && step < w => (step + 1) as f64 / (w + 1) as f64,
            _ => 1.0,
        };
        shape * warmup
    }

    /// The smallest factor the schedule can reach over `timeline`: the plateau's floor, or
    /// the minimum of the closed form over the planned steps.
    pub fn worst_case_factor(&self, timeline: &Timeline) -> f64 {
        match self.kind {
            ShapeKind::Plateau => self.floor.unwrap_or(1.0),
            _ => (0..timeline.steps)
                .map(|s| self.factor(s, timeline))
                .fold(f64::INFINITY, f64::min),
        }
    }
}

/// The state of a plateau schedule: lowers its factor when the validation loss stalls
/// (as PyTorch's ReduceLROnPlateau does for learning rates).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// The current factor (starts at 1).
    pub factor: f64,
    /// The best validation loss so far (None before the first evaluation).
    pub best: Option<f64>,
    /// Evaluations since the best one.
    pub stalled: u32,
}

impl Default for Plateau {
    fn default() -> Self {
        Plateau {
            factor: 1.0,
            best: None,
            stalled: 0,
        }
    }
}

impl Plateau {
    /// Records one evaluation's validation loss; after `patience` evaluations without
    /// improvement the factor is multiplied by the schedule's factor (not below its floor).
    pub fn observe(&mut self, schedule: &Schedule, validation_loss: f64) {
        if self.best.is_none_or(|best| validation_loss < best) {
            self.best = Some(validation_loss);
            self.stalled = 0;
            return;
        }
        self.stalled += 1;
        if self.stalled >= schedule.patience.unwrap_or(1) {
            let floor = schedule.floor.unwrap_or(1.0);
            self.factor = (self.factor * schedule.factor.unwrap_or(1.0)).max(floor);
            self.stalled = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Timeline {
        // 60,000 examples, expected batch 256: 234.375 steps per epoch, 10 epochs.
        Timeline {
            steps: 2344,
            steps_per_epoch: 60_000.0 / 256.0,
        }
    }

    fn schedule(kind: ShapeKind) -> Schedule {
        Schedule {
            kind,
            ..Schedule::default()
        }
    }

    #[test]
    fn epochs_are_counted_as_the_trainer_counts_them() {
        let t = timeline();
        assert_eq!(t.epoch_end(1), 235);
        assert_eq!(t.epochs_before(0), 0);
        assert_eq!(t.epochs_before(234), 0);
        assert_eq!(t.epochs_before(235), 1);
        assert_eq!(t.epochs_before(2343), 9);
        assert_eq!(t.epochs(), 10);
        for step in 0..t.steps {
            let k = t.epochs_before(step);
            assert!(t.epoch_end(k) <= step || k == 0);
            assert!(t.epoch_end(k + 1) > step);
        }
    }

    #[test]
    fn every_shape_is_its_closed_form() {
        let t = timeline();
        let pi = std::f64::consts::PI;
        let step = Schedule {
            factor: Some(0.5),
            period: Some(100.0),
            ..schedule(ShapeKind::Step)
        };
        let exponential = Schedule {
            rate: Some(1e-3),
            ..schedule(ShapeKind::Exponential)
        };
        let linear = Schedule {
            end: Some(0.25),
            ..schedule(ShapeKind::Linear)
        };
        let cosine = Schedule {
            end: Some(0.25),
            ..schedule(ShapeKind::Cosine)
        };
        let per_epoch = Schedule {
            unit: Unit::Epochs,
            rate: Some(0.1),
            ..schedule(ShapeKind::Exponential)
        };
        for s in 0..t.steps {
            let x = s as f64;
            let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "step {s}: {a} vs {b}");
            close(schedule(ShapeKind::Constant).factor(s, &t), 1.0);
            close(step.factor(s, &t), 0.5f64.powi((s / 100) as i32));
            close(exponential.factor(s, &t), (-1e-3 * x).exp());
            close(linear.factor(s, &t), 1.0 - 0.75 * x / 2344.0);
            close(
                cosine.factor(s, &t),
                0.25 + 0.75 * 0.5 * (1.0 + (pi * x / 2344.0).cos()),
            );
            // Per epoch: constant within an epoch, e^(−0.1 k) in epoch k.
            let k = (0..10).filter(|&k| t.epoch_end(k + 1) <= s).count() as f64;
            close(per_epoch.factor(s, &t), (-0.1 * k).exp());
        }
    }

    #[test]
    fn warm_up_ramps_the_learning_rate_then_hands_over() {
        let t = timeline();
        let lr = Schedule {
            warmup: Some(9),
            ..schedule(ShapeKind::Constant)
        };
        assert!((lr.factor(0, &t) - 0.1).abs() < 1e-12);
        assert!((lr.factor(8, &t) - 0.9).abs() < 1e-12);
        assert_eq!(lr.factor(9, &t), 1.0);
        lr.validate(Role::LearningRate, "training.lr_schedule")
            .unwrap();
        assert!(lr.validate(Role::Noise, "privacy.noise_schedule").is_err());
    }

    #[test]
    fn plateau_lowers_its_factor_after_patience_and_stops_at_the_floor() {
        let s = Schedule {
            factor: Some(0.5),
            patience: Some(2),
            floor: Some(0.3),
            ..schedule(ShapeKind::Plateau)
        };
        let mut p = Plateau::default();
        for (loss, factor) in [
            (1.0, 1.0),
            (0.9, 1.0),
            (0.95, 1.0),
            (0.92, 0.5), // two evaluations without beating 0.9
            (0.8, 0.5),
            (0.85, 0.5),
            (0.86, 0.3), // 0.25 floored at 0.3
            (0.9, 0.3),
            (0.9, 0.3),
        ] {
            p.observe(&s, loss);
            assert_eq!(p.factor, factor, "after loss {loss}");
        }
        assert_eq!(s.worst_case_factor(&timeline()), 0.3);
    }

    #[test]
    fn parameters_must_match_the_kind() {
        let bad = [
            (
                schedule(ShapeKind::Exponential),
                "privacy.noise_schedule.rate",
            ),
            (
                Schedule {
                    rate: Some(0.1),
                    ..schedule(ShapeKind::Linear)
                },
                "privacy.noise_schedule.rate",
            ),
            (
                Schedule {
                    factor: Some(0.5),
                    period: Some(0.0),
                    ..schedule(ShapeKind::Step)
                },
                "privacy.noise_schedule.period",
            ),
            (
                Schedule {
                    factor: Some(1.5),
                    patience: Some(1),
                    floor: Some(0.5),
                    ..schedule(ShapeKind::Plateau)
                },
                "privacy.noise_schedule.factor",
            ),
        ];
        for (s, field) in bad {
            let message = s
                .validate(Role::Noise, "privacy.noise_schedule")
                .unwrap_err()
                .to_string();
            assert!(message.contains(field), "{message}");
        }
        let plateau_clip = Schedule {
            factor: Some(0.5),
            patience: Some(1),
            floor: Some(0.5),
            ..schedule(ShapeKind::Plateau)
        };
        assert!(
            plateau_clip
                .validate(Role::ClipNorm, "privacy.clip_schedule")
                .is_err()
        );
        plateau_clip
            .validate(Role::Noise, "privacy.noise_schedule")
            .unwrap();
    }
}
