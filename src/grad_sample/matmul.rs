//! Small matrix products on slices, through the `gemm` crate (the kernels candle itself
//! uses), with the bounds checked so the callers stay safe.
//!
//! Why not candle's batched matmul: for a batch of B small products (one per example) it
//! calls gemm B times, each asking rayon to split a product of a few hundred thousand
//! multiply-adds over the threads; the scheduling cost exceeds the work (the cnn's
//! per-example norms took 11 ms of a 26 ms step). Here each product runs single-threaded
//! and the examples run in parallel.

use gemm::Parallelism;

use crate::real::Real;

/// A strided view of an `rows × cols` matrix inside a slice.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T = f32> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// The row-major `rows × cols` matrix at the start of `data`.
    ///
    /// # Panics
    /// If `data` holds fewer than `rows · cols` values (a caller's bug).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert!(data.len() >= rows * cols, "matrix view out of bounds");
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose (a view; nothing is copied).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// `dst ← lhs · rhs` (`accumulate = false`) or `dst ← dst + lhs · rhs`, with `dst` row-major
/// `lhs.rows × rhs.cols`; single-threaded unless `threads > 1`.
///
/// # Panics
/// If the shapes do not match or `dst` is too short (a caller's bug).
pub fn matmul<T: Real>(
    dst: &mut [T],
    lhs: MatRef<T>,
    rhs: MatRef<T>,
    accumulate: bool,
    threads: usize,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions differ");
    assert!(dst.len() >= m * n, "destination too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::zero());
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: every index gemm reads, (r·row_stride + c·col_stride) for r < rows and
    // c < cols, is below the views' checked lengths (row_major asserted rows·cols ≤ len,
    // and the transpose visits the same offsets); dst holds m·n values.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop.
    fn naive(lhs: MatRef, rhs: MatRef) -> Vec<f32> {
        let mut out = vec![0.0; lhs.rows * rhs.cols];
        for i in 0..lhs.rows {
            for j in 0..rhs.cols {
                out[i * rhs.cols + j] = (0..lhs.cols)
                    .map(|l| {
                        lhs.data[i * lhs.row_stride + l * lhs.col_stride]
                            * rhs.data[l * rhs.row_stride + j * rhs.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn products_and_transposes_match_the_triple_loop() {
        let a: Vec<f32> = (0..35).map(|v| (v as f32 * 0.37).sin()).collect(); // 5 × 7
        let b: Vec<f32> = (0..21).map(|v| (v as f32 * 0.11).cos()).collect(); // 7 × 3
        let c: Vec<f32> = (0..15).map(|v| v as f32 - 7.0).collect(); // 5 × 3
        let cases = [
            (MatRef::row_major(&a, 5, 7), MatRef::row_major(&b, 7, 3)),
            (MatRef::row_major(&c, 5, 3).t(), MatRef::row_major(&a, 5, 7)),
            (MatRef::row_major(&a, 5, 7), MatRef::row_major(&a, 5, 7).t()),
        ];
        for (lhs, rhs) in cases {
            let expected = naive(lhs, rhs);
            for threads in [1, 2] {
                let mut dst = vec![1.0; expected.len()];
                matmul(&mut dst, lhs, rhs, false, threads);
                for (x, y) in dst.iter().zip(&expected) {
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
                matmul(&mut dst, lhs, rhs, true, threads);
                for (x, y) in dst.iter().zip(&expected) {
                    assert!((x - 2.0 * y).abs() < 1e-5, "accumulated {x} vs {}", 2.0 * y);
                }
            }
        }
    }
}
