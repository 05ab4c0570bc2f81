//! im2col: a 2-D convolution as a matrix product over unfolded patches.
//!
//! `unfold(x)` turns an image batch (B, C, H, W) into patches (B, T, C·kh·kw), T = H'·W',
//! each row the receptive field of one output position, ordered (c, i, j) like a conv weight
//! (out, C, kh, kw) flattened. A conv is then `patches · Wᵀ + b`, and its per-example weight
//! gradient `G_iᵀ A_i` (design.md section 2). candle has no im2col, so [`Im2Col`] is a custom
//! op whose backward is the adjoint, col2im (sum each patch gradient back onto the image).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, WithDType};

use rayon::prelude::*;

use super::contiguous_slice as contiguous;

/// Geometry of a 2-D convolution window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Kernel height and width.
    pub kernel: (usize, usize),
    /// Stride in both directions.
    pub stride: usize,
    /// Zero padding above and below, and left and right.
    pub padding: (usize, usize),
    /// Spacing between kernel taps (1: adjacent).
    pub dilation: usize,
}

impl ConvGeometry {
    /// Output height and width for an input of `height × width`, or `None` if the kernel
    /// does not fit.
    pub fn output_size(&self, height: usize, width: usize) -> Option<(usize, usize)> {
        let (kh, kw) = self.kernel;
        let (h, w) = (height + 2 * self.padding.0, width + 2 * self.padding.1);
        if self.stride == 0 || self.dilation == 0 || kh == 0 || kw == 0 {
            return None;
        }
        // The receptive field of a dilated kernel.
        let (kh, kw) = (self.dilation * (kh - 1) + 1, self.dilation * (kw - 1) + 1);
        if h < kh || w < kw {
            return None;
        }
        Some(((h - kh) / self.stride + 1, (w - kw) / self.stride + 1))
    }
}

/// The unfold op on a contiguous (B, C, H, W) tensor.
#[derive(Debug, Clone, Copy)]
pub struct Im2Col {
    /// Window geometry.
    pub geometry: ConvGeometry,
}

/// The adjoint of [`Im2Col`]: (B, T, C·kh·kw) back to (B, C, H, W), summing overlaps.
#[derive(Debug, Clone, Copy)]
struct Col2Im {
    geometry: ConvGeometry,
    channels: usize,
    height: usize,
    width: usize,
}

/// Visits, for every output position t and patch entry (c, i, j), the image offset it reads
/// (None where it falls in the padding). `f(batch, t, column, Some(image_index))`.
fn for_each_tap(
    geometry: ConvGeometry,
    channels: usize,
    height: usize,
    width: usize,
    mut f: impl FnMut(usize, usize, Option<usize>),
) {
    let (kh, kw) = geometry.kernel;
    let (out_h, out_w) = geometry
        .output_size(height, width)
        .expect("checked by the caller");
    let (pad_y, pad_x) = (geometry.padding.0 as isize, geometry.padding.1 as isize);
    let dilation = geometry.dilation;
    for oy in 0..out_h {
        for ox in 0..out_w {
            let t = oy * out_w + ox;
            let mut column = 0;
            for c in 0..channels {
                for i in 0..kh {
                    let y = (oy * geometry.stride + i * dilation) as isize - pad_y;
                    for j in 0..kw {
                        let x = (ox * geometry.stride + j * dilation) as isize - pad_x;
                        let inside =
                            y >= 0 && x >= 0 && (y as usize) < height && (x as usize) < width;
                        let index = inside.then(|| (c * height + y as usize) * width + x as usize);
                        f(t, column, index);
                        column += 1;
                    }
                }
            }
        }
    }
}

fn unfold<T: WithDType>(
    src: &[T],
    dims: (usize, usize, usize, usize),
    geometry: ConvGeometry,
) -> Vec<T> {
    let (batch, channels, height, width) = dims;
    let (out_h, out_w) = geometry.output_size(height, width).expect("checked");
    let columns = channels * geometry.kernel.0 * geometry.kernel.1;
    let per_image = channels * height * width;
    let per_patches = out_h * out_w * columns;
    let mut dst = vec![T::zero(); batch * per_patches];
    // The tap table is the same for every image: compute it once.
    let mut taps = Vec::with_capacity(out_h * out_w * columns);
    for_each_tap(geometry, channels, height, width, |_, _, index| {
        taps.push(index)
    });
    dst.par_chunks_mut(per_patches)
        .zip(src.par_chunks(per_image))
        .for_each(|(patches, image)| {
            for (out, tap) in patches.iter_mut().zip(&taps) {
                if let Some(index) = tap {
                    *out = image[*index];
                }
            }
        });
    dst
}

fn fold<T: WithDType>(src: &[T], batch: usize, col: &Col2Im) -> Vec<T> {
    let per_image = col.channels * col.height * col.width;
    let mut taps = Vec::new();
    for_each_tap(
        col.geometry,
        col.channels,
        col.height,
        col.width,
        |_, _, index| taps.push(index),
    );
    let per_patches = taps.len();
    let mut dst = vec![T::zero(); batch * per_image];
    dst.par_chunks_mut(per_image)
        .zip(src.par_chunks(per_patches))
        .for_each(|(image, patches)| {
            for (value, tap) in patches.iter().zip(&taps) {
                if let Some(index) = tap {
                    image[*index] += *value;
                }
            }
        });
    dst
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let Some((out_h, out_w)) = self.geometry.output_size(h, w) else {
            candle_core::bail!(
                "im2col: kernel {:?} does not fit a {h}×{w} input",
                self.geometry.kernel
            )
        };
        let shape = Shape::from((
            b,
            out_h * out_w,
            c * self.geometry.kernel.0 * self.geometry.kernel.1,
        ));
        let out = match storage {
            CpuStorage::F32(data) => CpuStorage::F32(unfold(
                contiguous(data, layout, "im2col")?,
                (b, c, h, w),
                self.geometry,
            )),
            CpuStorage::F64(data) => CpuStorage::F64(unfold(
                contiguous(data, layout, "im2col")?,
                (b, c, h, w),
                self.geometry,
            )),
            other => candle_core::bail!("im2col: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let (_, channels, height, width) = arg.dims4()?;
        let col = Col2Im {
            geometry: self.geometry,
            channels,
            height,
            width,
        };
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(&col)?))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, _, _) = layout.shape().dims3()?;
        let shape = Shape::from((b, self.channels, self.height, self.width));
        let out = match storage {
            CpuStorage::F32(data) => {
                CpuStorage::F32(fold(contiguous(data, layout, "col2im")?, b, self))
            }
            CpuStorage::F64(data) => {
                CpuStorage::F64(fold(contiguous(data, layout, "col2im")?, b, self))
            }
            other => candle_core::bail!("col2im: unsupported dtype {:?}", other.dtype()),
        };
        Ok((out, shape))
    }
}

/// Unfolds (B, C, H, W) into patches (B, T, C·kh·kw); differentiable.
pub fn im2col(x: &Tensor, geometry: ConvGeometry) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Im2Col { geometry })
}

/// The adjoint of [`im2col`]: patch gradients (B, T, C·kh·kw) summed back onto images
/// (B, C, H, W) of `(channels, height, width)` (not differentiable itself).
pub fn col2im(
    patches: &Tensor,
    geometry: ConvGeometry,
    (channels, height, width): (usize, usize, usize),
) -> candle_core::Result<Tensor> {
    if geometry.output_size(height, width).is_none() {
        candle_core::bail!(
            "col2im: kernel {:?} does not fit {height}×{width}",
            geometry.kernel
        );
    }
    patches.contiguous()?.apply_op1_no_bwd(&Col2Im {
        geometry,
        channels,
        height,
        width,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn geometry(k: usize, stride: usize, padding: usize) -> ConvGeometry {
        ConvGeometry {
            kernel: (k, k),
            stride,
            padding: (padding, padding),
            dilation: 1,
        }
    }

    #[test]
    fn patches_times_weight_is_candles_conv2d() {
        let device = Device::Cpu;
        for (c, h, k, stride, padding) in [(1, 28, 8, 2, 3), (16, 13, 4, 2, 0), (3, 7, 3, 1, 1)] {
            let x = Tensor::randn(0f64, 1.0, (2, c, h, h), &device).unwrap();
            let out = 5;
            let w = Tensor::randn(0f64, 1.0, (out, c, k, k), &device).unwrap();
            let g = geometry(k, stride, padding);
            let patches = im2col(&x, g).unwrap();
            let (oh, ow) = g.output_size(h, h).unwrap();
            let ours = patches
                .broadcast_matmul(&w.reshape((out, c * k * k)).unwrap().t().unwrap())
                .unwrap() // (B, T, out)
                .transpose(1, 2)
                .unwrap()
                .reshape((2, out, oh, ow))
                .unwrap();
            let theirs = x.conv2d(&w, padding, stride, 1, 1).unwrap();
            let diff = (ours - theirs).unwrap().abs().unwrap().max_all().unwrap();
            assert!(
                diff.to_scalar::<f64>().unwrap() < 1e-12,
                "c={c} h={h} k={k}"
            );
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for all x, y: checked through autograd.
        let device = Device::Cpu;
        let g = geometry(4, 2, 1);
        let x =
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 9, 9), &device).unwrap()).unwrap();
        let patches = im2col(x.as_tensor(), g).unwrap();
        let y = Tensor::randn(0f64, 1.0, patches.shape(), &device).unwrap();
        let inner = (&patches * &y).unwrap().sum_all().unwrap();
        let grads = inner.backward().unwrap();
        let grad_x = grads.get(x.as_tensor()).unwrap();
        let lhs = inner.to_scalar::<f64>().unwrap();
        let rhs = (x.as_tensor() * grad_x)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(
            (lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
    }

    #[test]
    fn output_sizes_follow_the_convolution_formula() {
        assert_eq!(geometry(8, 2, 3).output_size(28, 28), Some((14, 14)));
        assert_eq!(geometry(4, 2, 0).output_size(13, 13), Some((5, 5)));
        assert_eq!(geometry(9, 1, 0).output_size(8, 8), None);
    }
}
