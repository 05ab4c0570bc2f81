//! `dptrain audit CONFIG`: one training run with canaries, and the ε lower bound it proves
//! (Steinke, Nasr & Jagielski 2023; the maths is in `audit`).
//!
//! The run directory is a normal one (`train`'s files) plus `audit.json`, `audit.md`,
//! `canaries.csv` and the score distributions `audit.png`/`audit.svg`. With `--kind both`
//! the two audits go to `gradient/` and `input/` under the directory, with a combined
//! `audit.json` and `audit.md` at its top.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::train::train_data_to_dir;
use super::{AuditArgs, AuditKind, Output, Reporter};
use crate::audit::{
    AuditBound, CanaryKind, audit_bound, check_canaries, gradient_coordinates, inclusion,
    input_canaries, loss_scores, with_canaries,
};
use crate::config::RunConfig;
use crate::error::Result;
use crate::fs::write_atomic;
use crate::model::Model;
use crate::report::{Chart, Legend, Series};
use crate::train::GradientCanaries;

/// The confidence of every bound.
pub const CONFIDENCE: f64 = 0.95;

/// One finished audit.
struct Audited {
    kind: CanaryKind,
    bound: AuditBound,
    claimed_epsilon: Option<f64>,
    json: Value,
}

/// Runs `dptrain audit`.
pub fn run(args: &AuditArgs, reporter: &Reporter) -> Result<Output> {
    let config = RunConfig::load(&args.config, &args.set)?;
    // Every check before anything is written.
    let data = config.data.load()?;
    check_canaries(args.canaries, data.train.len())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports").join(format!("{}-audit", config.name)));
    super::train::check_out(&out)?;
    let seed = config.run_seed()? ^ 0x0a0d_17ca_4a21_e500;
    let kinds: Vec<CanaryKind> = match args.kind {
        AuditKind::Gradient => vec![CanaryKind::Gradient],
        AuditKind::Input => vec![CanaryKind::Input],
        AuditKind::Both => vec![CanaryKind::Gradient, CanaryKind::Input],
    };
    // The model's parameter tensors: one coordinate per gradient canary must fit.
    let sizes = parameter_sizes(&config, &data.train)?;
    if kinds.contains(&CanaryKind::Gradient) {
        gradient_coordinates(&sizes, args.canaries, 0)?;
    }
    let mut done = Vec::new();
    for &kind in &kinds {
        let dir = match kinds.len() {
            1 => out.clone(),
            _ => out.join(kind.name()),
        };
        reporter.line(&format!(
            "audit with {} {} canaries (each included with probability ½) into {}",
            args.canaries,
            kind.name(),
            dir.display()
        ));
        let audited = audit_once(
            &config,
            data.clone(),
            &sizes,
            &dir,
            reporter,
            kind,
            args.canaries,
            seed,
        )?;
        reporter.line(&format!(
            "{}: ε lower bound {:.3} at {:.0}% confidence (claimed ε {})",
            kind.name(),
            audited.bound.epsilon_lower_bound,
            100.0 * CONFIDENCE,
            audited
                .claimed_epsilon
                .map_or("∞ (not private)".to_string(), |e| format!("{e:.3}"))
        ));
        done.push(audited);
    }
    if done.len() > 1 {
        let json = json!({ "audits": done.iter().map(|a| a.json.clone()).collect::<Vec<_>>() });
        write_atomic(&out.join("audit.json"), pretty(&json).as_bytes())?;
        let md: String = done.iter().map(|a| markdown(a, &config.name)).collect();
        write_atomic(&out.join("audit.md"), md.as_bytes())?;
    }
    let mut table = vec![
        ("config".to_string(), args.config.display().to_string()),
        ("canaries".into(), args.canaries.to_string()),
        ("run directory".into(), out.display().to_string()),
    ];
    for a in &done {
        table.push((
            format!("{} canaries", a.kind.name()),
            format!(
                "ε ≥ {:.3} at {:.0}% confidence (claimed {})",
                a.bound.epsilon_lower_bound,
                100.0 * CONFIDENCE,
                a.claimed_epsilon
                    .map_or("∞".to_string(), |e| format!("{e:.3}"))
            ),
        ));
    }
    let json = match done.len() {
        1 => done[0].json.clone(),
        _ => json!({ "audits": done.iter().map(|a| a.json.clone()).collect::<Vec<_>>() }),
    };
    Ok(Output { json, table })
}

/// The sizes of the model's parameter tensors (the same for every seed).
fn parameter_sizes(config: &RunConfig, train: &crate::data::Dataset) -> Result<Vec<usize>> {
    let model = Model::new(&config.model, &train.feature_shape, train.classes, 0)?;
    Ok(model.parameters().iter().map(|p| p.elem_count()).collect())
}

#[allow(clippy::too_many_arguments)]
fn audit_once(
    config: &RunConfig,
    mut data: crate::data::Splits,
    sizes: &[usize],
    dir: &Path,
    reporter: &Reporter,
    kind: CanaryKind,
    m: usize,
    seed: u64,
) -> Result<Audited> {
    let included = inclusion(m, seed);
    let (scores, times_sampled, finished) = match kind {
        CanaryKind::Input => {
            let canaries = input_canaries(&data.train, m, seed ^ 1);
            data.train = with_canaries(&data.train, &canaries, &included);
            let finished = train_data_to_dir(config, data, dir, reporter, None, None, None)?;
            let scores = loss_scores(&finished.record.model, &canaries)?;
            (scores, None, finished)
        }
        CanaryKind::Gradient => {
            let coordinates = gradient_coordinates(sizes, m, seed ^ 2)?;
            let q = config.training.expected_batch_size as f64 / data.train.len() as f64;
            let mut canaries = GradientCanaries::new(coordinates, included.clone(), q, seed ^ 3)?;
            let finished =
                train_data_to_dir(config, data, dir, reporter, None, Some(&mut canaries), None)?;
            (
                canaries.scores().to_vec(),
                Some(canaries.times_sampled().to_vec()),
                finished,
            )
        }
    };
    let delta = config.privacy.delta;
    let bound = audit_bound(&scores, &included, delta, CONFIDENCE);
    let claimed_epsilon = finished.record.spent.map(|s| s.epsilon);
    let json = json!({
        "kind": kind.name(),
        "canaries": m,
        "included": bound.included,
        "confidence": CONFIDENCE,
        "delta": delta,
        "epsilon_lower_bound": bound.epsilon_lower_bound,
        "claimed_epsilon": claimed_epsilon,
        "accountant": finished.summary["accountant"],
        "private": claimed_epsilon.is_some(),
        "test_accuracy": finished.summary["test_accuracy"],
        "rules": bound.rules,
        "method": "Steinke, Nasr & Jagielski 2023, one run; guesses on the top and bottom \
                   scores, Bonferroni over the guess counts",
    });
    write_atomic(&dir.join("audit.json"), pretty(&json).as_bytes())?;
    let mut csv = String::from("canary,included,score,times_sampled\n");
    for k in 0..m {
        csv.push_str(&format!(
            "{k},{},{},{}\n",
            u8::from(included[k]),
            scores[k],
            times_sampled
                .as_ref()
                .map_or(String::new(), |t| t[k].to_string())
        ));
    }
    write_atomic(&dir.join("canaries.csv"), csv.as_bytes())?;
    let audited = Audited {
        kind,
        bound,
        claimed_epsilon,
        json,
    };
    write_atomic(
        &dir.join("audit.md"),
        markdown(&audited, &config.name).as_bytes(),
    )?;
    crate::report::plots::save(
        &score_chart(&scores, &included, kind, &config.name),
        dir,
        "audit",
    )?;
    // report.html again, now with the audit's findings and plot.
    crate::report::render(&crate::report::RunRecords::load(dir)?)?;
    Ok(audited)
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("plain data serialises") + "\n"
}

/// The audit's report in Markdown.
fn markdown(a: &Audited, name: &str) -> String {
    let mut out = format!("# Privacy audit: {name}, {} canaries\n\n", a.kind.name());
    let claim = a
        .claimed_epsilon
        .map_or("none (a non-private run)".to_string(), |e| {
            format!("ε = {e:.4}")
        });
    out.push_str(&format!(
        "**ε lower bound: {:.4}** at {:.0}% confidence and δ = {:e}; the run claims {claim}.\n\n",
        a.bound.epsilon_lower_bound,
        100.0 * a.bound.confidence,
        a.bound.delta
    ));
    let verdict = match a.claimed_epsilon {
        Some(e) if a.bound.epsilon_lower_bound > e => {
            "**The bound exceeds the claim: the implementation or its accounting is broken.**"
        }
        Some(_) => {
            "The bound is below the claim, as it must be for a correct implementation (an \
             audit proves lower bounds; it cannot certify the claim)."
        }
        None => "A non-private run: any positive bound shows the audit has power.",
    };
    out.push_str(verdict);
    out.push_str(&format!(
        "\n\n{} canaries, {} of them included (each independently with probability ½). {}\n\n",
        a.bound.canaries,
        a.bound.included,
        match a.kind {
            CanaryKind::Input =>
                "Input canaries (black box): images of sparse random pixels \
                                  with random labels, added to the training set; score = \
                                  minus the loss of the released model on each.",
            CanaryKind::Gradient =>
                "Gradient canaries (white box): Dirac per-example \
                                     gradients of norm C on distinct coordinates, inserted \
                                     before clipping and Poisson-sampled like examples; score \
                                     = the log-likelihood ratio, summed over the steps, of \
                                     \"sampled\" against \"not\" for the released noisy \
                                     gradient at the canary's coordinate minus the data's \
                                     part.",
        }
    ));
    out.push_str("| guesses | correct | ε lower bound (level 5%/rules) |\n| --- | --- | --- |\n");
    for r in &a.bound.rules {
        out.push_str(&format!(
            "| {} | {} | {:.4} |\n",
            r.guesses, r.correct, r.epsilon_lower_bound
        ));
    }
    out.push_str(
        "\nMethod: Steinke, Nasr & Jagielski 2023, \"Privacy Auditing with One (1) Training \
         Run\": guesses \"in\" for the highest and \"out\" for the lowest scores, the p-value of \
         their Theorem 3 (Appendix D) with δ, each guess count tested at 5% divided by the \
         number of counts (Bonferroni), so the best is a 95% bound.\n\n",
    );
    out
}

/// Score histograms of the included and excluded canaries (as densities).
fn score_chart(scores: &[f64], included: &[bool], kind: CanaryKind, name: &str) -> Chart {
    let (lo, hi) = scores
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &s| {
            (a.min(s), b.max(s))
        });
    let bins = 40usize;
    let width = ((hi - lo) / bins as f64).max(1e-12);
    let histogram = |want: bool| -> Vec<(f64, f64)> {
        let mut counts = vec![0usize; bins];
        let mut total = 0usize;
        for (s, &inc) in scores.iter().zip(included) {
            if inc == want {
                let b = (((s - lo) / width) as usize).min(bins - 1);
                counts[b] += 1;
                total += 1;
            }
        }
        let mut points = Vec::with_capacity(2 * bins + 2);
        points.push((lo, 0.0));
        for (b, &c) in counts.iter().enumerate() {
            let density = c as f64 / (total.max(1) as f64 * width);
            points.push((lo + b as f64 * width, density));
            points.push((lo + (b + 1) as f64 * width, density));
        }
        points.push((hi, 0.0));
        points
    };
    Chart {
        title: format!("{name}: scores of {} canaries", kind.name()),
        x_label: match kind {
            CanaryKind::Input => "score (minus the canary's loss)".into(),
            CanaryKind::Gradient => "score (log-likelihood ratio of the released gradients)".into(),
        },
        y_label: "density".into(),
        series: vec![
            Series {
                name: "included".into(),
                points: histogram(true),
                markers: false,
            },
            Series {
                name: "excluded".into(),
                points: histogram(false),
                markers: false,
            },
        ],
        reference: None,
        legend: Legend::UpperRight,
    }
}

impl AuditArgs {
    /// Refuses arguments that cannot make an audit (before anything runs).
    /// (The number of training examples is checked once the data is loaded.)
    pub fn check(&self) -> Result<()> {
        check_canaries(self.canaries, usize::MAX)
    }
}
