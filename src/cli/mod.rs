//! The command line: clap definitions and the dispatch to library functions.
//!
//! No maths here: each command resolves its flags into library types, calls the library,
//! and returns an [`Output`] that the binary prints as JSON (`--json`) or as a table.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

mod audit;
mod evaluate;
mod federate;
mod fl;
mod mpc;
mod plan;
mod progress;
mod train;

pub use evaluate::{EvaluateArgs, PredictArgs};
pub use train::was_interrupted;

pub use progress::Reporter;

use crate::error::{Error, Result};
use crate::privacy::{
    Conversion, Ledger, Orders, PrivacyEvent, RdpAccountant, calibrate_noise_multiplier,
    calibrate_noise_multiplier_with, delta_from_rdp, epochs_to_steps,
};

/// dptrain: train neural networks with differential privacy, and account for it.
#[derive(Debug, Parser)]
#[command(name = "dptrain", version, about, propagate_version = true)]
pub struct Cli {
    /// Print one JSON object on stdout instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log lines on stderr (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// No progress bars and no log lines but warnings and errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A privacy audit in one training run: canaries, scores, and the ε lower bound they
    /// prove (Steinke, Nasr & Jagielski 2023).
    Audit(AuditArgs),
    /// The (ε, δ) spent by DP-SGD steps: one homogeneous block from flags, or a ledger CSV.
    Account(AccountArgs),
    /// The smallest noise multiplier that keeps DP-SGD within a target ε.
    Calibrate(CalibrateArgs),
    /// Train a model with DP-SGD from a config and write its run directory.
    Train(TrainArgs),
    /// Simulate client-level DP-FedAvg from a federated config (clients in one process)
    /// and write its run directory.
    Federate(FederateArgs),
    /// Federated runs on Flower: `fl node` (a silo's SuperNode), `fl server-step` (the
    /// server side the dptrain ServerApp drives).
    #[command(subcommand)]
    Fl(fl::FlCommand),
    /// Training-step throughput, private against non-private, on MNIST or a config's
    /// model and data.
    Bench(BenchArgs),
    /// Rebuild a run directory's privacy statement and plots from its saved records, or
    /// draw several sweeps' trade-off curves on one chart (--compare).
    Report(ReportArgs),
    /// Train once per value of a config key, then write sweep.csv and the privacy/utility
    /// trade-off curve.
    Sweep(SweepArgs),
    /// A privacy budget report before training: ε against epochs for several noise
    /// multipliers, and the noise multiplier each target ε needs.
    Plan(PlanArgs),
    /// Secret-shared inference of a trained model (x² activations, average pooling) on its
    /// test set: model owner, client and dealer as three processes on loopback.
    MpcInfer(MpcInferArgs),
    /// Models: `model show CONFIG` prints the expanded layer table.
    #[command(subcommand)]
    Model(ModelCommand),
    /// A finished run's model on its test split or on other data of its schema: accuracy,
    /// loss, a confusion matrix, AUC for two classes.
    Evaluate(evaluate::EvaluateArgs),
    /// A finished run's predictions (class and probabilities per row) for IDX images or a
    /// CSV table, through the run's own preprocessing.
    Predict(evaluate::PredictArgs),
}

/// `dptrain model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// The expanded table of a config's model: path, kind, output shape, parameters,
    /// per-example rule and its mode, multiply-adds per example.
    Show(ModelShowArgs),
}

/// Flags of `dptrain model show`.
#[derive(Debug, Args)]
pub struct ModelShowArgs {
    /// A run config (its data gives the input shape and the classes).
    #[arg(value_name = "CONFIG")]
    pub config: PathBuf,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Which party a `mpc-infer` child process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MpcRole {
    /// Hands out Beaver triples.
    Dealer,
    /// Party 0: holds the weights.
    Owner,
    /// Party 1: holds the inputs, learns the logits.
    Client,
}

/// Flags of `dptrain mpc-infer`.
#[derive(Debug, Args)]
pub struct MpcInferArgs {
    /// A trained run directory (config.toml and model.safetensors), e.g. of
    /// configs/mnist-cnn-poly-eps3.toml.
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Infer the first N test examples (default: all).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Examples per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Where the report goes (default: RUN_DIR/mpc-infer).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Seconds any party waits for a connection or a message before it gives up.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Internal: the role of a child process.
    #[arg(long, hide = true)]
    pub role: Option<MpcRole>,
    /// Internal: the dealer's address.
    #[arg(long, hide = true)]
    pub dealer: Option<String>,
    /// Internal: the owner's address.
    #[arg(long, hide = true)]
    pub owner: Option<String>,
}

/// Flags of `dptrain plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// A run config: N from its data as the run will read it, B, δ and the epochs from
    /// the config (the flags below then may not be given).
    #[arg(value_name = "CONFIG", conflicts_with_all = ["dataset_size", "batch_size", "delta", "epochs"])]
    pub config: Option<PathBuf>,
    /// Training examples N.
    #[arg(long, value_name = "N", required_unless_present = "config")]
    pub dataset_size: Option<u64>,
    /// Expected batch size B (q = B/N).
    #[arg(long, value_name = "B", required_unless_present = "config")]
    pub batch_size: Option<u64>,
    /// δ.
    #[arg(long, value_name = "D", required_unless_present = "config")]
    pub delta: Option<f64>,
    /// Length of the run, in epochs (default 30).
    #[arg(long, value_name = "E")]
    pub epochs: Option<f64>,
    /// Noise multipliers to draw.
    #[arg(long, value_delimiter = ',', default_value = "0.6,0.8,1,1.5,2,4")]
    pub noise_multipliers: Vec<f64>,
    /// Target ε to find the noise multiplier for (over the whole run).
    #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,4,8")]
    pub targets: Vec<f64>,
    /// Where plan.png/svg go (default reports/plan).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The accountant of the curves and the calibration.
    #[arg(long, value_enum, default_value = "rdp")]
    pub accountant: AccountantKind,
}

/// Flags of `dptrain report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory (written by `dptrain train`).
    #[arg(required_unless_present = "compare", conflicts_with = "compare")]
    pub run_dir: Option<PathBuf>,
    /// Sweep directories (written by `dptrain sweep`) to draw on one chart.
    #[arg(long, num_args = 1.., value_name = "DIR")]
    pub compare: Vec<PathBuf>,
    /// Where --compare writes tradeoff.png/svg (default reports/compare).
    #[arg(long, value_name = "DIR", requires = "compare")]
    pub out: Option<PathBuf>,
}

/// Flags of `dptrain sweep`.
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The run config (TOML).
    pub config: PathBuf,
    /// The key and its values, e.g. privacy.target_epsilon=0.5,1,2,4,8.
    #[arg(long, value_name = "KEY=V1,V2,...")]
    pub over: String,
    /// Also train the non-private baseline (privacy.private = false), drawn as a line.
    #[arg(long)]
    pub baseline: bool,
    /// The sweep directory (default `reports/sweep-<name>-<key>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a config value in every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Flags of `dptrain train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run config (TOML), e.g. configs/quickstart.toml.
    pub config: PathBuf,
    /// The run directory (default: `reports/<name>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a config value, e.g. --set privacy.target_epsilon=1 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the run in this directory from its last checkpoint (same config).
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    /// Spread the run over the ranks of an engine: `mpirun -np W dptrain train CONFIG
    /// --dist mpi`. Every rank trains the same run; rank 0 writes the run directory. Needs
    /// a build with `--features mpi`.
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub dist: Option<DistEngine>,
}

/// Engines a training run can be spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DistEngine {
    /// MPI's ranks (OpenMPI or MPICH, through the `mpi` crate).
    Mpi,
}

/// Flags of `dptrain federate`.
#[derive(Debug, Args)]
pub struct FederateArgs {
    /// The federated config (TOML), e.g. configs/federated-mnist.toml.
    pub config: PathBuf,
    /// The run directory (default: `reports/<name>`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue the unfinished run in DIR from its last round's checkpoint (with the same
    /// config and --set values).
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    pub resume: Option<PathBuf>,
}

/// Which canaries an audit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditKind {
    /// White-box Dirac gradient canaries (far more powerful).
    Gradient,
    /// Black-box input canaries (sparse random pixels, random labels), scored by loss.
    Input,
    /// Both, one training run each.
    Both,
}

/// Flags of `dptrain audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The run config to audit (TOML).
    pub config: PathBuf,
    /// How many canaries (each included with probability ½), at least 10.
    #[arg(long, default_value_t = 1000)]
    pub canaries: usize,
    /// Which canaries.
    #[arg(long, value_enum, default_value = "gradient")]
    pub kind: AuditKind,
    /// The run directory (default: `reports/<name>-audit`).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// Flags of `dptrain bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model: logreg, mlp or cnn (on MNIST).
    #[arg(
        long,
        value_enum,
        required_unless_present = "config",
        conflicts_with = "config"
    )]
    pub model: Option<BenchModel>,
    /// Or any run config: its model on its data (e.g. configs/bench/*.toml, synthetic data
    /// of the benchmark shapes).
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// Batch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Timed steps per measurement, at least.
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// Timed seconds per measurement, at least (as ../bench/opacus's default).
    #[arg(long, default_value_t = 5.0)]
    pub min_seconds: f64,
    /// Interleaved repeats (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Also time the secure noise mode (discrete Gaussian on a grid, OS-seeded CSPRNG)
    /// against fast mode, interleaved in the same run.
    #[arg(long)]
    pub secure: bool,
    /// The MNIST folder.
    #[arg(long, default_value = "datasets/mnist")]
    pub data: PathBuf,
}

/// Models `bench` can time.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum BenchModel {
    /// Linear(784 → 10).
    Logreg,
    /// Linear(784 → 512) → ReLU → Linear(512 → 10).
    Mlp,
    /// The tanh cnn of design.md section 7.
    Cnn,
}

/// How many steps at which sample rate: given directly, or as epochs over a data set.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// Poisson sampling probability q (expected batch size / data set size).
    #[arg(long, value_name = "Q")]
    pub sample_rate: Option<f64>,
    /// Number of DP-SGD steps.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Passes over the data (with --dataset-size and --batch-size): q = B/N, steps = ⌈E·N/B⌉.
    #[arg(long, value_name = "E")]
    pub epochs: Option<f64>,
    /// Number of training examples N.
    #[arg(long, value_name = "N")]
    pub dataset_size: Option<u64>,
    /// Expected batch size B.
    #[arg(long, value_name = "B")]
    pub batch_size: Option<u64>,
}

/// The accountants of `account`, `calibrate` and `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountantKind {
    /// Rényi DP (Mironov 2017; Mironov, Talwar & Zhang 2019), dp_accounting's default orders.
    Rdp,
    /// Privacy loss distributions, pessimistic connect-the-dots (Doroshenko et al. 2022).
    Pld,
    /// Privacy random variables (Gopi, Lee & Wutschitz 2021): eps_upper with its bounds.
    Prv,
}

impl From<AccountantKind> for crate::privacy::AccountantKind {
    fn from(kind: AccountantKind) -> Self {
        match kind {
            AccountantKind::Rdp => crate::privacy::AccountantKind::Rdp,
            AccountantKind::Pld => crate::privacy::AccountantKind::Pld,
            AccountantKind::Prv => crate::privacy::AccountantKind::Prv,
        }
    }
}

/// The numerical settings of the PLD and PRV accountants.
#[derive(Debug, Args)]
pub struct GridArgs {
    /// PLD: the discretisation interval of the privacy loss.
    #[arg(long, value_name = "D", default_value_t = crate::privacy::pld::DEFAULT_DISCRETIZATION_INTERVAL)]
    pub discretization_interval: f64,
    /// PRV: the ε error bound.
    #[arg(long, value_name = "E", default_value_t = crate::privacy::prv::DEFAULT_EPS_ERROR)]
    pub eps_error: f64,
    /// PRV: the δ error bound.
    #[arg(long, value_name = "D", default_value_t = crate::privacy::prv::DEFAULT_DELTA_ERROR)]
    pub delta_error: f64,
}

impl GridArgs {
    /// The accountant settings of `kind` with these values.
    pub fn settings(&self, kind: AccountantKind) -> crate::privacy::AccountantSettings {
        crate::privacy::AccountantSettings {
            kind: kind.into(),
            discretization_interval: self.discretization_interval,
            eps_error: self.eps_error,
            delta_error: self.delta_error,
        }
    }
}

/// The RDP to (ε, δ) conversions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ConversionKind {
    /// Balle et al. 2020, as dp_accounting (default).
    Improved,
    /// Mironov 2017, Prop. 3, as TF Privacy's compute_dp_sgd_privacy.
    Classic,
}

/// `dptrain account --events` of a distributed-DP ledger (a `secagg_distributed_dp` run's
/// ledger.csv): ε at δ of its rounds, each with its own survivors and scale.
fn account_distributed(args: &AccountArgs, path: &std::path::Path, bytes: &[u8]) -> Result<Output> {
    use crate::privacy::distributed::DistributedLedger;
    let ledger = DistributedLedger::parse_csv(bytes, path)?;
    let delta = args.delta.ok_or_else(|| {
        Error::Usage("a distributed-DP ledger is accounted at a δ: give --delta D".into())
    })?;
    if args.accountant.is_some_and(|k| k != AccountantKind::Rdp) {
        return Err(Error::Usage(
            "a distributed-DP ledger is accounted by RDP only (drop --accountant)".into(),
        ));
    }
    let (epsilon, order) = ledger.epsilon(delta)?;
    let rounds = ledger.entries().len();
    Ok(Output {
        json: json!({
            "epsilon": epsilon,
            "delta": delta,
            "accountant": "rdp_distributed",
            "order": order,
            "steps": rounds,
        }),
        table: vec![
            ("rounds".into(), format!("{rounds}")),
            ("epsilon".into(), format!("{epsilon:.6}")),
            ("delta".into(), format!("{delta:e}")),
            (
                "accountant".into(),
                "RDP of distributed DP (Zhu & Wang subsampling, Balle et al. conversion)".into(),
            ),
            ("best order".into(), format!("{order}")),
        ],
    })
}

/// Flags of `dptrain account`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct AccountArgs {
    /// A run config: print its privacy plan (σ of the first and last step, ε per epoch)
    /// without training.
    #[arg(value_name = "CONFIG")]
    pub config: Option<PathBuf>,
    /// With CONFIG: override a config value (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    pub set: Vec<String>,
    /// Steps and sample rate (not with --events).
    #[command(flatten)]
    pub step: StepArgs,
    /// Noise standard deviation over the clip norm, σ (not with --events).
    #[arg(long, value_name = "S")]
    pub noise_multiplier: Option<f64>,
    /// A ledger CSV with header `sample_rate,noise_multiplier,steps`, composed in order.
    #[arg(long, value_name = "FILE.csv")]
    pub events: Option<PathBuf>,
    /// The δ at which to report ε.
    #[arg(long, value_name = "D", conflicts_with = "epsilon")]
    pub delta: Option<f64>,
    /// Report δ at this ε instead of ε at a δ.
    #[arg(long, value_name = "E")]
    pub epsilon: Option<f64>,
    /// The accountant (with CONFIG: overrides privacy.accountant).
    #[arg(long, value_enum)]
    pub accountant: Option<AccountantKind>,
    /// PLD and PRV settings.
    #[command(flatten)]
    pub grid: GridArgs,
    /// The RDP to (ε, δ) conversion.
    #[arg(long, value_enum, default_value = "improved")]
    pub conversion: ConversionKind,
}

/// Flags of `dptrain calibrate`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct CalibrateArgs {
    /// The ε not to exceed.
    #[arg(long, value_name = "E")]
    pub target_epsilon: f64,
    /// Steps and sample rate.
    #[command(flatten)]
    pub step: StepArgs,
    /// The δ of the target.
    #[arg(long, value_name = "D")]
    pub delta: f64,
    /// The accountant.
    #[arg(long, value_enum, default_value = "rdp")]
    pub accountant: AccountantKind,
    /// PLD and PRV settings.
    #[command(flatten)]
    pub grid: GridArgs,
    /// The RDP to (ε, δ) conversion.
    #[arg(long, value_enum, default_value = "improved")]
    pub conversion: ConversionKind,
}

/// What a command produced: one JSON object, and the same as rows of a table.
#[derive(Debug)]
pub struct Output {
    /// The machine-readable result (the contract of design.md section 6).
    pub json: Value,
    /// Label and value rows for people.
    pub table: Vec<(String, String)>,
}

impl Output {
    /// The table, labels padded to one width.
    pub fn render_table(&self) -> String {
        let width = self.table.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        self.table
            .iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

/// Runs one parsed command line.
pub fn run(cli: &Cli) -> Result<Output> {
    let reporter = Reporter::new(cli.quiet);
    match &cli.command {
        Command::Account(args) => account(args),
        Command::Audit(args) => {
            args.check()?;
            audit::run(args, &reporter)
        }
        Command::Calibrate(args) => calibrate(args),
        Command::Train(args) => train::run(args, &reporter),
        Command::Federate(args) => federate::run(args, &reporter),
        Command::Fl(command) => fl::run(command, &reporter),
        Command::MpcInfer(args) => mpc::run(args),
        Command::Evaluate(args) => evaluate::evaluate(args),
        Command::Predict(args) => evaluate::predict_command(args),
        Command::Bench(args) => train::bench(args),
        Command::Report(args) => match &args.run_dir {
            Some(dir) => train::report(dir),
            None => train::compare(&args.compare, args.out.as_deref()),
        },
        Command::Sweep(args) => train::sweep(args, &reporter),
        Command::Plan(args) => plan::run(args),
        Command::Model(ModelCommand::Show(args)) => {
            model_show(args).map_err(|e| crate::config::in_config_file(&args.config, e))
        }
    }
}

/// `dptrain model show`: builds the config's model on its data and lists its layers.
fn model_show(args: &ModelShowArgs) -> Result<Output> {
    let config = crate::config::RunConfig::load(&args.config, &args.set)?;
    let splits = config.data.load()?;
    let model = crate::model::Model::for_data(&config.model, &splits.train, 0)?;
    model.check_activations(config.training.max_physical_batch.min(splits.train.len()))?;
    Ok(Output {
        json: json!({
            "input": model.input.shape,
            "trainable_parameters": model.parameter_count(),
            "layers": model.table(),
        }),
        table: model.table_pairs(),
    })
}

impl From<ConversionKind> for Conversion {
    fn from(kind: ConversionKind) -> Self {
        match kind {
            ConversionKind::Improved => Conversion::Improved,
            ConversionKind::Classic => Conversion::Classic,
        }
    }
}

impl StepArgs {
    fn any(&self) -> bool {
        self.sample_rate.is_some()
            || self.steps.is_some()
            || self.epochs.is_some()
            || self.dataset_size.is_some()
            || self.batch_size.is_some()
    }

    /// (sample_rate, steps) from either form; errors say which flags are missing.
    fn resolve(&self) -> Result<(f64, u64)> {
        let by_epochs =
            self.epochs.is_some() || self.dataset_size.is_some() || self.batch_size.is_some();
        let direct = self.sample_rate.is_some() || self.steps.is_some();
        match (direct, by_epochs) {
            (true, true) => Err(Error::Usage(
                "give either --sample-rate and --steps, or --epochs, --dataset-size and \
                 --batch-size, not both"
                    .into(),
            )),
            (true, false) => match (self.sample_rate, self.steps) {
                (Some(q), Some(steps)) => Ok((q, steps)),
                (None, _) => Err(Error::Usage("--steps needs --sample-rate".into())),
                (_, None) => Err(Error::Usage("--sample-rate needs --steps".into())),
            },
            (false, true) => match (self.epochs, self.dataset_size, self.batch_size) {
                (Some(e), Some(n), Some(b)) => epochs_to_steps(e, n, b),
                _ => Err(Error::Usage(
                    "--epochs, --dataset-size and --batch-size go together; give all three".into(),
                )),
            },
            (false, false) => Err(Error::Usage(
                "give --sample-rate and --steps, or --epochs, --dataset-size and --batch-size"
                    .into(),
            )),
        }
    }
}

fn account(args: &AccountArgs) -> Result<Output> {
    if let Some(config) = &args.config {
        if args.step.any()
            || args.noise_multiplier.is_some()
            || args.events.is_some()
            || args.delta.is_some()
            || args.epsilon.is_some()
        {
            return Err(Error::Usage(
                "CONFIG gives the steps, the noise and δ; drop the other flags (or use --set)"
                    .into(),
            ));
        }
        let mut set = args.set.clone();
        if let Some(kind) = args.accountant {
            let kind: crate::privacy::AccountantKind = kind.into();
            set.push(format!("privacy.accountant=\"{}\"", kind.name()));
        }
        return train::plan(config, &set);
    }
    let ledger = match &args.events {
        Some(path) => {
            if args.step.any() || args.noise_multiplier.is_some() {
                return Err(Error::Usage(
                    "--events takes the steps from the file; drop --sample-rate, --steps, \
                     --epochs, --dataset-size, --batch-size and --noise-multiplier"
                        .into(),
                ));
            }
            let bytes = std::fs::read(path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            if crate::privacy::distributed::DistributedLedger::is_one(&bytes) {
                return account_distributed(args, path, &bytes);
            }
            Ledger::parse_csv(&bytes, path)?
        }
        None => {
            let (sample_rate, steps) = args.step.resolve()?;
            let noise_multiplier = args.noise_multiplier.ok_or_else(|| {
                Error::Usage("--noise-multiplier is required (or give --events FILE.csv)".into())
            })?;
            let mut ledger = Ledger::new();
            ledger.push(PrivacyEvent::new(sample_rate, noise_multiplier, steps)?);
            ledger
        }
    };
    account_ledger(
        &ledger,
        args.delta,
        args.epsilon,
        args.accountant.unwrap_or(AccountantKind::Rdp),
        &args.grid,
        args.conversion,
    )
}

/// `dptrain account` of a ledger in memory, the entry of the Python package: ε at `delta`,
/// or δ at `epsilon` (one of the two), under `kind`, with the command line's JSON, table and
/// error messages.
pub fn account_ledger(
    ledger: &Ledger,
    delta: Option<f64>,
    epsilon: Option<f64>,
    kind: AccountantKind,
    grid: &GridArgs,
    conversion: ConversionKind,
) -> Result<Output> {
    if kind != AccountantKind::Rdp {
        return account_on_grid(grid, delta, epsilon, kind, ledger);
    }
    let mut accountant =
        RdpAccountant::from_ledger(ledger, Orders::dp_accounting_default(), conversion.into())?;
    let mut table = ledger_rows(ledger);
    match (delta, epsilon) {
        (Some(delta), _) => {
            let spent = accountant.epsilon(delta)?;
            table.extend([
                ("epsilon".into(), format!("{:.6}", spent.epsilon)),
                ("delta".into(), format!("{delta:e}")),
                ("accountant".into(), accountant_label(conversion)),
                ("best order".into(), format!("{}", spent.order)),
            ]);
            Ok(Output {
                json: json!({
                    "epsilon": spent.epsilon,
                    "delta": spent.delta,
                    "accountant": "rdp",
                    "order": spent.order,
                    "steps": spent.steps,
                }),
                table,
            })
        }
        (None, Some(epsilon)) => {
            if let ConversionKind::Classic = conversion {
                return Err(Error::Usage(
                    "--epsilon (δ at a given ε) uses the improved conversion only".into(),
                ));
            }
            let orders = accountant.orders().clone();
            let best = delta_from_rdp(orders.values(), &accountant.rdp()?, epsilon)?;
            table.extend([
                ("epsilon".into(), format!("{epsilon}")),
                ("delta".into(), format!("{:e}", best.delta)),
                ("accountant".into(), accountant_label(conversion)),
                ("best order".into(), format!("{}", best.order)),
            ]);
            Ok(Output {
                json: json!({
                    "epsilon": epsilon,
                    "delta": best.delta,
                    "accountant": "rdp",
                    "order": best.order,
                    "steps": ledger.steps(),
                }),
                table,
            })
        }
        (None, None) => Err(Error::Usage(
            "give --delta D (ε at that δ) or --epsilon E (δ at that ε)".into(),
        )),
    }
}

fn calibrate(args: &CalibrateArgs) -> Result<Output> {
    let (sample_rate, steps) = args.step.resolve()?;
    calibrate_steps(
        args.target_epsilon,
        args.delta,
        sample_rate,
        steps,
        args.accountant,
        &args.grid,
        args.conversion,
    )
}

/// `dptrain calibrate` for `steps` steps at `sample_rate`, the entry of the Python package:
/// the smallest noise multiplier whose ε at `delta` stays within `target_epsilon`, with the
/// command line's JSON, table and error messages.
pub fn calibrate_steps(
    target_epsilon: f64,
    delta: f64,
    sample_rate: f64,
    steps: u64,
    kind: AccountantKind,
    grid: &GridArgs,
    conversion: ConversionKind,
) -> Result<Output> {
    if kind != AccountantKind::Rdp {
        let settings = grid.settings(kind);
        settings.validate()?;
        let c =
            calibrate_noise_multiplier_with(settings, target_epsilon, delta, sample_rate, steps)?;
        let mut json = json!({
            "noise_multiplier": c.noise_multiplier,
            "epsilon": c.epsilon,
            "delta": c.delta,
            "accountant": settings.kind.name(),
        });
        if kind == AccountantKind::Pld {
            json["discretization_interval"] = json!(settings.discretization_interval);
        } else {
            json["eps_error"] = json!(settings.eps_error);
            json["delta_error"] = json!(settings.delta_error);
        }
        return Ok(Output {
            json,
            table: vec![
                (
                    "noise multiplier".into(),
                    format!("{:.6}", c.noise_multiplier),
                ),
                (
                    "epsilon".into(),
                    format!("{:.6} (target {})", c.epsilon, target_epsilon),
                ),
                ("delta".into(), format!("{:e}", c.delta)),
                ("sample rate".into(), format!("{sample_rate}")),
                ("steps".into(), format!("{steps}")),
                ("accountant".into(), settings.describe()),
            ],
        });
    }
    let template = RdpAccountant::new(Orders::dp_accounting_default(), conversion.into());
    let c = calibrate_noise_multiplier(target_epsilon, delta, sample_rate, steps, &template)?;
    let table = vec![
        (
            "noise multiplier".into(),
            format!("{:.6}", c.noise_multiplier),
        ),
        (
            "epsilon".into(),
            format!("{:.6} (target {})", c.epsilon, target_epsilon),
        ),
        ("delta".into(), format!("{:e}", c.delta)),
        ("sample rate".into(), format!("{sample_rate}")),
        ("steps".into(), format!("{steps}")),
        ("accountant".into(), accountant_label(conversion)),
    ];
    Ok(Output {
        json: json!({
            "noise_multiplier": c.noise_multiplier,
            "epsilon": c.epsilon,
            "delta": c.delta,
        }),
        table,
    })
}

/// `account` under PLD or PRV: ε at δ (with the interval or the bounds), or δ at ε (PLD).
fn account_on_grid(
    grid: &GridArgs,
    delta: Option<f64>,
    epsilon: Option<f64>,
    kind: AccountantKind,
    ledger: &Ledger,
) -> Result<Output> {
    let settings = grid.settings(kind);
    settings.validate()?;
    let mut table = ledger_rows(ledger);
    table.push(("accountant".into(), settings.describe()));
    match (kind, delta, epsilon) {
        (AccountantKind::Pld, Some(delta), _) => {
            let spent =
                crate::privacy::pld::pld_epsilon(ledger, delta, settings.discretization_interval)?;
            table.extend([
                ("epsilon".into(), format!("{:.6}", spent.epsilon)),
                ("delta".into(), format!("{delta:e}")),
                (
                    "by direction".into(),
                    format!(
                        "remove {:.6}, add {:.6}",
                        spent.epsilon_remove, spent.epsilon_add
                    ),
                ),
            ]);
            Ok(Output {
                json: json!({
                    "epsilon": spent.epsilon,
                    "delta": spent.delta,
                    "accountant": "pld",
                    "discretization_interval": spent.discretization_interval,
                    "epsilon_remove": spent.epsilon_remove,
                    "epsilon_add": spent.epsilon_add,
                    "steps": spent.steps,
                }),
                table,
            })
        }
        (AccountantKind::Pld, None, Some(epsilon)) => {
            // The RDP path's check and wording (`delta_from_rdp`): δ at ε = 0 is a question.
            if !(epsilon >= 0.0 && epsilon.is_finite()) {
                return Err(Error::invalid(
                    "epsilon",
                    epsilon,
                    "a finite number at least 0",
                ));
            }
            let pld = crate::privacy::pld::ledger_pld(ledger, settings.discretization_interval)?;
            let delta = pld.delta(epsilon);
            table.extend([
                ("epsilon".into(), format!("{epsilon}")),
                ("delta".into(), format!("{delta:e}")),
            ]);
            Ok(Output {
                json: json!({
                    "epsilon": epsilon,
                    "delta": delta,
                    "accountant": "pld",
                    "discretization_interval": settings.discretization_interval,
                    "steps": ledger.steps(),
                }),
                table,
            })
        }
        (AccountantKind::Prv, Some(delta), _) => {
            let spent = crate::privacy::prv::prv_epsilon(
                ledger,
                delta,
                settings.eps_error,
                settings.delta_error,
            )?;
            table.extend([
                (
                    "epsilon (upper bound)".into(),
                    format!("{:.6}", spent.eps_upper),
                ),
                ("estimate".into(), format!("{:.6}", spent.eps_estimate)),
                ("lower bound".into(), format!("{:.6}", spent.eps_low)),
                ("delta".into(), format!("{delta:e}")),
            ]);
            Ok(Output {
                json: json!({
                    "epsilon": spent.epsilon,
                    "delta": spent.delta,
                    "accountant": "prv",
                    "eps_low": spent.eps_low,
                    "eps_estimate": spent.eps_estimate,
                    "eps_upper": spent.eps_upper,
                    "eps_error": spent.eps_error,
                    "delta_error": spent.delta_error,
                    "steps": spent.steps,
                }),
                table,
            })
        }
        (AccountantKind::Prv, None, Some(_)) => Err(Error::Usage(
            "--epsilon (δ at a given ε) works with --accountant rdp or pld".into(),
        )),
        (_, None, None) => Err(Error::Usage(
            "give --delta D (ε at that δ) or --epsilon E (δ at that ε)".into(),
        )),
        (AccountantKind::Rdp, ..) => unreachable!("handled by account"),
    }
}

fn ledger_rows(ledger: &Ledger) -> Vec<(String, String)> {
    match ledger.events() {
        [one] => vec![
            ("sample rate".into(), format!("{}", one.sample_rate)),
            (
                "noise multiplier".into(),
                format!("{}", one.noise_multiplier),
            ),
            ("steps".into(), format!("{}", one.steps)),
        ],
        events => vec![
            ("blocks".into(), format!("{}", events.len())),
            ("steps".into(), format!("{}", ledger.steps())),
        ],
    }
}

fn accountant_label(conversion: ConversionKind) -> String {
    match conversion {
        ConversionKind::Improved => "RDP (dp_accounting orders, Balle et al. 2020 conversion)",
        ConversionKind::Classic => "RDP (dp_accounting orders, Mironov 2017 conversion)",
    }
    .into()
}
