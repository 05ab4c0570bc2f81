//! Exact sampling of the discrete Gaussian N_Z(0, σ²), P(x) ∝ exp(−x²/(2σ²)) on the integers,
//! with integer arithmetic only (Canonne, Kamath & Steinke 2020, "The discrete Gaussian for
//! differential privacy", Algorithms 1-3). No floating point touches a sample, so the
//! attacks on floating-point Gaussian samplers (Mironov 2012; Jin et al. 2022) do not apply.
//!
//! σ² is an integer here (the secure noise mode rounds σ², in grid units, up: more noise
//! never weakens the guarantee), at most [`MAX_SIGMA2`] so that every intermediate value fits
//! in a u128. The building block of the secure noise mode ([`super::secure_noise`]).
//! Timing is not constant: the number of loop iterations depends on the sample
//! (a timing side channel, as in every rejection sampler).

use rand::RngCore;

use crate::error::{Error, Result};
use crate::sampling::uniform_below;

/// The largest σ² accepted (σ ≤ 2^24): a sample beyond 2^30 (64σ, probability below
/// 1e-800) is never drawn, so (|x|·t)² < 2^110 and 2σ²t² < 2^98, and the Bernoulli
/// denominators 2σ²t²·K stay far below 2^128.
pub const MAX_SIGMA2: u128 = 1 << 48;

/// Random bits and integers from a generator, with the bits of each 64-bit word used one
/// at a time (the Bernoulli trials below need about two bits each).
struct Bits<'a, R: RngCore> {
    rng: &'a mut R,
    word: u64,
    left: u32,
}

impl<'a, R: RngCore> Bits<'a, R> {
    fn new(rng: &'a mut R) -> Self {
        Bits {
            rng,
            word: 0,
            left: 0,
        }
    }

    fn bit(&mut self) -> bool {
        if self.left == 0 {
            self.word = self.rng.next_u64();
            self.left = 64;
        }
        self.left -= 1;
        let bit = self.word & 1 == 1;
        self.word >>= 1;
        bit
    }

    /// Uniform on {0, …, n−1}, n ≥ 1, by rejection (no modulo bias): draws below
    /// 2^w mod n are redrawn, so the accepted range is a whole number of copies.
    fn uniform_below(&mut self, n: u128) -> u128 {
        debug_assert!(n >= 1);
        if let Ok(n) = u64::try_from(n) {
            return u128::from(uniform_below(self.rng, n));
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let r = (u128::from(self.rng.next_u64()) << 64) | u128::from(self.rng.next_u64());
            if r >= threshold {
                return r % n;
            }
        }
    }

    /// Bernoulli(num/den), 0 ≤ num ≤ den, den ≥ 1, without division: compares a uniform
    /// U ∈ [0, 1), one random bit at a time, with the binary expansion of p = num/den
    /// (long division); the first differing bit decides U < p. Exact; 2 bits on average.
    fn bernoulli(&mut self, num: u128, den: u128) -> bool {
        if num >= den {
            return true;
        }
        // Most denominators (t·k, 1·k) fit 63 bits, where the division runs in u64.
        if den < 1 << 63 {
            return self.bernoulli_narrow(num as u64, den as u64);
        }
        // num < den ≤ 2^127 keeps 2·num from overflowing (callers stay far below).
        let mut remainder = num;
        loop {
            remainder <<= 1;
            let p_bit = remainder >= den;
            if p_bit {
                remainder -= den;
            }
            if self.bit() != p_bit {
                return p_bit; // U's bit 0 where p's is 1: U < p.
            }
            if remainder == 0 {
                return false; // p's expansion ended: U ≥ p from here on.
            }
        }
    }

    /// [`Bits::bernoulli`] for num < den < 2^63.
    fn bernoulli_narrow(&mut self, num: u64, den: u64) -> bool {
        let mut remainder = num;
        loop {
            remainder <<= 1;
            let p_bit = remainder >= den;
            if p_bit {
                remainder -= den;
            }
            if self.bit() != p_bit {
                return p_bit;
            }
            if remainder == 0 {
                return false;
            }
        }
    }

    /// Bernoulli(exp(−num/den)), num ≥ 0, den ≥ 1 (CKS 2020, Algorithm 1).
    fn bernoulli_exp_neg(&mut self, num: u128, den: u128) -> bool {
        if num <= den {
            // γ = num/den ∈ [0, 1]: K is the first k with a failed Bernoulli(γ/k);
            // P(K odd) = e^−γ.
            let mut k: u128 = 1;
            while self.bernoulli(num, den * k) {
                k += 1;
            }
            return k % 2 == 1;
        }
        // e^−γ = (e^−1)^⌊γ⌋ · e^−(γ − ⌊γ⌋).
        for _ in 0..num / den {
            if !self.bernoulli_exp_neg(1, 1) {
                return false;
            }
        }
        self.bernoulli_exp_neg(num % den, den)
    }

    /// Discrete Laplace with scale t ≥ 1: P(x) ∝ exp(−|x|/t) (CKS 2020, Algorithm 2).
    fn discrete_laplace(&mut self, t: u128) -> i128 {
        loop {
            let u = self.uniform_below(t);
            if !self.bernoulli_exp_neg(u, t) {
                continue;
            }
            let mut v: u128 = 0;
            while self.bernoulli_exp_neg(1, 1) {
                v += 1;
            }
            let negative = self.bit();
            if negative && u == 0 && v == 0 {
                continue;
            }
            let magnitude = (u + t * v) as i128;
            return if negative { -magnitude } else { magnitude };
        }
    }
}

/// ⌊√n⌋.
fn isqrt(n: u128) -> u128 {
    let mut x = (n as f64).sqrt() as u128;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

/// One draw of N_Z(0, σ²) for an integer σ² in [1, [`MAX_SIGMA2`]] (CKS 2020, Algorithm 3:
/// discrete Laplace proposals with t = ⌊σ⌋ + 1, accepted with probability
/// exp(−(|y| − σ²/t)²/(2σ²)), written as exp(−(|y|·t − σ²)²/(2σ²t²))).
pub fn sample(rng: &mut impl RngCore, sigma2: u128) -> Result<i128> {
    if !(1..=MAX_SIGMA2).contains(&sigma2) {
        return Err(Error::invalid(
            "discrete Gaussian σ²",
            sigma2,
            format!("a whole number from 1 to {MAX_SIGMA2}"),
        ));
    }
    let t = isqrt(sigma2) + 1;
    let mut bits = Bits::new(rng);
    loop {
        let y = bits.discrete_laplace(t);
        let gap = (y.unsigned_abs() * t).abs_diff(sigma2);
        if bits.bernoulli_exp_neg(gap * gap, 2 * sigma2 * t * t) {
            return Ok(y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    /// The exact pmf on [−width, width] (the rest of the mass is below 1e-30 here).
    fn pmf(sigma2: f64, width: i64) -> Vec<f64> {
        let weights: Vec<f64> = (-width..=width)
            .map(|x| (-(x * x) as f64 / (2.0 * sigma2)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }

    /// Upper 1e-6 quantile of χ² with `df` degrees of freedom (Wilson & Hilferty 1931).
    fn chi2_critical(df: f64) -> f64 {
        let z = 4.753_424; // one-sided normal quantile at 1e-6
        df * (1.0 - 2.0 / (9.0 * df) + z * (2.0 / (9.0 * df)).sqrt()).powi(3)
    }

    #[test]
    fn samples_follow_the_exact_pmf() {
        // χ² goodness of fit, fixed seed, false-failure rate 1e-6; bins with expected count
        // below 5 are merged into the tails.
        for (sigma2, seed) in [(1u128, 1u64), (4, 2), (30, 3), (1000, 4)] {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let n = 200_000;
            let width = (12.0 * (sigma2 as f64).sqrt()).ceil() as i64 + 2;
            let p = pmf(sigma2 as f64, width);
            let mut counts = vec![0f64; p.len()];
            for _ in 0..n {
                let x = sample(&mut rng, sigma2).unwrap() as i64;
                assert!(x.abs() <= width, "σ² {sigma2}: sample {x} far in the tail");
                counts[(x + width) as usize] += 1.0;
            }
            let (mut statistic, mut bins) = (0.0, 0);
            let (mut pooled_observed, mut pooled_expected) = (0.0, 0.0);
            for (observed, probability) in counts.iter().zip(&p) {
                let expected = probability * n as f64;
                if expected < 5.0 {
                    pooled_observed += observed;
                    pooled_expected += expected;
                    continue;
                }
                statistic += (observed - expected).powi(2) / expected;
                bins += 1;
            }
            if pooled_expected > 0.0 {
                statistic += (pooled_observed - pooled_expected).powi(2) / pooled_expected;
                bins += 1;
            }
            let critical = chi2_critical((bins - 1) as f64);
            assert!(
                statistic < critical,
                "σ² {sigma2}: χ² = {statistic:.1} above {critical:.1} ({bins} bins)"
            );
        }
    }

    #[test]
    fn a_wrong_pmf_is_rejected_by_the_same_test() {
        // The test must be able to fail: samples of σ² = 4 against the pmf of σ² = 5.
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let n = 200_000;
        let width = 30;
        let p = pmf(5.0, width);
        let mut counts = vec![0f64; p.len()];
        for _ in 0..n {
            counts[(sample(&mut rng, 4).unwrap() as i64 + width) as usize] += 1.0;
        }
        let (mut statistic, mut bins) = (0.0, 0);
        for (observed, probability) in counts.iter().zip(&p) {
            let expected = probability * n as f64;
            if expected >= 5.0 {
                statistic += (observed - expected).powi(2) / expected;
                bins += 1;
            }
        }
        assert!(
            statistic > chi2_critical((bins - 1) as f64),
            "χ² = {statistic}"
        );
    }

    #[test]
    fn bernoulli_exp_matches_its_probability() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for (num, den) in [(0u128, 1u128), (1, 3), (5, 2), (7, 7)] {
            let n = 100_000;
            let mut bits = Bits::new(&mut rng);
            let hits = (0..n).filter(|_| bits.bernoulli_exp_neg(num, den)).count() as f64;
            let p = (-(num as f64) / den as f64).exp();
            let z = (hits - n as f64 * p) / (n as f64 * p * (1.0 - p)).sqrt().max(1e-9);
            assert!(z.abs() < 4.9, "exp(−{num}/{den}): z = {z}");
        }
    }

    #[test]
    fn bernoulli_matches_its_probability() {
        // Dyadic, non-dyadic, edge and 100-bit denominators.
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let mut bits = Bits::new(&mut rng);
        let big = 1u128 << 100;
        for (num, den) in [
            (0u128, 5u128),
            (5, 5),
            (1, 2),
            (1, 3),
            (2, 7),
            (big / 3, big),
        ] {
            let n = 100_000;
            let hits = (0..n).filter(|_| bits.bernoulli(num, den)).count() as f64;
            let p = num as f64 / den as f64;
            if p == 0.0 || p == 1.0 {
                assert_eq!(hits, n as f64 * p, "{num}/{den}");
                continue;
            }
            let z = (hits - n as f64 * p) / (n as f64 * p * (1.0 - p)).sqrt();
            assert!(z.abs() < 4.9, "{num}/{den}: z = {z}");
        }
    }

    #[test]
    fn large_variances_keep_their_moments() {
        // σ² = 2^46 (σ = 2^23): mean 0 and variance σ² within their 1e-6 bounds.
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let (sigma2, n) = ((1u128 << 46) as f64, 20_000);
        let xs: Vec<f64> = (0..n)
            .map(|_| sample(&mut rng, 1 << 46).unwrap() as f64)
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
        assert!(mean.abs() < 4.9 * (sigma2 / n as f64).sqrt(), "mean {mean}");
        let z = (var - sigma2) / (sigma2 * (2.0 / n as f64).sqrt());
        assert!(z.abs() < 4.9, "variance {var} vs {sigma2}: z = {z}");
    }

    #[test]
    fn out_of_range_variances_are_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(0);
        assert!(sample(&mut rng, 0).is_err());
        assert!(sample(&mut rng, MAX_SIGMA2 + 1).is_err());
        assert_eq!(isqrt(99), 9);
        assert_eq!(isqrt(100), 10);
    }
}
