//! The per-example rule of a linear layer y = a Wᵀ + b, with or without a sequence axis.
//!
//! Shapes: input A (B, T, d) and output gradient G (B, T, p); a plain linear layer has T = 1
//! (2-D (B, d) and (B, p) are accepted too). Example i's gradients are ∇W_i = G_iᵀ A_i
//! (p × d) and ∇b_i = Σ_t G_i\[t\].
//! - T = 1: ‖∇W_i‖² = ‖a_i‖²·‖g_i‖² (Goodfellow 2015, "Efficient per-example gradient
//!   computations").
//! - T > 1: either materialise G_iᵀ A_i (cost T·p·d per example) or use the ghost norm
//!   ⟨A_i A_iᵀ, G_i G_iᵀ⟩ (cost T²·(p + d); Li et al. 2022, "Large language models can be
//!   strong differentially private learners"), whichever is cheaper (mixed ghost norm,
//!   Bu et al. 2023).
//! - Clipped sum: Σ_i c_i ∇W_i = (c ⊙ G)ᵀ A over all (i, t) rows: one matmul.

use candle_core::Tensor;
use rayon::prelude::*;

use super::matmul::{MatRef, matmul};
use super::{tensor, with_values};
use crate::error::Result;
use crate::real::{Real, real};

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

/// Values below which a per-example pass runs on one thread.
const SERIAL_MAX: usize = 1 << 19;

/// Σ_t G_i[t] into `dst` (p values) for one example's rows `g` (T × p).
fn sum_rows<T: Real>(g: &[T], p: usize, dst: &mut [T]) {
    dst.fill(T::zero());
    for row in g.chunks_exact(p) {
        for (acc, &v) in dst.iter_mut().zip(row) {
            *acc += v;
        }
    }
}

/// Σ x·y with eight partial sums (a single running f32 sum cannot be vectorised: each add
/// waits for the previous one).
fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    let mut partial = [T::zero(); 8];
    let (xs, ys) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: T = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(&a, &b)| a * b)
        .sum();
    for (a, b) in xs.zip(ys) {
        for k in 0..8 {
            partial[k] += a[k] * b[k];
        }
    }
    partial.iter().copied().sum::<T>() + tail
}

fn sq_sum<T: Real>(values: &[T]) -> T {
    dot(values, values)
}

/// How a layer over a sequence gets its per-example norms (a plain layer, T = 1, always
/// uses ‖a‖²‖g‖²).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormMode {
    /// Ghost norms when 2T² ≤ p·d-ish, i.e. when T²(p + d) < T·p·d (Bu et al. 2023's mixed
    /// ghost norm, decided once per layer from its shapes).
    #[default]
    Auto,
    /// Always ⟨A Aᵀ, G Gᵀ⟩.
    Ghost,
    /// Always materialise G_iᵀ A_i.
    Instantiate,
}

impl NormMode {
    /// Whether a layer with T positions, input width d and output width p materialises.
    pub fn materialises(self, t: usize, d: usize, p: usize) -> bool {
        t > 1
            && match self {
                NormMode::Auto => t * t * (p + d) >= t * p * d,
                NormMode::Ghost => false,
                NormMode::Instantiate => true,
            }
    }
}

/// Per-example squared norms ‖∇W_i‖² + ‖∇b_i‖², by the cheapest rule (see the module).
pub fn per_example(input: &Tensor, output_grad: &Tensor) -> Result<PerExample> {
    per_example_with(input, output_grad, true, NormMode::Auto)
}

/// [`per_example`] for a layer with or without a bias, with its norm mode.
pub fn per_example_with(
    input: &Tensor,
    output_grad: &Tensor,
    bias: bool,
    mode: NormMode,
) -> Result<PerExample> {
    real!(
        input.dtype(),
        "per-example norms",
        |T| per_example_typed::<T>(input, output_grad, bias, mode)
    )
}

fn per_example_typed<T: Real>(
    input: &Tensor,
    output_grad: &Tensor,
    bias: bool,
    mode: NormMode,
) -> Result<PerExample> {
    let a = with_sequence_axis(input)?;
    let g = with_sequence_axis(output_grad)?;
    let (b, t, d) = a.dims3()?;
    let p = g.dim(2)?;
    if g.dims3()? != (b, t, p) {
        return Err(crate::Error::Tensor(format!(
            "per-example rule: input {:?} and output gradient {:?} disagree",
            a.dims(),
            g.dims()
        )));
    }
    let materialise = mode.materialises(t, d, p);
    let with_bias = if bias { T::one() } else { T::zero() };
    with_values(&a, "per-example norms", |a: &[T]| {
        with_values(&g, "per-example norms", |g: &[T]| {
            let examples = a.par_chunks(t * d.max(1)).zip(g.par_chunks(t * p.max(1)));
            if t == 1 {
                // ‖g aᵀ‖² = ‖a‖²‖g‖² (Goodfellow 2015), and ∇b = g.
                let norm = |(a, g): (&[T], &[T])| {
                    let g2 = sq_sum(g);
                    sq_sum(a) * g2 + with_bias * g2
                };
                // A few hundred thousand values: faster on one thread than split.
                let norms: Vec<T> = if b * (d + p) < SERIAL_MAX {
                    a.chunks(d.max(1))
                        .zip(g.chunks(p.max(1)))
                        .map(norm)
                        .collect()
                } else {
                    examples.with_min_len(64).map(norm).collect()
                };
                return Ok(PerExample {
                    sq_norms: tensor(norms, &[b])?,
                    gradients: None,
                });
            }
            if !materialise {
                let norms: Vec<T> = examples
                    .map_init(
                        || {
                            (
                                vec![T::zero(); t * t],
                                vec![T::zero(); t * t],
                                vec![T::zero(); p],
                            )
                        },
                        |(aa, gg, bias), (a, g)| {
                            sum_rows(g, p, bias);
                            let bias = with_bias * sq_sum(bias);
                            // Ghost norm ⟨A Aᵀ, G Gᵀ⟩ (Li et al. 2022).
                            let (a, g) = (MatRef::row_major(a, t, d), MatRef::row_major(g, t, p));
                            matmul(aa, a, a.t(), false, 1);
                            matmul(gg, g, g.t(), false, 1);
                            dot(aa, gg) + bias
                        },
                    )
                    .collect();
                return Ok(PerExample {
                    sq_norms: tensor(norms, &[b])?,
                    gradients: None,
                });
            }
            // Materialised: ∇W_i = G_iᵀ A_i, one single-threaded product per example.
            let mut weights = vec![T::zero(); b * p * d];
            let mut biases = vec![T::zero(); b * p];
            let norms: Vec<T> = weights
                .par_chunks_mut(p * d)
                .zip(biases.par_chunks_mut(p))
                .zip(examples)
                .map(|((weight, bias), (a, g))| {
                    sum_rows(g, p, bias);
                    let (a, g) = (MatRef::row_major(a, t, d), MatRef::row_major(g, t, p));
                    matmul(weight, g.t(), a, false, 1);
                    sq_sum(weight) + with_bias * sq_sum(bias)
                })
                .collect();
            Ok(PerExample {
                sq_norms: tensor(norms, &[b])?,
                gradients: Some((tensor(weights, &[b, p, d])?, tensor(biases, &[b, p])?)),
            })
        })?
    })?
}
/// Per-example squared norms ‖∇W_i‖² (+ ‖∇b_i‖² when `bias`), shape (B,).
pub fn sq_norms(input: &Tensor, output_grad: &Tensor, bias: bool) -> Result<Tensor> {
    Ok(per_example_with(input, output_grad, bias, NormMode::Auto)?.sq_norms)
}

/// [`clipped_sums`], reusing materialised per-example gradients when `per_example` has
/// them (a weighted sum of B small matrices instead of a product over all B·T rows).
pub fn clipped_sums_with(
    per_example: &PerExample,
    input: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let Some((weight_grads, bias_grads)) = &per_example.gradients else {
        return clipped_sums(input, output_grad, factors);
    };
    real!(weight_grads.dtype(), "clipped sum", |T| weighted_sums::<T>(
        weight_grads,
        bias_grads,
        factors
    ))
}

/// Σ_i c_i ∇θ_i of materialised per-example gradients (B, ...).
fn weighted_sums<T: Real>(
    weight_grads: &Tensor,
    bias_grads: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let c = factors.to_dtype(T::DTYPE)?.to_vec1::<T>()?;
    let weighted_sum = |grads: &Tensor| -> Result<Tensor> {
        let dims = &grads.dims()[1..];
        let size: usize = dims.iter().product();
        let sum = with_values(grads, "clipped sum", |grads: &[T]| {
            // Each task owns a range of coordinates and adds the examples in order, so the
            // result does not depend on the thread count.
            let mut sum = vec![T::zero(); size];
            sum.par_chunks_mut(SUM_CHUNK)
                .enumerate()
                .for_each(|(chunk, out)| {
                    let start = chunk * SUM_CHUNK;
                    for (example, &factor) in grads.chunks_exact(size).zip(&c) {
                        // A dropped (non-finite) example is skipped: 0 · NaN is NaN.
                        if factor == T::zero() {
                            continue;
                        }
                        for (acc, &v) in out.iter_mut().zip(&example[start..]) {
                            *acc += factor * v;
                        }
                    }
                });
            sum
        })?;
        tensor(sum, dims)
    };
    Ok((weighted_sum(weight_grads)?, weighted_sum(bias_grads)?))
}

/// Coordinates per task of a weighted sum of per-example gradients.
const SUM_CHUNK: usize = 256;

/// Examples per task of the split product in [`clipped_sums`].
const EXAMPLES_PER_TASK: usize = 32;

/// Output size (p·d) from which one product split by gemm over the threads beats products
/// split over the examples (and their partial sums).
const LARGE_OUTPUT: usize = 1 << 16;

/// Σ_i c_i ∇W_i (p, d) and Σ_i c_i ∇b_i (p), for clip factors `factors` (B,):
/// (c ⊙ G)ᵀ A over all B·T rows.
pub fn clipped_sums(
    input: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    real!(input.dtype(), "clipped sum", |T| clipped_sums_typed::<T>(
        input,
        output_grad,
        factors
    ))
}

fn clipped_sums_typed<T: Real>(
    input: &Tensor,
    output_grad: &Tensor,
    factors: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let a = with_sequence_axis(input)?;
    let g = with_sequence_axis(output_grad)?;
    let (b, t, d) = a.dims3()?;
    let p = g.dim(2)?;
    let c = factors.to_dtype(T::DTYPE)?.to_vec1::<T>()?;
    if c.len() != b {
        return Err(crate::Error::Tensor(format!(
            "{} clip factors for a batch of {b}",
            c.len()
        )));
    }
    let (weight, bias) = with_values(&a, "clipped sum", |a: &[T]| {
        with_values(&g, "clipped sum", |g: &[T]| {
            // The rows of G scaled by their example's factor; a factor of 0 (a non-finite
            // gradient) zeroes the rows outright, as 0 · NaN would still be NaN.
            let mut scaled = g.to_vec();
            scaled
                .par_chunks_mut(t * p.max(1))
                .zip(&c)
                .for_each(|(rows, &factor)| {
                    if factor == T::zero() {
                        rows.fill(T::zero());
                    } else {
                        rows.iter_mut().for_each(|v| *v *= factor);
                    }
                });
            // Likewise A: the rows of a dropped example are zeroed if they are not finite
            // (rare: a copy is made only then).
            let dropped_nonfinite = c.iter().enumerate().any(|(i, &factor)| {
                factor == T::zero() && a[i * t * d..(i + 1) * t * d].iter().any(|v| !v.is_finite())
            });
            let cleaned;
            let a = if dropped_nonfinite {
                let mut copy = a.to_vec();
                for (rows, &factor) in copy.chunks_mut(t * d.max(1)).zip(&c) {
                    if factor == T::zero() {
                        rows.fill(T::zero());
                    }
                }
                cleaned = copy;
                &cleaned[..]
            } else {
                a
            };
            let mut bias = vec![T::zero(); p];
            sum_rows(&scaled, p, &mut bias);
            let mut weight = vec![T::zero(); p * d];
            if p * d >= LARGE_OUTPUT || b <= EXAMPLES_PER_TASK {
                let threads = rayon::current_num_threads();
                let rows = b * t;
                matmul(
                    &mut weight,
                    MatRef::row_major(&scaled, rows, p).t(),
                    MatRef::row_major(a, rows, d),
                    false,
                    threads,
                );
            } else {
                // A small output and many rows: gemm would run on one thread; split the
                // rows instead, in fixed groups (the same sum for any thread count).
                let rows = EXAMPLES_PER_TASK * t;
                let partials: Vec<Vec<T>> = scaled
                    .par_chunks(rows * p)
                    .zip(a.par_chunks(rows * d))
                    .map(|(g, a)| {
                        let n = g.len() / p;
                        let mut partial = vec![T::zero(); p * d];
                        matmul(
                            &mut partial,
                            MatRef::row_major(g, n, p).t(),
                            MatRef::row_major(a, n, d),
                            false,
                            1,
                        );
                        partial
                    })
                    .collect();
                for partial in partials {
                    for (acc, v) in weight.iter_mut().zip(partial) {
                        *acc += v;
                    }
                }
            }
            (weight, bias)
        })
    })??;
    Ok((tensor(weight, &[p, d])?, tensor(bias, &[p])?))
}
