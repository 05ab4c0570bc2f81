//! Per-example norms and clipped sums of each layer type against the naive oracle: one
//! batch-size-1 backward pass per example through candle's own ops (candle's `conv2d`, not
//! our im2col), f32 as in training. Required agreement: 1e-4 relative.

use candle_core::{DType, Device, Tensor, Var};
use dptrain::grad_sample::im2col::{ConvGeometry, im2col};
use dptrain::grad_sample::linear;

const RELATIVE: f32 = 1e-4;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A small deterministic generator: tests must not depend on OS entropy.
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// A smooth, non-linear per-example loss of a layer output: Σ sin(y) ⊙ M + (y²)/4.
fn loss_of(y: &Tensor, mix: &Tensor) -> Tensor {
    let s = y.sin().unwrap().broadcast_mul(mix).unwrap();
    let q = (y.sqr().unwrap() * 0.25).unwrap();
    (s + q).unwrap().sum_all().unwrap()
}

/// Each norm within 1e-4 of its own value.
fn assert_norms_close(ours: &[f32], naive: &[f32], what: &str) {
    assert_eq!(ours.len(), naive.len());
    for (i, (a, b)) in ours.iter().zip(naive).enumerate() {
        assert!(
            (a - b).abs() <= RELATIVE * b.abs(),
            "{what}[{i}]: ours {a} vs naive {b}"
        );
    }
}

/// Each entry of a sum within 1e-4 of the sum's largest entry (entries near 0 have no
/// meaningful relative error).
fn assert_close(ours: &[f32], naive: &[f32], what: &str) {
    assert_eq!(ours.len(), naive.len());
    let scale = naive
        .iter()
        .map(|v| v.abs())
        .fold(0.0f32, f32::max)
        .max(1e-12);
    for (i, (a, b)) in ours.iter().zip(naive).enumerate() {
        assert!(
            (a - b).abs() <= RELATIVE * scale.max(b.abs()),
            "{what}[{i}]: ours {a} vs naive {b}"
        );
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Clip factors in (0, 1], different per example.
fn factors(batch: usize) -> Tensor {
    let v: Vec<f32> = (0..batch).map(|i| 1.0 / (1.0 + i as f32 * 0.37)).collect();
    Tensor::from_vec(v, batch, &Device::Cpu).unwrap()
}

/// The naive oracle: per-example squared norms and the clipped sums Σ c_i ∇W_i, Σ c_i ∇b_i,
/// from `gradients(i)` = (∇W_i, ∇b_i) of one batch-size-1 backward pass.
fn naive_loop(
    factors: &[f32],
    gradients: impl Fn(usize) -> (Vec<f32>, Vec<f32>),
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut norms, mut sum_w, mut sum_b) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &c) in factors.iter().enumerate() {
        let (gw, gb) = gradients(i);
        norms.push(gw.iter().chain(&gb).map(|v| v * v).sum::<f32>());
        sum_w.resize(gw.len(), 0.0);
        sum_b.resize(gb.len(), 0.0);
        for (acc, v) in sum_w.iter_mut().zip(&gw).chain(sum_b.iter_mut().zip(&gb)) {
            *acc += c * v;
        }
    }
    (norms, sum_w, sum_b)
}

/// Linear layer over a sequence axis T (T = 1 is the plain layer), (B, T, d) → (B, T, p).
fn check_linear(batch: usize, t: usize, d: usize, p: usize) {
    let x = randn(&[batch, t, d], 1);
    let w = Var::from_tensor(&randn(&[p, d], 2)).unwrap();
    let b = Var::from_tensor(&randn(&[p], 3)).unwrap();
    let mix = randn(&[t, p], 4);
    let forward = |x: &Tensor| {
        x.broadcast_matmul(&w.as_tensor().t().unwrap())
            .unwrap()
            .broadcast_add(b.as_tensor())
            .unwrap()
    };
    // Ours: one batched pass, G from a zero probe on the output.
    let probe = Var::zeros((batch, t, p), DType::F32, &Device::Cpu).unwrap();
    let y = (forward(&x) + probe.as_tensor()).unwrap();
    let grads = loss_of(&y, &mix).backward().unwrap();
    let g = grads.get(probe.as_tensor()).unwrap();
    let norms = flat(&linear::sq_norms(&x, g, true).unwrap());
    let c = factors(batch);
    let (sum_w, sum_b) = linear::clipped_sums(&x, g, &c).unwrap();
    // Naive: example by example.
    let (naive_norms, naive_w, naive_b) = naive_loop(&flat(&c), |i| {
        let xi = x.narrow(0, i, 1).unwrap();
        let grads = loss_of(&forward(&xi), &mix).backward().unwrap();
        let gw = flat(grads.get(w.as_tensor()).unwrap());
        (gw, flat(grads.get(b.as_tensor()).unwrap()))
    });
    let what = format!("linear B={batch} T={t} d={d} p={p}");
    assert_norms_close(&norms, &naive_norms, &format!("{what} norms"));
    assert_close(&flat(&sum_w), &naive_w, &format!("{what} weight sum"));
    assert_close(&flat(&sum_b), &naive_b, &format!("{what} bias sum"));
}

#[test]
fn linear_matches_the_naive_loop() {
    check_linear(9, 1, 784, 10); // logreg
    check_linear(6, 1, 64, 32);
}

#[test]
fn linear_with_a_sequence_axis_matches_both_norm_formulas() {
    check_linear(5, 3, 40, 30); // T² (p + d) < T p d: ghost norm
    check_linear(4, 50, 6, 5); // materialised G_iᵀ A_i
    // More examples than one task of the clipped sum's split product takes (32).
    check_linear(70, 2, 20, 12);
}

/// Conv2d through im2col, against candle's conv2d in the naive loop.
fn check_conv(
    batch: usize,
    channels: usize,
    size: usize,
    out: usize,
    k: usize,
    stride: usize,
    padding: usize,
) {
    let geometry = ConvGeometry {
        kernel: (k, k),
        stride,
        padding: (padding, padding),
        dilation: 1,
    };
    let (oh, ow) = geometry.output_size(size, size).unwrap();
    let x = randn(&[batch, channels, size, size], 5);
    let w = Var::from_tensor(&randn(&[out, channels, k, k], 6)).unwrap();
    let b = Var::from_tensor(&randn(&[out], 7)).unwrap();
    let mix = randn(&[out, oh, ow], 8);
    // Ours: patches · Wᵀ + b in (B, T, out), probe there, then to (B, out, H', W').
    let patches = im2col(&x, geometry).unwrap();
    let w_flat = w.as_tensor().reshape((out, channels * k * k)).unwrap();
    let probe = Var::zeros((batch, oh * ow, out), DType::F32, &Device::Cpu).unwrap();
    let y = patches
        .broadcast_matmul(&w_flat.t().unwrap())
        .unwrap()
        .broadcast_add(b.as_tensor())
        .unwrap();
    let y = (y + probe.as_tensor()).unwrap();
    let image = y
        .transpose(1, 2)
        .unwrap()
        .reshape((batch, out, oh, ow))
        .unwrap();
    let grads = loss_of(&image, &mix).backward().unwrap();
    let g = grads.get(probe.as_tensor()).unwrap();
    // The conv's rule is the linear layer's over the patches (kinds/conv2d.rs).
    let norms = flat(&linear::sq_norms(&patches, g, true).unwrap());
    let c = factors(batch);
    let (sum_w, sum_b) = linear::clipped_sums(&patches, g, &c).unwrap();
    let sum_w = sum_w.reshape((out, channels, k, k)).unwrap();
    assert_eq!(sum_w.dims(), [out, channels, k, k]);
    // Reusing the materialised per-example gradients gives the same sums.
    let pe = linear::per_example(&patches, g).unwrap();
    let (reused_w, reused_b) = linear::clipped_sums_with(&pe, &patches, g, &c).unwrap();
    assert_close(&flat(&reused_w), &flat(&sum_w), "reused weight sum");
    assert_close(&flat(&reused_b), &flat(&sum_b), "reused bias sum");
    // Naive: candle's conv2d, one example at a time.
    let (naive_norms, naive_w, naive_b) = naive_loop(&flat(&c), |i| {
        let xi = x.narrow(0, i, 1).unwrap();
        let yi = xi
            .conv2d(w.as_tensor(), padding, stride, 1, 1)
            .unwrap()
            .broadcast_add(&b.as_tensor().reshape((1, out, 1, 1)).unwrap())
            .unwrap();
        let grads = loss_of(&yi, &mix).backward().unwrap();
        let gw = flat(grads.get(w.as_tensor()).unwrap());
        (gw, flat(grads.get(b.as_tensor()).unwrap()))
    });
    let what = format!("conv C={channels} {size}x{size} out={out} k={k} s={stride} p={padding}");
    assert_norms_close(&norms, &naive_norms, &format!("{what} norms"));
    assert_close(&flat(&sum_w), &naive_w, &format!("{what} weight sum"));
    assert_close(&flat(&sum_b), &naive_b, &format!("{what} bias sum"));
}

#[test]
fn conv2d_matches_the_naive_loop_for_the_cnn_layers() {
    check_conv(5, 1, 28, 16, 8, 2, 3); // cnn conv1: T = 196, materialised norms
    check_conv(4, 16, 13, 32, 4, 2, 0); // cnn conv2: T = 25, ghost norms
    check_conv(3, 3, 7, 4, 3, 1, 1);
    check_conv(40, 16, 13, 32, 4, 2, 0); // a batch the clipped sum splits in groups
}
