//! `dptrain fl`: federated runs on Flower (flwr 1.42).
//!
//! - `dptrain fl node --superlink URL --config CONFIG --client I`: a silo's SuperNode;
//! - `dptrain fl server-step --config CONFIG`: the run's server side, started by the
//!   dptrain ServerApp (`flower/`), which pipes Flower messages to and from it.

use std::time::Duration;

use super::federate::{FlowerServer, partition_of, resolve, run_config, sha256_hex};
use super::{FederateArgs, Output, Reporter};
use crate::config::federated::FederatedMode;
use crate::error::{Error, Result};
use crate::federated::InProcess;
use crate::federated::flower::node::{ClientTask, NodeOptions, run_node};
use crate::federated::flower::server::PipeRouter;
use crate::federated::secure::Stage;
use crate::model::Model;
use crate::train::trainer::derive_seed;

/// Flags of `dptrain fl node`.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The SuperLink's Fleet API: http://HOST:PORT, or https://HOST:PORT with TLS.
    #[arg(long, value_name = "URL")]
    pub superlink: String,
    /// The federation's config (the same file, with the same --set values, as the
    /// server's: the server refuses a node whose resolved config differs).
    #[arg(long, value_name = "CONFIG")]
    pub config: std::path::PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// This silo's client: its row of the partition (clients.csv), from 0.
    #[arg(long, value_name = "I")]
    pub client: usize,
    /// PEM root certificates the SuperLink's TLS certificate must chain to.
    #[arg(long, value_name = "FILE")]
    pub root_certificates: Option<std::path::PathBuf>,
    /// A P-384 private key (PKCS#8 PEM) whose public half the SuperLink's operator
    /// registered (`--enable-supernode-auth`); without it the node registers a fresh key.
    #[arg(long, value_name = "FILE")]
    pub auth_key: Option<std::path::PathBuf>,
    /// The heartbeat interval announced to the SuperLink, seconds (10 to 1800).
    #[arg(long, default_value_t = 30.0)]
    pub heartbeat: f64,
    /// Seconds between pulls that bring nothing.
    #[arg(long, default_value_t = 0.5)]
    pub poll: f64,
    /// Leave after the first run that finishes.
    #[arg(long)]
    pub once: bool,
    /// Leave after this many seconds without a message.
    #[arg(long, value_name = "SECONDS")]
    pub max_idle: Option<f64>,
    /// Tests: abort right after answering STAGE of round ROUND (ROUND:STAGE).
    #[arg(long, hide = true, value_name = "ROUND:STAGE")]
    pub die_after: Option<String>,
}

/// Flags of `dptrain fl server-step`.
#[derive(Debug, clap::Args)]
pub struct ServerStepArgs {
    /// The run: config, --out, --set, --resume as for `dptrain federate`.
    #[command(flatten)]
    pub run: FederateArgs,
    /// Seconds to wait for every client's node before the first round.
    #[arg(long, default_value_t = 60.0)]
    pub wait_for_nodes: f64,
    /// Seconds each stage of a round waits for the nodes' replies.
    #[arg(long, default_value_t = 300.0)]
    pub stage_timeout: f64,
}

/// `dptrain fl` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum FlCommand {
    /// A silo's Flower SuperNode: trains its client's share of the federation's rounds.
    Node(NodeArgs),
    /// The server side of a run on Flower, driven over stdin and stdout by the dptrain
    /// ServerApp (flower/ in the repository); not for use by hand.
    ServerStep(ServerStepArgs),
}

/// Runs `dptrain fl ...`.
pub fn run(command: &FlCommand, reporter: &Reporter) -> Result<Output> {
    match command {
        FlCommand::Node(args) => {
            node(args).map_err(|e| crate::config::in_config_file(&args.config, e))
        }
        FlCommand::ServerStep(args) => {
            let mut router = PipeRouter::new(std::io::stdin().lock(), std::io::stdout().lock());
            let flower = FlowerServer {
                router: &mut router,
                wait: seconds("--wait-for-nodes", args.wait_for_nodes)?,
                timeout: seconds("--stage-timeout", args.stage_timeout)?,
            };
            run_config(&args.run, reporter, Some(flower))
                .map_err(|e| crate::config::in_config_file(&args.run.config, e))
        }
    }
}

fn seconds(flag: &'static str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::invalid(flag, value, "a positive number of seconds"))
}

fn node(args: &NodeArgs) -> Result<Output> {
    let (config, resolved) = resolve(&args.config, &args.set)?;
    let FederatedMode::ClientLevel(local, privacy) = config.federated.mode()? else {
        return Err(Error::Usage(
            "silo-level DP does not run over Flower nodes yet; use [federated.client_level]".into(),
        ));
    };
    let splits = config.data.load()?;
    let partition = partition_of(&config, &splits.train)?;
    if args.client >= partition.len() {
        return Err(Error::invalid(
            "--client",
            args.client,
            format!("a client of the partition, 0 to {}", partition.len() - 1),
        ));
    }
    let module = Model::for_data(&config.model, &splits.train, derive_seed(config.seed, 1))?;
    let dim = module.parameters().iter().map(|p| p.elem_count()).sum();
    let plan = privacy.secure_plan(partition.len(), dim, config.seed)?;
    let training = InProcess {
        modules: vec![module],
        data: &splits.train,
        partition: &partition,
        local: *local,
        seed: derive_seed(config.seed, 5),
    };
    let mut task = ClientTask::new(
        training,
        args.client,
        privacy.aggregation,
        privacy.clip_norm,
        plan,
        sha256_hex(resolved.as_bytes()),
    );
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let key = match &args.auth_key {
        Some(path) => {
            let pem = String::from_utf8(read(path)?).map_err(|_| {
                Error::invalid(path.display().to_string(), "not UTF-8", "a PEM file")
            })?;
            Some(crate::federated::flower::auth::NodeKey::from_pkcs8_pem(
                &pem,
            )?)
        }
        None => None,
    };
    let options = NodeOptions {
        superlink: args.superlink.clone(),
        root_certificates: args.root_certificates.as_deref().map(read).transpose()?,
        key,
        heartbeat: args.heartbeat,
        poll: seconds("--poll", args.poll)?,
        once: args.once,
        max_idle: args
            .max_idle
            .map(|s| seconds("--max-idle", s))
            .transpose()?,
        die_after: args.die_after.as_deref().map(die_after).transpose()?,
    };
    run_node(&mut task, options)?;
    Ok(Output {
        json: serde_json::json!({"client": args.client, "superlink": args.superlink}),
        table: vec![
            ("client".into(), args.client.to_string()),
            ("superlink".into(), args.superlink.clone()),
        ],
    })
}

fn die_after(text: &str) -> Result<(u64, Stage)> {
    let parse = || {
        let (round, stage) = text.split_once(':')?;
        let stage = [
            Stage::Keys,
            Stage::Shares,
            Stage::MaskedInput,
            Stage::Unmask,
        ]
        .into_iter()
        .find(|s| s.name() == stage)?;
        Some((round.parse().ok()?, stage))
    };
    parse().ok_or_else(|| {
        Error::invalid(
            "--die-after",
            text,
            "ROUND:STAGE, STAGE one of keys, shares, masked_input, unmask",
        )
    })
}
