//! Rényi differential privacy of the Poisson-subsampled Gaussian mechanism.
//!
//! One DP-SGD step samples every example with probability q and adds Gaussian noise of
//! standard deviation σ·C to a sum of gradients clipped to norm C. Its Rényi divergence of
//! order α (Mironov 2017) is `log(A_α) / (α − 1)` with (Mironov, Talwar & Zhang 2019,
//! "Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530):
//!
//! * integer α (Sec. 3.2): `A_α = Σ_{k=0..α} C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2σ²))`;
//! * fractional α (Sec. 3.3): two series split at `z₀ = σ² log(1/q − 1) + 1/2`, with
//!   `erfc` tail factors;
//! * q = 1: the plain Gaussian, `α / (2σ²)`.
//!
//! Everything is summed in log space. The fractional series follows Google's dp_accounting
//! (`rdp_privacy_accountant._compute_log_a_frac`) term for term: it adds the *absolute*
//! values of all terms, a conservative upper bound on A_α (the exact series alternates), it
//! stops once both new terms decrease and lie 30 nats below the running total, and an order
//! whose series has not stopped after 1000 terms is given RDP = +∞ (that order is dropped
//! from the ε minimisation). Matching it makes our ε comparable digit for digit.
//!
//! Speed: the binomial coefficients depend only on the orders, so [`Orders`] tabulates them
//! once; the `erfc` factors depend on the step (q, σ) but not on the order's integer part,
//! so [`RdpScratch`] computes each one once per step and shares it between orders.

use std::sync::{Arc, OnceLock};

use super::numerics::{ln_abs_binomial, ln_erfc, ln_expm1, log_add};
use crate::error::{Error, Result};

/// The series of a fractional order is cut off (and the order dropped) after this many
/// terms, as in dp_accounting (`_MAX_STEPS_LOG_A_FRAC`).
pub const MAX_FRACTIONAL_TERMS: usize = 1000;

/// Integer orders up to this are composed for every step; larger and fractional orders
/// only when a lower bound says they could give the smallest ε.
pub const EAGER_MAX_ORDER: f64 = 16.0;

/// Integer orders above this would need more than this many terms per step.
pub const MAX_INTEGER_ORDER: f64 = 100_000.0;

/// Terms this many nats below the largest term are left out of a sum: even 10⁵ of them
/// change it by less than 1e-21 relative.
const NEGLIGIBLE_NATS: f64 = -60.0;

/// `e^−30`: dp_accounting's series stops once new terms are 30 nats below the total.
const STOP_BELOW_TOTAL: f64 = 9.357_622_968_840_175e-14;

/// The set of Rényi orders α at which privacy loss is tracked, with precomputed tables.
///
/// Cheap to clone (shared). The default set is [`Orders::dp_accounting_default`].
#[derive(Clone)]
pub struct Orders(Arc<OrdersInner>);

struct OrdersInner {
    values: Vec<f64>,
    kinds: Vec<OrderKind>,
    /// Cheap orders (integers up to [`EAGER_MAX_ORDER`]), always composed.
    eager: Vec<bool>,
    /// Indices of the eager orders, by increasing order.
    eager_sorted: Vec<usize>,
    /// Distinct fractional parts among the fractional orders.
    fractions: Vec<f64>,
    /// The largest integer part of a fractional order (offsets the shared `erfc` tables).
    max_floor: usize,
    max_integer_order: usize,
}

enum OrderKind {
    /// `ln_binomial[k] = log C(α, k)` for k = 0..=α.
    Integer { alpha: usize, ln_binomial: Vec<f64> },
    /// `ln_abs_binomial[i] = log |C(α, i)|` for i < [`MAX_FRACTIONAL_TERMS`].
    Fractional {
        alpha: f64,
        fraction: usize,
        floor: usize,
        ln_abs_binomial: Vec<f64>,
    },
}

impl std::fmt::Debug for Orders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Orders").field(&self.0.values).finish()
    }
}

impl PartialEq for Orders {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0.values == other.0.values
    }
}

impl Orders {
    /// The default orders of dp_accounting's `RdpAccountant` (156 values):
    /// `1 + x/10` for x = 1..=99, then 11..=63, then 128, 256, 512, 1024.
    ///
    /// Built once per process and shared.
    pub fn dp_accounting_default() -> Orders {
        static DEFAULT: OnceLock<Orders> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                let values = (1..100)
                    .map(|x| 1.0 + x as f64 / 10.0)
                    .chain((11..64).map(f64::from))
                    .chain([128.0, 256.0, 512.0, 1024.0])
                    .collect();
                Orders::new(values).expect("the default orders are valid")
            })
            .clone()
    }

    /// A custom set of orders, each finite and above 1; integer orders at most
    /// [`MAX_INTEGER_ORDER`].
    pub fn new(values: Vec<f64>) -> Result<Orders> {
        if values.is_empty() {
            return Err(Error::invalid(
                "orders",
                "[]",
                "at least one Rényi order above 1",
            ));
        }
        let mut fractions: Vec<f64> = Vec::new();
        let mut kinds = Vec::with_capacity(values.len());
        let (mut max_floor, mut max_integer_order) = (0, 0);
        for &alpha in &values {
            if !(alpha.is_finite() && alpha > 1.0) {
                return Err(Error::invalid(
                    "order",
                    alpha,
                    "a finite Rényi order above 1",
                ));
            }
            if alpha.fract() == 0.0 {
                if alpha > MAX_INTEGER_ORDER {
                    return Err(Error::invalid(
                        "order",
                        alpha,
                        format!("an integer order of at most {MAX_INTEGER_ORDER}"),
                    ));
                }
                let n = alpha as usize;
                max_integer_order = max_integer_order.max(n);
                let ln_binomial = (0..=n).map(|k| ln_abs_binomial(alpha, k as f64)).collect();
                kinds.push(OrderKind::Integer {
                    alpha: n,
                    ln_binomial,
                });
            } else {
                let floor = alpha.floor();
                let fraction = alpha - floor;
                let index = match fractions.iter().position(|&f| f == fraction) {
                    Some(index) => index,
                    None => {
                        fractions.push(fraction);
                        fractions.len() - 1
                    }
                };
                let floor = floor as usize;
                max_floor = max_floor.max(floor);
                let ln_abs_binomial = (0..MAX_FRACTIONAL_TERMS)
                    .map(|i| ln_abs_binomial(alpha, i as f64))
                    .collect();
                kinds.push(OrderKind::Fractional {
                    alpha,
                    fraction: index,
                    floor,
                    ln_abs_binomial,
                });
            }
        }
        let eager: Vec<bool> = values
            .iter()
            .map(|&a| a.fract() == 0.0 && a <= EAGER_MAX_ORDER)
            .collect();
        let mut eager_sorted: Vec<usize> = (0..values.len()).filter(|&i| eager[i]).collect();
        eager_sorted.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        eager_sorted.dedup_by(|a, b| values[*a] == values[*b]);
        Ok(Orders(Arc::new(OrdersInner {
            values,
            kinds,
            eager,
            eager_sorted,
            fractions,
            max_floor,
            max_integer_order,
        })))
    }

    /// The orders, in the order given.
    pub fn values(&self) -> &[f64] {
        &self.0.values
    }

    /// How many orders there are.
    pub fn len(&self) -> usize {
        self.0.values.len()
    }

    /// Never true: an empty set is refused by [`Orders::new`].
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }

    /// Whether order `index` is cheap enough to be composed for every step (integers up to
    /// [`EAGER_MAX_ORDER`]); the others are computed only when they could give the best ε.
    pub fn is_eager(&self, index: usize) -> bool {
        self.0.eager[index]
    }

    /// Indices of the eager orders, by increasing order value (no repeated values).
    pub fn eager_sorted(&self) -> &[usize] {
        &self.0.eager_sorted
    }
}

/// Reusable work space for [`poisson_gaussian_rdp_into`]: the per-step `erfc` tables.
///
/// Entries are tagged with a generation number, so starting a new step costs nothing.
#[derive(Default)]
pub struct RdpScratch {
    generation: u32,
    /// `log(erfc((i − z₀)/(√2σ))/2)`, indexed by the term i.
    lower_tail: Vec<(u32, f64)>,
    /// `log(erfc((z₀ − j)/(√2σ))/2)` with `j = fraction − m`, one table per fractional part,
    /// indexed by `m + max_floor` (m = i − ⌊α⌋).
    upper_tail: Vec<Vec<(u32, f64)>>,
    /// Terms of an integer order's sum.
    terms: Vec<f64>,
    /// `log(exp((k²−k)/(2σ²)) − 1)` for k = 0, 1, ...: the same for every integer order.
    ln_expm1_quadratic: Vec<f64>,
}

/// Rényi DP of one step of the Poisson-subsampled Gaussian mechanism at every order.
///
/// Allocates a scratch space; use [`poisson_gaussian_rdp_into`] in loops.
///
/// # Privacy
/// `sample_rate` q ∈ (0, 1] is the probability that each example is in the batch (Poisson
/// sampling, add/remove-one neighbours); `noise_multiplier` σ > 0 is the noise standard
/// deviation over the L2 sensitivity. Returns, per order, a value no smaller than the
/// mechanism's RDP at that order (Mironov, Talwar & Zhang 2019, Thm. 11 and Sec. 3.3; the
/// fractional orders use the absolute-value series, an upper bound), or +∞.
pub fn poisson_gaussian_rdp(
    sample_rate: f64,
    noise_multiplier: f64,
    orders: &Orders,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0; orders.len()];
    poisson_gaussian_rdp_into(
        sample_rate,
        noise_multiplier,
        orders,
        &mut RdpScratch::default(),
        &mut out,
    )?;
    Ok(out)
}

/// A lower bound on the RDP of one step at every order α ≥ 1: `2 (q·erf(1/(2√2σ)))²`.
///
/// RDP is non-decreasing in α (van Erven & Harremoës 2014, Thm. 3), so it is at least the
/// KL divergence, which is at least 2·TV² (Pinsker); the subsampled mixture's total
/// variation from the null distribution is q times that of N(1, σ²) from N(0, σ²), which is
/// erf(1/(2√2σ)). Used only to rule orders out of the ε minimisation, never to report ε.
pub fn poisson_gaussian_rdp_lower_bound(sample_rate: f64, noise_multiplier: f64) -> f64 {
    let tv = sample_rate * libm::erf(1.0 / (2.0 * std::f64::consts::SQRT_2 * noise_multiplier));
    2.0 * tv * tv
}

/// Checks that (q, σ) describe a valid Poisson-subsampled Gaussian step.
pub fn check_step(sample_rate: f64, noise_multiplier: f64) -> Result<()> {
    if !(sample_rate > 0.0 && sample_rate <= 1.0) {
        return Err(Error::invalid(
            "sample_rate",
            sample_rate,
            "a probability in (0, 1]",
        ));
    }
    if !(noise_multiplier > 0.0 && noise_multiplier.is_finite()) {
        return Err(Error::invalid(
            "noise_multiplier",
            noise_multiplier,
            "a finite number above 0",
        ));
    }
    Ok(())
}

/// [`poisson_gaussian_rdp`] writing into `out` (one value per order) with reused scratch.
///
/// # Privacy
/// As [`poisson_gaussian_rdp`].
pub fn poisson_gaussian_rdp_into(
    sample_rate: f64,
    noise_multiplier: f64,
    orders: &Orders,
    scratch: &mut RdpScratch,
    out: &mut [f64],
) -> Result<()> {
    poisson_gaussian_rdp_selected(sample_rate, noise_multiplier, orders, None, scratch, out)
}

/// [`poisson_gaussian_rdp_into`] at the orders where `selected` is true (all when `None`);
/// the other entries of `out` are left as they are.
///
/// # Privacy
/// As [`poisson_gaussian_rdp`].
pub fn poisson_gaussian_rdp_selected(
    sample_rate: f64,
    noise_multiplier: f64,
    orders: &Orders,
    selected: Option<&[bool]>,
    scratch: &mut RdpScratch,
    out: &mut [f64],
) -> Result<()> {
    check_step(sample_rate, noise_multiplier)?;
    let wanted = |index: usize| selected.is_none_or(|s| s[index]);
    assert_eq!(out.len(), orders.len(), "one output per order");
    let q = sample_rate;
    let sigma = noise_multiplier;
    if q == 1.0 {
        // No subsampling: the Gaussian mechanism, α / (2σ²) (Mironov 2017, Prop. 7).
        for (index, (rdp, &alpha)) in out.iter_mut().zip(orders.values()).enumerate() {
            if wanted(index) {
                *rdp = alpha / (2.0 * sigma * sigma);
            }
        }
        return Ok(());
    }
    let step = Step::new(q, sigma);
    scratch.start(&orders.0);
    for (index, (rdp, kind)) in out.iter_mut().zip(&orders.0.kinds).enumerate() {
        if !wanted(index) {
            continue;
        }
        *rdp = match kind {
            OrderKind::Integer { alpha, ln_binomial } => {
                scratch.quadratic_terms(&step, *alpha);
                let ln_a = step.ln_a_integer(
                    *alpha,
                    ln_binomial,
                    &scratch.ln_expm1_quadratic,
                    &mut scratch.terms,
                );
                ln_a / (*alpha as f64 - 1.0)
            }
            OrderKind::Fractional {
                alpha,
                fraction,
                floor,
                ln_abs_binomial,
            } => {
                let ln_a = step.ln_a_fractional(
                    *alpha,
                    *floor,
                    orders.0.fractions[*fraction],
                    ln_abs_binomial,
                    scratch,
                    *fraction,
                    orders.0.max_floor,
                );
                ln_a / (alpha - 1.0)
            }
        };
    }
    Ok(())
}

impl RdpScratch {
    fn start(&mut self, orders: &OrdersInner) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped around: clear the tags so no stale entry looks current.
            self.lower_tail.iter_mut().for_each(|e| e.0 = 0);
            self.upper_tail.iter_mut().flatten().for_each(|e| e.0 = 0);
            self.generation = 1;
        }
        let width = MAX_FRACTIONAL_TERMS + orders.max_floor + 1;
        self.lower_tail.resize(MAX_FRACTIONAL_TERMS, (0, 0.0));
        self.upper_tail
            .resize_with(orders.fractions.len(), || vec![(0, 0.0); width]);
        for table in &mut self.upper_tail {
            table.resize(width, (0, 0.0));
        }
        self.terms.reserve(orders.max_integer_order + 1);
        self.ln_expm1_quadratic.clear();
    }

    /// Fills `ln_expm1_quadratic` up to k = `alpha` for this step.
    fn quadratic_terms(&mut self, step: &Step, alpha: usize) {
        let table = &mut self.ln_expm1_quadratic;
        for k in table.len()..=alpha {
            let k = k as f64;
            table.push(ln_expm1((k * k - k) / step.two_sigma_sq));
        }
    }
}

/// The constants of one (q, σ) step, as dp_accounting computes them.
struct Step {
    ln_q: f64,
    ln_1mq: f64,
    two_sigma_sq: f64,
    sqrt2_sigma: f64,
    z0: f64,
}

/// A sum of `exp(s)` terms kept as `exp(reference) · (1 + rest)`, where `reference` is the
/// largest term so far. `ln_1p(rest)` keeps full precision when the total is close to 1,
/// which is where the RDP of weak steps lives (e.g. 1e-9 for q = 0.001, σ = 10).
struct LogSum {
    reference: f64,
    rest: f64,
}

impl LogSum {
    fn new() -> Self {
        LogSum {
            reference: f64::NEG_INFINITY,
            rest: 0.0,
        }
    }

    /// Adds `exp(s)`; returns `exp(s − reference)` after the update (≤ 1), or 0 when the
    /// term is negligible.
    #[inline]
    fn add(&mut self, s: f64) -> f64 {
        if s > self.reference {
            if self.reference == f64::NEG_INFINITY {
                self.rest = 0.0;
            } else {
                let scale = (self.reference - s).exp();
                self.rest = scale + self.rest * scale;
            }
            self.reference = s;
            1.0
        } else if s - self.reference > NEGLIGIBLE_NATS {
            let x = (s - self.reference).exp();
            self.rest += x;
            x
        } else {
            0.0
        }
    }

    fn ln(&self) -> f64 {
        self.reference + self.rest.ln_1p()
    }
}

impl Step {
    fn new(q: f64, sigma: f64) -> Self {
        Step {
            ln_q: q.ln(),
            ln_1mq: (-q).ln_1p(),
            two_sigma_sq: 2.0 * (sigma * sigma),
            sqrt2_sigma: std::f64::consts::SQRT_2 * sigma,
            z0: sigma * sigma * (1.0 / q - 1.0).ln() + 0.5,
        }
    }

    /// `log A_α` for integer α by the binomial expansion (MTZ 2019, Sec. 3.2).
    ///
    /// The k = 0 and k = 1 terms of `A_α` sum with the rest of the binomial weights to 1, so
    /// `A_α − 1 = Σ_{k≥2} C(α,k) (1−q)^(α−k) q^k (exp((k²−k)/(2σ²)) − 1)`, a sum of positive
    /// terms. Summing that and taking `log1p` keeps full relative precision even when the
    /// RDP is 1e-16 (q = 1e-6, σ = 100), where `log(Σ terms)` would cancel to noise.
    /// `ln_expm1_quadratic[k]` is `log(exp((k²−k)/(2σ²)) − 1)`.
    fn ln_a_integer(
        &self,
        alpha: usize,
        ln_binomial: &[f64],
        ln_expm1_quadratic: &[f64],
        terms: &mut Vec<f64>,
    ) -> f64 {
        terms.clear();
        let mut largest = f64::NEG_INFINITY;
        for (k, (&ln_binomial, &ln_quadratic)) in ln_binomial
            .iter()
            .zip(ln_expm1_quadratic)
            .enumerate()
            .skip(2)
        {
            let k_f = k as f64;
            let s = ln_binomial + k_f * self.ln_q + (alpha - k) as f64 * self.ln_1mq + ln_quadratic;
            largest = largest.max(s);
            terms.push(s);
        }
        let sum: f64 = terms
            .iter()
            .map(|&s| s - largest)
            .filter(|&d| d > NEGLIGIBLE_NATS)
            .map(f64::exp)
            .sum();
        // log A = log(1 + (A − 1)) = log_add(0, log(A − 1)).
        log_add(0.0, largest + sum.ln())
    }

    /// `log A_α` for fractional α by the absolute-value series of MTZ 2019, Sec. 3.3, with
    /// dp_accounting's stopping rule; +∞ if it has not stopped after
    /// [`MAX_FRACTIONAL_TERMS`] terms.
    #[allow(clippy::too_many_arguments)]
    fn ln_a_fractional(
        &self,
        alpha: f64,
        floor: usize,
        fraction: f64,
        ln_abs_binomial: &[f64],
        scratch: &mut RdpScratch,
        fraction_index: usize,
        max_floor: usize,
    ) -> f64 {
        let generation = scratch.generation;
        let mut total = LogSum::new();
        let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
        let upper_offset = max_floor - floor;
        for (i, &ln_coef) in ln_abs_binomial.iter().enumerate() {
            let i_f = i as f64;
            let j = alpha - i_f;
            let ln_t0 = ln_coef + i_f * self.ln_q + j * self.ln_1mq;
            let ln_t1 = ln_coef + j * self.ln_q + i_f * self.ln_1mq;

            let lower = &mut scratch.lower_tail[i];
            if lower.0 != generation {
                *lower = (
                    generation,
                    0.5f64.ln() + ln_erfc((i_f - self.z0) / self.sqrt2_sigma),
                );
            }
            let ln_e0 = lower.1;
            // j = fraction − m with m = i − floor: shared by all orders with this fraction.
            let upper = &mut scratch.upper_tail[fraction_index][i + upper_offset];
            if upper.0 != generation {
                let m = i as f64 - floor as f64;
                let j_shared = fraction - m;
                *upper = (
                    generation,
                    0.5f64.ln() + ln_erfc((self.z0 - j_shared) / self.sqrt2_sigma),
                );
            }
            let ln_e1 = upper.1;

            let s0 = ln_t0 + (i_f * i_f - i_f) / self.two_sigma_sq + ln_e0;
            let s1 = ln_t1 + (j * j - j) / self.two_sigma_sq + ln_e1;
            let x0 = total.add(s0);
            let x1 = total.add(s1);
            // Stop once both terms decrease and the larger is 30 nats below the total:
            // max(s0, s1) < ln(total) − 30, i.e. exp(max − reference) < (1 + rest)·e^−30.
            if s0 < last_s0 && s1 < last_s1 {
                // A term that became the reference returned 1; otherwise both are relative
                // to the same reference.
                if x0.max(x1) < (1.0 + total.rest) * STOP_BELOW_TOTAL {
                    return total.ln();
                }
            }
            last_s0 = s0;
            last_s1 = s1;
        }
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact A_α for integer α, summed naively in f64 (fine for small α and moderate q).
    fn naive_integer(q: f64, sigma: f64, alpha: u32) -> f64 {
        let mut a = 0.0;
        let mut binomial = 1.0;
        for k in 0..=alpha {
            let kf = f64::from(k);
            a += binomial
                * (1.0 - q).powi((alpha - k) as i32)
                * q.powi(k as i32)
                * ((kf * kf - kf) / (2.0 * sigma * sigma)).exp();
            binomial = binomial * f64::from(alpha - k) / f64::from(k + 1);
        }
        a.ln() / f64::from(alpha - 1)
    }

    #[test]
    fn integer_orders_match_a_naive_sum() {
        let orders = Orders::new(vec![2.0, 3.0, 5.0, 8.0]).unwrap();
        for (q, sigma) in [(0.01, 1.0), (0.1, 0.8), (0.5, 2.0)] {
            let rdp = poisson_gaussian_rdp(q, sigma, &orders).unwrap();
            for (&alpha, &value) in orders.values().iter().zip(&rdp) {
                let expected = naive_integer(q, sigma, alpha as u32);
                assert!(
                    ((value - expected) / expected).abs() < 1e-12,
                    "q={q} sigma={sigma} alpha={alpha}: {value} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn order_two_matches_its_closed_form() {
        // A_2 = 1 + q² (e^{1/σ²} − 1), so RDP(2) = log1p(q² expm1(1/σ²)).
        let orders = Orders::new(vec![2.0]).unwrap();
        for (q, sigma) in [(0.001, 10.0), (1e-6, 100.0), (0.3, 0.3), (1e-6, 0.3)] {
            let rdp = poisson_gaussian_rdp(q, sigma, &orders).unwrap()[0];
            let expected = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            assert!(
                ((rdp - expected) / expected).abs() < 1e-10,
                "{rdp} vs {expected}"
            );
        }
    }

    #[test]
    fn full_sampling_is_the_gaussian_mechanism() {
        let orders = Orders::dp_accounting_default();
        let rdp = poisson_gaussian_rdp(1.0, 2.0, &orders).unwrap();
        for (&alpha, &value) in orders.values().iter().zip(&rdp) {
            assert_eq!(value, alpha / 8.0);
        }
    }

    #[test]
    fn fractional_orders_lie_between_their_integer_neighbours() {
        // RDP is non-decreasing in α; the absolute-value bound keeps that at these settings.
        let orders = Orders::new(vec![2.0, 2.5, 3.0]).unwrap();
        let rdp = poisson_gaussian_rdp(0.01, 1.0, &orders).unwrap();
        assert!(rdp[0] <= rdp[1] && rdp[1] <= rdp[2], "{rdp:?}");
    }

    #[test]
    fn bad_steps_are_refused() {
        let orders = Orders::new(vec![2.0]).unwrap();
        for (q, sigma) in [
            (0.0, 1.0),
            (1.5, 1.0),
            (f64::NAN, 1.0),
            (0.1, 0.0),
            (0.1, -1.0),
            (0.1, f64::INFINITY),
        ] {
            assert!(
                poisson_gaussian_rdp(q, sigma, &orders).is_err(),
                "{q} {sigma}"
            );
        }
        assert!(Orders::new(vec![1.0]).is_err());
        assert!(Orders::new(vec![]).is_err());
        assert!(Orders::new(vec![f64::NAN]).is_err());
    }
}
