//! Parameter-free pooling kinds: `max_pool2d` (any kernel and stride; 2×2 at stride 1 uses
//! the fused op of `model::pool`), `avg_pool2d` (stride = kernel), `global_avg_pool`
//! ((B, C, H, W) → (B, C)) and `mean_pool` ((B, T, D) → (B, D), over the real tokens
//! when `masked`).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::refuse;
use crate::error::Result;
use crate::grad_sample::{contiguous_slice, tensor, with_values};
use crate::model::layer::{Context, Layer, Saved, Trace, nothing, unsave};
use crate::model::pool as fused;
use crate::real::{Real, real};

/// Max pooling over k×k windows at stride s (no padding).
#[derive(Debug)]
pub struct MaxPool2d {
    /// Window side.
    pub kernel: usize,
    /// Step between windows.
    pub stride: usize,
    shape: Vec<usize>,
}

/// Output side of a window of `kernel` at `stride` over `size` (None if it does not fit).
pub fn pooled(size: usize, kernel: usize, stride: usize) -> Option<usize> {
    (kernel >= 1 && stride >= 1 && size >= kernel).then(|| (size - kernel) / stride + 1)
}

impl MaxPool2d {
    /// Over inputs (C, H, W).
    pub fn new(input: (usize, usize, usize), kernel: usize, stride: usize) -> Result<Self> {
        let (c, h, w) = input;
        let (Some(oh), Some(ow)) = (pooled(h, kernel, stride), pooled(w, kernel, stride)) else {
            return Err(refuse(format!(
                "a {kernel}×{kernel} window at stride {stride} does not fit {h}×{w}"
            )));
        };
        Ok(MaxPool2d {
            kernel,
            stride,
            shape: vec![c, oh, ow],
        })
    }

    fn fused(&self) -> bool {
        self.kernel == 2 && self.stride == 1
    }
}

/// The generic max-pool op (its backward sends each output gradient to the first maximal
/// entry of its window in scan order, as PyTorch does).
#[derive(Debug, Clone, Copy)]
struct MaxPoolOp {
    kernel: usize,
    stride: usize,
}

impl MaxPoolOp {
    /// For each output of each plane, the flat index of its window's first maximum.
    fn argmax<T: Real>(&self, x: &[T], dims: (usize, usize, usize, usize)) -> (Vec<T>, Vec<usize>) {
        let (b, c, h, w) = dims;
        let (oh, ow) = (
            pooled(h, self.kernel, self.stride).unwrap_or(0),
            pooled(w, self.kernel, self.stride).unwrap_or(0),
        );
        let mut values = Vec::with_capacity(b * c * oh * ow);
        let mut indices = Vec::with_capacity(b * c * oh * ow);
        for plane in 0..b * c {
            let base = plane * h * w;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best = (T::neg_infinity(), usize::MAX);
                    for i in 0..self.kernel {
                        for j in 0..self.kernel {
                            let at = base + (oy * self.stride + i) * w + ox * self.stride + j;
                            if best.1 == usize::MAX || x[at] > best.0 {
                                best = (x[at], at);
                            }
                        }
                    }
                    values.push(best.0);
                    indices.push(best.1);
                }
            }
        }
        (values, indices)
    }

    fn backward(&self, grad: &Tensor, input: &Tensor) -> Result<Tensor> {
        real!(grad.dtype(), "max_pool2d backward", |T| self
            .backward_typed::<T>(grad, input))
    }

    fn backward_typed<T: Real>(&self, grad: &Tensor, input: &Tensor) -> Result<Tensor> {
        let dims = input.dims4()?;
        let indices = with_values(input, "max_pool2d backward", |x: &[T]| {
            self.argmax(x, dims).1
        })?;
        let values = with_values(grad, "max_pool2d backward", |g: &[T]| {
            let mut dst = vec![T::zero(); input.elem_count()];
            for (&g, &at) in g.iter().zip(&indices) {
                dst[at] += g;
            }
            dst
        })?;
        tensor(values, input.dims())
    }
}

impl CustomOp1 for MaxPoolOp {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (
            pooled(h, self.kernel, self.stride).unwrap_or(0),
            pooled(w, self.kernel, self.stride).unwrap_or(0),
        );
        let shape = Shape::from((b, c, oh, ow));
        let dims = (b, c, h, w);
        match storage {
            CpuStorage::F32(data) => {
                let (values, _) = self.argmax(contiguous_slice(data, layout, "max_pool2d")?, dims);
                Ok((CpuStorage::F32(values), shape))
            }
            CpuStorage::F64(data) => {
                let (values, _) = self.argmax(contiguous_slice(data, layout, "max_pool2d")?, dims);
                Ok((CpuStorage::F64(values), shape))
            }
            other => candle_core::bail!("max_pool2d: f32 or f64 only, got {:?}", other.dtype()),
        }
    }

    fn bwd(&self, arg: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        self.backward(grad, arg)
            .map(Some)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}

impl Layer for MaxPool2d {
    fn kind(&self) -> &'static str {
        "max_pool2d"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        Ok(match self.fused() {
            true => fused::max_pool_2_stride_1(x)?,
            false => x.contiguous()?.apply_op1(MaxPoolOp {
                kernel: self.kernel,
                stride: self.stride,
            })?,
        })
    }

    /// The maximum of the k² strided views of the input (candle's `index_select` and
    /// `maximum`). Not candle's `max_pool2d`: in candle 0.11 its backward refuses a stride
    /// other than the kernel and multiplies each gradient by its window's share of
    /// maxima (1/k² for a single maximum) instead of dividing by their count. Ties split
    /// the gradient in `maximum`'s backward where the kernel sends it to the first
    /// maximum: the tests draw inputs without ties.
    fn reference_forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let (k, s) = (self.kernel, self.stride);
        let (oh, ow) = (self.shape[1], self.shape[2]);
        let taps = |offset: usize, n: usize| {
            let at: Vec<u32> = (0..n).map(|o| (offset + o * s) as u32).collect();
            Tensor::from_vec(at, n, x.device())
        };
        let mut best: Option<Tensor> = None;
        for i in 0..k {
            let rows = x.index_select(&taps(i, oh)?, 2)?;
            for j in 0..k {
                let view = rows.index_select(&taps(j, ow)?, 3)?;
                best = Some(match best {
                    Some(b) => b.maximum(&view)?,
                    None => view,
                });
            }
        }
        best.ok_or_else(|| crate::Error::Tensor("max_pool2d: kernel 0".into()))
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, ctx)?, Box::new(x.clone())))
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
        let input: Tensor = unsave(saved, "max_pool2d")?;
        let g = match self.fused() {
            true => fused::max_pool_2_stride_1_backward(&grad, &input)?,
            false => MaxPoolOp {
                kernel: self.kernel,
                stride: self.stride,
            }
            .backward(&grad, &input)?,
        };
        Ok((Some(g), None))
    }
}

/// Average pooling over k×k windows at stride k (windows do not overlap; rows or columns
/// left over at the edge are dropped, as PyTorch does).
#[derive(Debug)]
pub struct AvgPool2d {
    /// Window side and stride.
    pub kernel: usize,
    input: (usize, usize, usize),
    shape: Vec<usize>,
}

impl AvgPool2d {
    /// Over inputs (C, H, W).
    pub fn new(input: (usize, usize, usize), kernel: usize) -> Result<Self> {
        let (c, h, w) = input;
        let (Some(oh), Some(ow)) = (pooled(h, kernel, kernel), pooled(w, kernel, kernel)) else {
            return Err(refuse(format!(
                "a {kernel}×{kernel} window does not fit {h}×{w}"
            )));
        };
        Ok(AvgPool2d {
            kernel,
            input,
            shape: vec![c, oh, ow],
        })
    }
}

impl Layer for AvgPool2d {
    fn kind(&self) -> &'static str {
        "avg_pool2d"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let (oh, ow) = (self.shape[1] * self.kernel, self.shape[2] * self.kernel);
        // Drop the edge rows and columns first (candle's backward needs stride = kernel
        // over the whole input).
        let x = x.narrow(2, 0, oh.min(h))?.narrow(3, 0, ow.min(w))?;
        Ok(x.avg_pool2d(self.kernel)?)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        Ok((self.forward(&x.detach(), ctx)?, nothing()))
    }

    fn backward(
        &self,
        _: Saved,
        grad: Tensor,
        input_grad: bool,
        _: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        if !input_grad {
            return Ok((None, None));
        }
        let (c, h, w) = self.input;
        let k = self.kernel;
        let (oh, ow) = (self.shape[1], self.shape[2]);
        let b = grad.dim(0)?;
        // Each output's gradient, divided by k², goes to every input of its window.
        let spread = (grad.upsample_nearest2d(oh * k, ow * k)? / (k * k) as f64)?;
        let spread = spread.pad_with_zeros(2, 0, h - oh * k)?;
        let spread = spread.pad_with_zeros(3, 0, w - ow * k)?;
        Ok((Some(spread.reshape((b, c, h, w))?), None))
    }
}

/// Mean over all positions of each channel: (B, C, H, W) → (B, C).
#[derive(Debug)]
pub struct GlobalAvgPool {
    input: Vec<usize>,
    shape: Vec<usize>,
}

impl GlobalAvgPool {
    /// Over inputs (C, ...).
    pub fn new(input: &[usize]) -> Self {
        GlobalAvgPool {
            input: input.to_vec(),
            shape: vec![input[0]],
        }
    }

    fn positions(&self) -> usize {
        self.input[1..].iter().product::<usize>().max(1)
    }
}

impl Layer for GlobalAvgPool {
    fn kind(&self) -> &'static str {
        "global_avg_pool"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let (b, c) = (x.dim(0)?, self.input[0]);
        Ok(x.reshape((b, c, self.positions()))?.mean(2)?)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        Ok((self.forward(x, ctx)?, nothing()))
    }

    fn backward(
        &self,
        _: Saved,
        grad: Tensor,
        input_grad: bool,
        _: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        if !input_grad {
            return Ok((None, None));
        }
        let (b, c, n) = (grad.dim(0)?, self.input[0], self.positions());
        let g = (grad.reshape((b, c, 1))? / n as f64)?
            .broadcast_as((b, c, n))?
            .contiguous()?;
        let mut dims = vec![b];
        dims.extend_from_slice(&self.input);
        Ok((Some(g.reshape(dims)?), None))
    }
}

/// Mean over the positions of a sequence: (B, T, D) → (B, D); over the real tokens only
/// when `masked` (an example with no real token pools to 0).
#[derive(Debug)]
pub struct MeanPool {
    /// Average over real tokens only.
    pub masked: bool,
    shape: Vec<usize>,
}

impl MeanPool {
    /// Over inputs (T, D).
    pub fn new(input: &[usize], masked: bool) -> Self {
        MeanPool {
            masked,
            shape: vec![input[1]],
        }
    }

    /// Per-position weights (B, T, 1): mask / count, or 1/T.
    fn weights(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let mask = match (&self.masked, &ctx.token_mask) {
            (true, Some(mask)) => mask.to_dtype(x.dtype())?,
            _ => Tensor::ones((b, t), x.dtype(), x.device())?,
        };
        let count = mask.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
        Ok(mask.broadcast_div(&count)?.unsqueeze(2)?)
    }
}

impl Layer for MeanPool {
    fn kind(&self) -> &'static str {
        "mean_pool"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        Ok(x.broadcast_mul(&self.weights(x, ctx)?)?.sum(1)?)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        let weights = self.weights(x, ctx)?;
        Ok((x.broadcast_mul(&weights)?.sum(1)?, Box::new(weights)))
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
        let weights: Tensor = unsave(saved, "mean_pool")?;
        Ok((Some(weights.broadcast_mul(&grad.unsqueeze(1)?)?), None))
    }
}
