//! A privacy loss distribution on a uniform grid: the core that the PLD and PRV accountants
//! share.
//!
//! A pair of output distributions (P, Q) of a mechanism on two neighbouring data sets is
//! described, for (ε, δ) purposes, by the distribution of its privacy loss
//! L = ln(P(o)/Q(o)) for o ~ P (Dwork & Rothblum 2016; Sommer, Meiser & Mohammadi 2019):
//! the hockey-stick divergence is δ(ε) = E[(1 − e^(ε−L))₊] (with L = +∞ counted as 1).
//! The losses of a composition add, so composing mechanisms convolves their loss
//! distributions (Koskela, Jälkö & Honkela 2020 do it by FFT).
//!
//! [`LossGrid`] holds such a distribution on the points `offset + i·step`, plus a mass at
//! +∞. [`compose`] convolves any number of them, each repeated any number of times, in one
//! pass of real FFTs (`realfft`): every block's spectrum is raised to its repeat count and
//! multiplied in, so blocks may come in any order. The window of the result is chosen by a
//! Chernoff bound so that at most [`TAIL_MASS_TRUNCATION`] of the mass falls outside it,
//! and that bound is added to the mass at +∞ (which can only raise δ).
//!
//! Neighbours: [`super::pld`] and [`super::prv`] discretise the Poisson-subsampled Gaussian
//! onto grids; this file knows nothing of the mechanism.

use rayon::prelude::*;
use realfft::RealFftPlanner;
use realfft::num_complex::Complex;

use crate::error::{Error, Result};

/// The probability mass a composition may drop outside its window (dp_accounting's
/// default). It is added to the mass at +∞, so δ can only grow by it.
pub const TAIL_MASS_TRUNCATION: f64 = 1e-15;

/// The most grid points a composed distribution may have (2^26: 512 MiB a buffer).
pub const MAX_GRID_POINTS: usize = 1 << 26;

/// A discrete privacy loss distribution: `probs[j]` is the probability (under P) of the
/// loss `offset + (lower + j)·step`; `infinity_mass` that of +∞.
#[derive(Debug, Clone, PartialEq)]
pub struct LossGrid {
    /// The grid step (the discretisation interval), > 0.
    pub step: f64,
    /// The grid index of `probs[0]`.
    pub lower: i64,
    /// A shift of every support point (the PRV's mean correction; 0 for the PLD).
    pub offset: f64,
    /// Probabilities of the finite losses, non-negative.
    pub probs: Vec<f64>,
    /// Probability of an infinite loss (including every truncation bound).
    pub infinity_mass: f64,
}

impl LossGrid {
    /// The distribution of no mechanism at all: loss 0 with probability 1.
    pub fn identity(step: f64) -> LossGrid {
        LossGrid {
            step,
            lower: 0,
            offset: 0.0,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    /// The loss at position `j` of `probs`.
    pub fn loss(&self, j: usize) -> f64 {
        self.offset + (self.lower + j as i64) as f64 * self.step
    }

    /// The hockey-stick divergence δ(ε) = P(L = ∞) + Σ_{ℓ > ε} p(ℓ)(1 − e^(ε−ℓ)).
    pub fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let mut delta = 0.0;
        for j in (0..self.probs.len()).rev() {
            let loss = self.loss(j);
            if loss <= epsilon {
                break;
            }
            delta += -(epsilon - loss).exp_m1() * self.probs[j];
        }
        (delta + self.infinity_mass).min(1.0)
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta`; +∞ when the mass at +∞ alone exceeds it.
    ///
    /// On each gap between two support points δ(ε) = U − e^ε·W, with U and W the P- and
    /// Q-masses of the losses above the gap; the scan goes down from the top and solves
    /// ε = ln((U − δ)/W) in the first gap where that ε lands. W is kept in log space, so
    /// losses beyond 700 (where e^(−ℓ) underflows) are exact too.
    pub fn epsilon_for_delta(&self, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let mut upper = self.infinity_mass;
        let mut log_lower = f64::NEG_INFINITY;
        for j in (0..self.probs.len()).rev() {
            let p = self.probs[j];
            if p <= 0.0 {
                continue;
            }
            let loss = self.loss(j);
            if upper > delta && log_lower > f64::NEG_INFINITY {
                let candidate = (upper - delta).ln() - log_lower;
                if candidate >= loss {
                    return candidate.max(0.0);
                }
            }
            upper += p;
            log_lower = super::numerics::log_add(log_lower, p.ln() - loss);
        }
        if upper <= delta || log_lower == f64::NEG_INFINITY {
            return 0.0;
        }
        ((upper - delta).ln() - log_lower).max(0.0)
    }

    /// Total finite mass plus the mass at +∞ (1 up to rounding and truncation bounds).
    pub fn total_mass(&self) -> f64 {
        self.probs.iter().sum::<f64>() + self.infinity_mass
    }

    /// Mean and variance of the grid index distribution, relative to `lower`.
    fn index_moments(&self) -> (f64, f64) {
        let mass: f64 = self.probs.iter().sum();
        if mass <= 0.0 {
            return (0.0, 0.0);
        }
        let mean = self
            .probs
            .iter()
            .enumerate()
            .map(|(i, p)| i as f64 * p)
            .sum::<f64>()
            / mass;
        let var = self
            .probs
            .iter()
            .enumerate()
            .map(|(i, p)| (i as f64 - mean).powi(2) * p)
            .sum::<f64>()
            / mass;
        (mean, var)
    }

    /// ln Σ_i p_i e^(t·i) (indices relative to `lower`) at every t of `ts`, in one pass:
    /// each term is scaled by the largest exponent over the support (the first and last
    /// positive probabilities), so the largest term is exact and nothing overflows; the
    /// weights advance by e^t per index and are reset with one `exp` per chunk.
    fn log_mgfs(&self, ts: &[f64; ORDERS]) -> [f64; ORDERS] {
        let first = self.probs.iter().position(|&p| p > 0.0);
        let last = self.probs.iter().rposition(|&p| p > 0.0);
        let (Some(first), Some(last)) = (first, last) else {
            return [f64::NEG_INFINITY; ORDERS];
        };
        let tops: [f64; ORDERS] =
            std::array::from_fn(|k| (ts[k] * first as f64).max(ts[k] * last as f64));
        let ratios: [f64; ORDERS] = std::array::from_fn(|k| ts[k].exp());
        let largest = ts.iter().fold(0.0f64, |m, t| m.max(t.abs()));
        let chunk = ((200.0 / largest.max(1e-300)).floor() as usize).clamp(1, 256);
        let mut sums = [0.0; ORDERS];
        let mut start = first;
        while start <= last {
            let end = (start + chunk).min(last + 1);
            let mut weights: [f64; ORDERS] =
                std::array::from_fn(|k| (ts[k] * start as f64 - tops[k]).exp());
            for &p in &self.probs[start..end] {
                for k in 0..ORDERS {
                    sums[k] += p * weights[k];
                    weights[k] *= ratios[k];
                }
            }
            start = end;
        }
        std::array::from_fn(|k| sums[k].ln() + tops[k])
    }
}

/// How many t the Chernoff window tries: ±t₀·2^k for k = −10..1.
const ORDERS: usize = 24;

/// The window [lb, ub] (relative grid indices of the composed distribution) outside of
/// which at most `truncation` of the mass lies, by the Chernoff bound
/// P(S ≥ u) ≤ exp(ln E[e^(tS)] − t·u) on both sides (`truncation`/2 each), minimised over
/// t = ±t₀·2^k, k = −10..1, around the Gaussian optimum t₀ = √(2 ln(2/τ)/Var): far
/// below it is where skewed per-step losses (small q, small σ) put the optimum. Every
/// block's log-MGF at all those t comes from one pass over its probabilities.
fn chernoff_window(blocks: &[(&LossGrid, u64)], truncation: f64) -> (i64, i64) {
    let span: f64 = blocks
        .iter()
        .map(|(g, n)| *n as f64 * (g.probs.len().saturating_sub(1)) as f64)
        .sum();
    let var: f64 = blocks
        .iter()
        .map(|(g, n)| *n as f64 * g.index_moments().1)
        .sum();
    let (mut lb, mut ub) = (0.0f64, span);
    let log_term = (2.0 / truncation).ln();
    if var > 0.0 {
        let t0 = (2.0 * log_term / var).sqrt();
        let ts: [f64; ORDERS] = std::array::from_fn(|i| {
            let t = t0 * 2f64.powi(i as i32 / 2 - 10);
            if i % 2 == 0 { t } else { -t }
        });
        let per_block: Vec<[f64; ORDERS]> =
            blocks.par_iter().map(|(g, _)| g.log_mgfs(&ts)).collect();
        for (i, &t) in ts.iter().enumerate() {
            let log_mgf: f64 = per_block
                .iter()
                .zip(blocks)
                .map(|(m, (_, n))| *n as f64 * m[i])
                .sum();
            let bound = (log_mgf + log_term) / t;
            if !bound.is_finite() {
                continue;
            }
            if t > 0.0 {
                ub = ub.min(bound.ceil());
            } else {
                lb = lb.max(bound.floor());
            }
        }
    }
    let lb = lb.max(0.0).min(span);
    let ub = ub.max(lb).min(span);
    (lb as i64, ub as i64)
}

/// The smallest length ≥ `n` of the form 2^a or 3·2^a (fast for the FFT).
fn fast_length(n: usize) -> usize {
    let pow2 = n.next_power_of_two();
    let three = (n.div_ceil(3)).next_power_of_two() * 3;
    pow2.min(three).max(2)
}

/// The distribution of the sum of independent losses: block `(grid, n)` contributes `n`
/// copies of `grid`. All grids must be on the grid of `step` (no blocks: the identity).
///
/// # Privacy
/// The result is a valid upper bound for δ(ε) of the composition of the inputs (each an
/// upper bound for its mechanism): the FFT's wrap-around and the window move at most
/// [`TAIL_MASS_TRUNCATION`] of the mass, which is added to the mass at +∞ (moving mass m
/// changes δ(ε) by at most m). Negative FFT round-off is clamped to 0 (raising δ, if
/// anything). The mass at +∞ composes as 1 − Π(1 − m_k)^n_k.
pub fn compose(step: f64, blocks: &[(&LossGrid, u64)]) -> Result<LossGrid> {
    if blocks.iter().any(|(g, _)| g.step != step) {
        return Err(Error::invalid(
            "discretization_interval",
            step,
            "one interval for every block of a composition",
        ));
    }
    let blocks: Vec<(&LossGrid, u64)> = blocks.iter().filter(|(_, n)| *n > 0).copied().collect();
    if blocks.is_empty() {
        return Ok(LossGrid::identity(step));
    }
    let lower_sum: i64 = blocks.iter().map(|(g, n)| g.lower * *n as i64).sum();
    let offset: f64 = blocks.iter().map(|(g, n)| g.offset * *n as f64).sum();
    let log_finite: f64 = blocks
        .iter()
        .map(|(g, n)| *n as f64 * (-g.infinity_mass.min(1.0)).ln_1p())
        .sum();
    let mut infinity_mass = -log_finite.exp_m1();
    // One copy of one grid: nothing to convolve.
    if let [(g, 1)] = blocks.as_slice() {
        return Ok((*g).clone());
    }
    let (lb, ub) = chernoff_window(&blocks, TAIL_MASS_TRUNCATION);
    let width = (ub - lb + 1) as usize;
    let length = fast_length(width);
    if length > MAX_GRID_POINTS {
        return Err(Error::invalid(
            "discretization_interval",
            step,
            format!(
                "a coarser interval: this composition needs {width} grid points, more than \
                 the {MAX_GRID_POINTS} this accountant allows"
            ),
        ));
    }
    let mut planner = RealFftPlanner::<f64>::new();
    let forward = planner.plan_fft_forward(length);
    let inverse = planner.plan_fft_inverse(length);
    let mut buffer = vec![0.0; length];
    let mut spectrum = forward.make_output_vec();
    let mut product = vec![Complex::new(1.0, 0.0); spectrum.len()];
    for (grid, count) in &blocks {
        buffer.iter_mut().for_each(|b| *b = 0.0);
        for (i, p) in grid.probs.iter().enumerate() {
            buffer[i % length] += p;
        }
        forward
            .process(&mut buffer, &mut spectrum)
            .map_err(|e| Error::Tensor(format!("FFT: {e}")))?;
        let power = *count as f64;
        for (acc, z) in product.iter_mut().zip(&spectrum) {
            *acc *= match *count {
                1 => *z,
                _ if z.norm_sqr() == 0.0 => Complex::new(0.0, 0.0),
                _ => (z.ln() * power).exp(),
            };
        }
    }
    // The real inverse transform needs exactly real end points.
    product[0].im = 0.0;
    if length.is_multiple_of(2) {
        let last = product.len() - 1;
        product[last].im = 0.0;
    }
    inverse
        .process(&mut product, &mut buffer)
        .map_err(|e| Error::Tensor(format!("inverse FFT: {e}")))?;
    let scale = 1.0 / length as f64;
    let probs: Vec<f64> = (0..width)
        .map(|j| {
            let index = (lb as usize + j) % length;
            (buffer[index] * scale).max(0.0)
        })
        .collect();
    infinity_mass = (infinity_mass + TAIL_MASS_TRUNCATION).min(1.0);
    Ok(LossGrid {
        step,
        lower: lower_sum + lb,
        offset,
        probs,
        infinity_mass,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lower: i64, probs: Vec<f64>, infinity_mass: f64) -> LossGrid {
        LossGrid {
            step: 0.5,
            lower,
            offset: 0.0,
            probs,
            infinity_mass,
        }
    }

    #[test]
    fn composition_matches_direct_convolution() {
        let a = grid(-1, vec![0.2, 0.5, 0.3], 0.0);
        let b = grid(2, vec![0.6, 0.4], 0.0);
        let c = compose(0.5, &[(&a, 2), (&b, 1)]).unwrap();
        // Direct: a*a then *b.
        let mut aa = [0.0; 5];
        for i in 0..3 {
            for j in 0..3 {
                aa[i + j] += a.probs[i] * a.probs[j];
            }
        }
        let mut direct = [0.0; 6];
        for (i, x) in aa.iter().enumerate() {
            for j in 0..2 {
                direct[i + j] += x * b.probs[j];
            }
        }
        // The window may be narrower than the support when a tail is below the bound.
        for (j, p) in c.probs.iter().enumerate() {
            let index = (c.lower + j as i64) as usize; // the sum starts at index 0
            assert!(
                (p - direct[index]).abs() < 1e-15,
                "{j}: {p} vs {}",
                direct[index]
            );
        }
        assert!((c.total_mass() - 1.0).abs() < 1e-14);
    }

    #[test]
    fn delta_and_epsilon_are_inverse() {
        let g = grid(-4, vec![0.1, 0.2, 0.3, 0.2, 0.1, 0.05, 0.04], 0.01);
        for delta in [0.02, 0.05, 0.1, 0.3] {
            let eps = g.epsilon_for_delta(delta);
            assert!(g.delta_for_epsilon(eps) <= delta * (1.0 + 1e-12));
            if eps > 0.0 {
                assert!(g.delta_for_epsilon(eps - 1e-6) > delta);
            }
        }
        assert_eq!(g.epsilon_for_delta(0.005), f64::INFINITY);
    }

    #[test]
    fn infinity_mass_composes_as_a_union() {
        let a = grid(0, vec![0.9], 0.1);
        let c = compose(0.5, &[(&a, 3)]).unwrap();
        let expected = 1.0 - 0.9f64.powi(3) + TAIL_MASS_TRUNCATION;
        assert!((c.infinity_mass - expected).abs() < 1e-15);
    }
}
