//! `dptrain plan`: a privacy budget report before training. For a data set size, an expected
//! batch size and δ: ε against epochs for several noise multipliers (table and chart), and
//! the noise multiplier each target ε needs (what TF Privacy's compute_dp_sgd_privacy and
//! Opacus's get_noise_multiplier are used for).

use std::path::PathBuf;

use serde_json::json;

use super::{Output, PlanArgs};
use crate::error::{Error, Result};
use crate::privacy::{AccountantSettings, calibrate_noise_multiplier_with, epochs_to_steps};
use crate::report::{Chart, Legend, Series};
use crate::schedule::plan::{NoiseSpec, plan as plan_schedule};
use crate::schedule::{Schedule, Timeline};

/// Runs `dptrain plan`.
pub fn run(args: &PlanArgs) -> Result<Output> {
    let resolved;
    let args = match &args.config {
        Some(path) => {
            let config = crate::config::RunConfig::load(path, &[])?;
            let batch = config.training.expected_batch_size;
            resolved = PlanArgs {
                config: None,
                dataset_size: Some(config.data.train_size()? as u64),
                batch_size: Some(batch as u64),
                delta: Some(config.privacy.delta),
                epochs: Some(config.training.epochs),
                noise_multipliers: args.noise_multipliers.clone(),
                targets: args.targets.clone(),
                out: args.out.clone(),
                accountant: args.accountant,
            };
            &resolved
        }
        None => args,
    };
    let missing = |flag: &str| Error::Usage(format!("{flag} is required without a CONFIG"));
    let dataset_size = args.dataset_size.ok_or_else(|| missing("--dataset-size"))?;
    let batch_size = args.batch_size.ok_or_else(|| missing("--batch-size"))?;
    let delta = args.delta.ok_or_else(|| missing("--delta"))?;
    let epochs = args.epochs.unwrap_or(30.0);
    if !(epochs > 0.0 && epochs.is_finite()) {
        return Err(Error::invalid(
            "--epochs",
            epochs,
            "a finite number above 0",
        ));
    }
    let (sample_rate, steps) = epochs_to_steps(epochs, dataset_size, batch_size)?;
    let timeline = Timeline {
        steps,
        steps_per_epoch: dataset_size as f64 / batch_size as f64,
    };
    let constant = Schedule::constant();
    let spec = NoiseSpec {
        schedule: &constant,
        sample_rate,
        timeline,
        count_noise_multiplier: None,
        mechanism: crate::privacy::Mechanism::Gaussian,
        accountant: AccountantSettings::new(args.accountant.into()),
    };
    let mut curves = Vec::new();
    for &sigma in &args.noise_multipliers {
        let planned = plan_schedule(&spec, sigma, delta)?;
        curves.push((sigma, planned.epsilon_per_epoch));
    }
    let mut needed = Vec::new();
    for &target in &args.targets {
        let c = calibrate_noise_multiplier_with(
            AccountantSettings::new(args.accountant.into()),
            target,
            delta,
            sample_rate,
            steps,
        )?;
        needed.push((target, c.noise_multiplier, c.epsilon));
    }
    let chart = Chart {
        title: format!(
            "ε against epochs: N = {}, expected batch {}, δ = {:e}",
            dataset_size, batch_size, delta
        ),
        x_label: "epochs".into(),
        y_label: format!(
            "ε ({} accountant)",
            crate::privacy::AccountantKind::from(args.accountant)
                .name()
                .to_uppercase()
        ),
        series: curves
            .iter()
            .map(|(sigma, eps)| Series {
                name: format!("σ = {sigma}"),
                points: eps
                    .iter()
                    .enumerate()
                    .map(|(k, e)| ((k + 1) as f64, *e))
                    .collect(),
                markers: eps.len() <= 30,
            })
            .collect(),
        reference: None,
        legend: Legend::UpperRight,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("reports/plan"));
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    let written: Vec<String> = crate::report::plots::save(&chart, &out, "plan")?
        .iter()
        .map(|p| p.display().to_string())
        .collect();

    // The table: ε after a few epoch counts (every epoch up to 10, then a tenth of the run).
    let epochs_total = curves.first().map_or(0, |(_, e)| e.len());
    let stride = (epochs_total / 10).max(1);
    let shown: Vec<usize> = (1..=epochs_total)
        .filter(|&k| k % stride == 0 || k == epochs_total)
        .collect();
    let mut table = vec![
        ("sample rate".to_string(), format!("{sample_rate}")),
        ("steps".into(), format!("{steps} ({} epochs)", epochs)),
        ("delta".into(), format!("{:e}", delta)),
    ];
    for (sigma, eps) in &curves {
        let cells: Vec<String> = shown
            .iter()
            .map(|&k| format!("{k}: {:.3}", eps[k - 1]))
            .collect();
        table.push((format!("ε at σ = {sigma}, by epoch"), cells.join("  ")));
    }
    for (target, sigma, epsilon) in &needed {
        table.push((
            format!("σ for ε = {target}"),
            format!("{sigma:.6} (ε {epsilon:.6} after {} epochs)", epochs),
        ));
    }
    table.push(("written".into(), written.join(", ")));
    Ok(Output {
        json: json!({
            "sample_rate": sample_rate,
            "steps": steps,
            "epochs": epochs,
            "delta": delta,
            "curves": curves.iter().map(|(sigma, eps)| json!({
                "noise_multiplier": sigma,
                "epsilon_per_epoch": eps,
            })).collect::<Vec<_>>(),
            "noise_for_target": needed.iter().map(|(target, sigma, epsilon)| json!({
                "target_epsilon": target,
                "noise_multiplier": sigma,
                "epsilon": epsilon,
            })).collect::<Vec<_>>(),
            "written": written,
        }),
        table,
    })
}
