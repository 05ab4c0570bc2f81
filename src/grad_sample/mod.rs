//! Per-example gradient norms and clipped sums, without materialising per-example gradients
//! where a cheaper formula exists (Goodfellow 2015; Li et al. 2022, ghost clipping).
//!
//! Every DP layer here is linear in its parameters: y = A Wᵀ + b, with A the layer's input
//! as it multiplies W (for a Conv2d, the unfolded patches of `im2col`). One forward pass
//! records A; one backward pass gives G = ∂loss/∂y (through a zero probe added to y, because
//! candle drops the gradients of intermediate tensors). From A and G alone:
//! per-example squared norms (`linear::sq_norms`) and the clipped sum Σ_i c_i ∇θ_i
//! (`linear::clipped_sums`), one matmul each. Each layer type has its file and is tested
//! against a naive loop of batch-size-1 backward passes (tests/it/grad_sample.rs).

pub mod conv2d;
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
