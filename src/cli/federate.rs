//! `dptrain federate CONFIG`: a federated simulation (client-level DP-FedAvg or silo-level
//! DP-SGD) with its run directory: the resolved config, the clients' manifest, one metrics
//! row per round, the ledger, the model, summary.json, privacy.md, plots of accuracy and ε
//! against rounds, and a checkpoint after every round (`--resume DIR` continues from it).

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{Output, Reporter};
use crate::config::DataConfig;
use crate::config::federated::{FederatedMode, FederatedRunConfig};
use crate::error::{Error, Result};
use crate::federated::secure::{Aggregation, SecureInProcess};
use crate::federated::{
    ClientLevelRun, FederatedCheckpoint, FederatedRecord, FederatedRun, InProcess, METRICS_HEADER,
    Partition, PartitionConfig, RoundRecord, SiloLevelRun,
};
use crate::fs::write_atomic;
use crate::model::Model;
use crate::report::plots::{Chart, Legend, Reference, Series};
use crate::report::{RunManifest, unix_now};
use crate::train::trainer::derive_seed;

/// Runs the federation of `args.config` (with `--set` overrides) and writes `--out`
/// (default `reports/<name>`), or continues `--resume DIR`.
pub fn run(args: &super::FederateArgs, reporter: &Reporter) -> Result<Output> {
    run_config(args, reporter, None).map_err(|e| crate::config::in_config_file(&args.config, e))
}

/// Where the clients of a client-level run are when they are not simulated: Flower nodes
/// reached through the ServerApp's pipe.
pub struct FlowerServer<'r> {
    /// The pipe to the ServerApp.
    pub router: &'r mut dyn crate::federated::flower::server::Router,
    /// How long to wait for every client's node before the first round.
    pub wait: std::time::Duration,
    /// How long each stage waits for the nodes' replies.
    pub timeout: std::time::Duration,
}

/// A federated config with its `--set` values, and its resolved text (what config.toml
/// holds and what nodes and server compare by SHA-256).
pub fn resolve(path: &Path, set: &[String]) -> Result<(FederatedRunConfig, String)> {
    let config = FederatedRunConfig::load(path, set)?;
    let resolved = toml::to_string(&config)
        .map_err(|e| Error::Usage(format!("the resolved config cannot be written: {e}")))?;
    Ok((config, resolved))
}

/// The partition of a federated config's training data (the same on the server and on
/// every node).
pub fn partition_of(
    config: &FederatedRunConfig,
    train: &crate::data::Dataset,
) -> Result<Partition> {
    let federated = &config.federated;
    let keys = match (&federated.partition, &config.data) {
        (PartitionConfig::ByColumn { column }, DataConfig::Csv(table)) => {
            Some(crate::data::table::train_column(table, column)?)
        }
        _ => None,
    };
    Partition::new(
        &federated.partition,
        &train.labels,
        keys.as_deref(),
        config.seed,
    )
}

/// Runs the federation of `args`, its clients simulated, or Flower nodes when `flower`
/// is given.
pub fn run_config(
    args: &super::FederateArgs,
    reporter: &Reporter,
    flower: Option<FlowerServer>,
) -> Result<Output> {
    let (config, resolved) = resolve(&args.config, &args.set)?;
    let (out, checkpoint) = match &args.resume {
        Some(dir) => {
            let checkpoint = FederatedCheckpoint::load(dir)?;
            let differing = super::train::config_differences(&checkpoint.state.config, &resolved)?;
            if !differing.is_empty() {
                return Err(Error::Usage(format!(
                    "--resume {}: the config differs from the checkpoint's in {}; resume with \
                     the same config (its privacy plan and ledger depend on it)",
                    dir.display(),
                    differing.join(", ")
                )));
            }
            reporter.line(&format!(
                "resuming {} after round {}",
                dir.display(),
                checkpoint.state.rounds.len()
            ));
            (dir.clone(), Some(checkpoint))
        }
        None => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("reports").join(&config.name));
            if out.join("summary.json").exists() {
                return Err(Error::Usage(format!(
                    "{} already holds a finished run; choose another --out",
                    out.display()
                )));
            }
            if out.join(crate::train::checkpoint::CHECKPOINT_DIR).exists() {
                return Err(Error::Usage(format!(
                    "{} holds an unfinished run; continue it with --resume {0} or choose \
                     another --out",
                    out.display()
                )));
            }
            super::train::check_out(&out)?;
            (out, None)
        }
    };
    let mut manifest = RunManifest::start(Some(config.seed), rayon::current_num_threads());
    let splits = config.data.load()?;
    let (train, test) = (&splits.train, &splits.test);
    let federated = &config.federated;
    let partition = partition_of(&config, train)?;
    let global = Model::for_data(&config.model, train, derive_seed(config.seed, 1))?;
    let module = Model::for_data(&config.model, train, derive_seed(config.seed, 1))?;
    let (record, unit) = match federated.mode()? {
        FederatedMode::ClientLevel(local, privacy) => {
            // One module per worker thread: a round's clients train in parallel.
            let mut modules = vec![module];
            for _ in 1..rayon::current_num_threads() {
                modules.push(Model::for_data(
                    &config.model,
                    train,
                    derive_seed(config.seed, 1),
                )?);
            }
            let clients = InProcess {
                modules,
                data: train,
                partition: &partition,
                local: *local,
                seed: derive_seed(config.seed, 5),
            };
            // Secure aggregation: the virtual clients also run its client side.
            let mut plain;
            let mut secure;
            let mut nodes = None;
            let transport: &mut dyn crate::federated::round::Transport =
                match (privacy.aggregation, flower) {
                    (Aggregation::HeThreshold, Some(_)) => {
                        return Err(Error::Usage(
                            "aggregation = \"he_threshold\" does not run over Flower nodes yet; \
                         use plain, secagg or secagg_distributed_dp"
                                .into(),
                        ));
                    }
                    (_, Some(flower)) => {
                        let shapes = global
                            .parameters()
                            .iter()
                            .map(|p| p.dims().to_vec())
                            .collect();
                        nodes.insert(crate::federated::flower::server::FlowerClients::connect(
                            flower.router,
                            partition.len(),
                            &sha256_hex(resolved.as_bytes()),
                            shapes,
                            flower.wait,
                            flower.timeout,
                        )?)
                    }
                    (Aggregation::Plain, None) => {
                        plain = clients;
                        &mut plain
                    }
                    (_, None) => {
                        let secagg = privacy.secagg();
                        secure = SecureInProcess::new(
                            clients,
                            secagg.simulated_dropout,
                            derive_seed(config.seed, 6),
                        )
                        .with_failures(&secagg.simulated_failures);
                        &mut secure
                    }
                };
            let mut run =
                ClientLevelRun::new(&global, transport, partition.len(), privacy, config.seed)?;
            let record = rounds(
                &mut run,
                privacy.rounds,
                &resolved,
                checkpoint,
                &out,
                test,
                reporter,
                &config.name,
            )?;
            drop(run);
            if let Some(nodes) = nodes {
                nodes.finish()?;
            }
            (
                record,
                match privacy.private {
                    true => "one client's whole data",
                    false => "none (not private)",
                },
            )
        }
        FederatedMode::SiloLevel(_) if flower.is_some() => {
            return Err(Error::Usage(
                "silo-level DP does not run over Flower nodes yet; use \
                 [federated.client_level]"
                    .into(),
            ));
        }
        FederatedMode::SiloLevel(privacy) => {
            let mut run =
                SiloLevelRun::new(&global, module, train, &partition, privacy, config.seed)?;
            let record = rounds(
                &mut run,
                privacy.rounds,
                &resolved,
                checkpoint,
                &out,
                test,
                reporter,
                &config.name,
            )?;
            (record, "one example of one silo")
        }
    };
    manifest.finished_unix = unix_now();
    let file = |name: &str| out.join(name);
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    write_atomic(&file("config.toml"), resolved.as_bytes())?;
    write_atomic(&file("clients.csv"), partition.manifest_csv().as_bytes())?;
    write_atomic(&file("metrics.csv"), metrics_csv(&record.rounds).as_bytes())?;
    write_atomic(
        &file("manifest.json"),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&manifest).unwrap_or_default()
        )
        .as_bytes(),
    )?;
    match &record.distributed_ledger {
        Some(ledger) => ledger.write_csv(&file("ledger.csv"))?,
        None => record.ledger.write_csv(&file("ledger.csv"))?,
    }
    crate::train::save_model(&global, &file("model.safetensors"))?;
    let (delta, accountant, clip_norm, planned) = match federated.mode()? {
        FederatedMode::ClientLevel(_, p) => (p.delta, p.accountant(), p.clip_norm, p.rounds),
        FederatedMode::SiloLevel(p) => (p.delta, p.accountant(), p.clip_norm, p.rounds),
    };
    let private = !matches!(federated.mode()?, FederatedMode::ClientLevel(_, p) if !p.private);
    let last = record.rounds.last();
    let mut summary = json!({
        "mode": match federated.mode()? {
            FederatedMode::ClientLevel(_, p) if !p.private => "client_level_non_private",
            FederatedMode::ClientLevel(..) => "client_level",
            FederatedMode::SiloLevel(_) => "silo_level",
        },
        "private": private,
        "unit_of_privacy": unit,
        "test_accuracy": last.map(|r| r.test_accuracy),
        "test_loss": last.map(|r| r.test_loss),
        "epsilon": record.spent.epsilon,
        "delta": delta,
        "accountant": accountant.kind.name(),
        "noise_multiplier": record.noise_multiplier,
        "clip_norm": clip_norm,
        "clients": partition.len(),
        "rounds": record.rounds.len(),
        "planned_rounds": planned,
        "stopped_early": record.stopped_early,
        "wall_seconds": record.wall_seconds,
    });
    if !private {
        // A non-private run states no guarantee a reader could take for one.
        let fields = summary.as_object_mut().expect("a JSON object");
        for field in ["epsilon", "delta", "accountant", "noise_multiplier"] {
            fields.remove(field);
        }
    }
    match federated.mode()? {
        FederatedMode::ClientLevel(_, p) => {
            summary["sample_rate"] = json!(p.sampling.sample_rate(partition.len()));
            summary["final_clip_norm"] = json!(last.map(|r| r.clip_norm));
        }
        FederatedMode::SiloLevel(p) => {
            summary["sample_rate"] = json!(p.sample_rate);
            summary["silo_epsilons"] = json!(
                partition
                    .names
                    .iter()
                    .zip(&record.silo_epsilons)
                    .map(|(name, eps)| json!({"silo": name, "epsilon": eps}))
                    .collect::<Vec<_>>()
            );
        }
    }
    write_atomic(
        &file("summary.json"),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        )
        .as_bytes(),
    )?;
    let statement = privacy_statement(&config, &record, &partition)?;
    write_atomic(&file("privacy.md"), statement.as_bytes())?;
    let charts = charts(&config.name, &record.rounds, budget(&config)?);
    save_charts(&charts, &out, record.spent.epsilon.is_finite())?;
    let page = crate::report::html::federated_page(
        &out,
        &config.name,
        &summary,
        &charts
            .iter()
            .filter(|(stem, _)| private || *stem != "epsilon")
            .map(|(stem, chart)| (stem.to_string(), chart.title.clone()))
            .collect::<Vec<_>>(),
    )?;
    write_atomic(
        &file("report.html"),
        crate::report::html::render_page(&page).as_bytes(),
    )?;
    let table = vec![
        ("run directory".to_string(), out.display().to_string()),
        (
            "test accuracy".into(),
            last.map_or("-".into(), |r| format!("{:.2}%", 100.0 * r.test_accuracy)),
        ),
        (
            "epsilon".into(),
            match private {
                true => format!("{:.4} at δ = {delta:e} ({unit})", record.spent.epsilon),
                false => "∞ (not private)".into(),
            },
        ),
        (
            "rounds".into(),
            format!("{} of {planned}", record.rounds.len()),
        ),
        ("wall time".into(), format!("{:.1} s", record.wall_seconds)),
    ];
    Ok(Output {
        json: summary,
        table,
    })
}

/// Lowercase hex SHA-256 of `bytes` (a config's fingerprint).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs the rounds of `run` to its end with a progress bar, writing the checkpoint into
/// `out` after every round (resumed from `checkpoint` when given).
#[allow(clippy::too_many_arguments)]
fn rounds(
    run: &mut dyn FederatedRun,
    planned: u64,
    resolved: &str,
    checkpoint: Option<FederatedCheckpoint>,
    out: &Path,
    test: &crate::data::Dataset,
    reporter: &Reporter,
    name: &str,
) -> Result<FederatedRecord> {
    if let Some(checkpoint) = checkpoint {
        run.resume(&checkpoint)?;
    }
    let bar = reporter.bar(planned, "rounds");
    bar.set_prefix(name.to_string());
    bar.set_position(run.rounds().len() as u64);
    while let Some(round) = run.next_round(test)? {
        run.checkpoint(resolved.to_string())?.save(out)?;
        bar.set_message(format!(
            "acc {:.2}%  ε {:.3}",
            100.0 * round.test_accuracy,
            round.epsilon
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    run.finish()
}

/// metrics.csv: one row per round.
pub fn metrics_csv(rounds: &[RoundRecord]) -> String {
    let mut text = format!("{METRICS_HEADER}\n");
    for r in rounds {
        text.push_str(&r.csv_row());
        text.push('\n');
    }
    text
}

/// The ε budget line of a run's ε chart: the target ε, when the run has one.
fn budget(config: &FederatedRunConfig) -> Result<Option<f64>> {
    Ok(match config.federated.mode()? {
        FederatedMode::ClientLevel(_, p) => p.target_epsilon,
        FederatedMode::SiloLevel(p) => p.target_epsilon,
    })
}

/// Draws a run's charts into `dir` (the ε chart only for a private run); the files written.
fn save_charts(
    charts: &[(&'static str, Chart)],
    dir: &Path,
    private: bool,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (stem, chart) in charts
        .iter()
        .filter(|(stem, _)| private || *stem != "epsilon")
    {
        written.extend(crate::report::plots::save(chart, dir, stem)?);
    }
    Ok(written)
}

/// The rounds of a run's metrics.csv, as [`RoundRecord::csv_row`] wrote them; errors name
/// the file and the line.
fn read_rounds(path: &Path) -> Result<Vec<RoundRecord>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    crate::report::records::parse_csv_rows(
        &bytes,
        path,
        (crate::federated::run::METRICS_HEADER, &[]),
        "no rounds: a finished run has at least one",
    )
}

/// `dptrain report DIR` on a federated run directory: its plots, redrawn from metrics.csv,
/// and its report.html, from its summary.json, privacy.md and config.toml (privacy.md is
/// kept as written: it needs the whole run's records).
pub fn rebuild_page(dir: &Path) -> Result<Output> {
    let config = FederatedRunConfig::load(&dir.join("config.toml"), &[])?;
    let rounds = read_rounds(&dir.join("metrics.csv"))?;
    let path = dir.join("summary.json");
    let bytes = std::fs::read(&path).map_err(|source| Error::Io {
        path: path.clone(),
        source,
    })?;
    let summary: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Parse {
        path: path.clone(),
        location: format!("line {}, column {}", e.line(), e.column()),
        message: e.to_string(),
    })?;
    let charts = charts(&config.name, &rounds, budget(&config)?);
    let private = summary["epsilon"].as_f64().is_some_and(f64::is_finite);
    let mut written = save_charts(&charts, dir, private)?;
    let drawn: Vec<(String, String)> = charts
        .into_iter()
        .filter(|(stem, _)| private || *stem != "epsilon")
        .map(|(stem, chart)| (stem.to_string(), chart.title))
        .collect();
    let page = crate::report::html::federated_page(dir, &config.name, &summary, &drawn)?;
    let html = dir.join("report.html");
    write_atomic(&html, crate::report::html::render_page(&page).as_bytes())?;
    written.push(html);
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    Ok(Output {
        json: json!({
            "run_directory": dir.display().to_string(),
            "written": files,
            "epsilon": summary["epsilon"],
            "test_accuracy": summary["test_accuracy"],
        }),
        table: vec![
            ("run directory".into(), dir.display().to_string()),
            ("written".into(), files.join(", ")),
        ],
    })
}

/// The charts of a federated run: test accuracy and ε against rounds.
pub fn charts(
    name: &str,
    rounds: &[RoundRecord],
    budget: Option<f64>,
) -> Vec<(&'static str, Chart)> {
    let points = |f: fn(&RoundRecord) -> f64| -> Vec<(f64, f64)> {
        rounds.iter().map(|r| (r.round as f64, f(r))).collect()
    };
    vec![
        (
            "accuracy",
            Chart {
                title: format!("{name}: test accuracy"),
                x_label: "round".into(),
                y_label: "test accuracy (%)".into(),
                series: vec![Series {
                    name: "test accuracy".into(),
                    points: points(|r| 100.0 * r.test_accuracy),
                    markers: rounds.len() <= 30,
                }],
                reference: None,
                legend: Legend::LowerRight,
            },
        ),
        (
            "epsilon",
            Chart {
                title: format!("{name}: privacy spent"),
                x_label: "round".into(),
                y_label: "ε".into(),
                series: vec![Series {
                    name: "ε spent".into(),
                    points: std::iter::once((0.0, 0.0))
                        .chain(points(|r| r.epsilon))
                        .collect(),
                    markers: false,
                }],
                reference: budget.map(|b| Reference {
                    name: format!("budget ε = {b}"),
                    y: b,
                }),
                legend: Legend::LowerRight,
            },
        ),
    ]
}

/// privacy.md of a federated run.
fn privacy_statement(
    config: &FederatedRunConfig,
    record: &FederatedRecord,
    partition: &Partition,
) -> Result<String> {
    let clients = partition.len();
    let stopped = record
        .stopped_early
        .as_ref()
        .map_or(String::new(), |why| format!(" (stopped early: {why})"));
    let secure = matches!(config.federated.mode()?,
        FederatedMode::ClientLevel(_, p) if p.secure_noise || p.aggregation.distributed());
    let not_covered = format!(
        "## Not covered by this guarantee\n\n\
         - Hyper-parameter search: runs tried before this one are not accounted.\n{}",
        match secure {
            true =>
                "- Secure mode or distributed DP: the noise (the server's discrete Gaussian, or \
                     the clients' shares) is drawn from the OS-seeded CSPRNG (not \
                     reproducible); the clients' local training itself is not private and \
                     needs none.\n",
            false =>
                "- The simulation's noise is seeded (fast mode, floating point): \
                      reproducible, **not hardened against floating-point attacks**.\n",
        }
    );
    Ok(match config.federated.mode()? {
        FederatedMode::ClientLevel(_, privacy) if !privacy.private => format!(
            "# Privacy statement: {name}\n\n\
             This run is **not differentially private**: plain FedAvg (McMahan et al. 2017) \
             without clipping or noise, run as the non-private ceiling a private run is \
             compared with. Its model must not be released as private.\n",
            name = config.name
        ),
        FederatedMode::ClientLevel(_, privacy) => {
            let q = privacy.sampling.sample_rate(clients);
            let sampling = match privacy.sampling {
                crate::federated::ClientSampling::Poisson { expected_clients } => format!(
                    "Poisson: each of the {clients} clients joins each round independently \
                     with probability q = {q} ({expected_clients} expected)"
                ),
                crate::federated::ClientSampling::Fixed { clients: per_round } => format!(
                    "{per_round} of {clients} clients per round, without replacement: \
                     **accounted without amplification by sampling** (as if every client \
                     took part in every round)"
                ),
            };
            let clipping = match privacy.adaptive_clipping {
                Some(adaptive) => format!(
                    "adaptive (Andrew et al. 2021): C starts at {} and follows the {} \
                     quantile of the update norms, estimated from the clients' noised \
                     count (σ_b = {}); the count and the sum share z (z⁻² = z_Δ⁻² + \
                     (2σ_b)⁻²); final C = {:.4}",
                    privacy.clip_norm,
                    adaptive.target_quantile,
                    adaptive.count_noise_std(q * clients as f64),
                    record
                        .rounds
                        .last()
                        .map_or(privacy.clip_norm, |r| r.clip_norm)
                ),
                None => format!("fixed, C = {}", privacy.clip_norm),
            };
            format!(
                "# Privacy statement: {name}\n\n\
                 The released model satisfies **(ε = {eps:.4}, δ = {delta:e})-differential \
                 privacy** for each client's whole data (client-level DP), as accounted \
                 below.\n\n\
                 | | |\n| --- | --- |\n\
                 | Mechanism | DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018): each sampled \
                 client trains locally and clips its whole update to C; {how}, once per \
                 round, and the server divides by the expected number of clients (never the \
                 realised one) |\n\
                 | Unit of privacy | one client's whole data; neighbouring federations differ \
                 by adding or removing one client |\n\
                 | Sampling | {sampling} |\n\
                 | Clipping | {clipping} |\n\
                 | Noise | z = {z:.6}, {noise} |\n\
                 | Rounds | {done} of {planned}{stopped} |\n\
                 | Accountant | {accountant} |\n\
                 | Guarantee | ε = {eps} at δ = {delta:e} |\n\
                 | Trust | {trust} |\n\n{secure_section}{not_covered}",
                trust = trust_row(privacy),
                how = match privacy.aggregation {
                    Aggregation::Plain => "the server adds Gaussian noise to the sum",
                    Aggregation::Secagg =>
                        "the clients quantise and mask their updates, the server unmasks their \
                         sum (secure aggregation) and adds Gaussian noise to it",
                    Aggregation::SecaggDistributedDp =>
                        "each client quantises its update and adds its own share of the noise, \
                         masks it, and the server unmasks only the noised sum (secure \
                         aggregation with distributed DP; the server adds nothing)",
                    Aggregation::HeThreshold =>
                        "each client quantises its update, adds its own share of the noise and \
                         encrypts it under the committee's threshold key; the server adds the \
                         ciphertexts and t committee members decrypt only the noised sum \
                         (homomorphic aggregation with distributed DP; the server adds nothing)",
                },
                secure_section = secure_section(privacy, record, clients)?,
                name = config.name,
                eps = record.spent.epsilon,
                delta = privacy.delta,
                z = record.noise_multiplier,
                noise = match (privacy.aggregation, privacy.secure_noise) {
                    (a, _) if a.distributed() => distributed_noise_row(privacy),
                    (_, true) => "discrete Gaussian on a grid (secure mode, Canonne, Kamath & \
                             Steinke 2020), accounted at integer Rényi orders"
                        .into(),
                    (_, false) => "Gaussian N(0, (zC)²) on the sum".into(),
                },
                done = record.rounds.len(),
                planned = privacy.rounds,
                accountant = match privacy.aggregation {
                    a if a.distributed() => "RDP of the distributed mechanism \
                        (Skellam: Agarwal, Kairouz & Liu 2021; distributed discrete Gaussian: \
                        Kairouz, Liu & Steinke 2021) at integer orders 2..128 and 256, \
                        sensitivity inflated by rounding, Zhu & Wang 2019's subsampled bound, \
                        Balle et al. 2020's conversion; each round booked with its realised \
                        survivors (ledger.csv, `dptrain account --events`)"
                        .to_string(),
                    _ => privacy.accountant().describe(),
                },
            )
        }
        FederatedMode::SiloLevel(privacy) => {
            let mut silos = String::from("| Silo | Examples | ε |\n| --- | --- | --- |\n");
            for ((name, examples), eps) in partition
                .names
                .iter()
                .zip(&partition.clients)
                .zip(&record.silo_epsilons)
            {
                silos.push_str(&format!("| {name} | {} | {eps:.4} |\n", examples.len()));
            }
            format!(
                "# Privacy statement: {name}\n\n\
                 Each silo's contribution satisfies **(ε, δ = {delta:e})-differential \
                 privacy** for each of its examples (silo-level DP), with ε per silo below; \
                 the run's guarantee is the worst silo's, **ε = {eps:.4}**.\n\n\
                 | | |\n| --- | --- |\n\
                 | Mechanism | every silo runs DP-SGD on its own data (per-example clipping \
                 to C = {clip}, Gaussian noise σ = {z:.6}, Poisson sampling at q = {q}, \
                 {steps} steps per round); the server takes the mean of the silos' updates \
                 weighted by their example counts (published in clients.csv), which is \
                 post-processing |\n\
                 | Unit of privacy | one example of one silo; neighbouring data sets differ \
                 by adding or removing one example in one silo |\n\
                 | Rounds | {done} of {planned}{stopped} |\n\
                 | Accountant | {accountant}, each silo its own ledger |\n\
                 | Guarantee | ε = {eps} at δ = {delta:e} (the worst silo; ledger.csv is \
                 its ledger) |\n\
                 | Trust | each silo trusts itself; the server and the other silos see only \
                 noised updates |\n\n\
                 ## Each silo\n\n{silos}\n{not_covered}",
                name = config.name,
                eps = record.spent.epsilon,
                delta = privacy.delta,
                clip = privacy.clip_norm,
                z = record.noise_multiplier,
                q = privacy.sample_rate,
                steps = privacy.local_steps,
                done = record.rounds.len(),
                planned = privacy.rounds,
                accountant = privacy.accountant().describe(),
            )
        }
    })
}

/// The Trust row of a client-level run's privacy.md.
fn trust_row(privacy: &crate::federated::ClientLevelConfig) -> String {
    let he = privacy.he();
    let text = match privacy.aggregation {
        Aggregation::Plain => {
            "the server sees every client's clipped update before the noise (central DP): it \
             must be trusted; secure aggregation is not used in this run"
        }
        Aggregation::Secagg => {
            "secure aggregation (SecAgg+): the server sees only the sum of the surviving \
             clients' quantised updates, not any one update; it adds the noise itself after \
             unmasking, so the sum it sees is **not** noised: the server is trusted to add \
             the noise, not with the updates"
        }
        Aggregation::SecaggDistributedDp => {
            "secure aggregation (SecAgg+) of updates each carrying its client's noise share: \
             the server sees only the noised sum, so the guarantee holds against the server \
             too, provided the clients follow the protocol (semi-honest: they add their \
             shares) and fewer than t of a client's neighbours collude with the server"
        }
        Aggregation::HeThreshold => {
            return format!(
                "homomorphic aggregation: each client's noised update is encrypted under a \
                 {t}-of-{n} committee key (BFV); the server adds ciphertexts it cannot read and \
                 sees only the decrypted, noised sum, so the guarantee holds against the server \
                 together with up to t − 1 = {below} committee members, provided the clients \
                 follow the protocol (semi-honest: they add their shares and encrypt \
                 honestly); {t} colluding members could decrypt single uploads",
                t = he.threshold,
                n = he.committee,
                below = he.threshold - 1,
            );
        }
    };
    text.to_string()
}

/// The noise row under distributed DP.
fn distributed_noise_row(privacy: &crate::federated::ClientLevelConfig) -> String {
    let secagg = privacy.secagg();
    let name = match secagg.mechanism {
        crate::privacy::distributed::DistributedMechanism::Skellam => {
            "a Skellam share (Poisson − Poisson)"
        }
        crate::privacy::distributed::DistributedMechanism::DiscreteGaussian => {
            "a discrete Gaussian share"
        }
    };
    format!(
        "each client adds {name} to every coordinate of its rotated, scaled update, of \
         standard deviation σ·s in integer units with σ = zC/√n_min (s the round's scale), \
         drawn from the OS-seeded CSPRNG; the shares of n ≥ n_min survivors sum to noise of \
         standard deviation at least zC, that of one central Gaussian at z"
    )
}

/// privacy.md's section on secure aggregation: the protocol's parameters, what the server
/// sees, ε against the server (who knows which clients joined), and each round's dropouts.
fn secure_section(
    privacy: &crate::federated::ClientLevelConfig,
    record: &FederatedRecord,
    clients: usize,
) -> Result<String> {
    if privacy.aggregation == Aggregation::Plain {
        return Ok(String::new());
    }
    let secagg = privacy.secagg();
    let rounds_table = || {
        let mut rounds = String::from(
            "| Round | Sampled | Survivors (in the sum) | Dropped or aborted |\n| --- | --- | --- | --- |\n",
        );
        for r in &record.rounds {
            rounds.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                r.round,
                r.sampled,
                r.survivors,
                match r.survivors {
                    0 => "aborted: nothing released".to_string(),
                    s => format!("{}", r.sampled - s),
                }
            ));
        }
        rounds
    };
    let expected = privacy.sampling.sample_rate(clients) * clients as f64;
    let n = expected.round().max(3.0) as u32;
    let params = crate::secagg::RoundParams::recommended(0, n, 1, secagg.bits, [0; 32])?;
    let n_min = secagg.min_survivors_for(expected);
    // Against the server, who talks to the sampled clients, sampling hides nothing: the
    // same rounds accounted with q = 1.
    let unamplified = match &record.distributed_ledger {
        Some(ledger) => {
            let mut all = crate::privacy::distributed::DistributedLedger::new();
            for entry in ledger.entries() {
                all.push(crate::privacy::distributed::DistributedEntry {
                    sample_rate: 1.0,
                    ..*entry
                })?;
            }
            format!(
                "ε = {:.4} at δ = {:e} (the same rounds with q = 1)",
                all.epsilon(privacy.delta)?.0,
                privacy.delta
            )
        }
        None => "none: the server sees the sum before its own noise".to_string(),
    };
    let rounds = rounds_table();
    if privacy.aggregation == Aggregation::HeThreshold {
        let he = privacy.he();
        return Ok(format!(
            "## Homomorphic aggregation\n\n\
             | | |\n| --- | --- |\n\
             | Scheme | BFV (Fan & Vercauteren 2012) through the `fhe` crate 0.1.1: ring degree \
             4096, ciphertext modulus ≈ 2^109 (the 128-bit security limit at this degree), \
             plaintext modulus t = 8,380,417, 4,096 values per ciphertext |\n\
             | Committee | {n} members, threshold {t}: the secret key exists only as Shamir \
             shares (generated without a dealer; Mouchet, Bertrand & Hubaux 2023); {t} \
             members decrypt, fewer learn nothing |\n\
             | Decryption shares | flooded with uniform noise for statistical security \
             λ = {lambda} bits over the key's whole use (Asharov et al. 2012); each member \
             counts the coefficients it has decrypted and the committee makes a new key \
             when the budget would run out |\n\
             | Quantisation | as secure aggregation's: randomised Hadamard rotation in \
             blocks of 4,096, conditional stochastic rounding at β = {beta:.4}; the scale keeps \
             each client's values within (t − 1)/2 divided by the round's clients, so no \
             sum can wrap; a client whose values do not fit is refused before encrypting \
             (probability about {p:e}) |\n\
             | Fewest survivors | n_min = {n_min}: with fewer valid uploads nothing is \
             decrypted and the round releases nothing; members refuse a sum of fewer |\n\
             | Who sees what | the server: ciphertexts and the decrypted noised sum; each \
             member: its key share, the sum's ciphertexts and the decrypted sum; anyone: the \
             released models |\n\
             | ε against the server | {unamplified}; the ε above (with amplification by \
             sampling) holds against anyone who sees only the released models |\n\
             | Not covered | a client that encrypts a malformed or very noisy ciphertext can \
             spoil a round's decryption (there are no proofs of well-formedness); the \
             committee runs in this process in the simulation |\n\n\
             ### Dropouts of each round\n\n{rounds}\n",
            n = he.committee,
            t = he.threshold,
            lambda = he.lambda,
            beta = secagg.beta,
            p = secagg.wrap_probability,
        ));
    }
    Ok(format!(
        "## Secure aggregation\n\n\
         | | |\n| --- | --- |\n\
         | Protocol | SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova 2020), semi-honest \
         model: X25519 + HKDF-SHA256 pairwise masks expanded by ChaCha20, Shamir shares \
         sealed with ChaCha20-Poly1305, a fresh public neighbour graph each round |\n\
         | Neighbours and threshold | at {n} clients: k = {k} (each client and {nb} \
         neighbours), t = {t}: a client's secrets are rebuilt from t of its k holders; fewer \
         than t colluding neighbours learn nothing of them |\n\
         | Quantisation | randomised Hadamard rotation, scale s for b = {bits} bits (no \
         wrap with probability ≥ 1 − {p:e}), conditional stochastic rounding at β = {beta:.4} \
         |\n\
         | Fewest survivors | n_min = {n_min}: a round with fewer is aborted before \
         unmasking and releases nothing |\n\
         | Who sees what | the server: public keys, sealed shares, masked inputs and the \
         unmasked sum mod 2^b; each client: its neighbours' public keys and the shares it \
         holds; anyone: the released models |\n\
         | ε against the server | {unamplified}; the ε above (with amplification by \
         sampling) holds against anyone who sees only the released models |\n\n\
         ### Dropouts of each round\n\n{rounds}\n",
        k = params.degree,
        nb = params.neighbours_per_client(),
        t = params.threshold,
        bits = secagg.bits,
        p = secagg.wrap_probability,
        beta = secagg.beta,
    ))
}
