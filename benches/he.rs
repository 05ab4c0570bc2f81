//! Homomorphic aggregation's cost (issue 17), in one process, on this machine:
//!
//! 1. the cryptography at the acceptance's shapes: the cnn (26,010 parameters) uploaded by 10
//!    clients, a committee of 3 (threshold 2), n = 4096 with flooding at λ = 40: client
//!    encryption, upload bytes, the server's sum, each decryption share, the combiner; and the
//!    mlp's (407,050) encryption and upload;
//! 2. a federated MNIST run (`configs/federated-mnist-he.toml`, ROUNDS rounds) with HE
//!    aggregation against the same run summing the same integers in the clear
//!    (`PlainIntegers`), the clients' rounding and noise seeded alike, run one after the other
//!    (alternating, REPEATS times): the models must be equal bit for bit; the ratio of wall
//!    times is HE's added cost.
//!
//!   cargo bench --bench he -- [ROUNDS] [REPEATS] [OUT_DIR]
//!
//! Prints a table and, with OUT_DIR, writes he-bench.json there. Timings are medians.

use std::sync::atomic::Ordering;
use std::time::Instant;

use dptrain::config::federated::FederatedMode;
use dptrain::config::federated::FederatedRunConfig;
use dptrain::federated::he::{IntegerAggregator, PlainIntegers};
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
        let mut encrypt = Vec::new();
        let mut uploads = Vec::new();
        for input in &inputs {
            let start = Instant::now();
            uploads.push(key.encrypt(&bfv, input, bound, &mut rng)?);
            encrypt.push(ms(start));
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
            let start = Instant::now();
            shares.push(members[k as usize - 1].decryption_shares(&bfv, &sum, &set)?);
            share_times.push(ms(start));
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

/// Part 2: one federated run, HE or plain integers; (model bits, wall seconds, HE seal,
/// sum, share and combine milliseconds in all).
fn federated(
    config: &FederatedRunConfig,
    plain: bool,
) -> dptrain::error::Result<(Vec<u64>, f64, [f64; 4])> {
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
    let global = Model::for_data(&config.model, train, derive_seed(config.seed, 1))?;
    let modules = (0..rayon::current_num_threads())
        .map(|_| Model::for_data(&config.model, train, derive_seed(config.seed, 1)))
        .collect::<dptrain::error::Result<Vec<_>>>()?;
    let clients = InProcess {
        modules,
        data: train,
        partition: &partition,
        local: *local,
        seed: derive_seed(config.seed, 5),
    };
    let mut transport = SecureInProcess::new(clients, 0.0, derive_seed(config.seed, 6));
    let mut run = ClientLevelRun::new(
        &global,
        &mut transport,
        partition.len(),
        privacy,
        config.seed,
    )?;
    let aggregator: Option<Box<dyn IntegerAggregator>> = match plain {
        true => Some(Box::new(PlainIntegers::default())),
        false => None,
    };
    run.replace_he_aggregation(aggregator, Some([3; 32]))?;
    let mut seconds = 0.0;
    while let Some(record) = run.next_round(test)? {
        seconds += record.seconds;
    }
    let cost = run.he_cost().expect("an he run");
    let total = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed) as f64 / 1e6;
    let phases = [
        total(&cost.seal_nanos),
        total(&cost.sum_nanos),
        total(&cost.share_nanos),
        total(&cost.combine_nanos),
    ];
    drop(run);
    let bits = dptrain::federated::round::read_params(&global.parameters())?
        .to_f64()
        .concat()
        .iter()
        .map(|v| v.to_bits())
        .collect();
    Ok((bits, seconds, phases))
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
    let out_dir = args.get(2).map(std::path::PathBuf::from);
    let mut out = serde_json::Map::new();
    crypto(&mut out)?;

    let config = FederatedRunConfig::load(
        std::path::Path::new("configs/federated-mnist-he.toml"),
        &[format!("federated.client_level.rounds={rounds}")],
    )?;
    let (mut he_times, mut plain_times) = (Vec::new(), Vec::new());
    let mut phases = Vec::new();
    let mut equal = true;
    for repeat in 0..repeats {
        // Alternate the order so that neither always runs on a warmer machine.
        let order = match repeat % 2 {
            0 => [false, true],
            _ => [true, false],
        };
        let mut models = Vec::new();
        for plain in order {
            let (bits, seconds, phase) = federated(&config, plain)?;
            match plain {
                true => plain_times.push(seconds),
                false => {
                    he_times.push(seconds);
                    phases.push(phase);
                }
            }
            models.push(bits);
        }
        equal &= models[0] == models[1];
        println!(
            "repeat {repeat}: he {:.3} s, plain {:.3} s, models equal: {}",
            he_times.last().unwrap(),
            plain_times.last().unwrap(),
            models[0] == models[1]
        );
    }
    let (he, plain) = (median(he_times.clone()), median(plain_times.clone()));
    let federated = serde_json::json!({
        "config": "configs/federated-mnist-he.toml",
        "rounds": rounds,
        "repeats": repeats,
        "he_round_seconds_total": he_times,
        "plain_round_seconds_total": plain_times,
        "he_median_s": he,
        "plain_median_s": plain,
        "added": he / plain - 1.0,
        "models_equal_bit_for_bit": equal,
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
