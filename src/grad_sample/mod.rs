//! The per-example rule shared by every layer that is linear in its parameters, and the
//! kernels it runs on. Each rule reads one layer's trace, never a batch gradient.
//!
//! A layer y = A Wᵀ + b (A its input as it multiplies W: the unfolded patches of
//! [`im2col`] for a convolution, the input rows for a linear map or an attention
//! projection) has per-example gradient ∇W_i = G_iᵀ A_i, where G = ∂loss/∂y is the output
//! gradient its hand-written backward (`model::backprop`) or tier 3's taps
//! (`model::private`) leave in the trace. From A and G alone, [`linear`] gives the
//! per-example squared norms (ghost, ⟨A_i A_iᵀ, G_i G_iᵀ⟩ without forming ∇W_i, Li et al.
//! 2022, or materialised, whichever is cheaper by the shapes) and the clipped sum
//! Σ_i c_i ∇θ_i, one matmul each (Goodfellow 2015). [`matmul`] runs the small per-example
//! products (through `gemm`, examples in parallel); the layer kinds in `model::kinds` call these rules (conv2d per channel group)
//! and are checked against batch-size-1 autograd passes in tests/it/layers.rs; this
//! module's rules against the naive loop in tests/it/grad_sample.rs.

pub mod im2col;
pub mod linear;
pub mod matmul;

use candle_core::{Storage, Tensor};

use crate::error::Error;

/// The values of a contiguous CPU tensor's storage, or an error naming `op` (custom ops
/// here read their input as one flat slice).
pub(crate) fn contiguous_slice<'a, T>(
    data: &'a [T],
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// Calls `f` with the values of `t` (of element type `T`, on the CPU; copied first if not
/// contiguous).
pub(crate) fn with_values<T: crate::real::Real, R>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[T]) -> R,
) -> crate::Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => match T::cpu_storage_as_slice(cpu) {
            Ok(data) => Ok(f(contiguous_slice(data, layout, op)?)),
            Err(_) => Err(Error::Tensor(format!(
                "{op}: expected a {:?} tensor, got {:?}",
                T::DTYPE,
                t.dtype()
            ))),
        },
        _ => Err(Error::Tensor(format!("{op}: expected a tensor on the CPU"))),
    }
}

/// A CPU tensor of `dims` from its values.
pub(crate) fn tensor<T: crate::real::Real>(
    values: Vec<T>,
    dims: &[usize],
) -> crate::Result<Tensor> {
    Ok(Tensor::from_vec(values, dims, &candle_core::Device::Cpu)?)
}

/// Values of any float tensor as f64 (exact for f32 and f64).
pub(crate) fn wide_values(t: &Tensor) -> crate::Result<Vec<f64>> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?)
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Tensor(e.to_string())
    }
}
