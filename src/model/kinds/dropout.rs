//! `dropout`: in training, each value is zeroed with probability p and the rest scaled by
//! 1/(1 − p); in evaluation the identity.
//!
//! The mask of example i depends only on (the step's mask seed, the example's id, the
//! position), never on the rest of the batch: the layer stays per-example (the DP step
//! is correct only for such layers) and a batch-size-1 pass of the same example with the
//! same seed draws the same mask. Dropout masks are model randomness, not privacy noise,
//! so a fast hash suffices here.

use candle_core::Tensor;

use crate::error::Result;
use crate::grad_sample::tensor;
use crate::model::layer::{Context, Layer, Saved, Trace, unsave};

/// Dropout with probability `p`.
#[derive(Debug)]
pub struct Dropout {
    /// Drop probability in [0, 1).
    pub p: f64,
    shape: Vec<usize>,
}

/// SplitMix64's finaliser (Steele, Lea & Flood 2014): a well-mixed 64-bit hash.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dropout {
    /// Dropout on inputs of `shape`.
    pub fn new(p: f64, shape: &[usize]) -> Self {
        Dropout {
            p,
            shape: shape.to_vec(),
        }
    }

    /// The (B, ...) mask of this pass: 0 or 1/(1 − p).
    fn mask(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        let b = x.dim(0)?;
        let per_example = x.elem_count() / b.max(1);
        let keep = (1.0 / (1.0 - self.p)) as f32;
        let mut values = Vec::with_capacity(x.elem_count());
        for i in 0..b {
            let id = ctx.example_ids.get(i).copied().unwrap_or(i as u64);
            let base = mix(ctx.mask_seed ^ mix(id));
            for j in 0..per_example {
                let u = (mix(base ^ j as u64) >> 11) as f64 / (1u64 << 53) as f64;
                values.push(if u < self.p { 0.0 } else { keep });
            }
        }
        let mask = tensor(values, x.dims())?;
        Ok(mask.to_dtype(x.dtype())?)
    }
}

impl Layer for Dropout {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        if !ctx.train || self.p == 0.0 {
            return Ok(x.clone());
        }
        Ok((x * self.mask(x, ctx)?)?)
    }

    fn reference_forward(&self, x: &Tensor, ctx: &Context) -> Result<Tensor> {
        // The forward is plain candle.
        self.forward(x, ctx)
    }

    fn train_forward(&self, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
        if self.p == 0.0 {
            return Ok((x.clone(), Box::new(None::<Tensor>)));
        }
        let mask = self.mask(x, ctx)?;
        Ok(((x * &mask)?, Box::new(Some(mask))))
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
        let mask: Option<Tensor> = unsave(saved, "dropout")?;
        Ok((
            Some(match mask {
                Some(mask) => (grad * mask)?,
                None => grad,
            }),
            None,
        ))
    }
}
