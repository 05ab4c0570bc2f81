//! `flatten`: (B, d1, d2, ...) → (B, d1·d2·...).

use candle_core::Tensor;

use crate::error::Result;
use crate::model::layer::{Context, Layer, Saved, Trace, nothing};

/// Flattens each example.
#[derive(Debug)]
pub struct Flatten {
    input_shape: Vec<usize>,
    shape: Vec<usize>,
}

impl Flatten {
    /// For inputs of `input_shape`.
    pub fn new(input_shape: &[usize]) -> Self {
        Flatten {
            input_shape: input_shape.to_vec(),
            shape: vec![input_shape.iter().product()],
        }
    }
}

impl Layer for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn output_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&self, x: &Tensor, _: &Context) -> Result<Tensor> {
        Ok(x.flatten_from(1)?)
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
        let mut dims = vec![grad.dim(0)?];
        dims.extend_from_slice(&self.input_shape);
        Ok((Some(grad.reshape(dims)?), None))
    }
}
