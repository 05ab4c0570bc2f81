//! `conv2d` (and `conv1d`, a conv2d over a 1 × L image): im2col patches times the weight,
//! with groups, dilation, zero padding (or `same`) and an optional bias.
//!
//! Per-example rule: a linear layer over the patches A (B, T, C·kh·kw) (`grad_sample::
//! linear`, Opacus `conv.py`): ∇W_i = G_iᵀ A_i, ghost or materialised by cost. With groups,
//! each group is such a layer over its own columns of A and rows of W, and the example's
//! squared norm is the sum over the groups.

use candle_core::{Tensor, Var};

use super::linear::{LinearTrace, clipped, rule_name};
use super::{add_bias_channels_first, detached, refuse, transpose_last, uniform};
use crate::error::Result;
use crate::grad_sample::im2col::{ConvGeometry, col2im, im2col};
use crate::grad_sample::linear::{self as rule, NormMode};
use crate::grad_sample::wide_values;
use crate::model::layer::{Context, Layer, Param, PerExample, Saved, Trace, unsave};

/// A convolution over (B, C, H, W), or over (B, C, L) for `conv1d`.
#[derive(Debug)]
pub struct Conv2d {
    /// (out, C/groups, kh, kw); (out, C/groups, k) for `conv1d`.
    pub weight: Var,
    /// (out), unless `bias = false`.
    pub bias: Option<Var>,
    /// Window.
    pub geometry: ConvGeometry,
    /// Channel groups (1: a plain convolution).
    pub groups: usize,
    /// (C, H, W) of one input example (H = 1 for `conv1d`).
    input_dims: (usize, usize, usize),
    output_shape: Vec<usize>,
    one_dimensional: bool,
}

/// Saved by the training forward.
struct ConvSaved {
    patches: Tensor,
}

/// How a conv layer is asked for.
#[derive(Debug, Clone, Copy)]
pub struct ConvOptions {
    /// Output channels.
    pub out_channels: usize,
    /// Kernel height and width ((1, k) for conv1d).
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: usize,
    /// Padding (rows, columns).
    pub padding: (usize, usize),
    /// Dilation.
    pub dilation: usize,
    /// Groups.
    pub groups: usize,
    /// With a bias.
    pub bias: bool,
}

impl Conv2d {
    /// A convolution of `input_dims` (C, H, W); `one_dimensional` for conv1d (H = 1 and
    /// (B, C, L) tensors in and out).
    pub fn new(
        input_dims: (usize, usize, usize),
        options: ConvOptions,
        one_dimensional: bool,
        dtype: candle_core::DType,
        rng: &mut impl rand::Rng,
    ) -> Result<Self> {
        let (channels, height, width) = input_dims;
        let ConvOptions {
            out_channels,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            bias,
        } = options;
        if groups == 0 || channels % groups != 0 || out_channels % groups != 0 {
            return Err(refuse(format!(
                "groups = {groups} must divide both the input channels ({channels}) and \
                 out_channels ({out_channels})"
            )));
        }
        let geometry = ConvGeometry {
            kernel,
            stride,
            padding,
            dilation,
        };
        let (oh, ow) = geometry.output_size(height, width).ok_or_else(|| {
            refuse(format!(
                "kernel {kernel:?} (dilation {dilation}, padding {padding:?}) does not fit \
                 the {height}×{width} input"
            ))
        })?;
        let per_group = channels / groups;
        let fan_in = per_group * kernel.0 * kernel.1;
        let weight_shape: Vec<usize> = if one_dimensional {
            vec![out_channels, per_group, kernel.1]
        } else {
            vec![out_channels, per_group, kernel.0, kernel.1]
        };
        let weight = uniform(&weight_shape, fan_in, dtype, rng)?;
        let bias = match bias {
            true => Some(uniform(&[out_channels], fan_in, dtype, rng)?),
            false => None,
        };
        let output_shape = if one_dimensional {
            vec![out_channels, ow]
        } else {
            vec![out_channels, oh, ow]
        };
        Ok(Conv2d {
            weight,
            bias,
            geometry,
            groups,
            input_dims,
            output_shape,
            one_dimensional,
        })
    }

    fn out_channels(&self) -> usize {
        self.output_shape[0]
    }

    fn columns_per_group(&self) -> usize {
        self.input_dims.0 / self.groups * self.geometry.kernel.0 * self.geometry.kernel.1
    }

    fn positions(&self) -> usize {
        self.output_shape[1..].iter().product()
    }

    /// (B, C, H, W) view of an input batch.
    fn as_image(&self, x: &Tensor) -> Result<Tensor> {
        let (c, h, w) = self.input_dims;
        Ok(x.reshape((x.dim(0)?, c, h, w))?)
    }

    /// patches (B·T, C·kh·kw) times each group's weight: (B·T, out).
    fn product(&self, patches: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (out, cols) = (self.out_channels(), self.columns_per_group());
        let weight = weight.reshape((out, cols))?;
        if self.groups == 1 {
            return Ok(patches.matmul(&weight.t()?)?);
        }
        let out_g = out / self.groups;
        let parts = (0..self.groups)
            .map(|g| {
                let a = patches.narrow(1, g * cols, cols)?.contiguous()?;
                a.matmul(&weight.narrow(0, g * out_g, out_g)?.t()?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// (B·T, out) output gradients times each group's weight: patch gradients (B·T, C·k·k).
    fn product_transposed(&self, grad: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let (out, cols) = (self.out_channels(), self.columns_per_group());
        let weight = weight.reshape((out, cols))?;
        if self.groups == 1 {
            return Ok(grad.matmul(&weight)?);
        }
        let out_g = out / self.groups;
        let parts = (0..self.groups)
            .map(|g| {
                let gg = grad.narrow(1, g * out_g, out_g)?.contiguous()?;
                gg.matmul(&weight.narrow(0, g * out_g, out_g)?)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 1)?)
    }

    /// The linear traces of each group.
    fn group_traces(&self, t: &LinearTrace) -> Result<Vec<LinearTrace>> {
        if self.groups == 1 {
            return Ok(vec![LinearTrace {
                input: t.input.clone(),
                output_grad: t.output_grad.clone(),
            }]);
        }
        let (cols, out_g) = (self.columns_per_group(), self.out_channels() / self.groups);
        (0..self.groups)
            .map(|g| {
                Ok(LinearTrace {
                    input: t.input.narrow(2, g * cols, cols)?.contiguous()?,
                    output_grad: t.output_grad.narrow(2, g * out_g, out_g)?.contiguous()?,
                })
            })
            .collect()
    }
}

impl Layer for Conv2d {
    fn kind(&self) -> &'static str {
        if self.one_dimensional {
            "conv1d"
        } else {
            "conv2d"
        }
    }

    fn output_shape(&self) -> &[usize] {
        &self.output_shape
    }

    fn params(&self) -> Vec<Param> {
        super::weight_and_bias(&self.weight, self.bias.as_ref())
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let b = x.dim(0)?;
        let patches = im2col(&self.as_image(x)?, self.geometry)?;
        let t = patches.dim(1)?;
        let rows = patches.reshape((b * t, patches.dim(2)?))?;
        let mut y =
            self.product(&rows, self.weight.as_tensor())?
                .reshape((b, t, self.out_channels()))?;
        if let Some(bias) = &self.bias {
            y = y.broadcast_add(bias.as_tensor())?;
        }
        let mut dims = vec![b];
        dims.extend_from_slice(&self.output_shape);
        Ok(y.transpose(1, 2)?.reshape(dims)?)
    }

    /// candle's `conv2d` (stride, dilation and groups its own), where the forward unfolds
    /// with dptrain's `Im2Col`, whose backward is hand-written. The zeros are padded, and
    /// the rows and columns that no window reaches cut, before the convolution: candle
    /// 0.11's backward assumes the same padding and leftover on both axes. A `conv1d` is
    /// that over a 1 × L image: candle 0.11's own `conv1d` gets the weight gradient wrong
    /// for batches of more than one example (found against finite differences, issue 28).
    fn reference_forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        let ConvGeometry {
            kernel,
            stride,
            padding,
            dilation,
        } = self.geometry;
        let weight = match self.one_dimensional {
            true => self.weight.as_tensor().unsqueeze(2)?,
            false => self.weight.as_tensor().clone(),
        };
        let (oh, ow) = match self.one_dimensional {
            true => (1, self.output_shape[1]),
            false => (self.output_shape[1], self.output_shape[2]),
        };
        let reach = |out: usize, k: usize| (out - 1) * stride + dilation * (k - 1) + 1;
        let y = self
            .as_image(x)?
            .pad_with_zeros(2, padding.0, padding.0)?
            .pad_with_zeros(3, padding.1, padding.1)?
            .narrow(2, 0, reach(oh, kernel.0))?
            .narrow(3, 0, reach(ow, kernel.1))?
            .conv2d(&weight, 0, stride, dilation, self.groups)?;
        let b = x.dim(0)?;
        let y = match &self.bias {
            Some(bias) => {
                let mut shape = vec![1, self.out_channels()];
                shape.resize(y.rank(), 1);
                y.broadcast_add(&bias.as_tensor().reshape(shape)?)?
            }
            None => y,
        };
        let mut dims = vec![b];
        dims.extend_from_slice(&self.output_shape);
        Ok(y.reshape(dims)?)
    }

    fn train_forward(&self, x: &Tensor, _: &Context) -> Result<(Tensor, Saved)> {
        let b = x.dim(0)?;
        let patches = im2col(&self.as_image(x)?, self.geometry)?;
        let (_, t, columns) = patches.dims3()?;
        let out = self.out_channels();
        let y = self.product(&patches.reshape((b * t, columns))?, &detached(&self.weight))?;
        let bias = match &self.bias {
            Some(bias) => detached(bias),
            None => Tensor::zeros(out, x.dtype(), &candle_core::Device::Cpu)?,
        };
        let mut dims = vec![b];
        dims.extend_from_slice(&self.output_shape);
        let y = add_bias_channels_first(&y, &bias, [b, t, out])?.reshape(dims)?;
        Ok((y, Box::new(ConvSaved { patches })))
    }

    fn backward(
        &self,
        saved: Saved,
        grad: Tensor,
        input_grad: bool,
        trace: bool,
    ) -> Result<(Option<Tensor>, Option<Trace>)> {
        let ConvSaved { patches } = unsave(saved, self.kind())?;
        let (b, t, columns) = patches.dims3()?;
        let out = self.out_channels();
        let output_grad = transpose_last(&grad.reshape((b, out, t))?, [b, out, t])?;
        let input_grad = if input_grad {
            let patch_grad = self
                .product_transposed(&output_grad.reshape((b * t, out))?, &detached(&self.weight))?
                .reshape((b, t, columns))?;
            let (c, h, w) = self.input_dims;
            let image = col2im(&patch_grad, self.geometry, (c, h, w))?;
            Some(match self.one_dimensional {
                true => image.reshape((b, c, w))?,
                false => image,
            })
        } else {
            None
        };
        let trace = trace.then(|| {
            Trace(Box::new(LinearTrace {
                input: patches,
                output_grad,
            }))
        });
        Ok((input_grad, trace))
    }

    fn per_example(&self, trace: &Trace, mode: NormMode) -> Result<PerExample> {
        let t: &LinearTrace = trace.get(self.kind())?;
        let bias = self.bias.is_some();
        if self.groups == 1 {
            let pe = rule::per_example_with(&t.input, &t.output_grad, bias, mode)?;
            return Ok(PerExample {
                sq_norms: wide_values(&pe.sq_norms)?,
                state: Some(Box::new(pe)),
            });
        }
        let mut total = vec![0f64; t.input.dim(0)?];
        for group in self.group_traces(t)? {
            let pe = rule::per_example_with(&group.input, &group.output_grad, bias, mode)?;
            for (acc, v) in total.iter_mut().zip(wide_values(&pe.sq_norms)?) {
                *acc += v;
            }
        }
        Ok(PerExample {
            sq_norms: total,
            state: None,
        })
    }

    fn clipped_sums(
        &self,
        trace: &Trace,
        per_example: Option<&PerExample>,
        factors: &[f64],
    ) -> Result<Vec<Tensor>> {
        let t: &LinearTrace = trace.get(self.kind())?;
        let (weight, bias) = if self.groups == 1 {
            clipped(t, per_example, factors)?
        } else {
            let mut weights = Vec::new();
            let mut biases = Vec::new();
            for group in self.group_traces(t)? {
                let (w, b) = clipped(&group, None, factors)?;
                weights.push(w);
                biases.push(b);
            }
            (Tensor::cat(&weights, 0)?, Tensor::cat(&biases, 0)?)
        };
        let weight = weight.reshape(self.weight.shape())?;
        Ok(match self.bias {
            Some(_) => vec![weight, bias],
            None => vec![weight],
        })
    }

    fn rule(&self, mode: NormMode) -> String {
        let name = rule_name(
            self.positions(),
            self.columns_per_group(),
            self.out_channels() / self.groups,
            mode,
        );
        match self.groups {
            1 => name,
            g => format!("{name} ×{g} groups"),
        }
    }

    fn macs(&self) -> usize {
        self.positions() * self.weight.elem_count()
    }
}

/// Padding that keeps the size at stride 1 (`padding = "same"`): dilation·(k − 1)/2 on each
/// side; an even receptive field cannot be centred.
pub fn same_padding(kernel: usize, dilation: usize) -> Result<usize> {
    let span = dilation * (kernel.max(1) - 1);
    if span % 2 == 1 {
        return Err(refuse(format!(
            "padding = \"same\" needs an odd receptive field; kernel {kernel} with dilation \
             {dilation} spans {}",
            span + 1
        )));
    }
    Ok(span / 2)
}
