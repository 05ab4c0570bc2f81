//! The per-example rule of a 2-D convolution: a linear layer over unfolded patches.
//!
//! With A = im2col(x) (B, T, C·kh·kw) and G the output gradient laid out (B, T, out), the
//! weight gradient of example i is G_iᵀ A_i reshaped to (out, C, kh, kw), and the bias
//! gradient Σ_t G_i\[t\]: exactly [`super::linear`]'s rule, which also picks ghost or
//! materialised norms per layer (for the cnn of design.md: materialised for the first conv,
//! T = 196; ghost for the second, T = 25).

use candle_core::Tensor;

use super::linear;
use crate::error::Result;

/// Per-example squared norms of the weight and bias gradients, (B,).
pub fn sq_norms(patches: &Tensor, output_grad: &Tensor) -> Result<Tensor> {
    linear::sq_norms(patches, output_grad, true)
}

/// Norms and, when materialised, per-example gradients (see [`linear::per_example`]).
pub fn per_example(patches: &Tensor, output_grad: &Tensor) -> Result<linear::PerExample> {
    linear::per_example(patches, output_grad)
}

/// Σ_i c_i ∇W_i as (out, C, kh, kw) and Σ_i c_i ∇b_i as (out).
pub fn clipped_sums(
    patches: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
    weight_shape: (usize, usize, usize, usize),
) -> Result<(Tensor, Tensor)> {
    let (weight, bias) = linear::clipped_sums(patches, output_grad, factors)?;
    Ok((weight.reshape(weight_shape)?, bias))
}
