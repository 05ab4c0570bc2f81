//! One DP-SGD run spread over W ranks (`train::dist`). Threads of one process stand in for
//! MPI's ranks here (`ThreadGroup`); tests/it/mpi.rs runs the real `mpirun`.

use std::time::Duration;

use dptrain::data::Dataset;
use dptrain::federated::round::read_params;
use dptrain::model::{ModelConfig, ModelKind};
use dptrain::report::metrics_csv;
use dptrain::schedule::Schedule;
use dptrain::train::dist::{Distributed, Solo, ThreadGroup};
use dptrain::train::{
    Hooks, OptimizerConfig, PrivacyConfig, TrainingConfig, TrainingRecord, train_observed,
};

use crate::support::{head, mnist};

fn settings(kind: ModelKind, parts: usize) -> (ModelConfig, PrivacyConfig, TrainingConfig) {
    (
        ModelConfig::preset(kind),
        PrivacyConfig {
            private: true,
            target_epsilon: Some(4.0),
            noise_multiplier: None,
            delta: 1e-5,
            clip_norm: 1.0,
            clipping: Default::default(),
            noise_schedule: Schedule::default(),
            clip_schedule: Schedule::default(),
            adaptive_clipping: None,
            max_epsilon: None,
            secure_noise: false,
            accountant: None,
            discretization_interval: None,
        },
        TrainingConfig {
            epochs: 2.0,
            expected_batch_size: 64,
            max_physical_batch: 24,
            optimizer: OptimizerConfig::Sgd {
                learning_rate: 0.5,
                momentum: 0.5,
            },
            lr_schedule: Schedule::default(),
            dist_parts: Some(parts),
        },
    )
}

/// What must not depend on the number of ranks: metrics, ledger, and every weight's bits.
#[derive(Debug, PartialEq)]
struct Outcome {
    metrics: String,
    ledger: String,
    weights: Vec<u64>,
}

fn outcome(record: &TrainingRecord) -> Outcome {
    let weights = read_params(&record.model.parameters())
        .unwrap()
        .to_f64()
        .concat()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    // Wall-clock seconds are in timing.csv, not in metrics.csv.
    Outcome {
        metrics: metrics_csv(&record.epochs),
        ledger: record.ledger.to_csv(),
        weights,
    }
}

fn train_rank(
    data: (&Dataset, &Dataset),
    settings: &(ModelConfig, PrivacyConfig, TrainingConfig),
    seed: u64,
    distributed: Option<Distributed>,
) -> dptrain::error::Result<TrainingRecord> {
    let (model, privacy, training) = settings;
    train_observed(
        data.0,
        data.1,
        None,
        model,
        privacy,
        training,
        seed,
        Hooks {
            config_text: "name = \"dist\"".into(),
            distributed,
            ..Hooks::default()
        },
    )
}

/// Every rank's outcome of a run over `ranks` threads (one rank: `Solo`).
fn run(
    data: (&Dataset, &Dataset),
    settings: &(ModelConfig, PrivacyConfig, TrainingConfig),
    ranks: usize,
    seeds: &[u64],
) -> Vec<dptrain::error::Result<Outcome>> {
    let parts = settings.2.dist_parts.unwrap();
    if ranks == 1 {
        let dist = Distributed::new(Box::new(Solo), parts).unwrap();
        return vec![train_rank(data, settings, seeds[0], Some(dist)).map(|r| outcome(&r))];
    }
    let members = ThreadGroup::new(ranks, Duration::from_secs(120)).unwrap();
    std::thread::scope(|scope| {
        let running: Vec<_> = members
            .into_iter()
            .enumerate()
            .map(|(rank, member)| {
                let seed = seeds[rank.min(seeds.len() - 1)];
                scope.spawn(move || {
                    let dist = Distributed::new(Box::new(member), parts)?;
                    train_rank(data, settings, seed, Some(dist)).map(|r| outcome(&r))
                })
            })
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

#[test]
fn a_run_over_one_two_or_four_ranks_ends_with_the_same_model_metrics_and_ledger() {
    let (train_set, test_set) = (head(&mnist().train, 2000), head(&mnist().test, 500));
    let data = (&train_set, &test_set);
    for kind in [ModelKind::Mlp, ModelKind::Cnn] {
        let settings = settings(kind, 4);
        let solo = run(data, &settings, 1, &[7]).pop().unwrap().unwrap();
        for ranks in [2, 4] {
            for (rank, outcome) in run(data, &settings, ranks, &[7]).into_iter().enumerate() {
                assert!(
                    outcome.as_ref().unwrap() == &solo,
                    "{kind:?}: rank {rank} of {ranks} differs from one rank"
                );
            }
        }
        // The ledger is the single process's: the same Poisson batches at q, the same σ.
        let single = train_rank(data, &settings, 7, None).unwrap();
        assert_eq!(solo.ledger, single.ledger.to_csv(), "{kind:?}");
        // It learns.
        let last = solo.metrics.lines().last().unwrap().to_string();
        assert!(single.epochs.last().unwrap().test_accuracy > 0.6, "{last}");
        // The parts fix the rounding: another S rounds differently (so the check above can
        // fail), and the weights differ only by that rounding.
        let other = run(
            data,
            &(settings.0.clone(), settings.1.clone(), {
                let mut t = settings.2.clone();
                t.dist_parts = Some(8);
                t
            }),
            1,
            &[7],
        )
        .pop()
        .unwrap()
        .unwrap();
        assert_ne!(other.weights, solo.weights, "{kind:?}");
        let largest = other
            .weights
            .iter()
            .zip(&solo.weights)
            .map(|(a, b)| (f64::from_bits(*a) - f64::from_bits(*b)).abs())
            .fold(0.0, f64::max);
        assert!(largest < 1e-3, "{kind:?}: weights {largest} apart");
    }
}

#[test]
fn ranks_with_different_runs_refuse_to_start() {
    let (train_set, test_set) = (head(&mnist().train, 300), head(&mnist().test, 100));
    let settings = settings(ModelKind::Logreg, 2);
    let outcomes = run((&train_set, &test_set), &settings, 2, &[1, 2]);
    for outcome in outcomes {
        let error = outcome.unwrap_err().to_string();
        assert!(error.contains("same config and data"), "{error}");
    }
}

#[test]
fn distributed_runs_refuse_secure_noise_and_fewer_parts_than_ranks() {
    let (train_set, test_set) = (head(&mnist().train, 300), head(&mnist().test, 100));
    let mut secure = settings(ModelKind::Logreg, 2);
    secure.1.secure_noise = true;
    let dist = Distributed::new(Box::new(Solo), 2).unwrap();
    let error = train_rank((&train_set, &test_set), &secure, 1, Some(dist))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("secure_noise"), "{error}");
    let members = ThreadGroup::new(3, Duration::from_secs(1)).unwrap();
    let error = Distributed::new(Box::new(members.into_iter().next().unwrap()), 2)
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("dist_parts"), "{error}");
}
