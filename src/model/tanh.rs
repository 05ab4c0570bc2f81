//! tanh as one custom op, forward and backward.
//!
//! candle's CPU `tanh` calls libm's `tanhf` per value (about 18 ns each: 14 ms for the cnn's
//! first activation at batch 256, the largest single op of its forward pass), and its
//! backward takes three tensor ops. Here the forward is
//! `tanh(x) = sign(x)·(1 − e^{−2|x|})/(1 + e^{−2|x|})` with `expf` (no overflow: the
//! exponent is never positive), or its Taylor series near 0, within 2 ulp of tanh; the
//! backward is one pass of
//! `g·(1 − y²)` from the saved output y.

use crate::grad_sample::contiguous_slice as contiguous;
use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// The tanh op.
#[derive(Debug, Clone, Copy)]
pub struct Tanh;

/// ∂tanh: (output gradient, tanh output) → input gradient.
#[derive(Debug, Clone, Copy)]
struct TanhBackward;

/// Taylor coefficients of tanh(x)/x in powers of x² (A&S 4.5.64): 1, −1/3, 2/15, ...
const TANH_SERIES: [f32; 9] = [
    1.0,
    -1.0 / 3.0,
    2.0 / 15.0,
    -17.0 / 315.0,
    62.0 / 2835.0,
    -1382.0 / 155_925.0,
    21_844.0 / 6_081_075.0,
    -929_569.0 / 638_512_875.0,
    6_404_582.0 / 10_854_718_875.0,
];

/// tanh of one f32: the series below 0.55 (where 1 − e^{−2|x|} would cancel; the first
/// omitted term is below 1e-8 relative there), the exponential form above.
#[inline]
fn tanh_f32(x: f32) -> f32 {
    let a = x.abs();
    if a < 0.55 {
        let x2 = x * x;
        return x * TANH_SERIES.iter().rev().fold(0.0, |acc, &c| acc * x2 + c);
    }
    let t = (-2.0 * a).exp();
    ((1.0 - t) / (1.0 + t)).copysign(x)
}

impl CustomOp1 for Tanh {
    fn name(&self) -> &'static str {
        "fast-tanh"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match storage {
            CpuStorage::F32(data) => {
                let data = contiguous(data, layout, "tanh")?;
                let mut out = vec![0f32; data.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(data.par_chunks(CHUNK))
                    .for_each(|(out, x)| {
                        for (y, &x) in out.iter_mut().zip(x) {
                            *y = tanh_f32(x);
                        }
                    });
                CpuStorage::F32(out)
            }
            CpuStorage::F64(data) => CpuStorage::F64(
                contiguous(data, layout, "tanh")?
                    .iter()
                    .map(|x| x.tanh())
                    .collect(),
            ),
            other => candle_core::bail!("tanh: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            grad_res
                .contiguous()?
                .apply_op2_no_bwd(&res.contiguous()?, &TanhBackward)?,
        ))
    }
}

impl CustomOp2 for TanhBackward {
    fn name(&self) -> &'static str {
        "fast-tanh-backward"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_layout: &Layout,
        out: &CpuStorage,
        out_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let result = match (grad, out) {
            (CpuStorage::F32(g), CpuStorage::F32(y)) => {
                let g = contiguous(g, grad_layout, "tanh backward")?;
                let y = contiguous(y, out_layout, "tanh backward")?;
                let mut out = vec![0f32; g.len()];
                out.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK).zip(y.par_chunks(CHUNK)))
                    .for_each(|(out, (g, y))| {
                        for ((d, g), y) in out.iter_mut().zip(g).zip(y) {
                            *d = g * (1.0 - y * y);
                        }
                    });
                CpuStorage::F32(out)
            }
            (CpuStorage::F64(g), CpuStorage::F64(y)) => CpuStorage::F64(
                contiguous(g, grad_layout, "tanh backward")?
                    .iter()
                    .zip(contiguous(y, out_layout, "tanh backward")?)
                    .map(|(g, y)| g * (1.0 - y * y))
                    .collect(),
            ),
            _ => candle_core::bail!("tanh backward: mismatched dtypes"),
        };
        Ok((result, grad_layout.shape().clone()))
    }
}

/// tanh(x), differentiable.
pub fn tanh(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Tanh)
}

/// The input gradient g·(1 − y²) of tanh from its output gradient g and output y (not
/// differentiable itself).
pub fn tanh_backward(grad: &Tensor, output: &Tensor) -> candle_core::Result<Tensor> {
    grad.contiguous()?
        .apply_op2_no_bwd(&output.contiguous()?, &TanhBackward)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_is_within_two_ulp_of_tanh() {
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            let ours = tanh_f32(x);
            let exact = (f64::from(x)).tanh() as f32;
            assert!(
                (ours - exact).abs() <= 2.0 * f32::EPSILON * exact.abs().max(f32::MIN_POSITIVE),
                "x = {x}: {ours} vs {exact}"
            );
        }
        assert_eq!(tanh_f32(100.0), 1.0);
        assert_eq!(tanh_f32(-100.0), -1.0);
        assert_eq!(tanh_f32(0.0), 0.0);
    }

    #[test]
    fn gradient_is_one_minus_tanh_squared() {
        let x =
            Var::from_tensor(&Tensor::new(&[-3.0f64, -0.5, 0.0, 0.25, 2.0], &Device::Cpu).unwrap())
                .unwrap();
        let y = tanh(x.as_tensor()).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = grads.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        for (gi, xi) in g.iter().zip([-3.0f64, -0.5, 0.0, 0.25, 2.0]) {
            let expected = 1.0 - xi.tanh().powi(2);
            assert!((gi - expected).abs() < 1e-15, "{gi} vs {expected}");
        }
    }
}
