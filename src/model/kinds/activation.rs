//! Parameter-free element-wise kinds: `relu`, `tanh`, `gelu` (the exact, erf form, as
//! PyTorch's default), `sigmoid`, and `square` (x², the polynomial activation of
//! CryptoNets, Gilad-Bachrach et al. 2016, which secret-shared inference computes with one
//! multiplication). Their backward is local to each value, so no example's
//! gradient touches another's.

use candle_core::Tensor;
use rayon::prelude::*;

use crate::error::Result;
use crate::grad_sample::{tensor, with_values};
use crate::model::layer::{Context, Layer, Saved, Trace, unsave};
use crate::model::tanh;
use crate::real::{Real, real};

/// Which function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// max(0, x).
    Relu,
    /// tanh (`model::tanh`'s fast op).
    Tanh,
    /// x·Φ(x).
    Gelu,
    /// 1 / (1 + e^−x).
    Sigmoid,
    /// x².
    Square,
}

/// An element-wise activation.
#[derive(Debug)]
pub struct Activation {
    /// The function.
    pub function: Function,
    shape: Vec<usize>,
}

impl Activation {
    /// `function` on inputs of `shape`.
    pub fn new(function: Function, shape: &[usize]) -> Self {
        Activation {
            function,
            shape: shape.to_vec(),
        }
    }
}

/// Items per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// g ⊙ 1[x > 0] (ReLU's backward).
pub(crate) fn relu_backward(grad: &Tensor, input: &Tensor) -> Result<Tensor> {
    real!(grad.dtype(), "relu backward", |T| relu_backward_typed::<T>(
        grad, input
    ))
}

fn relu_backward_typed<T: Real>(grad: &Tensor, input: &Tensor) -> Result<Tensor> {
    let values = with_values(grad, "relu backward", |g: &[T]| {
        with_values(input, "relu backward", |x: &[T]| {
            let mut dst = vec![T::zero(); g.len()];
            dst.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK).zip(x.par_chunks(CHUNK)))
                .for_each(|(dst, (g, x))| {
                    for ((d, g), x) in dst.iter_mut().zip(g).zip(x) {
                        *d = if *x > T::zero() { *g } else { T::zero() };
                    }
                });
            dst
        })
    })??;
    tensor(values, grad.dims())
}

impl Layer for Activation {
    fn kind(&self) -> &'static str {
        match self.function {
            Function::Relu => "relu",
            Function::Tanh => "tanh",
            Function::Gelu => "gelu",
            Function::Sigmoid => "sigmoid",
            Function::Square => "square",
        }
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        Ok(match self.function {
            Function::Relu => x.relu()?,
            Function::Tanh => tanh::tanh(x)?,
            // x·Φ(x) = x·(1 + erf(x/√2))/2 from candle's erf, not its fused gelu_erf: the
            // fused op's autograd rounds 1/√(2π) to 0.398942 (a 1e-6 relative error that
            // would hide in f64 checks); erf's derivative is exact.
            Function::Gelu => {
                let cdf = (((x / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5)?;
                (x * cdf)?
            }
            Function::Sigmoid => candle_nn::ops::sigmoid(x)?,
            Function::Square => x.sqr()?,
        })
    }

    /// candle's own tanh where the forward uses `model::tanh`'s fused op.
    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        match self.function {
            Function::Tanh => Ok(x.tanh()?),
            _ => self.forward(x, ctx),
        }
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        // No graph here: the fused op for GELU (same function, one pass).
        let y = match self.function {
            Function::Gelu => x.gelu_erf()?,
            _ => self.forward(x, ctx)?,
        };
        // ReLU, GELU and x² need the input, tanh and sigmoid their output.
        let keep = match self.function {
            Function::Relu | Function::Gelu | Function::Square => x.clone(),
            Function::Tanh | Function::Sigmoid => y.clone(),
        };
        Ok((y, Box::new(keep)))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        _: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        if !input_grad {
            return Ok((None, None));
        }
        let kept: Tensor = unsave(saved, self.kind())?;
        let g = match self.function {
            Function::Relu => relu_backward(&grad, &kept)?,
            Function::Tanh => tanh::tanh_backward(&grad, &kept)?,
            Function::Sigmoid => (&grad * (&kept * (1.0 - &kept)?)?)?,
            Function::Square => (&grad * (&kept * 2.0)?)?,
            Function::Gelu => {
                // d/dx x·Φ(x) = Φ(x) + x·φ(x).
                let cdf = ((&kept / std::f64::consts::SQRT_2)?.erf()? + 1.0)? * 0.5;
                let pdf = ((kept.sqr()? * -0.5)?.exp()? / (2.0 * std::f64::consts::PI).sqrt())?;
                (&grad * (cdf? + (&kept * pdf)?)?)?
            }
        };
        Ok((Some(g), None))
    }
}
