//! 2×2 max pooling with stride 1, forward and backward as single custom ops.
//!
//! candle's `max_pool2d_with_stride(2, 1)` fails in backward, and the formulation as the
//! maximum of four shifted views costs three strided `maximum` ops forward and their
//! gradients backward (a sixth of the cnn's step). Here the forward takes each window's
//! maximum in one pass and the backward sends each output gradient to the first maximal
//! input of its window (scan order, as PyTorch does), found again from the input.

use crate::grad_sample::contiguous_slice as contiguous;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// The pooling op on a contiguous (B, C, H, W) tensor.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2Stride1;

/// Its gradient: (output gradient, input) → input gradient.
#[derive(Debug, Clone, Copy)]
struct MaxPool2Stride1Backward;

/// Which of window (a, b; c, d) is its first maximal entry in scan order: 0 = a … 3 = d.
/// Each candidate replaces the best so far only when strictly greater, as PyTorch does
/// (so ties and NaNs keep the earlier entry).
#[inline(always)]
fn first_max<T: WithDType>(a: T, b: T, c: T, d: T) -> (T, u8) {
    let (mut best, mut which) = (a, 0);
    if b > best {
        (best, which) = (b, 1);
    }
    if c > best {
        (best, which) = (c, 2);
    }
    if d > best {
        (best, which) = (d, 3);
    }
    (best, which)
}

/// Planes per parallel task: enough work to amortise rayon's scheduling.
const PLANES_PER_TASK: usize = 64;

fn forward<T: WithDType>(src: &[T], planes: usize, height: usize, width: usize) -> Vec<T> {
    let (oh, ow) = (height - 1, width - 1);
    let mut out = vec![T::zero(); planes * oh * ow];
    out.par_chunks_mut(PLANES_PER_TASK * oh * ow)
        .zip(src.par_chunks(PLANES_PER_TASK * height * width))
        .for_each(|(out, src)| {
            for (out, plane) in out
                .chunks_exact_mut(oh * ow)
                .zip(src.chunks_exact(height * width))
            {
                for (y, out) in out.chunks_exact_mut(ow).enumerate() {
                    // Slices of equal length ow, so the loop has no bounds checks.
                    let top = &plane[y * width..(y + 1) * width];
                    let bottom = &plane[(y + 1) * width..(y + 2) * width];
                    let (a, b) = (&top[..ow], &top[1..]);
                    let (c, d) = (&bottom[..ow], &bottom[1..]);
                    for x in 0..ow {
                        out[x] = first_max(a[x], b[x], c[x], d[x]).0;
                    }
                }
            }
        });
    out
}

fn backward<T: WithDType>(grad: &[T], input: &[T], height: usize, width: usize) -> Vec<T> {
    let (oh, ow) = (height - 1, width - 1);
    let mut out = vec![T::zero(); input.len()];
    out.par_chunks_mut(PLANES_PER_TASK * height * width)
        .zip(input.par_chunks(PLANES_PER_TASK * height * width))
        .zip(grad.par_chunks(PLANES_PER_TASK * oh * ow))
        .for_each(|((out, input), grad)| {
            for ((out, plane), grad) in out
                .chunks_exact_mut(height * width)
                .zip(input.chunks_exact(height * width))
                .zip(grad.chunks_exact(oh * ow))
            {
                for (y, grad) in grad.chunks_exact(ow).enumerate() {
                    let top = &plane[y * width..(y + 1) * width];
                    let bottom = &plane[(y + 1) * width..(y + 2) * width];
                    let (out_top, out_bottom) = out[y * width..(y + 2) * width].split_at_mut(width);
                    for x in 0..ow {
                        let (_, which) = first_max(top[x], top[x + 1], bottom[x], bottom[x + 1]);
                        let row = if which < 2 {
                            &mut *out_top
                        } else {
                            &mut *out_bottom
                        };
                        row[x + usize::from(which & 1)] += grad[x];
                    }
                }
            }
        });
    out
}

impl CustomOp1 for MaxPool2Stride1 {
    fn name(&self) -> &'static str {
        "max-pool-2-stride-1"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        if h < 2 || w < 2 {
            candle_core::bail!("max pool 2×2: input {h}×{w} is too small");
        }
        let out = match storage {
            CpuStorage::F32(d) => {
                CpuStorage::F32(forward(contiguous(d, layout, "max pool")?, b * c, h, w))
            }
            CpuStorage::F64(d) => {
                CpuStorage::F64(forward(contiguous(d, layout, "max pool")?, b * c, h, w))
            }
            other => candle_core::bail!("max pool: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, Shape::from((b, c, h - 1, w - 1))))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op2_no_bwd(
            &arg.contiguous()?,
            &MaxPool2Stride1Backward,
        )?))
    }
}

impl CustomOp2 for MaxPool2Stride1Backward {
    fn name(&self) -> &'static str {
        "max-pool-2-stride-1-backward"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        input: &CpuStorage,
        input_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = input_layout.shape().dims4()?;
        let out = match (grad, input) {
            (CpuStorage::F32(g), CpuStorage::F32(x)) => CpuStorage::F32(backward(
                contiguous(g, grad_layout, "max pool backward")?,
                contiguous(x, input_layout, "max pool backward")?,
                h,
                w,
            )),
            (CpuStorage::F64(g), CpuStorage::F64(x)) => CpuStorage::F64(backward(
                contiguous(g, grad_layout, "max pool backward")?,
                contiguous(x, input_layout, "max pool backward")?,
                h,
                w,
            )),
            _ => candle_core::bail!("max pool backward: mismatched dtypes"),
        };
        Ok((out, input_layout.shape().clone()))
    }
}

/// 2×2 max pooling with stride 1 of (B, C, H, W), differentiable.
pub fn max_pool_2_stride_1(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(MaxPool2Stride1)
}

/// The input gradient of [`max_pool_2_stride_1`] from its output gradient and its input
/// (not differentiable itself).
pub fn max_pool_2_stride_1_backward(grad: &Tensor, input: &Tensor) -> candle_core::Result<Tensor> {
    grad.contiguous()?
        .apply_op2_no_bwd(&input.contiguous()?, &MaxPool2Stride1Backward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The four-shifted-views formulation, as an independent oracle.
    fn by_views(x: &Tensor) -> Tensor {
        let (_, _, h, w) = x.dims4().unwrap();
        let v = |dy, dx| {
            x.narrow(2, dy, h - 1)
                .unwrap()
                .narrow(3, dx, w - 1)
                .unwrap()
        };
        let top = v(0, 0).maximum(&v(0, 1)).unwrap();
        let bottom = v(1, 0).maximum(&v(1, 1)).unwrap();
        top.maximum(&bottom).unwrap()
    }

    #[test]
    fn forward_and_gradient_match_the_shifted_views() {
        // Distinct values, so the maximum of each window is unique and both gradients agree.
        let x = Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 6, 5), &Device::Cpu).unwrap())
            .unwrap();
        let weights = Tensor::randn(0f64, 1.0, (2, 3, 5, 4), &Device::Cpu).unwrap();
        let ours = max_pool_2_stride_1(x.as_tensor()).unwrap();
        let theirs = by_views(x.as_tensor());
        let diff = (&ours - &theirs).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f64>().unwrap(), 0.0);
        let g_ours = (ours * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_theirs = (theirs * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let a = g_ours.get(x.as_tensor()).unwrap();
        let b = g_theirs.get(x.as_tensor()).unwrap();
        let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f64>().unwrap() < 1e-15);
    }

    #[test]
    fn ties_send_the_gradient_to_the_first_maximum_only() {
        let x = Var::from_tensor(
            &Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = max_pool_2_stride_1(x.as_tensor()).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(g, [1.0, 0.0, 0.0, 0.0]);
    }
}
