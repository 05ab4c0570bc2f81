//! `dptrain train` and `dptrain bench`: resolve the config, load data, call the trainer,
//! write the run directory.

use std::path::PathBuf;

use serde_json::json;

use super::{BenchArgs, BenchModel, Output, TrainArgs};
use crate::config::{DataConfig, RunConfig};
use crate::data::{MnistConfig, load_mnist};
use crate::error::{Error, Result};
use crate::model::{ModelConfig, ModelKind};
use crate::report::sweep::{SweepRow, read_sweep, sweep_csv, tradeoff_chart};
use crate::report::{RunManifest, RunRecords, render, summary_json, unix_now, write_run_dir};
use crate::train::bench::{BenchLength, throughput};
use crate::train::dist::Distributed;
use crate::train::{Checkpoint, Hooks, binary_metrics, plan_run, save_model, train_observed};

/// Set by the first Ctrl-C: the trainer checkpoints after the current step and stops.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
    // A second Ctrl-C ends the process at once.
    // SAFETY: signal() is async-signal-safe; SIG_DFL is the default action.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
    }
}

/// Whether the last training run in this process stopped at a Ctrl-C (its error then names
/// the checkpoint to resume from): the Python package raises `KeyboardInterrupt` for it.
pub fn was_interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Makes the first Ctrl-C a request to checkpoint and stop. A process that trains more than
/// once (the Python package) starts every run uninterrupted.
fn catch_interrupt() {
    INTERRUPTED.store(false, std::sync::atomic::Ordering::SeqCst);
    // SAFETY: installs a handler that only stores to an atomic and resets the handler.
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
}

/// What one training run left: its record, summary.json, and what its test figures measure.
pub(super) struct Finished {
    pub(super) record: crate::train::TrainingRecord,
    pub(super) summary: serde_json::Value,
    pub(super) eval_name: &'static str,
}

/// The number of declared columns of a table config (for the data line).
fn config_columns(config: &RunConfig) -> usize {
    match &config.data {
        DataConfig::Csv(table) => table.columns.len(),
        _ => 0,
    }
}

/// Trains `config` and writes its whole run directory `out` (records, model, statement,
/// plots).
fn train_to_dir(
    config: &RunConfig,
    out: &std::path::Path,
    reporter: &super::Reporter,
    resume: Option<Checkpoint>,
) -> Result<Finished> {
    let data = config.data.load()?;
    train_data_to_dir(config, data, out, reporter, resume, None, None)
}

/// What a process of a distributed run holds besides its group: MPI's session, finalised
/// when it is dropped after a finished run, aborting every rank after a failed one.
#[cfg(feature = "mpi")]
type Session = crate::train::dist::MpiSession;
#[cfg(not(feature = "mpi"))]
type Session = ();

/// This process's rank of a run spread over `engine` (`--dist`), with the config's parts.
fn join_group(engine: super::DistEngine, config: &RunConfig) -> Result<(Distributed, Session)> {
    let parts = config
        .training
        .dist_parts
        .unwrap_or(crate::train::dist::DEFAULT_PARTS);
    match engine {
        #[cfg(feature = "mpi")]
        super::DistEngine::Mpi => {
            let (world, session) = crate::train::dist::MpiWorld::init()?;
            match Distributed::new(Box::new(world), parts) {
                Ok(group) => Ok((group, session)),
                // Every rank refuses alike (the same config): abort, as a failed run does.
                Err(e) => {
                    eprintln!("error: {e}");
                    session.abort(2)
                }
            }
        }
        #[cfg(not(feature = "mpi"))]
        super::DistEngine::Mpi => {
            let _ = parts;
            Err(Error::Usage(
                "--dist mpi: this dptrain was built without MPI; build it with `cargo build \
                 --release --features mpi` (needs an MPI library, e.g. Debian's \
                 libopenmpi-dev, and libclang-dev) and start it with `mpirun -np W`"
                    .into(),
            ))
        }
    }
}

/// [`train_to_dir`] on data already loaded (an audit adds its canaries), with optional
/// white-box canaries in every step.
pub(super) fn train_data_to_dir(
    config: &RunConfig,
    data: crate::data::Splits,
    out: &std::path::Path,
    reporter: &super::Reporter,
    resume: Option<Checkpoint>,
    canaries: Option<&mut crate::train::GradientCanaries>,
    distributed: Option<Distributed>,
) -> Result<Finished> {
    // Of a distributed run, rank 0 alone reports and writes the run directory; the other
    // ranks train the same run silently.
    let lead = distributed.as_ref().is_none_or(|d| d.rank() == 0);
    let dist_shape = distributed.as_ref().map(|d| (d.ranks(), d.parts()));
    let quiet = super::Reporter::silent();
    let reporter = match lead {
        true => reporter,
        false => &quiet,
    };
    if let Some(encoding) = &data.encoding {
        reporter.line(&format!(
            "{} features from {} columns{}{}",
            encoding.feature_names.len(),
            config_columns(config),
            match encoding.dropped {
                (0, 0) => String::new(),
                (train, test) =>
                    format!("; rows dropped for missing values: {train} train, {test} test"),
            },
            match encoding.data_derived.is_empty() {
                true => String::new(),
                false => format!(
                    "; scaled or encoded from the training data (not covered by the privacy \
                     guarantee): {}",
                    encoding.data_derived.join(", ")
                ),
            }
        ));
    }
    let mut manifest = RunManifest::start(config.seed, rayon::current_num_threads());
    reporter.line(&format!(
        "{}: {} on {} training examples, {} epochs, expected batch {}",
        config.name,
        config
            .model
            .kind
            .map_or("a custom model".into(), |kind| format!("{kind:?}")
                .to_lowercase()),
        data.train.len(),
        config.training.epochs,
        config.training.expected_batch_size
    ));
    let eval_name = if data.test_is_holdout {
        "holdout"
    } else {
        "test"
    };
    let bar = reporter.bar(0, "steps");
    bar.set_prefix(config.name.clone());
    let mut on_epoch = |r: &crate::train::EpochRecord| {
        bar.set_message(format!(
            "ε {:.3}  train loss {:.4}  {eval_name} accuracy {:.2}%",
            r.epsilon,
            r.train_loss,
            100.0 * r.test_accuracy
        ));
        reporter.line(&format!(
                "epoch {:>3}  step {:>6}  train loss {:.4}  {eval_name} loss {:.4}  {eval_name} accuracy {:.2}%  ε {:.3}  {:.0}s",
                r.epoch,
                r.step,
                r.train_loss,
                r.test_loss,
                100.0 * r.test_accuracy,
                r.epsilon,
                r.wall_seconds
            ))
    };
    let mut on_step = |taken: u64, planned: u64| {
        bar.set_length(planned);
        bar.set_position(taken);
    };
    let mut on_checkpoint = |checkpoint: &Checkpoint| checkpoint.save(out);
    // A distributed run has no Ctrl-C checkpoint: the ranks could stop at different steps.
    // The engine stops them all; the last epoch's checkpoint stays.
    if distributed.is_none() {
        catch_interrupt();
    }
    let record = train_observed(
        &data.train,
        &data.test,
        data.validation.as_ref(),
        &config.model,
        &config.privacy,
        &config.training,
        config.run_seed()?,
        Hooks {
            on_epoch: Some(&mut on_epoch),
            on_step: Some(&mut on_step),
            on_checkpoint: match lead {
                true => Some(&mut on_checkpoint),
                false => None,
            },
            resume,
            stop_after_epoch: None,
            config_text: config.to_toml(),
            interrupt: match dist_shape {
                None => Some(&INTERRUPTED),
                Some(_) => None,
            },
            canaries,
            distributed,
        },
    );
    bar.finish_and_clear();
    let record = record?;
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        // Not a finished run: no report, only the checkpoint to continue from.
        return Err(Error::Usage(format!(
            "interrupted after step {}; the checkpoint is in {}: continue with `dptrain train \
             <config> --resume {}`",
            record.steps,
            out.join(crate::train::checkpoint::CHECKPOINT_DIR).display(),
            out.display()
        )));
    }
    manifest.finished_unix = unix_now();
    let mut summary = summary_json(
        &record,
        config.privacy.delta,
        config.training.expected_batch_size,
        eval_name,
    );
    // A plateau schedule read this split without accounting: say so (it is declared public).
    summary["public_validation_examples"] = json!(data.validation.as_ref().map(|v| v.len()));
    summary["training_examples"] = json!(data.train.len());
    if let Some((ranks, parts)) = dist_shape {
        summary["distributed"] = json!({ "engine": "mpi", "ranks": ranks, "parts": parts });
    }
    if let Some(binary) = binary_metrics(&record.model, &data.test)? {
        summary["test_auc"] = json!(binary.auc);
        summary["test_predicted_positive_rate"] = json!(binary.predicted_positive_rate);
        summary["test_positive_rate"] = json!(binary.positive_rate);
    }
    if !lead {
        return Ok(Finished {
            record,
            summary,
            eval_name,
        });
    }
    write_run_dir(out, &config.to_toml(), &manifest, &record, &summary)?;
    save_model(&record.model, &out.join("model.safetensors"))?;
    // The statement and plots are made from the files just written, as `dptrain report`
    // makes them: the run directory alone is enough to rebuild them.
    render(&RunRecords::load(out)?)?;
    Ok(Finished {
        record,
        summary,
        eval_name,
    })
}

/// Checks, before any training, that the run directory `out` can be made: a file in its
/// place or in place of a folder above it is an error now, not after the first epoch.
/// Nothing is created (a run that fails leaves nothing behind).
pub(crate) fn check_out(out: &std::path::Path) -> Result<()> {
    let mut at = Some(out);
    while let Some(path) = at {
        if path.exists() {
            if !path.is_dir() {
                let what = match path == out {
                    true => "a directory (new, or a previous run's): a file is there".into(),
                    false => format!("a path under a directory, but {} is a file", path.display()),
                };
                return Err(Error::invalid("--out", out.display(), what));
            }
            return Ok(());
        }
        at = path.parent().filter(|p| !p.as_os_str().is_empty());
    }
    Ok(())
}

/// Trains from a config and writes `reports/<name>/` (or `--out`).
pub fn run(args: &TrainArgs, reporter: &super::Reporter) -> Result<Output> {
    run_config(args, reporter).map_err(|e| crate::config::in_config_file(&args.config, e))
}

fn run_config(args: &TrainArgs, reporter: &super::Reporter) -> Result<Output> {
    let config = RunConfig::load(&args.config, &args.set)?;
    let (out, resume) = match &args.resume {
        Some(dir) => {
            let checkpoint = Checkpoint::load(dir)?;
            let differing = config_differences(&checkpoint.state.config, &config.to_toml())?;
            if !differing.is_empty() {
                return Err(Error::Usage(format!(
                    "--resume {}: the config differs from the checkpoint's in {}; resume with \
                     the same config (its privacy plan and ledger depend on it)",
                    dir.display(),
                    differing.join(", ")
                )));
            }
            reporter.line(&format!(
                "resuming {} after step {} (ε so far from its ledger)",
                dir.display(),
                checkpoint.state.steps
            ));
            (dir.clone(), Some(checkpoint))
        }
        None => (
            args.out
                .clone()
                .unwrap_or_else(|| PathBuf::from("reports").join(&config.name)),
            None,
        ),
    };
    check_out(&out)?;
    let (distributed, session) = match args.dist {
        Some(engine) => {
            let (group, session) = join_group(engine, &config)?;
            (Some(group), Some(session))
        }
        None => (None, None),
    };
    let lead = distributed.as_ref().is_none_or(|d| d.rank() == 0);
    let trained = config.data.load().and_then(|data| {
        train_data_to_dir(&config, data, &out, reporter, resume, None, distributed)
    });
    let Finished {
        record,
        summary,
        eval_name,
    } = match (trained, session) {
        (Ok(finished), _) => finished,
        (Err(e), None) => return Err(e),
        // A rank that fails stops them all (the others would wait in the next all-reduce).
        #[cfg(feature = "mpi")]
        (Err(e), Some(session)) => {
            eprintln!("error: {}", crate::config::in_config_file(&args.config, e));
            session.abort(1)
        }
        #[cfg(not(feature = "mpi"))]
        (Err(e), Some(())) => return Err(e),
    };
    if !lead {
        return Ok(Output {
            json: json!({}),
            table: Vec::new(),
        });
    }
    let mut table = vec![
        ("run directory".to_string(), out.display().to_string()),
        (
            format!("{eval_name} accuracy"),
            record
                .epochs
                .last()
                .map_or("-".into(), |r| format!("{:.2}%", 100.0 * r.test_accuracy)),
        ),
        (
            "steps".into(),
            format!("{} of {}", record.steps, record.planned_steps),
        ),
        (
            "wall time".into(),
            match record.wall_seconds < 10.0 {
                true => format!("{:.2} s", record.wall_seconds),
                false => format!("{:.0} s", record.wall_seconds),
            },
        ),
    ];
    if let Some(auc) = summary["test_auc"].as_f64() {
        table.push((format!("{eval_name} AUC"), format!("{auc:.4}")));
        table.push((
            format!("{eval_name} positive rate"),
            format!(
                "{:.2}% predicted, {:.2}% actual",
                100.0
                    * summary["test_predicted_positive_rate"]
                        .as_f64()
                        .unwrap_or(f64::NAN),
                100.0 * summary["test_positive_rate"].as_f64().unwrap_or(f64::NAN)
            ),
        ));
    }
    match record.spent {
        Some(spent) => table.extend([
            (
                "epsilon".into(),
                match spent.order == 0.0 {
                    true => format!(
                        "{:.4} at delta {:e} ({})",
                        spent.epsilon,
                        spent.delta,
                        record.accountant.describe()
                    ),
                    false => format!(
                        "{:.4} at delta {:e} (RDP, order {})",
                        spent.epsilon, spent.delta, spent.order
                    ),
                },
            ),
            (
                "noise multiplier".into(),
                format!("{:.6}", record.noise_multiplier),
            ),
        ]),
        None => table.push(("privacy".into(), "none (non-private baseline)".into())),
    }
    if let Some(why) = &record.stopped_early {
        table.push(("stopped early".into(), why.clone()));
    }
    Ok(Output {
        json: summary,
        table,
    })
}

/// `dptrain account CONFIG`: the privacy plan of a run config.
pub fn plan(path: &std::path::Path, overrides: &[String]) -> Result<Output> {
    let config = RunConfig::load(path, overrides)?;
    let run = plan_run(&config.privacy, &config.training, config.data.train_size()?)?;
    let plan = run.plan.as_ref().ok_or_else(|| {
        crate::error::Error::Usage("a non-private config spends nothing: no plan".into())
    })?;
    let note = match plan.worst_case {
        true => {
            "plateau schedule: planned at its floor σ, the most it can spend (the run \
                 stops at the budget whatever happens)"
        }
        false => "the schedule is a closed form: the run spends exactly this if not stopped",
    };
    let mut table = vec![
        ("config".to_string(), path.display().to_string()),
        ("sample rate".into(), format!("{}", run.sample_rate)),
        ("steps".into(), run.timeline.steps.to_string()),
        (
            "noise multiplier".into(),
            format!(
                "{:.6} (first step) to {:.6} (last step)",
                plan.first_noise_multiplier, plan.last_noise_multiplier
            ),
        ),
    ];
    if let Some(count) = run.count_noise_multiplier {
        table.push((
            "count query".into(),
            format!("noise multiplier {count} (adaptive clipping)"),
        ));
    }
    for (k, epsilon) in plan.epsilon_per_epoch.iter().enumerate() {
        table.push((
            format!("epsilon after epoch {}", k + 1),
            format!("{epsilon:.4}"),
        ));
    }
    table.extend([
        ("epsilon".into(), format!("{:.6}", plan.epsilon)),
        ("delta".into(), format!("{:e}", plan.delta)),
        ("accountant".into(), config.privacy.accountant().describe()),
        ("note".into(), note.into()),
    ]);
    Ok(Output {
        json: json!({
            "epsilon": plan.epsilon,
            "delta": plan.delta,
            "accountant": config.privacy.accountant().kind.name(),
            "steps": run.timeline.steps,
            "sample_rate": run.sample_rate,
            "first_noise_multiplier": plan.first_noise_multiplier,
            "last_noise_multiplier": plan.last_noise_multiplier,
            "count_noise_multiplier": run.count_noise_multiplier,
            "epsilon_per_epoch": plan.epsilon_per_epoch,
            "worst_case": plan.worst_case,
        }),
        table,
    })
}

/// Times private and non-private steps of one model.
pub fn bench(args: &BenchArgs) -> Result<Output> {
    let (data, model, name) = match (&args.config, args.model) {
        (Some(path), _) => {
            let config = RunConfig::load(path, &[])?;
            let data = config.data.load()?.train;
            (data, config.model, config.name)
        }
        (None, Some(model)) => {
            let data = load_mnist(&MnistConfig {
                dir: args.data.clone(),
                verify_checksums: true,
                holdout: 0,
                ..MnistConfig::default()
            })?
            .train;
            let kind = match model {
                BenchModel::Logreg => ModelKind::Logreg,
                BenchModel::Mlp => ModelKind::Mlp,
                BenchModel::Cnn => ModelKind::Cnn,
            };
            let name = format!("{kind:?}").to_lowercase();
            (data, ModelConfig::preset(kind), name)
        }
        (None, None) => return Err(Error::Usage("--model or --config is required".into())),
    };
    if !(args.min_seconds >= 0.0 && args.min_seconds.is_finite()) {
        return Err(Error::invalid(
            "--min-seconds",
            args.min_seconds,
            "a finite number of seconds, at least 0",
        ));
    }
    let t = throughput(
        &model,
        &data,
        args.batch_size,
        BenchLength {
            steps: args.steps,
            min_seconds: args.min_seconds,
            repeats: args.repeats,
            secure: args.secure,
        },
    )?;
    let overhead = t.nonprivate_samples_per_sec / t.private_samples_per_sec;
    let threads = rayon::current_num_threads();
    let mut json = json!({
        "model": name,
        "batch_size": args.batch_size,
        "threads": threads,
        "nonprivate_samples_per_sec": t.nonprivate_samples_per_sec,
        "private_samples_per_sec": t.private_samples_per_sec,
        "overhead": overhead,
    });
    let mut secure_rows = Vec::new();
    if let Some(secure) = t.secure_samples_per_sec {
        let cost = t.private_samples_per_sec / secure;
        json["secure_samples_per_sec"] = json!(secure);
        json["secure_cost"] = json!(cost);
        secure_rows.push(("secure noise".into(), format!("{secure:.0} samples/s")));
        secure_rows.push((
            "secure vs fast".into(),
            format!("{cost:.2}x the time per sample"),
        ));
    }
    Ok(Output {
        json,
        table: vec![
            ("model".into(), name),
            ("batch size".into(), args.batch_size.to_string()),
            ("threads".into(), threads.to_string()),
            (
                "non-private".into(),
                format!("{:.0} samples/s", t.nonprivate_samples_per_sec),
            ),
            (
                "private".into(),
                format!("{:.0} samples/s", t.private_samples_per_sec),
            ),
            ("overhead".into(), format!("{overhead:.2}x")),
        ]
        .into_iter()
        .chain(secure_rows)
        .collect(),
    })
}

/// `dptrain report RUN_DIR`: rebuilds privacy.md and the plots from the saved records.
/// A sweep's trade-off chart (`tradeoff.png/svg`) and `report.html`, from its rows; the
/// paths written.
fn write_sweep_report(dir: &std::path::Path, name: &str, rows: &[SweepRow]) -> Result<Vec<String>> {
    let key = rows.first().map_or("-", |r| r.key.as_str());
    let title = format!("{name}: privacy/utility trade-off over {key}");
    let chart = tradeoff_chart(&title, &[(name.to_string(), rows.to_vec())]);
    let mut written = save_chart(&chart, dir, "tradeoff")?;
    let page = crate::report::html::sweep_page(dir, &title, rows)?;
    let path = dir.join("report.html");
    crate::fs::write_atomic(&path, crate::report::html::render_page(&page).as_bytes())?;
    written.push(path.display().to_string());
    Ok(written)
}

/// `dptrain report SWEEP_DIR`: the sweep's chart and page again from its sweep.csv (the
/// sweep's name from its first run's config, else the folder's name).
fn report_sweep(dir: &std::path::Path) -> Result<Output> {
    let rows = read_sweep(&dir.join("sweep.csv"))?;
    let name = rows
        .first()
        .and_then(|r| RunConfig::load(&PathBuf::from(&r.run_dir).join("config.toml"), &[]).ok())
        .map(|c| c.name)
        .unwrap_or_else(|| {
            dir.file_name()
                .map_or("sweep".into(), |n| n.to_string_lossy().into_owned())
        });
    let written = write_sweep_report(dir, &name, &rows)?;
    Ok(Output {
        json: json!({ "sweep_directory": dir.display().to_string(), "written": written }),
        table: vec![
            ("sweep directory".into(), dir.display().to_string()),
            ("written".into(), written.join(", ")),
        ],
    })
}

/// `dptrain report DIR`: a run directory's privacy.md, plots and report.html again from its
/// records, a sweep's chart and page, or a federated run's page.
pub fn report(dir: &std::path::Path) -> Result<Output> {
    if !dir.join("config.toml").exists() && dir.join("sweep.csv").exists() {
        return report_sweep(dir);
    }
    let federated = std::fs::read_to_string(dir.join("config.toml"))
        .is_ok_and(|text| crate::config::federated::is_federated(&text));
    if federated {
        return super::federate::rebuild_page(dir);
    }
    let records = RunRecords::load(dir)?;
    let written = render(&records)?;
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    Ok(Output {
        json: json!({
            "run_directory": dir.display().to_string(),
            "written": files,
            "epsilon": records.summary.epsilon,
            "delta": records.summary.delta,
            "test_accuracy": records.summary.test_accuracy,
        }),
        table: vec![
            ("run directory".into(), dir.display().to_string()),
            ("written".into(), files.join(", ")),
        ],
    })
}

/// `--over KEY=V1,V2,...` split into the key and its values.
fn parse_over(over: &str) -> Result<(String, Vec<String>)> {
    let usage = || {
        Error::Usage(format!(
            "--over {over}: expected KEY=V1,V2,... (for example privacy.target_epsilon=0.5,1,2)"
        ))
    };
    let (key, values) = over.split_once('=').ok_or_else(usage)?;
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if key.trim().is_empty() || values.is_empty() {
        return Err(usage());
    }
    Ok((key.trim().to_string(), values))
}

/// `dptrain sweep CONFIG --over KEY=V1,...`: one training per value (and a non-private
/// baseline with `--baseline`), then sweep.csv and the trade-off chart.
pub fn sweep(args: &super::SweepArgs, reporter: &super::Reporter) -> Result<Output> {
    let (key, values) = parse_over(&args.over)?;
    // Every run's config is checked before the first one trains.
    let mut runs: Vec<(String, RunConfig)> = Vec::new();
    for value in &values {
        let mut overrides = args.set.clone();
        overrides.push(format!("{key}={value}"));
        runs.push((value.clone(), RunConfig::load(&args.config, &overrides)?));
    }
    if args.baseline {
        let mut overrides = args.set.clone();
        overrides.push("privacy.private=false".into());
        runs.push(("-".into(), RunConfig::load(&args.config, &overrides)?));
    }
    let name = runs[0].1.name.clone();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("reports").join(format!("sweep-{name}-{}", key.replace('.', "-")))
    });
    let mut rows = Vec::new();
    let total = runs.len();
    let runs_bar = reporter.bar(total as u64, "runs");
    runs_bar.set_prefix("sweep");
    for (index, (value, config)) in runs.iter().enumerate() {
        runs_bar.set_message(format!("{key} = {value}"));
        let folder = match config.privacy.private {
            true => format!("{}={value}", key.rsplit('.').next().unwrap_or(&key)),
            false => "non-private".to_string(),
        };
        let dir = out.join(folder.replace(['/', ' '], "_"));
        reporter.line(&format!(
            "sweep run {} of {total}: {key} = {value}",
            index + 1
        ));
        let finished = train_to_dir(config, &dir, reporter, None)?;
        runs_bar.inc(1);
        let record = &finished.record;
        rows.push(SweepRow {
            key: key.clone(),
            value: value.clone(),
            private: config.privacy.private,
            epsilon: record.spent.map(|s| s.epsilon),
            delta: config.privacy.delta,
            test_accuracy: record.epochs.last().map_or(f64::NAN, |r| r.test_accuracy),
            steps: record.steps,
            noise_multiplier: record.noise_multiplier,
            wall_seconds: record.wall_seconds,
            run_dir: dir.display().to_string(),
        });
    }
    runs_bar.finish_and_clear();
    crate::fs::write_atomic(&out.join("sweep.csv"), sweep_csv(&rows)?.as_bytes())?;
    let written = write_sweep_report(&out, &name, &rows)?;
    let table = rows
        .iter()
        .map(|r| {
            let label = match r.private {
                true => format!("{key} = {}", r.value),
                false => "non-private".into(),
            };
            let epsilon = r.epsilon.map_or("-".into(), |e| format!("{e:.3}"));
            (
                label,
                format!("ε {epsilon}  accuracy {:.2}%", 100.0 * r.test_accuracy),
            )
        })
        .chain([("written".to_string(), written.join(", "))])
        .collect();
    Ok(Output {
        json: json!({
            "sweep_directory": out.display().to_string(),
            "runs": rows,
            "written": written,
        }),
        table,
    })
}

fn save_chart(
    chart: &crate::report::Chart,
    dir: &std::path::Path,
    stem: &str,
) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(crate::report::plots::save(chart, dir, stem)?
        .iter()
        .map(|p| p.display().to_string())
        .collect())
}

/// `dptrain report --compare DIR...`: the trade-off curves of several sweeps on one chart.
pub fn compare(dirs: &[PathBuf], out: Option<&std::path::Path>) -> Result<Output> {
    let mut sweeps = Vec::new();
    for dir in dirs {
        let rows = read_sweep(&dir.join("sweep.csv"))?;
        let name = dir.file_name().map_or(dir.display().to_string(), |n| {
            n.to_string_lossy().into_owned()
        });
        sweeps.push((name, rows));
    }
    let out = out.map_or_else(|| PathBuf::from("reports/compare"), |p| p.to_path_buf());
    let chart = tradeoff_chart("privacy/utility trade-off", &sweeps);
    let written = save_chart(&chart, &out, "tradeoff")?;
    Ok(Output {
        json: json!({ "written": written, "sweeps": dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>() }),
        table: vec![("written".into(), written.join(", "))],
    })
}

/// The dotted keys whose values differ between two config texts.
pub(crate) fn config_differences(saved: &str, current: &str) -> Result<Vec<String>> {
    let parse = |text: &str| -> Result<toml::Table> {
        toml::from_str(text).map_err(|e| Error::Parse {
            path: PathBuf::from("checkpoint/state.json"),
            location: "config".into(),
            message: e.to_string(),
        })
    };
    fn walk(prefix: &str, a: &toml::Table, b: &toml::Table, out: &mut Vec<String>) {
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for key in keys {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match (a.get(key), b.get(key)) {
                (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                    walk(&name, x, y, out)
                }
                (x, y) if x != y => out.push(name),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk("", &parse(saved)?, &parse(current)?, &mut out);
    Ok(out)
}
