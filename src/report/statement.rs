//! privacy.md: the privacy statement of a run, made from its saved records alone, so that a
//! reviewer (or `dptrain report`) can rebuild and check it.

use crate::config::{DataConfig, RunConfig};
use crate::data::table::{Column, OnMissing};
use crate::privacy::{AccountantKind, Ledger, epsilon_under_all};
use crate::schedule::{Schedule, ShapeKind};

use super::records::Summary;

/// A schedule in words, e.g. "exponential, rate 0.0173 per epoch".
pub fn describe_schedule(schedule: &Schedule) -> String {
    let unit = match schedule.unit {
        crate::schedule::Unit::Steps => "step",
        crate::schedule::Unit::Epochs => "epoch",
    };
    let f = |v: Option<f64>| v.map_or("?".to_string(), |v| format!("{v}"));
    match schedule.kind {
        ShapeKind::Constant => "constant".into(),
        ShapeKind::Step => format!(
            "step: × {} every {} {unit}s",
            f(schedule.factor),
            f(schedule.period)
        ),
        ShapeKind::Exponential => {
            format!("exponential: e^(−{}·t), t in {unit}s", f(schedule.rate))
        }
        ShapeKind::Linear => format!("linear: from 1 to {} × the initial value", f(schedule.end)),
        ShapeKind::Cosine => format!("cosine: from 1 to {} × the initial value", f(schedule.end)),
        ShapeKind::Plateau => format!(
            "plateau: × {} after {} evaluations without a better validation loss, floor {} \
             (planned at its floor)",
            f(schedule.factor),
            schedule.patience.map_or("?".into(), |p| p.to_string()),
            f(schedule.floor)
        ),
    }
}

/// The preprocessing bullet: which constants were public and which came from the data.
fn preprocessing(config: &RunConfig) -> String {
    let table = match &config.data {
        DataConfig::Mnist(_) | DataConfig::FashionMnist(_) => {
            let (set, name) = match &config.data {
                DataConfig::Mnist(_) => (crate::data::ImageSet::Mnist, "MNIST"),
                _ => (crate::data::ImageSet::FashionMnist, "Fashion-MNIST"),
            };
            return format!(
                "- Preprocessing: {name} pixels are scaled with fixed published constants \
                 (mean {}, standard deviation {}), not statistics of the private data.\n",
                set.mean(),
                set.std()
            );
        }
        DataConfig::Csv(table) => table,
        DataConfig::Cifar10(_) => {
            return "- Preprocessing: CIFAR-10 pixels are standardised per channel with fixed \
                    published constants, not statistics of the private data.\n"
                .into();
        }
        DataConfig::Tokens(_) | DataConfig::SyntheticImages(_) | DataConfig::SyntheticTokens(_) => {
            return "- Preprocessing: none computed from the data (token ids are used as they \
                    are; synthetic data is generated from its seed).\n"
                .into();
        }
    };
    let derived: Vec<&str> = table
        .columns
        .iter()
        .filter(|c| c.is_data_derived())
        .map(Column::name)
        .collect();
    let mut text = String::from(
        "- Preprocessing: numeric columns are scaled and categorical columns one-hot encoded \
         with constants from the config (public: documented ranges and category lists)",
    );
    match derived.is_empty() {
        true => text.push_str("; none was computed from the private data.\n"),
        false => text.push_str(&format!(
            ", **except {}: their scaling or vocabulary was computed from the private \
             training data, which this guarantee does not cover** (give them a range, \
             mean/std or values in the config).\n",
            derived.join(", ")
        )),
    }
    if table.on_missing == OnMissing::Drop {
        text.push_str(
            "- Rows with missing values were dropped before training; N counts the rows \
             kept.\n",
        );
    }
    text
}

/// The accountant row: which accountant gave ε and checked the budget.
fn accountant_text(privacy: &crate::train::PrivacyConfig, summary: &Summary) -> String {
    let settings = privacy.accountant();
    match settings.kind {
        AccountantKind::Rdp => format!(
            "**RDP** (budget and calibration): Rényi DP of the Poisson-subsampled Gaussian \
             (Mironov 2017; Mironov, Talwar & Zhang 2019), composed over every step in \
             ledger.csv, dp_accounting's 156 default orders{}, converted to (ε, δ) as Balle \
             et al. 2020 (best order {})",
            match privacy.secure_noise {
                true =>
                    " (integer orders only: the discrete Gaussian's bound is proven \
                         there, see privacy::discrete)",
                false => "",
            },
            summary
                .order
                .map_or("-".to_string(), |order| format!("{order}"))
        ),
        AccountantKind::Pld => format!(
            "**PLD** (budget and calibration): the privacy loss distribution of every step in \
             ledger.csv, pessimistic connect-the-dots discretisation (Doroshenko et al. 2022) \
             at interval {:e}, composed by FFT, add-or-remove (the larger direction); an \
             upper bound on ε at that discretisation",
            settings.discretization_interval
        ),
        AccountantKind::Prv => format!(
            "**PRV** (budget and calibration): the privacy random variable accountant (Gopi, \
             Lee & Wutschitz 2021), its upper bound eps_upper (eps_error {}, delta_error {:e}), \
             add-or-remove",
            settings.eps_error, settings.delta_error
        ),
    }
}

/// ε of the ledger under RDP, PLD and PRV, recomputed from ledger.csv.
fn epsilon_by_accountant(
    privacy: &crate::train::PrivacyConfig,
    ledger: &Ledger,
    delta: f64,
) -> String {
    let used = privacy.accountant().kind;
    let mark = |kind: AccountantKind| match kind == used {
        true => " (the budget's)",
        false => "",
    };
    match epsilon_under_all(ledger, delta) {
        Err(e) => format!("not computed: {e}"),
        Ok(all) => {
            let mut parts = vec![format!("RDP {:.4}{}", all.rdp, mark(AccountantKind::Rdp))];
            match all.pld {
                Some(pld) => parts.push(format!(
                    "PLD {:.4} (interval {:e}){}",
                    pld.epsilon,
                    pld.discretization_interval,
                    mark(AccountantKind::Pld)
                )),
                None => parts.push("PLD not applicable (discrete Gaussian steps)".into()),
            }
            match all.prv {
                Some(prv) => parts.push(format!(
                    "PRV {:.4} (estimate {:.4}, bounds [{:.4}, {:.4}]){}",
                    prv.eps_upper,
                    prv.eps_estimate,
                    prv.eps_low,
                    prv.eps_upper,
                    mark(AccountantKind::Prv)
                )),
                None => parts.push(
                    "PRV not computed (discrete Gaussian steps or too many steps for its mesh)"
                        .into(),
                ),
            }
            format!(
                "{}; each an upper bound on ε at δ = {delta:e}",
                parts.join("; ")
            )
        }
    }
}

/// The statement, in Markdown.
pub fn privacy_statement(config: &RunConfig, summary: &Summary, ledger: &Ledger) -> String {
    let privacy = &config.privacy;
    let training = &config.training;
    let dataset_size = summary
        .training_examples
        .unwrap_or_else(|| match &config.data {
            DataConfig::Mnist(mnist) | DataConfig::FashionMnist(mnist) => {
                mnist.train_size().unwrap_or_default()
            }
            _ => (summary.expected_batch_size as f64 / summary.sample_rate).round() as usize,
        });
    let mut out = format!("# Privacy statement: {}\n\n", config.name);
    if !privacy.private {
        out.push_str(
            "**This run is not private**: a non-private baseline (no clipping, no noise). \
             Its model may reveal anything about its training data.\n",
        );
        return out;
    }
    let epsilon = summary.epsilon.unwrap_or(f64::NAN);
    out.push_str(&format!(
        "The released model satisfies **(ε = {epsilon:.4}, δ = {:e})-differential privacy** \
         for each training example, as accounted below.\n\n",
        summary.guarantee_delta()
    ));
    let events = ledger.events();
    let first_sigma = events.first().map_or(f64::NAN, |e| e.noise_multiplier);
    let last_sigma = events.last().map_or(f64::NAN, |e| e.noise_multiplier);
    let sample_rate = events
        .first()
        .map_or(summary.sample_rate, |e| e.sample_rate);
    let clipping = match (&privacy.adaptive_clipping, privacy.clipping) {
        (Some(a), _) => format!(
            "adaptive quantile clipping (Andrew et al. 2021) from C = {}: target quantile γ = \
             {}, step η = {}, count noise σ_b = {} (its queries are in the ledger's \
             count_noise_multiplier column; the gradients get the rest of each step's noise)",
            privacy.clip_norm,
            a.target_quantile,
            a.learning_rate,
            a.count_noise_std(summary.sample_rate * dataset_size as f64)
        ),
        (None, crate::mechanism::ClippingMode::Flat) => format!(
            "flat: each example's whole gradient scaled to L2 norm at most C = {} ({})",
            privacy.clip_norm,
            describe_schedule(&privacy.clip_schedule)
        ),
        (None, crate::mechanism::ClippingMode::PerLayer) => format!(
            "per layer: each layer's gradient to C/√L, total at most C = {} ({})",
            privacy.clip_norm,
            describe_schedule(&privacy.clip_schedule)
        ),
    };
    let stopped = match &summary.stopped_early {
        Some(why) => format!(" Training stopped early: {why}."),
        None => String::new(),
    };
    let rows = [
        (
            "Mechanism",
            "DP-SGD (Abadi et al. 2016): per-example gradients clipped, summed, plus Gaussian \
             noise N(0, (σC)²) on every coordinate once per step, divided by the expected \
             batch size (never the realised one)"
                .to_string(),
        ),
        (
            "Unit of privacy",
            "one training example; neighbouring data sets differ by adding or removing one \
             example"
                .into(),
        ),
        (
            "Sampling",
            format!(
                "Poisson: each of the N = {dataset_size} training examples joins each step \
                 independently with probability q = {sample_rate} (expected batch size {}){}",
                training.expected_batch_size,
                unamplified(ledger)
            ),
        ),
        ("Clipping", clipping),
        (
            "Noise",
            format!(
                "σ from {first_sigma:.6} (first step) to {last_sigma:.6} (last step); schedule \
                 {}",
                describe_schedule(&privacy.noise_schedule)
            ),
        ),
        (
            "Steps",
            format!(
                "{} of {} planned ({} epochs planned).{stopped}",
                summary.steps, summary.planned_steps, training.epochs
            ),
        ),
        ("Accountant", accountant_text(privacy, summary)),
        (
            "ε by accountant",
            epsilon_by_accountant(privacy, ledger, summary.guarantee_delta()),
        ),
        (
            "Guarantee",
            format!("ε = {epsilon} at δ = {:e}", summary.guarantee_delta()),
        ),
        (
            "Noise generation",
            match privacy.secure_noise {
                true => {
                    "secure mode: the clipped sum rounded to a grid of C/2^k (2^k ≥ \
                         1000·√d where the variance limit allows) plus discrete Gaussian \
                         noise sampled exactly with integer arithmetic (Canonne, Kamath & \
                         Steinke 2020), its variance rounded up to cover the rounding; \
                         batches and noise from ChaCha20 seeded and reseeded by the \
                         operating system (no seed, not reproducible). Not protected: the \
                         samplers' running time depends on the values drawn"
                }
                false => {
                    "fast mode: a seeded ChaCha12 stream and rand_distr's normal \
                          sampler in floating point, reproducible from the seed; **not \
                          hardened against floating-point attacks** (Mironov 2012; Jin et \
                          al. 2022)"
                }
            }
            .into(),
        ),
    ];
    out.push_str("| | |\n| --- | --- |\n");
    for (label, text) in rows {
        out.push_str(&format!("| {label} | {text} |\n"));
    }
    out.push_str("\n## Not covered by this guarantee\n\n");
    out.push_str(
        "- Hyper-parameter search: runs tried before this one (learning rates, batch sizes, \
         schedules) are not accounted.\n",
    );
    match summary.public_validation_examples {
        Some(n) => out.push_str(&format!(
            "- Public data: the last {n} training-set examples were held out as a validation \
             split **declared public** (data.validation_public) and read without accounting \
             by the plateau schedule.\n"
        )),
        None => out.push_str("- Public data: none used.\n"),
    }
    out.push_str(&preprocessing(config));
    out.push_str(
        "- Monitoring: train_loss in metrics.csv is computed on private data and is not \
         privatised; do not publish it with the model. Test-set figures use the public test \
         set.\n\
         - Side channels: timing and memory use of training are not protected.\n",
    );
    out.push_str(&utility(summary));
    out
}

/// What the statement says of steps accounted without amplification (empty when every
/// step was Poisson-sampled).
pub fn unamplified(ledger: &Ledger) -> String {
    let steps: u64 = ledger
        .events()
        .iter()
        .filter(|e| !e.is_amplified())
        .map(|e| e.steps)
        .sum();
    if steps == 0 {
        return String::new();
    }
    let rates: Vec<String> = ledger
        .events()
        .iter()
        .filter_map(|e| e.nominal_sample_rate)
        .map(|q| q.to_string())
        .fold(Vec::new(), |mut seen, q| {
            if !seen.contains(&q) {
                seen.push(q);
            }
            seen
        });
    format!(
        ". **{steps} steps did not sample by Poisson sampling** (nominal rate {}): they are \
         accounted **without amplification by sampling**, as if every example took part in \
         each (sample rate 1 in the ledger, the nominal rate in its nominal_sample_rate \
         column)",
        rates.join(", ")
    )
}

/// The utility section: the last evaluation's figures (and a binary task's AUC and rates).
fn utility(summary: &Summary) -> String {
    let Some(accuracy) = summary.test_accuracy else {
        return String::new();
    };
    let set = match summary.evaluated_on.as_str() {
        "holdout" => "holdout of the training data (a tuning run)",
        _ => "test set",
    };
    let mut out = format!(
        "\n## Utility ({set}, after the last step)\n\n- Accuracy {:.2}%",
        100.0 * accuracy
    );
    if let Some(loss) = summary.test_loss {
        out.push_str(&format!(", mean cross-entropy {loss:.4}"));
    }
    out.push_str(".\n");
    if let (Some(auc), Some(predicted), Some(actual)) = (
        summary.test_auc,
        summary.test_predicted_positive_rate,
        summary.test_positive_rate,
    ) {
        out.push_str(&format!(
            "- ROC AUC {auc:.4}; predicted positive {:.2}% of the time, against a positive \
             rate of {:.2}% (always predicting the negative class scores {:.2}%).\n",
            100.0 * predicted,
            100.0 * actual,
            100.0 * (1.0 - actual)
        ));
    }
    out
}
