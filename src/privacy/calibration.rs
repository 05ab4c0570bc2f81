//! Calibration: the smallest noise that meets a target ε.
//!
//! ε falls as the noise multiplier grows, so the smallest multiplier whose ε is at most the
//! target is found by bracketing and bisection. The answer is always the side of the bracket
//! that meets the target: a calibrated run never overshoots its budget (Opacus issue #346
//! returned the other side). The same search serves a schedule: the caller maps a scale
//! factor to the ε of the scaled schedule.

use serde::Serialize;

use super::accountant::RdpAccountant;
use super::accounting::{Accountant, AccountantKind, AccountantSettings};
use super::conversion::{check_delta, check_target_epsilon};
use super::ledger::PrivacyEvent;
use crate::error::{Error, Result};

/// The largest noise multiplier calibration will consider.
pub const MAX_NOISE_MULTIPLIER: f64 = 1e4;

/// Below this, a multiplier is as good as no noise at all for any sensible target; the
/// search stops there and returns it.
pub const MIN_NOISE_MULTIPLIER: f64 = 1e-3;

/// Bisection stops when the bracket is this narrow, relative to its upper end.
pub const RELATIVE_TOLERANCE: f64 = 1e-10;

/// The result of a calibration.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// The calibrated noise multiplier (or schedule scale).
    pub noise_multiplier: f64,
    /// ε at that multiplier; never above the target.
    pub epsilon: f64,
    /// The δ of the target.
    pub delta: f64,
}

/// Finds the smallest scale s in [[`MIN_NOISE_MULTIPLIER`], [`MAX_NOISE_MULTIPLIER`]] with
/// `epsilon_of(s) <= target_epsilon`, to [`RELATIVE_TOLERANCE`].
///
/// `epsilon_of` must be non-increasing in s.
///
/// # Privacy
/// The returned scale s satisfies `epsilon_of(s) <= target_epsilon` (it was evaluated, not
/// interpolated). Errors if even [`MAX_NOISE_MULTIPLIER`] misses the target.
pub fn calibrate_scale(
    target_epsilon: f64,
    delta: f64,
    mut epsilon_of: impl FnMut(f64) -> Result<f64>,
) -> Result<Calibration> {
    check_target_epsilon(target_epsilon)?;
    check_delta(delta)?;
    let meets = |epsilon: f64| epsilon <= target_epsilon;
    let calibration = |noise_multiplier, epsilon| Calibration {
        noise_multiplier,
        epsilon,
        delta,
    };

    // Bracket [low, high] with epsilon_of(low) > target >= epsilon_of(high), from 1 outward.
    let (mut low, mut high, mut high_epsilon);
    let at_one = epsilon_of(1.0)?;
    if meets(at_one) {
        (high, high_epsilon) = (1.0, at_one);
        low = 0.5;
        loop {
            let epsilon = epsilon_of(low)?;
            if !meets(epsilon) {
                break;
            }
            (high, high_epsilon) = (low, epsilon);
            if low <= MIN_NOISE_MULTIPLIER {
                return Ok(calibration(high, high_epsilon));
            }
            low = (low / 2.0).max(MIN_NOISE_MULTIPLIER);
        }
    } else {
        low = 1.0;
        high = 2.0;
        loop {
            let epsilon = epsilon_of(high)?;
            if meets(epsilon) {
                high_epsilon = epsilon;
                break;
            }
            if high >= MAX_NOISE_MULTIPLIER {
                return Err(Error::Unreachable {
                    target_epsilon,
                    delta,
                    max_noise_multiplier: MAX_NOISE_MULTIPLIER,
                    epsilon_at_max: epsilon,
                });
            }
            low = high;
            high = (high * 2.0).min(MAX_NOISE_MULTIPLIER);
        }
    }

    while high - low > RELATIVE_TOLERANCE * high {
        let mid = 0.5 * (low + high);
        let epsilon = epsilon_of(mid)?;
        if meets(epsilon) {
            (high, high_epsilon) = (mid, epsilon);
        } else {
            low = mid;
        }
    }
    Ok(calibration(high, high_epsilon))
}

/// The smallest noise multiplier for which `steps` Poisson-subsampled Gaussian steps at
/// `sample_rate` spend at most `target_epsilon` at `delta` (under `template`'s orders and
/// conversion).
///
/// # Privacy
/// As [`calibrate_scale`]: the returned multiplier's ε is at most the target.
pub fn calibrate_noise_multiplier(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    template: &RdpAccountant,
) -> Result<Calibration> {
    // Validate the step once, with a multiplier that is always valid.
    PrivacyEvent::new(sample_rate, 1.0, steps)?;
    calibrate_scale(target_epsilon, delta, |noise_multiplier| {
        let mut accountant = RdpAccountant::new(template.orders().clone(), template.conversion());
        accountant.compose(PrivacyEvent::new(sample_rate, noise_multiplier, steps)?)?;
        Ok(accountant.epsilon(delta)?.epsilon)
    })
}

/// [`calibrate_noise_multiplier`] under any accountant (RDP with its default orders and
/// conversion).
///
/// # Privacy
/// As [`calibrate_scale`]: the returned multiplier's ε, by that accountant, is at most the
/// target.
pub fn calibrate_noise_multiplier_with(
    settings: AccountantSettings,
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
) -> Result<Calibration> {
    if settings.kind == AccountantKind::Rdp {
        return calibrate_noise_multiplier(
            target_epsilon,
            delta,
            sample_rate,
            steps,
            &RdpAccountant::default(),
        );
    }
    PrivacyEvent::new(sample_rate, 1.0, steps)?;
    calibrate_scale(target_epsilon, delta, |noise_multiplier| {
        let mut accountant = Accountant::new(settings)?;
        accountant.compose(PrivacyEvent::new(sample_rate, noise_multiplier, steps)?)?;
        Ok(accountant.epsilon(delta)?.epsilon)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibrate_scale_finds_the_threshold_of_a_closed_form() {
        // ε(s) = 3/s meets 1.5 from s = 2 on.
        let c = calibrate_scale(1.5, 1e-5, |s| Ok(3.0 / s)).unwrap();
        assert!(c.epsilon <= 1.5);
        assert!((c.noise_multiplier - 2.0).abs() < 1e-9);
        // Below 1 as well.
        let c = calibrate_scale(6.0, 1e-5, |s| Ok(3.0 / s)).unwrap();
        assert!(c.epsilon <= 6.0 && (c.noise_multiplier - 0.5).abs() < 1e-9);
    }

    #[test]
    fn unreachable_targets_are_an_error() {
        let err = calibrate_scale(1e-9, 1e-5, |s| Ok(1.0 / s)).unwrap_err();
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
    }

    #[test]
    fn a_target_met_without_noise_returns_the_smallest_multiplier() {
        let c = calibrate_scale(10.0, 1e-5, |_| Ok(0.0)).unwrap();
        assert_eq!(c.noise_multiplier, MIN_NOISE_MULTIPLIER);
    }

    #[test]
    fn bad_targets_are_refused() {
        for target in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(calibrate_scale(target, 1e-5, |_| Ok(0.0)).is_err());
        }
        assert!(calibrate_scale(1.0, 0.0, |_| Ok(0.0)).is_err());
    }
}
