//! Client-level DP-FedAvg rounds (issue 14): the server's aggregate against a hand-computed
//! FedAvg of the clipped updates plus the noise drawn, the clip, the noise scale, dropouts.

use candle_core::Var;
use dptrain::data::Dataset;
use dptrain::federated::{
    ClientReply, InProcess, LocalTraining, Partition, PartitionConfig, RoundRequest, Server,
    Transport,
};
use dptrain::model::{Model, ModelConfig, ModelKind, Precision};
use dptrain::train::{
    GaussianPrivatizer, OptimizerConfig, Privatizer, ServerOptimizerConfig, Sums, Update,
};

/// An MNIST-shaped data set of pseudo-random images whose label is planted in the pixels.
fn data(n: usize) -> Dataset {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let labels: Vec<u32> = (0..n).map(|i| (i % 10) as u32).collect();
    let features = labels
        .iter()
        .flat_map(|&l| (0..784).map(move |p| (p % 10 == l as usize) as u8 as f32))
        .zip(std::iter::repeat_with(&mut next))
        .map(|(signal, noise)| signal + 0.5 * noise)
        .collect();
    Dataset {
        features,
        labels,
        feature_shape: vec![1, 28, 28],
        classes: 10,
        vocab: None,
    }
}

fn logreg() -> Model {
    let config = ModelConfig {
        dtype: Some(Precision::F64),
        ..ModelConfig::preset(ModelKind::Logreg)
    };
    Model::new(&config, &[1, 28, 28], 10, 11).unwrap()
}

fn flat(sums: &Sums) -> Vec<f64> {
    sums.to_f64().concat()
}

fn values(params: &[Var]) -> Vec<f64> {
    flat(&dptrain::federated::round::read_params(params).unwrap())
}

fn local() -> LocalTraining {
    LocalTraining {
        epochs: 2,
        batch_size: 8,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.0,
        },
    }
}

#[test]
fn the_servers_aggregate_is_fedavg_of_the_clipped_updates_plus_the_noise_drawn() {
    let train = data(240);
    let partition =
        Partition::new(&PartitionConfig::Iid { clients: 8 }, &train.labels, None, 3).unwrap();
    let (clip, z, expected_clients, seed) = (0.05, 1.1, 3.0, 99);
    let server_model = logreg();
    let params = server_model.parameters();
    let privatizer = GaussianPrivatizer::new(z, clip, seed).unwrap();
    let fedavg = ServerOptimizerConfig::FedAvgM {
        learning_rate: 1.0,
        momentum: 0.0,
    };
    let update = Update::new(expected_clients, fedavg.build(&params).unwrap()).unwrap();
    let mut server =
        Server::new(params.clone(), clip, Box::new(privatizer.clone()), update).unwrap();
    let mut clients = InProcess {
        modules: vec![logreg()],
        data: &train,
        partition: &partition,
        local: local(),
        seed: 5,
    };
    let sampled = [0usize, 2, 3, 6];
    let before = values(&params);
    // The clients' replies for this very request (the client side, computed alone).
    let request = RoundRequest {
        round: 1,
        params: dptrain::federated::round::read_params(&params).unwrap(),
        clip_norm: clip,
    };
    let replies: Vec<Vec<f64>> = clients
        .exchange(&request, &sampled)
        .into_iter()
        .map(|(_, reply)| flat(&reply.unwrap().update))
        .collect();
    for reply in &replies {
        let norm = reply.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(
            norm <= clip * (1.0 + 1e-6),
            "an update of norm {norm} > C = {clip}"
        );
    }
    // At this C every local update is clipped: the test exercises the clip.
    assert!(
        replies
            .iter()
            .all(|r| r.iter().map(|v| v * v).sum::<f64>().sqrt() > 0.99 * clip)
    );
    let outcome = server.run_round(&mut clients, &sampled).unwrap();
    assert_eq!((outcome.sampled, outcome.survivors), (4, 4));
    // The noise drawn: the same stream onto zeros.
    let mut noise = Sums::zeros(&request.params.sizes(), request.params.dtype()).unwrap();
    privatizer.clone().privatize(&mut noise, None).unwrap();
    let noise = flat(&noise);
    let after = values(&params);
    for i in 0..before.len() {
        let sum: f64 = replies.iter().map(|r| r[i]).sum();
        // θ ← θ + (Σ Δ_k − Z)/(qN) (the noise enters the negated sum: −(−ΣΔ + Z)).
        let expected = before[i] + (sum - noise[i]) / expected_clients;
        assert!(
            (after[i] - expected).abs() < 1e-12,
            "coordinate {i}: {} vs {expected}",
            after[i]
        );
    }
}

/// A transport whose clients all answer zero, or fail, or answer NaN.
struct Scripted {
    fail: Vec<usize>,
    nan: Vec<usize>,
}

impl Transport for Scripted {
    fn exchange(
        &mut self,
        request: &RoundRequest,
        clients: &[usize],
    ) -> Vec<(usize, dptrain::Result<ClientReply>)> {
        clients
            .iter()
            .map(|&c| match self.fail.contains(&c) {
                true => (
                    c,
                    Err(dptrain::Error::Usage(format!("client {c} timed out"))),
                ),
                false => {
                    let mut update =
                        Sums::zeros(&request.params.sizes(), request.params.dtype()).unwrap();
                    if self.nan.contains(&c)
                        && let Sums::F64(values) = &mut update
                    {
                        values[0][0] = f64::NAN;
                    }
                    (
                        c,
                        Ok(ClientReply {
                            update,
                            within_clip: true,
                        }),
                    )
                }
            })
            .collect()
    }
}

#[test]
fn an_all_zero_round_moves_the_model_by_noise_of_std_zc_over_qn() {
    let model = logreg();
    let params = model.parameters();
    let (clip, z, expected_clients) = (2.0, 1.5, 40.0);
    let sgd = ServerOptimizerConfig::FedAvgM {
        learning_rate: 1.0,
        momentum: 0.0,
    };
    let mut server = Server::new(
        params.clone(),
        clip,
        Box::new(GaussianPrivatizer::new(z, clip, 1).unwrap()),
        Update::new(expected_clients, sgd.build(&params).unwrap()).unwrap(),
    )
    .unwrap();
    let before = values(&params);
    let mut transport = Scripted {
        fail: vec![3, 7],
        nan: vec![9],
    };
    let outcome = server.run_round(&mut transport, &[1, 3, 5, 7, 9]).unwrap();
    // The failed clients and the one that sent NaN are dropped; the round completes.
    assert_eq!(outcome.survivors, 2);
    assert_eq!(
        outcome.dropped.iter().map(|d| d.0).collect::<Vec<_>>(),
        [3, 7, 9]
    );
    let deltas: Vec<f64> = values(&params)
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    let n = deltas.len() as f64;
    let var = deltas.iter().map(|d| d * d).sum::<f64>() / n;
    let expected = z * clip / expected_clients;
    // Variance of n normals: N(s², 2s⁴/n); |z| < 4.9 is a 1e-6 false-failure bound.
    let score = (var - expected * expected) / (expected * expected * (2.0 / n).sqrt());
    assert!(score.abs() < 4.9, "std {} vs {expected}", var.sqrt());
    assert_eq!(server.round(), 1);
}

/// Silo-level DP: each silo's ledger is its own DP-SGD steps at its rate q, the run's
/// guarantee is the worst silo's ε, and the server's step is the mean of the silos' updates
/// weighted by their sizes.
#[test]
fn silos_account_their_own_steps_and_the_server_averages_their_updates() {
    use dptrain::federated::{SiloTraining, Silos, worst_epsilon};
    use dptrain::mechanism::ClippingConfig;
    use dptrain::privacy::{AccountantSettings, PrivacyEvent};
    let train = data(300);
    // Three silos of 50, 100 and 150 examples (a column's values).
    let keys: Vec<String> = (0..300)
        .map(|i| match i % 6 {
            0 => "north",
            1 | 2 => "south",
            _ => "west",
        })
        .map(String::from)
        .collect();
    let column = PartitionConfig::ByColumn {
        column: "region".into(),
    };
    let partition = Partition::new(&column, &train.labels, Some(&keys), 0).unwrap();
    let sizes: Vec<usize> = partition.clients.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 100, 150]);
    let training = SiloTraining {
        local_steps: 4,
        sample_rate: 0.1,
        noise_multiplier: 1.0,
        clipping: ClippingConfig::default(),
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.2,
            momentum: 0.0,
        },
    };
    let server_model = logreg();
    let params = server_model.parameters();
    let fedavg = ServerOptimizerConfig::FedAvgM {
        learning_rate: 1.0,
        momentum: 0.0,
    };
    let weights: Vec<f64> = sizes.iter().map(|&n| n as f64).collect();
    let mut server = Server::averaging(params.clone(), weights.clone(), &fedavg).unwrap();
    let mut silos = Silos::new(logreg(), &train, &partition, training, 21).unwrap();
    // A twin of the silos computes the replies of round 1 on its own.
    let mut twin = Silos::new(logreg(), &train, &partition, training, 21).unwrap();
    let request = RoundRequest {
        round: 1,
        params: dptrain::federated::round::read_params(&params).unwrap(),
        clip_norm: f64::INFINITY,
    };
    let replies: Vec<Vec<f64>> = twin
        .exchange(&request, &[0, 1, 2])
        .into_iter()
        .map(|(_, r)| flat(&r.unwrap().update))
        .collect();
    let before = values(&params);
    server.run_round(&mut silos, &[0, 1, 2]).unwrap();
    let after = values(&params);
    for i in 0..before.len() {
        let mean = replies
            .iter()
            .zip(&weights)
            .map(|(r, w)| w * r[i])
            .sum::<f64>()
            / 300.0;
        assert!(
            (after[i] - (before[i] + mean)).abs() < 1e-12,
            "coordinate {i}"
        );
    }
    server.run_round(&mut silos, &[0, 1, 2]).unwrap();
    // Each silo's ledger: 2 rounds × 4 steps at q = 0.1.
    for state in &silos.states {
        assert_eq!(
            state.ledger.events(),
            &[PrivacyEvent::new(0.1, 1.0, 8).unwrap()]
        );
    }
    // A silo that took an extra round has spent more; the run's guarantee is the worst.
    silos.exchange(&request, &[2]);
    let epsilons = silos.epsilons(AccountantSettings::rdp(), 1e-5).unwrap();
    assert_eq!(epsilons[0], epsilons[1]);
    assert!(epsilons[2].epsilon > epsilons[0].epsilon);
    assert_eq!(worst_epsilon(&epsilons).unwrap(), epsilons[2]);
    // A rate giving the smallest silo less than one expected example is refused, naming
    // the key.
    let too_small = SiloTraining {
        sample_rate: 0.01,
        ..training
    };
    let err = Silos::new(logreg(), &train, &partition, too_small, 0)
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("federated.silo_level.sample_rate"),
        "{err}"
    );
}

/// A whole client-level run: z calibrated to the target, every round accounted before it
/// runs, the final ε that of the ledger (recomputed bit for bit), the model learning.
#[test]
fn a_client_level_run_calibrates_accounts_every_round_and_learns() {
    use dptrain::federated::{ClientLevelConfig, ClientSampling, run_client_level};
    use dptrain::privacy::{Accountant, Ledger};
    let train = data(2000);
    let test = data(500);
    let by_label = PartitionConfig::ByLabel {
        clients: 200,
        classes_per_client: 2,
    };
    let partition = Partition::new(&by_label, &train.labels, None, 1).unwrap();
    let config = ClientLevelConfig {
        rounds: 30,
        sampling: ClientSampling::Poisson {
            expected_clients: 50,
        },
        clip_norm: 0.5,
        noise_multiplier: None,
        target_epsilon: Some(4.0),
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
    let global = logreg();
    let (_, accuracy_before) = dptrain::train::evaluate(&global, &test).unwrap();
    let mut clients = InProcess {
        modules: vec![logreg()],
        data: &train,
        partition: &partition,
        local: LocalTraining {
            epochs: 1,
            batch_size: 5,
            optimizer: OptimizerConfig::Sgd {
                learning_rate: 0.1,
                momentum: 0.0,
            },
        },
        seed: 2,
    };
    let record = run_client_level(&global, &mut clients, 200, &test, &config, 7).unwrap();
    assert_eq!(record.rounds.len(), 30);
    assert!(record.stopped_early.is_none());
    assert!(
        record.spent.epsilon <= 4.0 && record.spent.epsilon > 3.99,
        "{:?}",
        record.spent
    );
    // The ledger: 30 rounds at q = 50/200 and the calibrated z, and its ε bit for bit.
    assert_eq!(record.ledger.steps(), 30);
    assert_eq!(record.ledger.events()[0].sample_rate, 0.25);
    let text = record.ledger.to_csv();
    let back = Ledger::parse_csv(text.as_bytes(), std::path::Path::new("ledger.csv")).unwrap();
    let again = Accountant::from_ledger(config.accountant(), &back)
        .unwrap()
        .epsilon(1e-5)
        .unwrap();
    assert_eq!(again.epsilon.to_bits(), record.spent.epsilon.to_bits());
    // Rounds' ε grows to the final one; participation near q on average.
    assert!(
        record
            .rounds
            .windows(2)
            .all(|w| w[1].epsilon > w[0].epsilon)
    );
    let mean_sampled = record.rounds.iter().map(|r| r.sampled).sum::<usize>() as f64 / 30.0;
    assert!((35.0..65.0).contains(&mean_sampled), "{mean_sampled}");
    let last = record.rounds.last().unwrap();
    assert!(
        last.test_accuracy > accuracy_before + 0.3,
        "accuracy {accuracy_before} → {}",
        last.test_accuracy
    );
}

fn dptrain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// `dptrain federate` writes its run directory, and the summary's ε is that of its own
/// ledger.csv by `dptrain account --events`, bit for bit (issue 14's accounting line).
#[test]
fn federate_writes_a_run_directory_whose_epsilon_is_its_ledgers() {
    let out = std::env::temp_dir().join(format!("dptrain-federate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "federate",
        "configs/federated-mnist.toml",
        "--set",
        "federated.client_level.rounds=2",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let ledger = out.join("ledger.csv");
    let account = dptrain(&[
        "account",
        "--events",
        ledger.to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    let accounted: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    assert_eq!(
        summary["epsilon"].as_f64().unwrap().to_bits(),
        accounted["epsilon"].as_f64().unwrap().to_bits()
    );
    assert_eq!(summary["rounds"], 2);
    assert_eq!(summary["unit_of_privacy"], "one client's whole data");
    let statement = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    assert!(
        statement.contains("adding or removing one client"),
        "{statement}"
    );
    let manifest = std::fs::read_to_string(out.join("clients.csv")).unwrap();
    assert_eq!(manifest.lines().count(), 1 + 3383);
    // The model, named by layer path, as `train` writes it.
    let tensors =
        candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(
        tensors.contains_key("1.linear.weight"),
        "{:?}",
        tensors.keys()
    );
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.csv"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    // `dptrain report` redraws the plots from metrics.csv and rebuilds the page: the same
    // bytes as the run wrote.
    let drawn: Vec<Vec<u8>> = ["accuracy.svg", "epsilon.svg", "report.html"]
        .iter()
        .map(|f| std::fs::read(out.join(f)).unwrap())
        .collect();
    for file in ["accuracy.svg", "accuracy.png", "epsilon.svg", "epsilon.png"] {
        std::fs::remove_file(out.join(file)).unwrap();
    }
    let report = dptrain(&["report", out.to_str().unwrap(), "--json"]);
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let written: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(written["written"].as_array().unwrap().len(), 5, "{written}");
    for (file, before) in ["accuracy.svg", "epsilon.svg", "report.html"]
        .iter()
        .zip(&drawn)
    {
        assert!(&std::fs::read(out.join(file)).unwrap() == before, "{file}");
    }
    assert!(out.join("accuracy.png").exists() && out.join("epsilon.png").exists());
    // A damaged metrics.csv is named, with its line.
    let metrics = out.join("metrics.csv");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let (header, rows) = text.split_once('\n').unwrap();
    let (_round, rest) = rows.split_once(',').unwrap();
    std::fs::write(&metrics, format!("{header}\ntwo,{rest}")).unwrap();
    let report = dptrain(&["report", out.to_str().unwrap()]);
    assert!(!report.status.success());
    let error = String::from_utf8_lossy(&report.stderr);
    assert!(error.contains("metrics.csv:line 2:"), "{error}");
    // A finished run is not overwritten.
    let again = dptrain(&[
        "federate",
        "configs/federated-mnist.toml",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    std::fs::remove_dir_all(&out).unwrap();
}

/// Bad federated configs: a clear error naming the key, nothing run.
#[test]
fn bad_federated_configs_are_refused_naming_the_key() {
    let cases = [
        (
            "federated.client_level.sampling={ kind = \"poisson\", expected_clients = 0 }",
            "federated.sampling.expected_clients",
        ),
        (
            "federated.client_level.sampling={ kind = \"poisson\", expected_clients = 4000 }",
            "a whole number from 1 to the number of clients (3383)",
        ),
        (
            "federated.partition={ kind = \"dirichlet\", clients = 3383, alpha = 0.0001 }",
            "leaves no client empty",
        ),
        (
            "federated.partition={ kind = \"shards\", clients = 10 }",
            "unknown variant `shards`",
        ),
        (
            "federated.client_level.delta=2.0",
            "federated.client_level.delta",
        ),
        (
            "federated.silo_level={ rounds = 1, local_steps = 1, sample_rate = 0.1, \
             clip_norm = 1.0, noise_multiplier = 1.0, delta = 1e-5, optimizer = { name = \
             \"sgd\", learning_rate = 0.1 }, server_optimizer = { name = \"fed_avg_m\" } }",
            "federated.client_level / federated.silo_level",
        ),
        (
            "federated.client_level.private=false",
            "federated.client_level.private",
        ),
        (
            "federated.client_level.adaptive_clipping={ target_quantile = 1.5 }",
            "federated.client_level.adaptive_clipping.target_quantile",
        ),
    ];
    for (set, expected) in cases {
        let out = std::env::temp_dir().join(format!("dptrain-federate-bad-{}", std::process::id()));
        let run = dptrain(&[
            "federate",
            "configs/federated-mnist.toml",
            "--set",
            set,
            "--out",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{set} succeeded");
        assert!(!stderr.contains("panicked"), "{set}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{set}: `{stderr}` lacks `{expected}`"
        );
        assert!(!out.exists(), "{set}: a failed run left {}", out.display());
    }
}

fn without_seconds(rounds: &[dptrain::federated::RoundRecord]) -> Vec<String> {
    rounds
        .iter()
        .map(|r| {
            let mut r = *r;
            r.seconds = 0.0;
            r.csv_row()
        })
        .collect()
}

/// A client-level run with adaptive clipping and FedAdam, stopped after round 3, saved,
/// loaded and resumed by fresh objects, ends as the uninterrupted run bit for bit: the
/// model, every metrics row, C, the ledger and ε.
#[test]
fn a_client_level_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run() {
    use dptrain::federated::{
        ClientLevelConfig, ClientLevelRun, ClientSampling, FederatedCheckpoint, FederatedRun,
    };
    use dptrain::mechanism::AdaptiveClippingConfig;
    let train = data(600);
    let test = data(100);
    let by_label = PartitionConfig::ByLabel {
        clients: 60,
        classes_per_client: 2,
    };
    let partition = Partition::new(&by_label, &train.labels, None, 1).unwrap();
    let config = ClientLevelConfig {
        rounds: 7,
        sampling: ClientSampling::Poisson {
            expected_clients: 15,
        },
        clip_norm: 0.3,
        noise_multiplier: Some(0.8),
        target_epsilon: None,
        delta: 1e-5,
        accountant: None,
        server_optimizer: ServerOptimizerConfig::FedAdam {
            learning_rate: 0.05,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        },
        adaptive_clipping: Some(AdaptiveClippingConfig::default()),
        private: true,
        aggregation: Default::default(),
        secagg: None,
        he: None,
        secure_noise: false,
    };
    let clients = || InProcess {
        modules: vec![logreg()],
        data: &train,
        partition: &partition,
        local: local(),
        seed: 4,
    };
    let (global, mut transport) = (logreg(), clients());
    let mut whole = ClientLevelRun::new(&global, &mut transport, 60, &config, 9).unwrap();
    while whole.next_round(&test).unwrap().is_some() {}
    let whole_record = whole.finish().unwrap();
    let whole_params = values(&global.parameters());

    let dir = std::env::temp_dir().join(format!("dptrain-fed-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let (global, mut transport) = (logreg(), clients());
        let mut first = ClientLevelRun::new(&global, &mut transport, 60, &config, 9).unwrap();
        for _ in 0..3 {
            first.next_round(&test).unwrap().unwrap();
        }
        first
            .checkpoint("config".into())
            .unwrap()
            .save(&dir)
            .unwrap();
        // A fourth round that is never checkpointed: a kill in the middle of it.
        first.next_round(&test).unwrap().unwrap();
    }
    let checkpoint = FederatedCheckpoint::load(&dir).unwrap();
    assert_eq!(checkpoint.state.rounds.len(), 3);
    let (global, mut transport) = (logreg(), clients());
    let mut resumed = ClientLevelRun::new(&global, &mut transport, 60, &config, 9).unwrap();
    resumed.resume(&checkpoint).unwrap();
    while resumed.next_round(&test).unwrap().is_some() {}
    let resumed_record = resumed.finish().unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&values(&global.parameters())), bits(&whole_params));
    assert_eq!(
        without_seconds(&resumed_record.rounds),
        without_seconds(&whole_record.rounds)
    );
    assert_eq!(resumed_record.ledger.to_csv(), whole_record.ledger.to_csv());
    assert_eq!(
        resumed_record.spent.epsilon.to_bits(),
        whole_record.spent.epsilon.to_bits()
    );
    // Adaptive clipping moved C, and the rounds' C is part of what was resumed.
    assert!(whole_record.rounds.iter().any(|r| r.clip_norm != 0.3));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Adaptive clipping of the update norm (Andrew et al. 2021) moves C towards the median
/// update norm from far above and from far below, and each round is accounted as one
/// Poisson-sampled Gaussian at the total z (gradient and count together).
#[test]
fn adaptive_clipping_moves_c_towards_the_median_update_norm() {
    use dptrain::federated::{ClientLevelConfig, ClientSampling, run_client_level};
    use dptrain::mechanism::AdaptiveClippingConfig;
    use dptrain::privacy::PrivacyEvent;
    let train = data(600);
    let test = data(50);
    let partition = Partition::new(
        &PartitionConfig::Iid { clients: 60 },
        &train.labels,
        None,
        1,
    )
    .unwrap();
    let run = |clip_norm: f64| {
        let config = ClientLevelConfig {
            rounds: 25,
            sampling: ClientSampling::Poisson {
                expected_clients: 30,
            },
            clip_norm,
            noise_multiplier: Some(1.0),
            target_epsilon: None,
            delta: 1e-5,
            accountant: None,
            server_optimizer: ServerOptimizerConfig::FedAvgM {
                learning_rate: 1.0,
                momentum: 0.0,
            },
            adaptive_clipping: Some(AdaptiveClippingConfig {
                learning_rate: 0.5,
                ..AdaptiveClippingConfig::default()
            }),
            private: true,
            aggregation: Default::default(),
            secagg: None,
            he: None,
            secure_noise: false,
        };
        let global = logreg();
        let mut clients = InProcess {
            modules: vec![logreg()],
            data: &train,
            partition: &partition,
            local: local(),
            seed: 4,
        };
        run_client_level(&global, &mut clients, 60, &test, &config, 3).unwrap()
    };
    let from_above = run(1000.0);
    let from_below = run(1e-3);
    let clip = |r: &dptrain::federated::FederatedRecord, i: usize| r.rounds[i].clip_norm;
    // Geometric steps of at most e^{η/2} per round: 25 rounds move C by e^{±6} at most,
    // and each keeps moving the same way while far from the median.
    assert!(clip(&from_above, 24) < clip(&from_above, 0) / 50.0);
    assert!(clip(&from_below, 24) > clip(&from_below, 0) * 50.0);
    assert!(
        from_above
            .rounds
            .windows(2)
            .take(10)
            .all(|w| w[1].clip_norm < w[0].clip_norm)
    );
    assert_eq!(
        from_above.ledger.events(),
        &[PrivacyEvent::new(0.5, 1.0, 25).unwrap()]
    );
}

/// A silo-level run resumed from its checkpoint ends as the uninterrupted run, each silo's
/// ledger included.
#[test]
fn a_silo_level_run_resumed_from_its_checkpoint_ends_as_the_uninterrupted_run() {
    use dptrain::federated::{FederatedCheckpoint, FederatedRun, SiloLevelConfig, SiloLevelRun};
    let train = data(300);
    let test = data(60);
    let keys: Vec<String> = (0..300)
        .map(|i| ["a", "b", "b", "c", "c", "c"][i % 6].to_string())
        .collect();
    let column = PartitionConfig::ByColumn {
        column: "site".into(),
    };
    let partition = Partition::new(&column, &train.labels, Some(&keys), 0).unwrap();
    let config = SiloLevelConfig {
        rounds: 5,
        local_steps: 3,
        sample_rate: 0.1,
        clip_norm: 1.0,
        noise_multiplier: None,
        target_epsilon: Some(2.0),
        delta: 1e-5,
        accountant: None,
        optimizer: OptimizerConfig::Sgd {
            learning_rate: 0.5,
            momentum: 0.0,
        },
        server_optimizer: ServerOptimizerConfig::FedAvgM {
            learning_rate: 1.0,
            momentum: 0.5,
        },
    };
    let global = logreg();
    let mut whole = SiloLevelRun::new(&global, logreg(), &train, &partition, &config, 5).unwrap();
    while whole.next_round(&test).unwrap().is_some() {}
    let whole_record = whole.finish().unwrap();
    assert_eq!(whole_record.rounds.len(), 5);
    assert!(whole_record.spent.epsilon <= 2.0 && whole_record.spent.epsilon > 1.99);
    assert_eq!(whole_record.silo_epsilons.len(), 3);
    let whole_params = values(&global.parameters());

    let dir = std::env::temp_dir().join(format!("dptrain-silo-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let global = logreg();
        let mut first =
            SiloLevelRun::new(&global, logreg(), &train, &partition, &config, 5).unwrap();
        first.next_round(&test).unwrap().unwrap();
        first.next_round(&test).unwrap().unwrap();
        first
            .checkpoint("config".into())
            .unwrap()
            .save(&dir)
            .unwrap();
    }
    let checkpoint = FederatedCheckpoint::load(&dir).unwrap();
    let global = logreg();
    let mut resumed = SiloLevelRun::new(&global, logreg(), &train, &partition, &config, 5).unwrap();
    resumed.resume(&checkpoint).unwrap();
    while resumed.next_round(&test).unwrap().is_some() {}
    let resumed_record = resumed.finish().unwrap();
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&values(&global.parameters())), bits(&whole_params));
    assert_eq!(
        without_seconds(&resumed_record.rounds),
        without_seconds(&whole_record.rounds)
    );
    assert_eq!(resumed_record.ledger.to_csv(), whole_record.ledger.to_csv());
    assert_eq!(resumed_record.silo_epsilons, whole_record.silo_epsilons);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `dptrain federate` killed in the middle of a round resumes from its run directory and
/// ends with the model of the uninterrupted run, bit for bit.
#[test]
fn a_killed_federate_process_resumes_and_ends_as_the_uninterrupted_run() {
    use std::time::{Duration, Instant};
    let base = std::env::temp_dir().join(format!("dptrain-fed-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let (killed, whole) = (base.join("killed"), base.join("whole"));
    let args = [
        "federate",
        "configs/federated-mnist.toml",
        "--set",
        "federated.client_level.rounds=4",
        "-q",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .args(args)
        .args(["--out", killed.to_str().unwrap()])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !killed.join("checkpoint/state.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL, in round 2 (or writing its checkpoint)
    child.wait().unwrap();
    assert!(
        !killed.join("summary.json").exists(),
        "killed before the end"
    );
    let mut resume_args = args.to_vec();
    resume_args.extend(["--resume", killed.to_str().unwrap()]);
    let resumed = dptrain(&resume_args);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let mut whole_args = args.to_vec();
    whole_args.extend(["--out", whole.to_str().unwrap()]);
    let uninterrupted = dptrain(&whole_args);
    assert!(uninterrupted.status.success());
    let read = |dir: &std::path::Path, name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_eq!(
        read(&killed, "model.safetensors"),
        read(&whole, "model.safetensors")
    );
    assert_eq!(read(&killed, "ledger.csv"), read(&whole, "ledger.csv"));
    let accuracies = |dir: &std::path::Path| -> Vec<String> {
        String::from_utf8(read(dir, "metrics.csv"))
            .unwrap()
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string())
            .collect()
    };
    assert_eq!(accuracies(&killed), accuracies(&whole));
    for plot in ["accuracy.png", "epsilon.svg"] {
        assert!(killed.join(plot).is_file(), "{plot}");
    }
    // A changed config is refused, naming the key.
    let refused = dptrain(&[
        "federate",
        "configs/federated-mnist.toml",
        "--set",
        "federated.client_level.rounds=5",
        "--resume",
        killed.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("federated.client_level.rounds"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&base).unwrap();
}

/// `dptrain federate` of the silo-level Adult config: one silo per value of the `race`
/// column (the manifest names them), each silo's ε in the summary and privacy.md, the run's
/// ε that of the worst silo's ledger.csv by `dptrain account --events`, bit for bit.
#[test]
fn federate_runs_silos_split_by_a_csv_column() {
    let out = std::env::temp_dir().join(format!("dptrain-federate-silos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "federate",
        "configs/federated-adult-silos.toml",
        "--set",
        "federated.silo_level.rounds=20",
        "--out",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let manifest = std::fs::read_to_string(out.join("clients.csv")).unwrap();
    assert_eq!(
        manifest,
        "client,name,examples\n0,Amer-Indian-Eskimo,311\n1,Asian-Pac-Islander,1039\n\
         2,Black,3124\n3,Other,271\n4,White,27816\n"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["unit_of_privacy"], "one example of one silo");
    let silos = summary["silo_epsilons"].as_array().unwrap();
    assert_eq!(silos.len(), 5);
    let account = dptrain(&[
        "account",
        "--events",
        out.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    let accounted: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    let epsilon = summary["epsilon"].as_f64().unwrap();
    assert_eq!(
        epsilon.to_bits(),
        accounted["epsilon"].as_f64().unwrap().to_bits()
    );
    let worst = silos
        .iter()
        .map(|s| s["epsilon"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(worst, epsilon);
    let statement = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    assert!(statement.contains("| Other | 271 |"), "{statement}");
    // A column the table does not have is refused, naming the key and the columns.
    let bad = dptrain(&[
        "federate",
        "configs/federated-adult-silos.toml",
        "--set",
        "federated.partition.column=\"hospital\"",
        "--out",
        out.join("bad").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("federated.partition.column"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// Secure mode: clients sampled and the server's noise drawn from the OS-seeded CSPRNG (two
/// runs of one config differ), the noise a discrete Gaussian, the ledger saying so and
/// accounting to the summary's ε bit for bit.
#[test]
fn federate_in_secure_mode_draws_from_the_os_and_accounts_discrete_noise() {
    let base = std::env::temp_dir().join(format!("dptrain-federate-secure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let run = |name: &str| {
        let out = base.join(name);
        let run = dptrain(&[
            "federate",
            "configs/federated-mnist.toml",
            "--set",
            "federated.client_level.rounds=2",
            "--set",
            "federated.client_level.secure_noise=true",
            "--out",
            out.to_str().unwrap(),
            "-q",
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        out
    };
    let (a, b) = (run("a"), run("b"));
    let read = |dir: &std::path::Path, name: &str| std::fs::read(dir.join(name)).unwrap();
    assert_ne!(read(&a, "model.safetensors"), read(&b, "model.safetensors"));
    let ledger = String::from_utf8(read(&a, "ledger.csv")).unwrap();
    assert!(ledger.contains(",2,discrete_gaussian"), "{ledger}");
    let account = dptrain(&[
        "account",
        "--events",
        a.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    let accounted: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&read(&a, "summary.json")).unwrap();
    assert_eq!(
        summary["epsilon"].as_f64().unwrap().to_bits(),
        accounted["epsilon"].as_f64().unwrap().to_bits()
    );
    let statement = String::from_utf8(read(&a, "privacy.md")).unwrap();
    assert!(statement.contains("discrete Gaussian"), "{statement}");
    std::fs::remove_dir_all(&base).unwrap();
}

/// InProcess clients trained on three worker threads reply exactly as on one: the same
/// clients in the same order with the same updates, bit for bit.
#[test]
fn in_process_clients_reply_the_same_on_one_or_several_threads() {
    let train = data(240);
    let partition =
        Partition::new(&PartitionConfig::Iid { clients: 8 }, &train.labels, None, 3).unwrap();
    let global = logreg();
    let request = RoundRequest {
        round: 2,
        params: dptrain::federated::round::read_params(&global.parameters()).unwrap(),
        clip_norm: 0.05,
    };
    let replies = |modules: Vec<Model>| -> Vec<(usize, Vec<u64>, bool)> {
        let mut clients = InProcess {
            modules,
            data: &train,
            partition: &partition,
            local: local(),
            seed: 5,
        };
        clients
            .exchange(&request, &[0, 1, 3, 4, 6, 7, 2])
            .into_iter()
            .map(|(client, reply)| {
                let reply = reply.unwrap();
                let bits = flat(&reply.update).iter().map(|v| v.to_bits()).collect();
                (client, bits, reply.within_clip)
            })
            .collect()
    };
    let one = replies(vec![logreg()]);
    let three = replies(vec![logreg(), logreg(), logreg()]);
    assert_eq!(
        one.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 3, 4, 6, 7, 2]
    );
    assert_eq!(one, three);
}

/// Secure aggregation (issue 15) moves the model as the plain round does, up to the
/// quantisation error: the same clients, the same request, no noise; the server of the
/// secure round saw only bytes.
#[test]
fn a_secure_round_moves_the_model_as_the_plain_round_up_to_quantisation() {
    use dptrain::federated::secure::{
        Aggregation, SecAggConfig, SecureInProcess, SecurePlan, secure_round,
    };
    let train = data(240);
    let partition =
        Partition::new(&PartitionConfig::Iid { clients: 8 }, &train.labels, None, 3).unwrap();
    let clip = 0.05;
    let fedavg = ServerOptimizerConfig::FedAvgM {
        learning_rate: 1.0,
        momentum: 0.0,
    };
    let server_of = |model: &Model| {
        let params = model.parameters();
        let update = Update::new(3.0, fedavg.build(&params).unwrap()).unwrap();
        Server::new(params, clip, Box::new(dptrain::train::NoNoise), update).unwrap()
    };
    let clients = || InProcess {
        modules: vec![logreg()],
        data: &train,
        partition: &partition,
        local: local(),
        seed: 5,
    };
    let sampled = [0usize, 2, 3, 5, 6, 7];
    let (plain_model, secure_model) = (logreg(), logreg());
    let before = values(&plain_model.parameters());
    let mut plain = server_of(&plain_model);
    plain.run_round(&mut clients(), &sampled).unwrap();
    let mut secure = server_of(&secure_model);
    let mut transport = SecureInProcess::new(clients(), 0.0, 1);
    let dim = before.len();
    let plan = SecurePlan {
        aggregation: Aggregation::Secagg,
        config: SecAggConfig::default(),
        clip_norm: clip,
        dim,
        min_survivors: 3,
        local_stddev: 0.0,
        seed: None,
    };
    let outcome = secure_round(&mut secure, &mut transport, &sampled, &plan).unwrap();
    assert!(outcome.aborted.is_none(), "{:?}", outcome.aborted);
    assert_eq!(outcome.outcome.survivors, sampled.len());
    assert!(outcome.booked.is_none());
    let (a, b) = (
        values(&plain_model.parameters()),
        values(&secure_model.parameters()),
    );
    let moved: f64 = a.iter().zip(&before).map(|(x, y)| (x - y).abs()).sum();
    let gap: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
    assert!(moved > 1e-3, "the round did not move the model ({moved})");
    // 20 bits over ±2k standard deviations: the gap is a small fraction of the step.
    assert!(
        gap < 0.01 * moved,
        "secure and plain differ by {gap} (step {moved})"
    );
    assert!(
        gap > 0.0,
        "no quantisation at all: the secure path was not taken"
    );
}

/// A `secagg_distributed_dp` run with clients dropping out at every stage: each released
/// round is booked with its realised survivors, aborted rounds book nothing, the summary's ε
/// is its ledger's by `dptrain account --events`, and privacy.md states the trust model and
/// every round's dropouts.
#[test]
fn federate_with_distributed_dp_books_each_rounds_survivors() {
    let out = std::env::temp_dir().join(format!("dptrain-skellam-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "federate",
        "configs/federated-mnist-skellam.toml",
        "--set",
        "federated.client_level.rounds=3",
        "--set",
        "federated.partition.clients=300",
        "--set",
        "federated.client_level.sampling.expected_clients=30",
        "--set",
        "federated.client_level.secagg.min_survivors=20",
        "--set",
        "federated.client_level.secagg.simulated_dropout=0.05",
        "--set",
        "federated.client_level.secagg.mechanism=\"discrete_gaussian\"",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let survivors: Vec<u64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(survivors.len(), 3);
    let ledger_text = std::fs::read_to_string(out.join("ledger.csv")).unwrap();
    let booked: Vec<u64> = ledger_text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(6).unwrap().parse().unwrap())
        .collect();
    let released: Vec<u64> = survivors.iter().copied().filter(|&s| s > 0).collect();
    assert_eq!(booked, released, "{ledger_text}\n{metrics}");
    assert!(ledger_text.contains("discrete_gaussian"));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let account = dptrain(&[
        "account",
        "--events",
        out.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(account.status.success());
    let accounted: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    assert_eq!(
        summary["epsilon"].as_f64().unwrap().to_bits(),
        accounted["epsilon"].as_f64().unwrap().to_bits()
    );
    assert!(summary["epsilon"].as_f64().unwrap() <= 1.9861145998784593);
    let statement = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    for needle in [
        "Dropouts of each round",
        "ε against the server",
        "noise share",
        "n_min = 20",
    ] {
        assert!(statement.contains(needle), "{needle}: {statement}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

/// Secure aggregation's settings are checked by key, and the combinations it cannot serve
/// are refused before anything runs.
#[test]
fn bad_secure_aggregation_settings_are_refused_naming_the_key() {
    let cases = [
        ("federated.client_level.secagg.bits=40", "secagg.bits"),
        (
            "federated.client_level.secagg.min_survivors=1",
            "min_survivors",
        ),
        (
            "federated.client_level.secagg.simulated_dropout=1.5",
            "simulated_dropout",
        ),
        (
            "federated.client_level.adaptive_clipping={ target_quantile = 0.5, learning_rate = 0.2 }",
            "aggregation",
        ),
        (
            "federated.client_level.aggregation=\"homomorphic\"",
            "`plain`, `secagg`, `secagg_distributed_dp`",
        ),
    ];
    let out = never_written("secagg");
    for (set, key) in cases {
        let run = dptrain(&[
            "federate",
            "configs/federated-mnist-skellam.toml",
            "--set",
            set,
            "--out",
            &out,
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{set} was accepted");
        assert!(stderr.contains(key), "{set}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !std::path::Path::new(&out).exists(),
            "{set}: a refused run wrote {out}"
        );
    }
}

/// Homomorphic aggregation (issue 17): a run whose clients encrypt under a 2-of-3 committee
/// key ends with the model, bit for bit, of the same run summing the same integers in the
/// clear (the clients' rounding and noise seeded alike); another seed ends elsewhere, so the
/// comparison can fail.
#[test]
fn a_homomorphic_run_ends_as_plain_integer_aggregation_bit_for_bit() {
    use dptrain::federated::he::PlainIntegers;
    use dptrain::federated::secure::{Aggregation, SecAggConfig, SecureInProcess};
    use dptrain::federated::{ClientLevelConfig, ClientLevelRun, ClientSampling, FederatedRun};
    let train = data(600);
    let test = data(200);
    let partition = Partition::new(
        &PartitionConfig::Iid { clients: 30 },
        &train.labels,
        None,
        3,
    )
    .unwrap();
    let config = ClientLevelConfig {
        rounds: 3,
        sampling: ClientSampling::Poisson {
            expected_clients: 10,
        },
        clip_norm: 0.5,
        noise_multiplier: Some(0.8),
        target_epsilon: None,
        delta: 1e-5,
        accountant: None,
        server_optimizer: ServerOptimizerConfig::FedAvgM {
            learning_rate: 1.0,
            momentum: 0.9,
        },
        adaptive_clipping: None,
        private: true,
        aggregation: Aggregation::HeThreshold,
        secagg: Some(SecAggConfig {
            min_survivors: Some(3),
            ..SecAggConfig::default()
        }),
        he: None,
        secure_noise: false,
    };
    let run = |plain: bool, seed: u8| {
        let global = logreg();
        let mut transport = SecureInProcess::new(
            InProcess {
                modules: vec![logreg()],
                data: &train,
                partition: &partition,
                local: local(),
                seed: 5,
            },
            0.0,
            1,
        );
        let mut run = ClientLevelRun::new(&global, &mut transport, 30, &config, 7).unwrap();
        let aggregator: Option<Box<dyn dptrain::federated::he::IntegerAggregator>> = match plain {
            true => Some(Box::new(PlainIntegers::default())),
            false => None,
        };
        run.replace_he_aggregation(aggregator, Some([seed; 32]))
            .unwrap();
        let mut survivors = Vec::new();
        while let Some(record) = run.next_round(&test).unwrap() {
            survivors.push(record.survivors);
        }
        let cost = run.he_cost().unwrap();
        let uploads = cost.uploads.load(std::sync::atomic::Ordering::Relaxed);
        let bytes = cost.upload_bytes.load(std::sync::atomic::Ordering::Relaxed);
        drop(run);
        let bits: Vec<u64> = values(&global.parameters())
            .iter()
            .map(|v| v.to_bits())
            .collect();
        (bits, survivors, uploads, bytes)
    };
    let (he, he_survivors, uploads, bytes) = run(false, 9);
    let (plain, plain_survivors, _, _) = run(true, 9);
    let (other, _, _, _) = run(false, 10);
    assert_eq!(he_survivors.len(), 3);
    assert!(he_survivors.iter().all(|&s| s >= 3), "{he_survivors:?}");
    assert_eq!(he_survivors, plain_survivors);
    assert_eq!(
        he, plain,
        "the homomorphic run's model differs from the plain integer sum's"
    );
    assert_ne!(he, other, "a different noise seed gave the same model");
    let initial: Vec<u64> = values(&logreg().parameters())
        .iter()
        .map(|v| v.to_bits())
        .collect();
    assert_ne!(he, initial, "the run did not move the model");
    // 7,850 parameters: two ciphertexts of 4,096 values each (blocks of 4,096, not 8,192).
    let per_upload = bytes / uploads;
    assert!(
        (200_000..240_000).contains(&per_upload),
        "{per_upload} bytes per upload"
    );
}

/// `federate` with `he_threshold`: privacy.md states the committee and the trust model, and
/// the summary's ε is its ledger's; bad committee settings are refused naming the key.
#[test]
fn federate_with_homomorphic_aggregation_and_its_refusals() {
    let out = std::env::temp_dir().join(format!("dptrain-he-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let run = dptrain(&[
        "federate",
        "configs/bench/he-cross-silo.toml",
        "--set",
        "federated.client_level.rounds=2",
        "--set",
        "federated.partition.clients=400",
        "--set",
        "federated.client_level.sampling.expected_clients=8",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let privacy = std::fs::read_to_string(out.join("privacy.md")).unwrap();
    for needle in [
        "## Homomorphic aggregation",
        "2-of-3 committee key",
        "λ = 40",
        "ε against the server",
    ] {
        assert!(privacy.contains(needle), "privacy.md lacks {needle}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let account = dptrain(&[
        "account",
        "--events",
        out.join("ledger.csv").to_str().unwrap(),
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(
        account.status.success(),
        "{}",
        String::from_utf8_lossy(&account.stderr)
    );
    let accounted: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    assert_eq!(accounted["epsilon"], summary["epsilon"]);
    let _ = std::fs::remove_dir_all(&out);

    let cases = [
        ("federated.client_level.he.threshold=4", "he.threshold"),
        ("federated.client_level.he.lambda=30", "he.lambda"),
        ("federated.client_level.he.committee=1", "he.committee"),
        ("federated.client_level.secure_noise=true", "secure_noise"),
    ];
    let never = never_written("he");
    for (set, key) in cases {
        let run = dptrain(&[
            "federate",
            "configs/bench/he-cross-silo.toml",
            "--set",
            set,
            "--out",
            &never,
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{set} was accepted");
        assert!(stderr.contains(key), "{set}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            !std::path::Path::new(&never).exists(),
            "{set}: a refused run wrote {never}"
        );
    }
    let run = dptrain(&[
        "federate",
        "configs/federated-mnist-skellam.toml",
        "--set",
        "federated.client_level.he={ committee = 3 }",
        "--out",
        &never,
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains("client_level.he"),
        "{stderr}"
    );
}

/// A run directory that does not exist (and must still not exist after a refused run).
fn never_written(name: &str) -> String {
    let out = std::env::temp_dir().join(format!("dptrain-never-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    out.to_str().unwrap().to_string()
}
