//! A model as the two parties run it: its public architecture (shapes only, which every
//! party and the dealer know), the model owner's weights, the bilinear operations over
//! Z_{2^64} that the protocol evaluates on shares, and the plaintext fixed-point model that
//! the shared computation must reproduce.
//!
//! **Fixed-point semantics** (f = [`FRAC_BITS`]), one rule per operation:
//! - input, weights and biases: round(v · 2^f);
//! - conv2d and linear: y = ⌊Σ w·x / 2^f⌋ + b (the product carries 2f fractional bits);
//! - square: y = ⌊x² / 2^f⌋;
//! - avg_pool2d (k×k windows, stride k): y = ⌊(Σ_window x) · round(2^f / k²) / 2^f⌋;
//! - the prediction is the first index of the largest logit.
//!
//! The shared computation truncates with SecureML's local rule, which may land one unit
//! above or below the floor (and fails outright with probability |v|/2^63 for a value v
//! before truncation: [`FixedPointStats::expected_failures`] adds these up).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::mpc::share::{FRAC_BITS, encode, matmul};

/// A convolution's geometry (square kernel, zero padding, dilation 1, one group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv {
    /// Input channels.
    pub in_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

impl Conv {
    /// Output height and width.
    pub fn output_hw(&self) -> (usize, usize) {
        let out = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        (out(self.height), out(self.width))
    }

    /// Values per example in.
    pub fn in_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }

    /// Values per example out.
    pub fn out_len(&self) -> usize {
        let (h, w) = self.output_hw();
        self.out_channels * h * w
    }

    /// Weights: out_channels × in_channels × kernel × kernel.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }

    fn patch_len(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }

    fn check(&self) -> Result<()> {
        let fits = self.kernel >= 1
            && self.stride >= 1
            && self.height + 2 * self.padding >= self.kernel
            && self.width + 2 * self.padding >= self.kernel;
        match fits && self.in_channels > 0 && self.out_channels > 0 {
            true => Ok(()),
            false => Err(Error::invalid(
                "mpc conv2d",
                format!("{self:?}"),
                "positive channels, kernel and stride, and a kernel no larger than the \
                 padded input",
            )),
        }
    }
}

/// One operation of the shared forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// A convolution with bias (weights shared by the model owner).
    Conv2d(Conv),
    /// y = x Wᵀ + b.
    Linear {
        /// Input width.
        inputs: usize,
        /// Output width.
        outputs: usize,
    },
    /// x², elementwise over `len` values.
    Square {
        /// Values per example.
        len: usize,
    },
    /// The mean over k×k windows with stride k (a public linear map).
    AvgPool2d {
        /// Channels.
        channels: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// Window side.
        kernel: usize,
    },
}

impl Op {
    /// Values per example in.
    pub fn in_len(&self) -> usize {
        match *self {
            Op::Conv2d(c) => c.in_len(),
            Op::Linear { inputs, .. } => inputs,
            Op::Square { len } => len,
            Op::AvgPool2d {
                channels,
                height,
                width,
                ..
            } => channels * height * width,
        }
    }

    /// Values per example out.
    pub fn out_len(&self) -> usize {
        match *self {
            Op::Conv2d(c) => c.out_len(),
            Op::Linear { outputs, .. } => outputs,
            Op::Square { len } => len,
            Op::AvgPool2d {
                channels,
                height,
                width,
                kernel,
            } => channels * (height / kernel) * (width / kernel),
        }
    }

    /// (weight, bias) lengths of a layer with parameters.
    pub fn parameter_lens(&self) -> Option<(usize, usize)> {
        match *self {
            Op::Conv2d(c) => Some((c.weight_len(), c.out_channels)),
            Op::Linear { inputs, outputs } => Some((inputs * outputs, outputs)),
            _ => None,
        }
    }

    /// Its name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d(_) => "conv2d",
            Op::Linear { .. } => "linear",
            Op::Square { .. } => "square",
            Op::AvgPool2d { .. } => "avg_pool2d",
        }
    }
}

/// The public part of a model: what every party and the dealer know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Architecture {
    /// Values per input example (C·H·W).
    pub input_len: usize,
    /// The operations, input first.
    pub ops: Vec<Op>,
}

impl Architecture {
    /// Checks that each operation reads what the previous one writes.
    pub fn check(&self) -> Result<()> {
        let mut len = self.input_len;
        if len == 0 || self.ops.is_empty() {
            return Err(Error::invalid(
                "mpc architecture",
                format!("{} inputs, {} operations", len, self.ops.len()),
                "a non-empty input and at least one operation",
            ));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if let Op::Conv2d(c) = op {
                c.check()?;
            }
            if let Op::AvgPool2d {
                height,
                width,
                kernel,
                ..
            } = *op
                && (kernel == 0 || height % kernel != 0 || width % kernel != 0)
            {
                return Err(Error::invalid(
                    format!("mpc operation {i} (avg_pool2d)"),
                    format!("kernel {kernel} on {height}×{width}"),
                    "a kernel that divides the height and width",
                ));
            }
            if op.in_len() != len || op.out_len() == 0 {
                return Err(Error::invalid(
                    format!("mpc operation {i} ({})", op.name()),
                    format!("{} values in", op.in_len()),
                    format!("{len} (what the previous operation writes)"),
                ));
            }
            len = op.out_len();
        }
        Ok(())
    }

    /// Logits per example.
    pub fn classes(&self) -> usize {
        self.ops.last().map_or(0, Op::out_len)
    }

    /// The operations with parameters, in order.
    pub fn layers(&self) -> impl Iterator<Item = (usize, &Op)> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.parameter_lens().is_some())
    }
}

/// One layer's parameters (row-major, as the model's tensors store them).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// Conv: out × in × k × k; linear: out × in.
    pub weight: Vec<f64>,
    /// One per output channel or feature.
    pub bias: Vec<f64>,
}

/// The model owner's parameters in fixed point, one (weight, bias) per layer of
/// [`Architecture::layers`], checked against the shapes.
pub fn encode_weights(
    arch: &Architecture,
    weights: &[LayerWeights],
) -> Result<Vec<(Vec<u64>, Vec<u64>)>> {
    let layers: Vec<_> = arch.layers().collect();
    if layers.len() != weights.len() {
        return Err(Error::invalid(
            "mpc weights",
            format!("{} layers", weights.len()),
            format!(
                "{} (the architecture's layers with parameters)",
                layers.len()
            ),
        ));
    }
    layers
        .iter()
        .zip(weights)
        .map(|((i, op), w)| {
            let (wl, bl) = op.parameter_lens().unwrap_or((0, 0));
            if w.weight.len() != wl || w.bias.len() != bl {
                return Err(Error::invalid(
                    format!("mpc weights of operation {i} ({})", op.name()),
                    format!("{} weights and {} biases", w.weight.len(), w.bias.len()),
                    format!("{wl} and {bl}"),
                ));
            }
            let enc = |v: &[f64]| v.iter().map(|&x| encode(x)).collect::<Result<Vec<u64>>>();
            Ok((enc(&w.weight)?, enc(&w.bias)?))
        })
        .collect()
}

/// The fixed-point factor of a k×k mean: round(2^f / k²).
pub fn pool_factor(kernel: usize) -> u64 {
    ((1u64 << FRAC_BITS) as f64 / (kernel * kernel) as f64).round() as u64
}

/// im2col of one example: (C·k·k) × (Ho·Wo), zeros where the window leaves the input.
fn im2col(c: &Conv, x: &[u64], out: &mut [u64]) {
    let (ho, wo) = c.output_hw();
    let positions = ho * wo;
    for ch in 0..c.in_channels {
        for ky in 0..c.kernel {
            for kx in 0..c.kernel {
                let row = (ch * c.kernel + ky) * c.kernel + kx;
                let dst = &mut out[row * positions..(row + 1) * positions];
                for oy in 0..ho {
                    let y = (oy * c.stride + ky) as isize - c.padding as isize;
                    for ox in 0..wo {
                        let xx = (ox * c.stride + kx) as isize - c.padding as isize;
                        dst[oy * wo + ox] = if y >= 0
                            && xx >= 0
                            && (y as usize) < c.height
                            && (xx as usize) < c.width
                        {
                            x[(ch * c.height + y as usize) * c.width + xx as usize]
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

/// The bilinear map of a layer over Z_{2^64} for a batch: conv2d(x, w) by im2col, or
/// x·wᵀ. No bias, no truncation. Beaver's rule needs only bilinearity, so the same map
/// computes the dealer's C = op(A, B) and each party's share terms.
pub fn bilinear(op: &Op, x: &[u64], w: &[u64], batch: usize) -> Vec<u64> {
    match *op {
        Op::Conv2d(c) => {
            let (k, l) = (c.patch_len(), c.output_hw().0 * c.output_hw().1);
            let mut patches = vec![0u64; k * l];
            let mut out = Vec::with_capacity(batch * c.out_len());
            for example in x.chunks_exact(c.in_len()).take(batch) {
                im2col(&c, example, &mut patches);
                out.extend(matmul(w, &patches, c.out_channels, k, l));
            }
            out
        }
        Op::Linear { inputs, outputs } => {
            let mut out = vec![0u64; batch * outputs];
            for (row, example) in out.chunks_exact_mut(outputs).zip(x.chunks_exact(inputs)) {
                for (o, w_row) in row.iter_mut().zip(w.chunks_exact(inputs)) {
                    *o = example
                        .iter()
                        .zip(w_row)
                        .fold(0u64, |acc, (a, b)| acc.wrapping_add(a.wrapping_mul(*b)));
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

/// Sums over k×k windows (stride k) of a batch, channel-major: the linear part of
/// average pooling, which each party applies to its own share.
pub fn window_sums(op: &Op, x: &[u64], batch: usize) -> Vec<u64> {
    let Op::AvgPool2d {
        channels,
        height,
        width,
        kernel,
    } = *op
    else {
        return Vec::new();
    };
    let (ho, wo) = (height / kernel, width / kernel);
    let mut out = vec![0u64; batch * channels * ho * wo];
    for (example, dst) in x
        .chunks_exact(channels * height * width)
        .zip(out.chunks_exact_mut(channels * ho * wo))
    {
        for ch in 0..channels {
            for y in 0..height - height % kernel {
                for xx in 0..width - width % kernel {
                    let o = (ch * ho + y / kernel) * wo + xx / kernel;
                    dst[o] = dst[o].wrapping_add(example[(ch * height + y) * width + xx]);
                }
            }
        }
    }
    out
}

/// What a plaintext fixed-point pass saw: how many truncations, the largest magnitude
/// before one, and the expected number of SecureML truncation failures the shared pass
/// would suffer on the same inputs (Σ |v| / 2^63).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FixedPointStats {
    /// Truncations performed.
    pub truncations: u64,
    /// The largest |v| truncated (fixed point, 2f fractional bits).
    pub largest: u128,
    /// Σ |v| / 2^63 over every truncation.
    pub expected_failures: f64,
}

impl FixedPointStats {
    fn floor_shift(&mut self, v: i128) -> i128 {
        self.truncations += 1;
        self.largest = self.largest.max(v.unsigned_abs());
        self.expected_failures += v.unsigned_abs() as f64 / 2f64.powi(63);
        v >> FRAC_BITS
    }
}

/// The plaintext fixed-point model on one example (direct loops in i128, no im2col, no
/// ring): the logits the shared computation must reproduce, within its truncation's ±1
/// per step. `weights` as [`encode_weights`] gives them.
pub fn fixed_point_forward(
    arch: &Architecture,
    weights: &[(Vec<u64>, Vec<u64>)],
    input: &[u64],
    stats: &mut FixedPointStats,
) -> Vec<i64> {
    let signed = |v: &[u64]| v.iter().map(|&x| x as i64 as i128).collect::<Vec<i128>>();
    let mut x = signed(input);
    let mut layer = 0;
    for op in &arch.ops {
        x = match *op {
            Op::Conv2d(c) => {
                let (w, b) = (signed(&weights[layer].0), signed(&weights[layer].1));
                layer += 1;
                let (ho, wo) = c.output_hw();
                let mut y = Vec::with_capacity(c.out_len());
                for o in 0..c.out_channels {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let mut acc = 0i128;
                            for ch in 0..c.in_channels {
                                for ky in 0..c.kernel {
                                    for kx in 0..c.kernel {
                                        let iy = (oy * c.stride + ky) as isize - c.padding as isize;
                                        let ix = (ox * c.stride + kx) as isize - c.padding as isize;
                                        if iy < 0
                                            || ix < 0
                                            || iy as usize >= c.height
                                            || ix as usize >= c.width
                                        {
                                            continue;
                                        }
                                        let xv = x
                                            [(ch * c.height + iy as usize) * c.width + ix as usize];
                                        let wv = w[((o * c.in_channels + ch) * c.kernel + ky)
                                            * c.kernel
                                            + kx];
                                        acc += xv * wv;
                                    }
                                }
                            }
                            y.push(stats.floor_shift(acc) + b[o]);
                        }
                    }
                }
                y
            }
            Op::Linear { inputs, outputs } => {
                let (w, b) = (signed(&weights[layer].0), signed(&weights[layer].1));
                layer += 1;
                (0..outputs)
                    .map(|o| {
                        let acc: i128 = (0..inputs).map(|i| x[i] * w[o * inputs + i]).sum();
                        stats.floor_shift(acc) + b[o]
                    })
                    .collect()
            }
            Op::Square { .. } => x.iter().map(|v| stats.floor_shift(v * v)).collect(),
            Op::AvgPool2d {
                channels,
                height,
                width,
                kernel,
            } => {
                let (ho, wo) = (height / kernel, width / kernel);
                let factor = pool_factor(kernel) as i128;
                let mut y = Vec::with_capacity(channels * ho * wo);
                for ch in 0..channels {
                    for py in 0..ho {
                        for px in 0..wo {
                            let mut sum = 0i128;
                            for dy in 0..kernel {
                                for dx in 0..kernel {
                                    sum += x[(ch * height + py * kernel + dy) * width
                                        + px * kernel
                                        + dx];
                                }
                            }
                            y.push(stats.floor_shift(sum * factor));
                        }
                    }
                }
                y
            }
        };
    }
    x.into_iter().map(|v| v as i64).collect()
}

/// The first index of the largest value.
pub fn argmax(logits: &[i64]) -> usize {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best
}
