//! The Gaussian mechanism of DP-SGD: clip each example's gradient, then add noise once per
//! step to the sum (Abadi et al. 2016, Alg. 1).
//!
//! This room works on plain slices, not tensors: the part of the privacy claim it carries
//! (the sensitivity bound C and noise of standard deviation σ·C) stays small and auditable.
//! It never computes ε; the trainer reports each step to `privacy`.

pub mod adaptive_clip;
pub mod clipping;
pub mod discrete_gaussian;
pub mod noise;
pub mod secure_noise;
pub mod shares;

pub use adaptive_clip::{AdaptiveClipper, AdaptiveClippingConfig, gradient_noise_multiplier};
pub use clipping::{
    ClippingConfig, ClippingMode, clip_factor, clip_factor_of, per_layer_clip_norms,
};
pub use noise::GaussianNoise;
pub use secure_noise::SecureNoise;
