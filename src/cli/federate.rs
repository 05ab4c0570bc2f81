//! `dptrain federate CONFIG`: a client-level DP-FedAvg simulation (issue 14, in progress)
//! with its run directory: the resolved config, the clients' manifest, one metrics row per
//! round, the ledger, the model, summary.json and privacy.md.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::Output;
use crate::config::federated::FederatedRunConfig;
use crate::error::{Error, Result};
use crate::federated::{InProcess, Partition, PartitionConfig, run_client_level};
use crate::fs::write_atomic;
use crate::model::Model;
use crate::train::trainer::derive_seed;

/// Runs the federation of `config` (with `overrides`) and writes `out` (default
/// `reports/<name>`).
pub fn run(config_path: &Path, overrides: &[String], out: Option<PathBuf>) -> Result<Output> {
    let config = FederatedRunConfig::load(config_path, overrides)?;
    let out = out.unwrap_or_else(|| PathBuf::from("reports").join(&config.name));
    if out.join("summary.json").exists() {
        return Err(Error::Usage(format!(
            "{} already holds a finished run; choose another --out",
            out.display()
        )));
    }
    let splits = config.data.load()?;
    let (train, test) = (&splits.train, &splits.test);
    let federated = &config.federated;
    if let PartitionConfig::ByColumn { .. } = federated.partition {
        return Err(Error::invalid(
            "federated.partition.kind",
            "by_column",
            "iid, by_label or dirichlet (partitions by a CSV column are not wired to \
             `federate` yet)",
        ));
    }
    let partition = Partition::new(&federated.partition, &train.labels, None, config.seed)?;
    let global = Model::for_data(&config.model, train, derive_seed(config.seed, 1))?;
    let mut clients = InProcess {
        module: Model::for_data(&config.model, train, derive_seed(config.seed, 1))?,
        data: train,
        partition: &partition,
        local: federated.local,
        seed: derive_seed(config.seed, 5),
    };
    let start = std::time::Instant::now();
    let record = run_client_level(
        &global,
        &mut clients,
        partition.len(),
        test,
        &federated.client_level,
        config.seed,
    )?;
    let wall_seconds = start.elapsed().as_secs_f64();
    let resolved = toml::to_string(&config)
        .map_err(|e| Error::Usage(format!("the resolved config cannot be written: {e}")))?;
    // The directory is made only once the run has finished: a failed run leaves nothing.
    std::fs::create_dir_all(&out).map_err(|source| Error::Io {
        path: out.clone(),
        source,
    })?;
    let file = |name: &str| out.join(name);
    write_atomic(&file("config.toml"), resolved.as_bytes())?;
    write_atomic(&file("clients.csv"), partition.manifest_csv().as_bytes())?;
    let mut metrics = String::from("round,sampled,survivors,test_loss,test_accuracy,epsilon\n");
    for r in &record.rounds {
        metrics.push_str(&format!(
            "{},{},{},{:?},{:?},{:?}\n",
            r.round, r.sampled, r.survivors, r.test_loss, r.test_accuracy, r.epsilon
        ));
    }
    write_atomic(&file("metrics.csv"), metrics.as_bytes())?;
    record.ledger.write_csv(&file("ledger.csv"))?;
    crate::train::save_model(&global, &file("model.safetensors"))?;
    let privacy = &federated.client_level;
    let last = record.rounds.last();
    let summary = json!({
        "unit_of_privacy": "one client's whole data",
        "test_accuracy": last.map(|r| r.test_accuracy),
        "test_loss": last.map(|r| r.test_loss),
        "epsilon": record.spent.epsilon,
        "delta": privacy.delta,
        "accountant": privacy.accountant().kind.name(),
        "noise_multiplier": record.noise_multiplier,
        "clip_norm": privacy.clip_norm,
        "clients": partition.len(),
        "sample_rate": privacy.sampling.sample_rate(partition.len()),
        "rounds": record.rounds.len(),
        "planned_rounds": privacy.rounds,
        "stopped_early": record.stopped_early,
        "wall_seconds": wall_seconds,
    });
    write_atomic(
        &file("summary.json"),
        format!(
            "{}\n",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        )
        .as_bytes(),
    )?;
    let statement = privacy_statement(&config, &record, partition.len());
    write_atomic(&file("privacy.md"), statement.as_bytes())?;
    let table = vec![
        ("run directory".to_string(), out.display().to_string()),
        (
            "test accuracy".into(),
            last.map_or("-".into(), |r| format!("{:.2}%", 100.0 * r.test_accuracy)),
        ),
        (
            "epsilon".into(),
            format!(
                "{:.4} at δ = {:e} (one client's whole data)",
                record.spent.epsilon, privacy.delta
            ),
        ),
        (
            "rounds".into(),
            format!("{} of {}", record.rounds.len(), privacy.rounds),
        ),
        ("wall time".into(), format!("{wall_seconds:.1} s")),
    ];
    Ok(Output {
        json: summary,
        table,
    })
}

/// privacy.md of a client-level run.
fn privacy_statement(
    config: &FederatedRunConfig,
    record: &crate::federated::FederatedRecord,
    clients: usize,
) -> String {
    let privacy = &config.federated.client_level;
    let q = privacy.sampling.sample_rate(clients);
    let sampling = match privacy.sampling {
        crate::federated::ClientSampling::Poisson { expected_clients } => format!(
            "Poisson: each of the {clients} clients joins each round independently with \
             probability q = {q} ({expected_clients} expected)"
        ),
        crate::federated::ClientSampling::Fixed { clients: per_round } => format!(
            "{per_round} of {clients} clients per round, without replacement: **accounted \
             without amplification by sampling** (as if every client took part in every round)"
        ),
    };
    format!(
        "# Privacy statement: {name}\n\n\
         The released model satisfies **(ε = {eps:.4}, δ = {delta:e})-differential privacy** \
         for each client's whole data (client-level DP), as accounted below.\n\n\
         | | |\n| --- | --- |\n\
         | Mechanism | DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018): each sampled client \
         trains locally and clips its whole update to C = {clip}; the server adds N(0, (zC)²) \
         to the sum once per round and divides by the expected number of clients (never the \
         realised one) |\n\
         | Unit of privacy | one client's whole data; neighbouring federations differ by \
         adding or removing one client |\n\
         | Sampling | {sampling} |\n\
         | Noise | z = {z:.6} |\n\
         | Rounds | {done} of {planned}{stopped} |\n\
         | Accountant | {accountant} |\n\
         | Guarantee | ε = {eps} at δ = {delta:e} |\n\
         | Trust | the server sees every client's clipped update before the noise (central \
         DP): it must be trusted; secure aggregation is not used in this run |\n\n\
         ## Not covered by this guarantee\n\n\
         - Hyper-parameter search: runs tried before this one are not accounted.\n\
         - The simulation's noise is seeded (fast mode, floating point): reproducible, **not \
         hardened against floating-point attacks**.\n",
        name = config.name,
        eps = record.spent.epsilon,
        delta = privacy.delta,
        clip = privacy.clip_norm,
        z = record.noise_multiplier,
        done = record.rounds.len(),
        planned = privacy.rounds,
        stopped = record
            .stopped_early
            .as_ref()
            .map_or(String::new(), |why| format!(" (stopped early: {why})")),
        accountant = privacy.accountant().describe(),
    )
}
