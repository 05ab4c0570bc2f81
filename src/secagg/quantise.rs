//! A clipped update as a vector over Z_{2^b}, and the sum back (Kairouz, Liu & Steinke 2021,
//! "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
//! Aggregation", Alg. 1 and 2):
//!
//! 1. pad to d = the next power of two and rotate: y = H·D·x/√d, D a diagonal of ±1 drawn
//!    from a public seed (ChaCha20), H the Walsh–Hadamard matrix. The rotation is orthonormal
//!    (norms are kept) and spreads the update evenly over the coordinates, so none wraps;
//! 2. scale by s and round stochastically to integers, *conditionally*: re-draw until the
//!    rounded vector's norm is at most Δ₂ (the bound the accountant books, β > 0);
//! 3. (the caller adds its integer noise share);
//! 4. reduce mod 2^b ("modular clipping": the wrapping arithmetic of the secure sum).
//!
//! The server maps the sum back: centred residues in [−2^{b−1}, 2^{b−1}), divided by s,
//! rotated back (D·H/√d) and truncated to the model's m values.

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};
use crate::privacy::distributed::rounded_l2_bound;

/// Conditional rounding gives up after this many draws (TensorFlow Federated's limit too);
/// the client then drops out of the round rather than exceed the booked bound.
pub const MAX_ROUNDING_TRIES: usize = 1000;

/// The public description of a round's quantisation: every client and the server hold the
/// same one.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantiser {
    /// m: the update's length.
    pub dim: usize,
    /// c: the L2 clip of an update (before scaling).
    pub clip: f64,
    /// s: integer = round(s · rotated value).
    pub scale: f64,
    /// β of conditional rounding, in (0, 1) (Kairouz et al. use e^{−1/2}).
    pub beta: f64,
    /// b: values live in Z_{2^b}.
    pub bits: u32,
    /// D: +1 or −1 per padded coordinate.
    signs: Vec<f64>,
    /// The rotation's block: H·D acts on consecutive blocks of this many coordinates (a
    /// power of two; the whole padded vector unless [`Quantiser::blocked`]).
    block: usize,
    /// The seed D was drawn from.
    rotation_seed: [u8; 32],
}

/// The next power of two at or above `m` (the rotation's dimension d).
pub fn padded_dim(m: usize) -> usize {
    m.max(1).next_power_of_two()
}

/// The number of standard deviations k such that no coordinate of a d-vector wraps with
/// probability at least 1 − p, for coordinates treated as Gaussian: P(|Z| > k) = p/d per
/// coordinate (a union bound over the d coordinates), k = √2 · erfc⁻¹(p/d).
pub fn wrap_stddevs(p: f64, d: usize) -> f64 {
    std::f64::consts::SQRT_2 * statrs::function::erf::erfc_inv(p / d as f64)
}

/// The scale s that makes the sum of n clients' vectors fit Z_{2^b} (Kairouz et al. 2021,
/// §4.4; google-research's `heuristic_scale_factor`), from
///
/// ```text
/// 2^b = 2k · sqrt( (c n)²/d + (1/(4s²) + σ²) n ) · s
///   ⇒ s = sqrt(4^b − n k²) / (2k · sqrt( c² n²/d + n σ² ))
/// ```
///
/// with k = [`wrap_stddevs`]`(p, d)`: after the rotation each coordinate of the sum has
/// standard deviation at most sqrt((cn)²/d + n/(4s²) + nσ²) (signals of norm ≤ c adding up
/// to ≤ nc, spread evenly; rounding error variance ≤ 1/4 per client in integer units; the
/// noise shares nσ²), and the 2^b values span ±k of them. So the sum wraps nowhere with
/// probability about 1 − p (a heuristic: the coordinates are treated as Gaussian). Wrapping
/// costs accuracy, never privacy: the reduction is post-processing.
pub fn scale_for_bits(
    bits: u32,
    clients: u64,
    clip: f64,
    dim: usize,
    local_stddev: f64,
    p: f64,
) -> Result<f64> {
    let d = padded_dim(dim) as f64;
    let n = clients as f64;
    let k = wrap_stddevs(p, padded_dim(dim));
    let room = 4f64.powi(bits as i32) - n * k * k;
    let spread = clip * clip * n * n / d + n * local_stddev * local_stddev;
    if !(room > 0.0 && spread > 0.0 && spread.is_finite()) {
        return Err(Error::invalid(
            "secure_aggregation.bits",
            bits,
            format!(
                "enough bits that 4^b exceeds n·k² = {:.0} for {clients} clients (k = {k:.2})",
                n * k * k
            ),
        ));
    }
    Ok(room.sqrt() / (2.0 * k * spread.sqrt()))
}

impl Quantiser {
    /// The quantiser of a round: `dim` values clipped to `clip`, scale s, conditional
    /// rounding at β, b bits, the rotation's signs from `rotation_seed` (public).
    pub fn new(
        dim: usize,
        clip: f64,
        scale: f64,
        beta: f64,
        bits: u32,
        rotation_seed: [u8; 32],
    ) -> Result<Self> {
        Self::blocked(
            dim,
            padded_dim(dim.max(1)),
            clip,
            scale,
            beta,
            bits,
            rotation_seed,
        )
    }

    /// As [`Quantiser::new`], but padded to a multiple of `block` (a power of two) and
    /// rotated block by block: H·D is block-diagonal, still orthonormal, so norms and Δ₂
    /// are kept, and each coordinate of a block has variance at most c²/`block`.
    /// Homomorphic aggregation packs 4,096 values per ciphertext, so blocks of 4,096 waste
    /// at most one ciphertext's padding where the next power of two can add a third.
    pub fn blocked(
        dim: usize,
        block: usize,
        clip: f64,
        scale: f64,
        beta: f64,
        bits: u32,
        rotation_seed: [u8; 32],
    ) -> Result<Self> {
        if !block.is_power_of_two() {
            return Err(Error::invalid("quantiser.block", block, "a power of two"));
        }
        if dim == 0 {
            return Err(Error::invalid("quantiser.dim", dim, "at least 1 value"));
        }
        for (name, value) in [("quantiser.clip", clip), ("quantiser.scale", scale)] {
            if !(value > 0.0 && value.is_finite()) {
                return Err(Error::invalid(name, value, "a finite number above 0"));
            }
        }
        if !(beta > 0.0 && beta < 1.0) {
            return Err(Error::invalid("quantiser.beta", beta, "a number in (0, 1)"));
        }
        if !(2..=32).contains(&bits) {
            return Err(Error::invalid("quantiser.bits", bits, "2 to 32"));
        }
        let d = dim.div_ceil(block) * block;
        let mut rng = ChaCha20Rng::from_seed(rotation_seed);
        let mut signs = Vec::with_capacity(d);
        while signs.len() < d {
            let word = rng.next_u64();
            signs.extend((0..64.min(d - signs.len())).map(|i| match (word >> i) & 1 {
                1 => -1.0,
                _ => 1.0,
            }));
        }
        Ok(Quantiser {
            dim,
            clip,
            scale,
            beta,
            bits,
            signs,
            block,
            rotation_seed,
        })
    }

    /// The public seed the rotation's signs were drawn from.
    pub fn rotation_seed(&self) -> [u8; 32] {
        self.rotation_seed
    }

    /// d: the padded dimension.
    pub fn padded(&self) -> usize {
        self.signs.len()
    }

    /// Δ₂: the L2 norm every rounded vector is held to, in integer units (the bound the
    /// accountant books, `privacy::distributed`).
    pub fn l2_bound(&self) -> f64 {
        rounded_l2_bound(self.clip * self.scale, self.padded() as u64, self.beta)
    }

    /// Steps 1 and 2: `update` (L2 norm ≤ c; a larger one is scaled down to c) rotated,
    /// scaled and rounded conditionally with randomness from `rng` (a CSPRNG in deployment:
    /// the rounding is part of the mechanism). Errors on a non-finite value, or when
    /// [`MAX_ROUNDING_TRIES`] draws all exceed Δ₂ (the client then sends nothing).
    pub fn round(&self, update: &[f32], rng: &mut impl RngCore) -> Result<Vec<i64>> {
        if update.len() != self.dim {
            return Err(Error::invalid(
                "quantiser input",
                update.len(),
                format!("{} values", self.dim),
            ));
        }
        let norm = update
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        if !norm.is_finite() {
            return Err(Error::invalid(
                "quantiser input",
                "a non-finite value",
                "finite values",
            ));
        }
        let shrink = match norm > self.clip {
            true => self.clip / norm,
            false => 1.0,
        };
        let mut y = vec![0.0f64; self.padded()];
        for ((out, &v), sign) in y.iter_mut().zip(update).zip(&self.signs) {
            *out = f64::from(v) * shrink * sign;
        }
        y.chunks_mut(self.block).for_each(walsh_hadamard);
        let factor = self.scale / (self.block as f64).sqrt();
        y.iter_mut().for_each(|v| *v *= factor);
        let bound = self.l2_bound();
        // Exact integer norm against Δ₂² (a hair below it, so f64 rounding of Δ₂² never
        // admits a vector over the booked bound).
        let limit = bound * bound * (1.0 - 1e-12);
        let mut rounded = vec![0i64; y.len()];
        for _ in 0..MAX_ROUNDING_TRIES {
            let mut norm2: i128 = 0;
            // Two coordinates per 64 random bits: round up with probability frac(v) to
            // within 2^-32 (the bound below is checked exactly whatever the draw).
            for (r, v) in rounded.chunks_mut(2).zip(y.chunks(2)) {
                let word = rng.next_u64();
                for (i, (r, &v)) in r.iter_mut().zip(v).enumerate() {
                    let floor = v.floor();
                    let unit = f64::from((word >> (32 * i)) as u32) * (1.0 / 4294967296.0);
                    *r = floor as i64 + i64::from(unit < v - floor);
                    norm2 += i128::from(*r) * i128::from(*r);
                }
            }
            if (norm2 as f64) <= limit {
                return Ok(rounded);
            }
        }
        Err(Error::Aborted(format!(
            "conditional rounding: {MAX_ROUNDING_TRIES} draws all above the bound {bound:.1}"
        )))
    }

    /// Step 4: each value mod 2^b (two's complement wraps exactly: 2^b divides 2^64).
    pub fn wrap(&self, values: &[i64]) -> Vec<u32> {
        let mask = match self.bits {
            32 => u32::MAX,
            b => (1u32 << b) - 1,
        };
        values.iter().map(|&v| (v as u32) & mask).collect()
    }

    /// The server's side: a sum mod 2^b as centred residues, divided by s and rotated back,
    /// truncated to m values.
    pub fn decode(&self, sum: &[u32]) -> Result<Vec<f64>> {
        let half = 1u64 << (self.bits - 1);
        let modulus = 1u64 << self.bits;
        let centred: Vec<i64> = sum
            .iter()
            .map(|&v| {
                let v = u64::from(v) % modulus;
                match v >= half {
                    true => v as i64 - modulus as i64,
                    false => v as i64,
                }
            })
            .collect();
        self.decode_centred(&centred)
    }

    /// The server's side from the integer sum itself (homomorphic aggregation decrypts it
    /// centred): divided by s and rotated back, truncated to m values.
    pub fn decode_centred(&self, sum: &[i64]) -> Result<Vec<f64>> {
        if sum.len() != self.padded() {
            return Err(Error::invalid(
                "secure sum",
                sum.len(),
                format!("{} values", self.padded()),
            ));
        }
        let mut y: Vec<f64> = sum.iter().map(|&v| v as f64).collect();
        y.chunks_mut(self.block).for_each(walsh_hadamard);
        let factor = 1.0 / (self.scale * (self.block as f64).sqrt());
        let mut out: Vec<f64> = y
            .iter()
            .zip(&self.signs)
            .map(|(v, sign)| v * factor * sign)
            .collect();
        out.truncate(self.dim);
        Ok(out)
    }
}

/// The unnormalised Walsh–Hadamard transform in place (H·v, H² = d·I): log₂ d passes of
/// butterflies. `values.len()` must be a power of two.
///
/// The passes of span below [`BLOCK`] touch one aligned block of `BLOCK` values each, so
/// they run block by block while the block is in cache; only the wider passes sweep the
/// whole vector (the same butterflies, the same result).
pub fn walsh_hadamard(values: &mut [f64]) {
    let n = values.len();
    debug_assert!(n.is_power_of_two());
    let block = BLOCK.min(n);
    for chunk in values.chunks_mut(block) {
        passes(chunk, 1, block);
    }
    passes(values, block, n);
}

/// Values per cache-resident block of [`walsh_hadamard`] (64 KiB of f64).
const BLOCK: usize = 8192;

/// The butterfly passes of spans `from`, 2·`from`, … below `to` over `values`.
fn passes(values: &mut [f64], from: usize, to: usize) {
    let mut half = from;
    while half < to {
        for pair in values.chunks_mut(2 * half) {
            let (a, b) = pair.split_at_mut(half);
            for (x, y) in a.iter_mut().zip(b.iter_mut()) {
                let (u, v) = (*x, *y);
                *x = u + v;
                *y = u - v;
            }
        }
        half *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    /// H from its definition H[i][j] = (−1)^popcount(i & j), multiplied out naively.
    #[test]
    fn the_transform_is_the_hadamard_matrix() {
        let n = 16;
        let v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut fast = v.clone();
        walsh_hadamard(&mut fast);
        for (i, f) in fast.iter().enumerate() {
            let naive: f64 = (0..n)
                .map(|j| match (i & j).count_ones() % 2 {
                    0 => v[j],
                    _ => -v[j],
                })
                .sum();
            assert!((f - naive).abs() < 1e-12, "{i}: {f} vs {naive}");
        }
    }

    /// The blocked order gives exactly the plain pass-by-pass transform (2^15 values).
    #[test]
    fn the_blocked_transform_equals_the_plain_passes() {
        let n = 1 << 15;
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 7919 % 1000) as f64) / 1000.0)
            .collect();
        let mut fast = v.clone();
        walsh_hadamard(&mut fast);
        let mut plain = v;
        passes(&mut plain, 1, n);
        assert_eq!(fast, plain);
    }

    /// Without rounding error (a huge scale) decode(round(x)) = x, and the rotation keeps
    /// the norm.
    #[test]
    fn decode_inverts_round_up_to_the_rounding_error() {
        let m = 1000;
        let q = Quantiser::new(m, 1.0, 1e6, (-0.5f64).exp(), 32, seed(3)).unwrap();
        assert_eq!(q.padded(), 1024);
        let x: Vec<f32> = (0..m).map(|i| ((i as f32) * 0.1).cos() / 40.0).collect();
        let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm < 1.0);
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let rounded = q.round(&x, &mut rng).unwrap();
        let rnorm = rounded.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt() / 1e6;
        assert!((rnorm - f64::from(norm)).abs() < 1e-4, "{rnorm} vs {norm}");
        let back = q.decode(&q.wrap(&rounded)).unwrap();
        for (b, v) in back.iter().zip(&x) {
            assert!((b - f64::from(*v)).abs() < 1e-5, "{b} vs {v}");
        }
    }

    /// Blocks of 4,096: 9,000 values pad to 12,288 (not 16,384), each block's rotation is
    /// orthonormal (the norm is kept), and decode_centred(round(x)) = x.
    #[test]
    fn the_block_rotation_pads_to_a_multiple_of_the_block_and_inverts() {
        let m = 9000;
        let q = Quantiser::blocked(m, 4096, 1.0, 1e6, (-0.5f64).exp(), 32, seed(4)).unwrap();
        assert_eq!(q.padded(), 12_288);
        let x: Vec<f32> = (0..m).map(|i| ((i as f32) * 0.37).sin() / 100.0).collect();
        let norm = x.iter().map(|v| v * v).sum::<f32>().sqrt();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let rounded = q.round(&x, &mut rng).unwrap();
        let rnorm = rounded.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt() / 1e6;
        assert!((rnorm - f64::from(norm)).abs() < 1e-4, "{rnorm} vs {norm}");
        // Every block carries signal: the rotation spread the last, partial block too.
        assert!(rounded[8192..].iter().filter(|&&v| v != 0).count() > 4000);
        let back = q.decode_centred(&rounded).unwrap();
        assert_eq!(back.len(), m);
        for (b, v) in back.iter().zip(&x) {
            assert!((b - f64::from(*v)).abs() < 1e-5, "{b} vs {v}");
        }
        assert!(Quantiser::blocked(m, 3000, 1.0, 1.0, 0.5, 32, seed(4)).is_err());
    }

    /// The sum of n clients' wrapped vectors decodes to the sum of their updates, and
    /// stochastic rounding is unbiased: the error of the mean over many clients shrinks.
    #[test]
    fn the_wrapped_sum_decodes_to_the_sum_of_the_updates() {
        let (m, n) = (300, 50u64);
        let clip = 0.5;
        let scale = scale_for_bits(16, n, clip, m, 0.0, 1e-4).unwrap();
        let q = Quantiser::new(m, clip, scale, (-0.5f64).exp(), 16, seed(9)).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut sum = vec![0u32; q.padded()];
        let mut want = vec![0.0f64; m];
        for client in 0..n {
            let x: Vec<f32> = (0..m)
                .map(|i| ((i as f32 + client as f32) * 0.7).sin() * 0.02)
                .collect();
            for (w, v) in want.iter_mut().zip(&x) {
                *w += f64::from(*v);
            }
            let wrapped = q.wrap(&q.round(&x, &mut rng).unwrap());
            let mask = (1u32 << 16) - 1;
            for (s, v) in sum.iter_mut().zip(wrapped) {
                *s = s.wrapping_add(v) & mask;
            }
        }
        let got = q.decode(&sum).unwrap();
        // n rounding errors of variance ≤ 1/4 each, in integer units: ≤ √n/(2s) per value.
        let tolerance = 5.0 * (n as f64).sqrt() / (2.0 * scale);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < tolerance, "{g} vs {w} (±{tolerance})");
        }
    }

    /// Every rounded vector is within the booked Δ₂, even for an update right at the clip
    /// and a coarse scale where the rounding error dominates.
    #[test]
    fn conditional_rounding_never_exceeds_the_booked_bound() {
        let m = 64;
        let q = Quantiser::new(m, 1.0, 2.0, (-0.5f64).exp(), 20, seed(5)).unwrap();
        let bound = q.l2_bound();
        let x = vec![0.125f32; m]; // norm exactly 1
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        for _ in 0..200 {
            let r = q.round(&x, &mut rng).unwrap();
            let norm = r.iter().map(|&v| (v * v) as f64).sum::<f64>().sqrt();
            assert!(norm <= bound, "{norm} > {bound}");
        }
        // An update above the clip is scaled to it, not refused.
        let big = vec![1.0f32; m];
        assert!(q.round(&big, &mut rng).is_ok());
        assert!(q.round(&[f32::NAN; 64], &mut rng).is_err());
        assert!(q.round(&[0.0; 3], &mut rng).is_err());
    }

    /// The scale's formula: at the returned s, 2^b is exactly 2k standard deviations of the
    /// sum's coordinate; too few bits for n clients is refused by name.
    #[test]
    fn the_scale_spends_the_bits_on_2k_standard_deviations() {
        let (bits, n, clip, m, sigma) = (18u32, 100u64, 0.3, 5000usize, 0.05);
        let s = scale_for_bits(bits, n, clip, m, sigma, 1e-4).unwrap();
        let d = padded_dim(m) as f64;
        let k = wrap_stddevs(1e-4, padded_dim(m));
        let nf = n as f64;
        let std = (clip * clip * nf * nf / d + nf / (4.0 * s * s) + nf * sigma * sigma).sqrt() * s;
        assert!((2.0 * k * std / 2f64.powi(bits as i32) - 1.0).abs() < 1e-12);
        // k: P(|Z| > k) = 1e-4/d, checked against the normal tail.
        let tail = statrs::function::erf::erfc(k / std::f64::consts::SQRT_2);
        assert!((tail * d / 1e-4 - 1.0).abs() < 1e-9, "{tail}");
        let err = scale_for_bits(4, 100, 1.0, m, 0.1, 1e-4).unwrap_err();
        assert!(err.to_string().contains("secure_aggregation.bits"), "{err}");
    }
}
