//! Privacy auditing in one training run (Steinke, Nasr & Jagielski 2023, "Privacy Auditing
//! with One (1) Training Run", NeurIPS).
//!
//! M canaries are each included in the training set independently with probability ½; one
//! run trains on the data plus the included ones; every canary gets a score (higher: "looks
//! included"); the auditor guesses "included" for the highest-scored and "excluded" for the
//! lowest, abstaining on the rest. Under (ε, δ)-DP the number of correct guesses is
//! dominated as in their Theorem 3 (Appendix D gives the p-value computed here), so a
//! count too high to be likely at ε proves the run is *not* (ε, δ)-DP: that largest
//! rejected ε is a lower bound on the true ε, at 95% confidence.
//!
//! Two kinds of canaries:
//! - **input** (black box): examples of sparse random pixels with random labels, appended to
//!   the training set; scored by minus their loss under the released model;
//! - **gradient** (white box, far stronger): Dirac per-example gradients inserted before
//!   clipping ([`crate::train::GradientCanaries`]); scored by the released noisy gradient
//!   sums at their coordinates (minus the known data part), summed over the run.
//!
//! The guess counts are fixed in advance (r ∈ {10, 20, 50, 100, 200, 500, 1000, …, M}, half
//! guessed in and half out) and each is tested at level 5%/|r's|, so the best of them is a
//! valid 95% bound (Bonferroni). An audit proves a lower bound; it never certifies privacy.

use candle_core::D;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;
use statrs::distribution::{Binomial, Discrete, DiscreteCDF};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::model::{Model, dataset_batch};

/// The fewest canaries an audit accepts.
pub const MIN_CANARIES: usize = 10;

/// The kind of canary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryKind {
    /// Black-box input canaries scored by loss.
    Input,
    /// White-box Dirac gradient canaries scored by the released gradient.
    Gradient,
}

impl CanaryKind {
    /// The name in flags and files.
    pub fn name(self) -> &'static str {
        match self {
            CanaryKind::Input => "input",
            CanaryKind::Gradient => "gradient",
        }
    }
}

/// Which canaries are in the training set: independent fair coins from a seeded stream.
pub fn inclusion(canaries: usize, seed: u64) -> Vec<bool> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..canaries).map(|_| rng.random::<bool>()).collect()
}

/// Checks an audit's canary count against the training set.
pub fn check_canaries(canaries: usize, training_examples: usize) -> Result<()> {
    if canaries < MIN_CANARIES {
        return Err(Error::invalid(
            "--canaries",
            canaries,
            format!("at least {MIN_CANARIES} canaries (1000 give a useful bound)"),
        ));
    }
    if canaries > training_examples {
        return Err(Error::invalid(
            "--canaries",
            canaries,
            format!("at most the {training_examples} training examples"),
        ));
    }
    Ok(())
}

/// `count` input canaries shaped like `like`'s examples: every feature at its smallest
/// value in `like` except a few random ones at the largest (for MNIST: black images with
/// 20 white pixels), each with a random label.
pub fn input_canaries(like: &Dataset, count: usize, seed: u64) -> Dataset {
    let d = like.feature_len();
    let (low, high) = like
        .features
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let lit = (d / 40).clamp(1, d);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut features = vec![low; count * d];
    let mut labels = Vec::with_capacity(count);
    for k in 0..count {
        for j in sample(&mut rng, d, lit) {
            features[k * d + j] = high;
        }
        labels.push(rng.random_range(0..like.classes as u32));
    }
    Dataset {
        features,
        labels,
        feature_shape: like.feature_shape.clone(),
        classes: like.classes,
        vocab: like.vocab,
    }
}

/// `like` with the included canaries appended.
pub fn with_canaries(like: &Dataset, canaries: &Dataset, included: &[bool]) -> Dataset {
    let mut out = like.clone();
    for (k, &inc) in included.iter().enumerate() {
        if inc {
            out.features.extend_from_slice(canaries.example(k));
            out.labels.push(canaries.labels[k]);
        }
    }
    out
}

/// `count` distinct coordinates over parameter tensors of the given sizes, as
/// (tensor, element).
pub fn gradient_coordinates(
    sizes: &[usize],
    count: usize,
    seed: u64,
) -> Result<Vec<(usize, usize)>> {
    let total: usize = sizes.iter().sum();
    if count > total {
        return Err(Error::invalid(
            "--canaries",
            count,
            format!("at most the model's {total} parameters (one coordinate each)"),
        ));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut flat: Vec<usize> = sample(&mut rng, total, count).into_vec();
    flat.sort_unstable();
    let mut out = Vec::with_capacity(count);
    let (mut tensor, mut start) = (0, 0);
    for f in flat {
        while f >= start + sizes[tensor] {
            start += sizes[tensor];
            tensor += 1;
        }
        out.push((tensor, f - start));
    }
    // Back in random order, so canary k's coordinate says nothing about k.
    let mut shuffled = Vec::with_capacity(count);
    let mut order = sample(&mut rng, count, count).into_vec();
    order.iter_mut().for_each(|i| shuffled.push(out[*i]));
    Ok(shuffled)
}

/// Minus the cross-entropy of each example of `data` under `model` (higher: fits better).
pub fn loss_scores(model: &Model, data: &Dataset) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(1000) {
        let (x, y) = dataset_batch(data, chunk)?;
        let logits = model.forward(&x)?;
        let log_p = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let picked = log_p
            .gather(&y.unsqueeze(1)?, 1)?
            .squeeze(1)?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?;
        out.extend(picked);
    }
    Ok(out)
}

/// P[Binomial(r, p) ≥ v].
fn binomial_at_least(r: u64, p: f64, v: u64) -> f64 {
    if v == 0 {
        return 1.0;
    }
    let binomial = Binomial::new(p, r).expect("p in [0, 1]");
    binomial.sf(v - 1)
}

/// The p-value of v or more correct guesses out of r, among m canaries, under the null
/// hypothesis that the run is (ε, δ)-DP (Steinke, Nasr & Jagielski 2023, Theorem 3 and
/// Appendix D): P[Bin(r, e^ε/(1+e^ε)) ≥ v] + 2mδ·max_{1≤i≤v} P[v > Bin ≥ v − i]/i.
pub fn p_value(m: u64, r: u64, v: u64, epsilon: f64, delta: f64) -> f64 {
    let q = 1.0 / (1.0 + (-epsilon).exp());
    let beta = binomial_at_least(r, q, v);
    if delta == 0.0 {
        return beta.min(1.0);
    }
    let binomial = Binomial::new(q, r).expect("q in [0, 1]");
    let (mut alpha, mut window) = (0.0f64, 0.0);
    for i in 1..=v {
        window += binomial.pmf(v - i);
        alpha = alpha.max(window / i as f64);
    }
    (beta + 2.0 * m as f64 * delta * alpha).min(1.0)
}

/// The largest ε at which v of r correct guesses (m canaries) has p-value below
/// `level`: a lower bound on the run's ε at confidence 1 − `level` (0 when none).
pub fn epsilon_lower_bound(m: u64, r: u64, v: u64, delta: f64, level: f64) -> f64 {
    if r == 0 || p_value(m, r, v, 0.0, delta) >= level {
        return 0.0;
    }
    // p_value grows with ε: bracket, then bisect keeping p(low) < level ≤ p(high).
    let (mut low, mut high) = (0.0f64, 1.0f64);
    while p_value(m, r, v, high, delta) < level {
        low = high;
        high *= 2.0;
        if high > 1e3 {
            return low;
        }
    }
    for _ in 0..60 {
        let mid = 0.5 * (low + high);
        if p_value(m, r, v, mid, delta) < level {
            low = mid;
        } else {
            high = mid;
        }
    }
    low
}

/// One guessing rule's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GuessResult {
    /// Guesses made (half "in" on the top scores, half "out" on the bottom).
    pub guesses: u64,
    /// Correct ones.
    pub correct: u64,
    /// The ε lower bound this rule gives at its Bonferroni level.
    pub epsilon_lower_bound: f64,
}

/// An audit's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditBound {
    /// The canaries.
    pub canaries: u64,
    /// How many were included.
    pub included: u64,
    /// The confidence of the bound.
    pub confidence: f64,
    /// The δ of the null hypothesis.
    pub delta: f64,
    /// The best lower bound over the rules.
    pub epsilon_lower_bound: f64,
    /// Every rule tried.
    pub rules: Vec<GuessResult>,
}

/// The guess counts tried for m canaries: 10, 20, 50, 100, 200, 500, 1000, … below m, and m.
pub fn guess_counts(m: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut base = 10;
    'outer: loop {
        for f in [1, 2, 5] {
            let r = base * f;
            if r >= m {
                break 'outer;
            }
            out.push(r);
        }
        base *= 10;
    }
    out.push(m - m % 2);
    out
}

/// The lower bound on ε from `scores` (higher: guessed included) of canaries whose true
/// inclusion is `included`.
///
/// # Privacy
/// Valid at `confidence` for any scores computed from the run's outputs and public
/// knowledge: each rule is tested at level (1 − confidence)/rules.
pub fn audit_bound(scores: &[f64], included: &[bool], delta: f64, confidence: f64) -> AuditBound {
    let m = scores.len();
    let mut order: Vec<usize> = (0..m).collect();
    // Highest score first; ties broken by index (fixed before the scores were seen).
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let counts = guess_counts(m);
    let level = (1.0 - confidence) / counts.len() as f64;
    let rules: Vec<GuessResult> = counts
        .iter()
        .map(|&r| {
            let half = r / 2;
            let top = order[..half].iter().filter(|&&k| included[k]).count();
            let bottom = order[m - half..].iter().filter(|&&k| !included[k]).count();
            let (guesses, correct) = ((2 * half) as u64, (top + bottom) as u64);
            GuessResult {
                guesses,
                correct,
                epsilon_lower_bound: epsilon_lower_bound(m as u64, guesses, correct, delta, level),
            }
        })
        .collect();
    AuditBound {
        canaries: m as u64,
        included: included.iter().filter(|&&i| i).count() as u64,
        confidence,
        delta,
        epsilon_lower_bound: rules
            .iter()
            .map(|r| r.epsilon_lower_bound)
            .fold(0.0, f64::max),
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_correct_guesses_give_the_closed_form_bound() {
        // δ = 0, r of r correct: p = q^r, so the bound solves q^r = level:
        // q = level^(1/r), ε = ln(q/(1 − q)).
        let (r, level) = (100u64, 0.05f64);
        let q = level.powf(1.0 / r as f64);
        let expected = (q / (1.0 - q)).ln();
        let ours = epsilon_lower_bound(1000, r, r, 0.0, level);
        assert!((ours - expected).abs() < 1e-9, "{ours} vs {expected}");
    }

    #[test]
    fn chance_guessing_gives_no_bound_and_delta_only_lowers_it() {
        assert_eq!(epsilon_lower_bound(1000, 1000, 500, 1e-5, 0.05), 0.0);
        let without = epsilon_lower_bound(1000, 200, 180, 0.0, 0.05);
        let with = epsilon_lower_bound(1000, 200, 180, 1e-5, 0.05);
        assert!(with <= without && with > 0.0, "{with} vs {without}");
    }

    #[test]
    fn p_value_matches_a_direct_binomial_sum() {
        // r = 20, v = 15, ε = 1, δ = 0: Σ_{k ≥ 15} C(20, k) q^k (1 − q)^(20−k).
        let q = 1.0 / (1.0 + (-1.0f64).exp());
        let mut direct = 0.0;
        for k in 15..=20u32 {
            let c: f64 = (0..k).map(|i| (20 - i) as f64 / (i + 1) as f64).product();
            direct += c * q.powi(k as i32) * (1.0 - q).powi(20 - k as i32);
        }
        assert!((p_value(100, 20, 15, 1.0, 0.0) - direct).abs() < 1e-12);
    }

    #[test]
    fn perfect_scores_are_caught_and_random_ones_are_not() {
        let included = inclusion(1000, 7);
        let perfect: Vec<f64> = included.iter().map(|&i| f64::from(u8::from(i))).collect();
        let bound = audit_bound(&perfect, &included, 1e-5, 0.95);
        assert!(bound.epsilon_lower_bound > 3.0, "{bound:?}");
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let noise: Vec<f64> = (0..1000).map(|_| rng.random::<f64>()).collect();
        let bound = audit_bound(&noise, &included, 1e-5, 0.95);
        assert!(bound.epsilon_lower_bound < 0.5, "{bound:?}");
    }

    #[test]
    fn coordinates_are_distinct_and_in_range() {
        let sizes = [5, 3, 10];
        let c = gradient_coordinates(&sizes, 18, 1).unwrap();
        let mut seen = std::collections::HashSet::new();
        for &(t, e) in &c {
            assert!(e < sizes[t]);
            assert!(seen.insert((t, e)));
        }
        assert!(gradient_coordinates(&sizes, 19, 1).is_err());
    }
}
