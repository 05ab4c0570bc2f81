//! The per-example rule of a linear layer y = a Wᵀ + b, with or without a sequence axis.
//!
//! Shapes: input A (B, T, d) and output gradient G (B, T, p); a plain linear layer has T = 1
//! (2-D (B, d) and (B, p) are accepted too). Example i's gradients are ∇W_i = G_iᵀ A_i
//! (p × d) and ∇b_i = Σ_t G_i[t].
//! - T = 1: ‖∇W_i‖² = ‖a_i‖²·‖g_i‖² (Goodfellow 2015, "Efficient per-example gradient
//!   computations").
//! - T > 1: either materialise G_iᵀ A_i (cost T·p·d per example) or use the ghost norm
//!   ⟨A_i A_iᵀ, G_i G_iᵀ⟩ (cost T²·(p + d); Li et al. 2022, "Large language models can be
//!   strong differentially private learners"), whichever is cheaper (mixed ghost norm,
//!   Bu et al. 2023).
//! - Clipped sum: Σ_i c_i ∇W_i = (c ⊙ G)ᵀ A over all (i, t) rows: one matmul.

use candle_core::{D, Tensor};

use crate::error::Result;

/// (B, T, n) from (B, n) or (B, T, n).
fn with_sequence_axis(t: &Tensor) -> Result<Tensor> {
    Ok(match t.rank() {
        2 => t.unsqueeze(1)?,
        _ => t.clone(),
    })
}

/// Per-example squared norms of one layer, and the per-example gradients themselves when
/// they were materialised to get the norms (then the clipped sum reuses them).
#[derive(Debug)]
pub struct PerExample {
    /// ‖∇W_i‖² + ‖∇b_i‖², shape (B,).
    pub sq_norms: Tensor,
    /// (∇W_i (B, p, d), ∇b_i (B, p)) when materialised.
    pub gradients: Option<(Tensor, Tensor)>,
}

/// Per-example squared norms ‖∇W_i‖² + ‖∇b_i‖², by the cheapest rule (see the module).
pub fn per_example(input: &Tensor, output_grad: &Tensor) -> Result<PerExample> {
    let a = with_sequence_axis(input)?;
    let g = with_sequence_axis(output_grad)?;
    let (_, t, d) = a.dims3()?;
    let p = g.dim(2)?;
    let bias_grads = g.sum(1)?;
    let bias = bias_grads.sqr()?.sum(D::Minus1)?;
    if t == 1 {
        let a2 = a.sqr()?.sum((1, 2))?;
        let g2 = g.sqr()?.sum((1, 2))?;
        return Ok(PerExample {
            sq_norms: ((a2 * g2)? + bias)?,
            gradients: None,
        });
    }
    if t * t * (p + d) < t * p * d {
        // Ghost norm: ⟨A Aᵀ, G Gᵀ⟩ per example.
        let aa = a.matmul(&a.transpose(1, 2)?)?;
        let gg = g.matmul(&g.transpose(1, 2)?)?;
        return Ok(PerExample {
            sq_norms: ((aa * gg)?.sum((1, 2))? + bias)?,
            gradients: None,
        });
    }
    let weight_grads = g.transpose(1, 2)?.matmul(&a)?;
    Ok(PerExample {
        sq_norms: (weight_grads.sqr()?.sum((1, 2))? + bias)?,
        gradients: Some((weight_grads, bias_grads)),
    })
}

/// Per-example squared norms ‖∇W_i‖² (+ ‖∇b_i‖² when `bias`), shape (B,).
pub fn sq_norms(input: &Tensor, output_grad: &Tensor, bias: bool) -> Result<Tensor> {
    let both = per_example(input, output_grad)?.sq_norms;
    if bias {
        return Ok(both);
    }
    let g = with_sequence_axis(output_grad)?;
    Ok((both - g.sum(1)?.sqr()?.sum(D::Minus1)?)?)
}

/// [`clipped_sums`], reusing materialised per-example gradients when `per_example` has
/// them (a weighted sum of B small matrices instead of a matmul over all B·T rows).
pub fn clipped_sums_with(
    per_example: &PerExample,
    input: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    match &per_example.gradients {
        Some((weight_grads, bias_grads)) => {
            let b = factors.dim(0)?;
            let weight = weight_grads
                .broadcast_mul(&factors.reshape((b, 1, 1))?)?
                .sum(0)?;
            let bias = bias_grads
                .broadcast_mul(&factors.reshape((b, 1))?)?
                .sum(0)?;
            Ok((weight, bias))
        }
        None => clipped_sums(input, output_grad, factors),
    }
}

/// Σ_i c_i ∇W_i (p, d) and Σ_i c_i ∇b_i (p), for clip factors `factors` (B,).
pub fn clipped_sums(
    input: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let a = with_sequence_axis(input)?;
    let g = with_sequence_axis(output_grad)?;
    let (b, t, d) = a.dims3()?;
    let p = g.dim(2)?;
    let scaled = g.broadcast_mul(&factors.reshape((b, 1, 1))?)?;
    let rows = scaled.reshape((b * t, p))?;
    let weight = rows.t()?.matmul(&a.reshape((b * t, d))?.contiguous()?)?;
    let bias = rows.sum(0)?;
    Ok((weight, bias))
}
