//! Per-example clipping: scale each gradient to L2 norm at most C.
//!
//! Flat clipping uses one norm over all parameters; per-layer clipping gives layer l its
//! own bound C_l with Σ_l C_l² = C², so the whole gradient still has norm at most C and the
//! accounting is unchanged (McMahan et al. 2018, "A general approach to adding differential
//! privacy to iterative training procedures", Sec. 3).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Keeps the factor finite for zero gradients, as Opacus does.
pub const CLIP_EPSILON: f32 = 1e-6;

/// How gradients are clipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClippingMode {
    /// One norm over all parameters (the default).
    #[default]
    Flat,
    /// Each DP layer clipped to C/√L, L the number of layers.
    PerLayer,
}

/// Clipping settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClippingConfig {
    /// Flat or per layer.
    pub mode: ClippingMode,
    /// C, the bound on each example's gradient norm (the L2 sensitivity of the sum).
    pub clip_norm: f64,
}

impl Default for ClippingConfig {
    fn default() -> Self {
        ClippingConfig {
            mode: ClippingMode::Flat,
            clip_norm: 1.0,
        }
    }
}

impl ClippingConfig {
    /// Checks C > 0 and finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.clip_norm > 0.0 && self.clip_norm.is_finite()) {
            return Err(Error::invalid(
                "clip_norm",
                self.clip_norm,
                "a finite number above 0",
            ));
        }
        Ok(())
    }
}

/// `min(1, C / (‖g‖ + 1e-6))`: the factor that brings a gradient of norm `norm` within C.
///
/// # Privacy
/// For finite `norm` ≥ 0 the scaled norm `factor · norm` is at most C. A non-finite norm
/// gives factor 0: the example then contributes nothing, which keeps the bound.
pub fn clip_factor(norm: f32, clip_norm: f32) -> f32 {
    clip_factor_of(norm, clip_norm)
}

/// [`clip_factor`] in the model's element type (f32 or f64).
pub fn clip_factor_of<T: crate::real::Real>(norm: T, clip_norm: T) -> T {
    if !norm.is_finite() {
        return T::zero();
    }
    let epsilon = T::of(f64::from(CLIP_EPSILON));
    num_traits::Float::min(clip_norm / (norm + epsilon), T::one())
}

/// Per-layer bounds C_l = C/√L for `layers` layers (Σ C_l² = C²).
pub fn per_layer_clip_norms(clip_norm: f64, layers: usize) -> Vec<f64> {
    vec![clip_norm / (layers as f64).sqrt(); layers]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipped_norm_never_exceeds_the_bound() {
        for norm in [0.0f32, 1e-9, 0.5, 0.999_999, 1.0, 1.000_001, 3.0, 1e30] {
            let scaled = norm * clip_factor(norm, 1.0);
            assert!(scaled <= 1.0 + 1e-6, "{norm} -> {scaled}");
        }
        assert_eq!(clip_factor(0.5, 1.0), 1.0, "small gradients are untouched");
        assert_eq!(clip_factor(f32::NAN, 1.0), 0.0);
        assert_eq!(clip_factor(f32::INFINITY, 1.0), 0.0);
    }

    #[test]
    fn per_layer_bounds_compose_to_the_flat_bound() {
        let bounds = per_layer_clip_norms(2.0, 4);
        let total: f64 = bounds.iter().map(|c| c * c).sum();
        assert!((total.sqrt() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn bad_clip_norms_are_refused() {
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let config = ClippingConfig {
                clip_norm: c,
                ..ClippingConfig::default()
            };
            assert!(config.validate().is_err());
        }
    }
}
