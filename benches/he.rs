//! Homomorphic aggregation's cost (issue 17), in one process, on this machine:
//!
//! 1. the cryptography at the acceptance's shapes: the cnn (26,010 parameters) uploaded by 10
//!    clients, a committee of 3 (threshold 2), n = 4096 with flooding at λ = 40: client
//!    encryption, upload bytes, the server's sum, each decryption share, the combiner; and the
//!    mlp's (407,050) encryption and upload;
//! 2. a federated MNIST run (`configs/bench/he-cross-silo.toml`, ROUNDS rounds) with HE
//!    aggregation against the same run summing the same integers in the clear
//!    (`PlainIntegers`), the clients' rounding and noise seeded alike, in lockstep (their
//!    rounds alternate, REPEATS times): the models must be equal bit for bit; the ratio of wall
//!    times is HE's added cost (`added_in_total`: all repeats' rounds summed; `added`: the
//!    ratio of the repeats' medians; and each repeat's).
//!
//!   cargo bench --bench he -- [ROUNDS] [REPEATS] [OUT_DIR] [KEY=VALUE ...]
//!
//! With `HE_BENCH_CONTROL=1` the "HE" side sums plain integers too: an A/A control whose
//! added time is the measurement's noise (on the 2-vCPU Xeon, ±7% per 10-round repeat).
//!
//! Prints a table and, with OUT_DIR (`-` for none), writes he-bench.json there; KEY=VALUE
//! are `--set` overrides of the federated config. Timings are medians.

use std::sync::atomic::Ordering;
use std::time::Instant;

use dptrain::config::federated::FederatedMode;
use dptrain::config::federated::FederatedRunConfig;
use dptrain::federated::he::PlainIntegers;
use dptrain::federated::secure::SecureInProcess;
use dptrain::federated::{ClientLevelRun, FederatedRun, InProcess, Partition};
use dptrain::he::{Bfv, CiphertextSum, CommitteeSpec, combine, generate, os_rng};
use dptrain::model::Model;
use dptrain::train::trainer::derive_seed;
use rand::Rng;

/// The binary's allocator (`runtime::configure_process`), so that phases time as in a run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// Part 1: the cryptography alone, on one thread.
fn crypto(out: &mut serde_json::Map<String, serde_json::Value>) -> dptrain::error::Result<()> {
    let bfv = Bfv::new()?;
    let mut rng = os_rng()?;
    let start = Instant::now();
    dptrain::he::known_answer_test(&bfv)?;
    let kat = ms(start);
    let spec = CommitteeSpec {
        members: 3,
        threshold: 2,
        lambda: 40,
        max_clients: 10,
        min_clients: 2,
    };
    let start = Instant::now();
    let (key, mut members) = generate(&bfv, spec, 0, &mut rng)?;
    let keygen = ms(start);
    let flooding = spec.flooding(&bfv)?;
    for (name, dim, clients) in [("cnn", 26_010usize, 10u64), ("mlp", 407_050, 10)] {
        let bound = Bfv::value_bound(clients);
        let inputs: Vec<Vec<i64>> = (0..clients)
            .map(|_| (0..dim).map(|_| rng.random_range(-bound..=bound)).collect())
            .collect();
        // One untimed encryption first (page faults, caches), then each client's, twice.
        key.encrypt(&bfv, &inputs[0], bound, &mut rng)?;
        let mut encrypt = Vec::new();
        let mut uploads = Vec::new();
        for pass in 0..2 {
            for input in &inputs {
                let start = Instant::now();
                let upload = key.encrypt(&bfv, input, bound, &mut rng)?;
                encrypt.push(ms(start));
                if pass == 0 {
                    uploads.push(upload);
                }
            }
        }
        let upload_bytes = uploads[0].len();
        let mut sums = Vec::new();
        let mut sum = CiphertextSum::new(&bfv, 0, dim);
        for _ in 0..5 {
            sum = CiphertextSum::new(&bfv, 0, dim);
            let start = Instant::now();
            for upload in &uploads {
                sum.add(upload)?;
            }
            sums.push(ms(start));
        }
        let set = [1u32, 2];
        let mut share_times = Vec::new();
        let mut shares = Vec::new();
        for &k in &set {
            // Each member's share three times (the key's budget allows it), the median kept.
            let mut times = Vec::new();
            let mut share = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                share = members[k as usize - 1].decryption_shares(&bfv, &sum, &set)?;
                times.push(ms(start));
            }
            shares.push(share);
            share_times.push(median(times));
        }
        let start = Instant::now();
        let decrypted = combine(&bfv, &spec, &sum, &shares)?;
        let combine_ms = ms(start);
        let truth: Vec<i64> = (0..dim)
            .map(|i| inputs.iter().map(|v| v[i]).sum())
            .collect();
        assert_eq!(decrypted, truth, "{name}: the decrypted sum is wrong");
        let row = serde_json::json!({
            "parameters": dim,
            "clients": clients,
            "ciphertexts": Bfv::chunks(dim),
            "encrypt_ms_median": median(encrypt),
            "upload_bytes": upload_bytes,
            "sum_ms_median": median(sums),
            "share_ms": share_times,
            "combine_ms": combine_ms,
            "exact": true,
        });
        println!("{name}: {row}");
        out.insert(name.into(), row);
    }
    out.insert(
        "setup".into(),
        serde_json::json!({
            "known_answer_test_ms": kat,
            "committee_keygen_ms": keygen,
            "committee": 3, "threshold": 2, "lambda": 40,
            "key_budget_coefficients": flooding.budget,
            "flooding_bound_log2": (flooding.bound as f64).log2(),
            "noise_ceiling_log2": bfv.noise_ceiling().log2(),
        }),
    );
    Ok(())
}

/// Part 2: the federated run twice in lockstep, HE and plain integers, their rounds
/// alternating (which goes first alternates too), so that the machine's drift hits both
/// alike. Returns (models equal bit for bit, HE round seconds, plain round seconds, HE
/// seal, sum, share and combine milliseconds in all).
fn federated(config: &FederatedRunConfig) -> dptrain::error::Result<(bool, f64, f64, [f64; 4])> {
    let splits = config.data.load()?;
    let (train, test) = (&splits.train, &splits.test);
    let partition = Partition::new(
        &config.federated.partition,
        &train.labels,
        None,
        config.seed,
    )?;
    let FederatedMode::ClientLevel(local, privacy) = config.federated.mode()? else {
        return Err(dptrain::error::Error::Usage("a client-level config".into()));
    };
    let model = || Model::for_data(&config.model, train, derive_seed(config.seed, 1));
    let transport = || -> dptrain::error::Result<SecureInProcess<'_, Model>> {
        let modules = (0..rayon::current_num_threads())
            .map(|_| model())
            .collect::<dptrain::error::Result<Vec<_>>>()?;
        let clients = InProcess {
            modules,
            data: train,
            partition: &partition,
            local: *local,
            seed: derive_seed(config.seed, 5),
        };
        Ok(SecureInProcess::new(
            clients,
            0.0,
            derive_seed(config.seed, 6),
        ))
    };
    let (he_global, plain_global) = (model()?, model()?);
    let (mut he_transport, mut plain_transport) = (transport()?, transport()?);
    let mut he = ClientLevelRun::new(
        &he_global,
        &mut he_transport,
        partition.len(),
        privacy,
        config.seed,
    )?;
    // HE_BENCH_CONTROL=1: an A/A control, plain integers on both sides, which shows the
    // machine's noise floor for the added-time figure.
    let control = std::env::var_os("HE_BENCH_CONTROL").is_some_and(|v| v == "1");
    let aggregator: Option<Box<dyn dptrain::federated::he::IntegerAggregator>> = match control {
        true => Some(Box::new(PlainIntegers::default())),
        false => None,
    };
    he.replace_he_aggregation(aggregator, Some([3; 32]))?;
    let mut plain = ClientLevelRun::new(
        &plain_global,
        &mut plain_transport,
        partition.len(),
        privacy,
        config.seed,
    )?;
    plain.replace_he_aggregation(Some(Box::new(PlainIntegers::default())), Some([3; 32]))?;
    let (mut he_seconds, mut plain_seconds) = (0.0, 0.0);
    for round in 0.. {
        let mut both = [(&mut he, &mut he_seconds), (&mut plain, &mut plain_seconds)];
        if round % 2 == 1 {
            both.reverse();
        }
        let mut done = false;
        for (run, seconds) in both {
            match run.next_round(test)? {
                Some(record) => *seconds += record.seconds,
                None => done = true,
            }
        }
        if done {
            break;
        }
    }
    let cost = he.he_cost().expect("an he run");
    let total = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e6;
    let phases = [
        total(&cost.seal_nanos),
        total(&cost.sum_nanos),
        total(&cost.share_nanos),
        total(&cost.combine_nanos),
    ];
    drop((he, plain));
    let bits = |global: &Model| -> dptrain::error::Result<Vec<u64>> {
        Ok(
            dptrain::federated::round::read_params(&global.parameters())?
                .to_f64()
                .concat()
                .iter()
                .map(|v| v.to_bits())
                .collect(),
        )
    };
    Ok((
        bits(&he_global)? == bits(&plain_global)?,
        he_seconds,
        plain_seconds,
        phases,
    ))
}

fn main() -> dptrain::error::Result<()> {
    // SAFETY: the first statement of main; no other thread exists yet.
    unsafe { dptrain::runtime::configure_process() };
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rounds: u64 = args.first().and_then(|r| r.parse().ok()).unwrap_or(10);
    let repeats: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(3);
    let out_dir = args
        .get(2)
        .filter(|d| *d != "-")
        .map(std::path::PathBuf::from);
    let overrides: Vec<String> = args.iter().skip(3).cloned().collect();
    let mut out = serde_json::Map::new();
    crypto(&mut out)?;

    let config = FederatedRunConfig::load(
        std::path::Path::new("configs/bench/he-cross-silo.toml"),
        &[
            vec![format!("federated.client_level.rounds={rounds}")],
            overrides.clone(),
        ]
        .concat(),
    )?;
    let (mut he_times, mut plain_times) = (Vec::new(), Vec::new());
    let mut phases = Vec::new();
    let mut equal = true;
    for repeat in 0..repeats {
        let (same, he, plain, phase) = federated(&config)?;
        he_times.push(he);
        plain_times.push(plain);
        phases.push(phase);
        equal &= same;
        println!("repeat {repeat}: he {he:.3} s, plain {plain:.3} s, models equal: {same}");
    }
    let (he, plain) = (median(he_times.clone()), median(plain_times.clone()));
    let federated = serde_json::json!({
        "config": "configs/bench/he-cross-silo.toml",
        "overrides": overrides,
        "rounds": rounds,
        "repeats": repeats,
        "he_round_seconds_total": he_times,
        "plain_round_seconds_total": plain_times,
        "he_median_s": he,
        "plain_median_s": plain,
        "added": he / plain - 1.0,
        "added_in_total": he_times.iter().sum::<f64>() / plain_times.iter().sum::<f64>() - 1.0,
        "added_per_repeat": he_times.iter().zip(&plain_times).map(|(h, p)| h / p - 1.0).collect::<Vec<_>>(),
        "models_equal_bit_for_bit": equal,
        "control_plain_on_both_sides": std::env::var_os("HE_BENCH_CONTROL").is_some_and(|v| v == "1"),
        "he_phase_ms_seal_sum_share_combine": phases,
    });
    println!("federated: {federated}");
    out.insert("federated".into(), federated);
    out.insert(
        "threads".into(),
        serde_json::json!(rayon::current_num_threads()),
    );
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(&dir).map_err(|source| dptrain::error::Error::Io {
            path: dir.clone(),
            source,
        })?;
        let text =
            serde_json::to_string_pretty(&serde_json::Value::Object(out)).expect("json of numbers");
        dptrain::fs::write_atomic(&dir.join("he-bench.json"), text.as_bytes())?;
    }
    assert!(
        equal,
        "the HE run's model differs from the plain integer run's"
    );
    Ok(())
}
