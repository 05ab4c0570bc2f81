//! Client-level DP-FedAvg on MNIST split by label (issue 14's utility setting): 3,383
//! clients holding about 2 classes each, 120 expected clients per round (Poisson), noise
//! multiplier z = 1.2, 100 rounds, δ = 1e-5 (ε ≈ 1.99 by RDP, the TensorFlow Federated
//! tutorial's setting). Prints accuracy and ε every 10 rounds.
//!
//!   cargo run --release --example federated_mnist -- [model] [rounds] [clip] [client_lr]
//!
//! `model` is logreg, mlp or cnn (default mlp). Not run in CI (about a minute or more).

use std::path::Path;

use dptrain::data::{MnistConfig, load_mnist};
use dptrain::federated::{
    ClientLevelConfig, ClientSampling, InProcess, LocalTraining, Partition, PartitionConfig,
    run_client_level,
};
use dptrain::model::{Model, ModelConfig, ModelKind};
use dptrain::train::{OptimizerConfig, ServerOptimizerConfig};

fn main() -> dptrain::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kind = match args.first().map(String::as_str) {
        Some("logreg") => ModelKind::Logreg,
        Some("cnn") => ModelKind::Cnn,
        _ => ModelKind::Mlp,
    };
    let number =
        |i: usize, default: f64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (rounds, clip, client_lr) = (number(1, 100.0) as u64, number(2, 0.5), number(3, 0.05));
    let mnist = load_mnist(&MnistConfig {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist"),
        ..MnistConfig::default()
    })?;
    let (train, test) = (&mnist.train, &mnist.test);
    let by_label = PartitionConfig::ByLabel {
        clients: 3383,
        classes_per_client: 2,
    };
    let partition = Partition::new(&by_label, &train.labels, None, 0)?;
    let model = |seed| Model::for_data(&ModelConfig::preset(kind), train, seed);
    let global = model(1)?;
    let mut clients = InProcess {
        modules: vec![model(1)?],
        data: train,
        partition: &partition,
        local: LocalTraining {
            epochs: 1,
            batch_size: 10,
            optimizer: OptimizerConfig::Sgd {
                learning_rate: client_lr,
                momentum: 0.0,
            },
        },
        seed: 3,
    };
    let config = ClientLevelConfig {
        rounds,
        sampling: ClientSampling::Poisson {
            expected_clients: 120,
        },
        clip_norm: clip,
        noise_multiplier: Some(1.2),
        target_epsilon: None,
        delta: 1e-5,
        accountant: None,
        server_optimizer: ServerOptimizerConfig::FedAvgM {
            learning_rate: 1.0,
            momentum: 0.9,
        },
        adaptive_clipping: None,
        private: true,
        aggregation: Default::default(),
        secagg: None,
        he: None,
        secure_noise: false,
    };
    let start = std::time::Instant::now();
    let record = run_client_level(&global, &mut clients, partition.len(), test, &config, 0)?;
    for r in record
        .rounds
        .iter()
        .filter(|r| r.round % 10 == 0 || r.round == 1)
    {
        println!(
            "round {:>3}: {:>3} clients, test accuracy {:.2}%, ε {:.3}",
            r.round,
            r.survivors,
            100.0 * r.test_accuracy,
            r.epsilon
        );
    }
    println!(
        "{kind:?}, clip {clip}, client lr {client_lr}: test accuracy {:.2}% at ε = {:.4} (δ 1e-5, z 1.2), {:.1} s, {:.2} rounds/s",
        100.0 * record.rounds.last().map_or(0.0, |r| r.test_accuracy),
        record.spent.epsilon,
        start.elapsed().as_secs_f64(),
        record.rounds.len() as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
