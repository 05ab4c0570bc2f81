//! `dptrain mpc-infer RUN_DIR`: secret-shared inference of a trained model on its test set,
//! with the model owner, the client and the dealer as three processes on loopback.
//!
//! The parent process reads the run (config, weights), spawns the three roles (this same
//! binary with a hidden `--role`), waits for them within a deadline, and writes
//! `mpc-infer.json`, `mpc-infer.md` and `predictions.csv`: the shared predictions against
//! the plaintext fixed-point model and the float model, the online time per image, the
//! bytes each way and the dealer's cost apart.

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use candle_core::Tensor;
use serde_json::{Value, json};

use super::{MpcInferArgs, MpcRole, Output};
use crate::config::RunConfig;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::model::kinds::{LayerSpec, Padding};
use crate::model::{Model, NodeSpec};
use crate::mpc::link::{Expect, Link, TcpLink};
use crate::mpc::{
    Architecture, Conv, FixedPointStats, LayerWeights, Op, argmax, encode, encode_weights,
    fixed_point_forward, run_client, run_dealer, run_owner,
};
use crate::sampling::secure_rng::{child, secure_rng};

/// The hello frame's tag: one word naming who connects (0 owner, 1 client).
const TAG_HELLO: u16 = 0xF000;

/// A run directory's model as the parties compute it, and as candle computes it.
pub struct LoadedModel {
    /// The public layer shapes.
    pub arch: Architecture,
    /// The owner's weights.
    pub weights: Vec<LayerWeights>,
    /// The float model.
    pub model: Model,
}

fn unsupported(path: &str, what: String) -> Error {
    Error::Model {
        path: path.to_string(),
        message: format!(
            "{what}; secret-shared inference computes conv2d (dilation 1, one group), linear, \
             square, avg_pool2d, flatten and dropout (train `kind = \"cnn_poly\"`, \
             configs/mnist-cnn-poly-eps3.toml)"
        ),
    }
}

fn values(tensors: &std::collections::HashMap<String, Tensor>, name: &str) -> Result<Vec<f64>> {
    let t = tensors.get(name).ok_or_else(|| Error::Model {
        path: name.to_string(),
        message: "not in model.safetensors".into(),
    })?;
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?)
}

/// Reads RUN_DIR's config.toml and model.safetensors into the float model and the
/// parties' architecture and weights; refuses a layer the parties cannot compute.
pub fn load_model(run_dir: &Path, data: &Dataset) -> Result<LoadedModel> {
    let config = RunConfig::load(&run_dir.join("config.toml"), &[])?;
    let model = Model::for_data(&config.model, data, 0)?;
    // Strictly (every parameter, its shape and dtype, nothing else), as `dptrain evaluate`;
    // the parties' weights are then read from the loaded model.
    crate::train::load_weights(&model, &run_dir.join("model.safetensors"))?;
    let tensors: std::collections::HashMap<String, Tensor> = model
        .named_parameters()
        .into_iter()
        .map(|(name, var)| (name, var.as_tensor().clone()))
        .collect();
    let mut shape = data.feature_shape.clone();
    let (mut ops, mut weights) = (Vec::new(), Vec::new());
    for node in config.model.expand(data.classes)? {
        let NodeSpec::Layer(entry) = node else {
            return Err(unsupported("residual", "a residual block".into()));
        };
        let path = entry.path.as_str();
        let image = |shape: &[usize]| match shape {
            [c, h, w] => Ok((*c, *h, *w)),
            _ => Err(unsupported(
                path,
                format!("an image layer on inputs of shape {shape:?}"),
            )),
        };
        match &entry.spec {
            LayerSpec::Conv2d {
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                bias,
            } => {
                let (c, h, w) = image(&shape)?;
                if *dilation != 1 || *groups != 1 {
                    return Err(unsupported(path, "a dilated or grouped conv2d".into()));
                }
                let padding = match padding {
                    Padding::Size(p) => *p,
                    Padding::Named(_) => (kernel - 1) / 2,
                };
                let conv = Conv {
                    in_channels: c,
                    height: h,
                    width: w,
                    out_channels: *out_channels,
                    kernel: *kernel,
                    stride: *stride,
                    padding,
                };
                let (ho, wo) = conv.output_hw();
                shape = vec![*out_channels, ho, wo];
                weights.push(LayerWeights {
                    weight: values(&tensors, &format!("{path}.weight"))?,
                    bias: match bias {
                        true => values(&tensors, &format!("{path}.bias"))?,
                        false => vec![0.0; *out_channels],
                    },
                });
                ops.push(Op::Conv2d(conv));
            }
            LayerSpec::Linear { out_features, bias } => {
                let [inputs] = shape[..] else {
                    return Err(unsupported(path, format!("linear on shape {shape:?}")));
                };
                weights.push(LayerWeights {
                    weight: values(&tensors, &format!("{path}.weight"))?,
                    bias: match bias {
                        true => values(&tensors, &format!("{path}.bias"))?,
                        false => vec![0.0; *out_features],
                    },
                });
                ops.push(Op::Linear {
                    inputs,
                    outputs: *out_features,
                });
                shape = vec![*out_features];
            }
            LayerSpec::Square {} => ops.push(Op::Square {
                len: shape.iter().product(),
            }),
            LayerSpec::AvgPool2d { kernel, .. } => {
                let (c, h, w) = image(&shape)?;
                ops.push(Op::AvgPool2d {
                    channels: c,
                    height: h,
                    width: w,
                    kernel: *kernel,
                });
                shape = vec![c, h / kernel, w / kernel];
            }
            LayerSpec::Flatten {} => shape = vec![shape.iter().product()],
            LayerSpec::Dropout { .. } => {}
            other => {
                let kind = format!("{other:?}");
                let kind = kind.split([' ', '{']).next().unwrap_or("?").to_lowercase();
                return Err(unsupported(path, format!("a {kind} layer")));
            }
        }
    }
    let arch = Architecture {
        input_len: data.feature_len(),
        ops,
    };
    arch.check()?;
    Ok(LoadedModel {
        arch,
        weights,
        model,
    })
}

/// The first `limit` test examples in fixed point.
fn encoded_inputs(data: &Dataset, limit: usize) -> Result<Vec<u64>> {
    data.features[..limit * data.feature_len()]
        .iter()
        .map(|&v| encode(f64::from(v)))
        .collect()
}

fn accept(listener: &TcpListener, deadline: Duration) -> Result<TcpStream> {
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Link(format!("listening: {e}")))?;
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(|e| Error::Link(format!("accepting: {e}")))?;
                return Ok(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > deadline {
                    return Err(Error::Link(format!(
                        "no party connected within {deadline:?}"
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(Error::Link(format!("accepting: {e}"))),
        }
    }
}

fn connect(address: &str, who: u64, timeout: Duration) -> Result<TcpLink> {
    let stream = TcpStream::connect(address)
        .map_err(|e| Error::Link(format!("connecting to {address}: {e}")))?;
    let mut link = TcpLink::new(stream, timeout)?;
    link.send(TAG_HELLO, &[who])?;
    Ok(link)
}

fn listen() -> Result<TcpListener> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::Link(format!("binding: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| Error::Link(format!("binding: {e}")))?;
    println!("listening {address}");
    Ok(listener)
}

/// One role of the three (a child process of `mpc-infer`): prints its report as one JSON
/// line on stdout.
pub fn run_role(args: &MpcInferArgs, role: MpcRole) -> Result<Output> {
    let timeout = Duration::from_secs(args.timeout);
    let report = match role {
        MpcRole::Dealer => {
            let listener = listen()?;
            let mut links: [Option<TcpLink>; 2] = [None, None];
            for _ in 0..2 {
                let mut link = TcpLink::new(accept(&listener, timeout)?, timeout)?;
                let who = link.recv(&Expect {
                    tag: TAG_HELLO,
                    len: Some(1),
                    what: "a party's hello",
                })?[0];
                match links.get_mut(who as usize) {
                    Some(slot @ None) => *slot = Some(link),
                    _ => {
                        return Err(Error::Link(format!(
                            "a hello from party {who}: expected one owner (0) and one client (1)"
                        )));
                    }
                }
            }
            let [Some(mut owner), Some(mut client)] = links else {
                return Err(Error::Link("the dealer lacks a party".into()));
            };
            let r = run_dealer(&mut owner, &mut client, &mut child(&mut secure_rng()?))?;
            json!({"role": "dealer", "compute_seconds": r.compute_seconds,
                   "bytes_sent": r.bytes_sent, "examples": r.examples})
        }
        MpcRole::Owner => {
            let data = RunConfig::load(&args.run_dir.join("config.toml"), &[])?
                .data
                .load()?;
            let loaded = load_model(&args.run_dir, &data.train)?;
            let weights = encode_weights(&loaded.arch, &loaded.weights)?;
            let listener = listen()?;
            let dealer_address = args.dealer.as_deref().unwrap_or_default();
            let mut dealer = connect(dealer_address, 0, timeout)?;
            let mut client = TcpLink::new(accept(&listener, timeout)?, timeout)?;
            client.recv(&Expect {
                tag: TAG_HELLO,
                len: Some(1),
                what: "the client's hello",
            })?;
            let r = run_owner(
                &mut client,
                &mut dealer,
                &loaded.arch,
                &weights,
                &mut child(&mut secure_rng()?),
            )?;
            json!({"role": "owner", "examples": r.examples, "bytes_sent": r.bytes_sent})
        }
        MpcRole::Client => {
            let data = RunConfig::load(&args.run_dir.join("config.toml"), &[])?
                .data
                .load()?;
            let limit = args.limit.unwrap_or(data.test.len()).min(data.test.len());
            let inputs = encoded_inputs(&data.test, limit)?;
            let mut dealer = connect(args.dealer.as_deref().unwrap_or_default(), 1, timeout)?;
            let mut owner = connect(args.owner.as_deref().unwrap_or_default(), 1, timeout)?;
            let r = run_client(
                &mut owner,
                &mut dealer,
                &inputs,
                args.batch_size,
                &mut child(&mut secure_rng()?),
            )?;
            json!({"role": "client", "logits": r.logits, "batch_seconds": r.batch_seconds,
                   "bytes_sent": r.bytes_sent, "bytes_received": r.bytes_received,
                   "setup_bytes": r.setup_bytes})
        }
    };
    println!("report {report}");
    Ok(Output {
        json: Value::Null,
        table: Vec::new(),
    })
}

/// A spawned role: the child, its stdout lines and its stderr.
struct Role {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Role {
    fn spawn(name: &'static str, args: &[String]) -> Result<Role> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::Usage(format!("cannot find the dptrain binary: {e}")))?;
        let mut child = Process::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Usage(format!("cannot start the {name}: {e}")))?;
        let (tx, lines) = channel();
        let stdout = child.stdout.take();
        std::thread::spawn(move || {
            if let Some(out) = stdout {
                for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        });
        let mut err = child.stderr.take();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        Ok(Role {
            name,
            child,
            lines,
            stderr,
        })
    }

    /// The next stdout line that starts with `prefix`, within `deadline`.
    fn line(&mut self, prefix: &str, deadline: Instant) -> Result<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_string());
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr =
                        std::mem::replace(&mut self.stderr, std::thread::spawn(String::new));
                    let text = stderr.join().unwrap_or_default();
                    return Err(Error::Link(format!(
                        "the {} ended or stalled before `{prefix}`: {}",
                        self.name,
                        text.trim()
                    )));
                }
            }
        }
    }
}

fn role_args(args: &MpcInferArgs, role: &str, extra: &[(&str, String)]) -> Vec<String> {
    let mut out = vec![
        "mpc-infer".to_string(),
        args.run_dir.display().to_string(),
        "--role".into(),
        role.into(),
        "--batch-size".into(),
        args.batch_size.to_string(),
        "--timeout".into(),
        args.timeout.to_string(),
    ];
    if let Some(limit) = args.limit {
        out.extend(["--limit".into(), limit.to_string()]);
    }
    for (flag, value) in extra {
        out.extend([flag.to_string(), value.clone()]);
    }
    out
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Runs `dptrain mpc-infer` (the parent: spawns the three roles and writes the report).
pub fn run(args: &MpcInferArgs) -> Result<Output> {
    if let Some(role) = args.role {
        return run_role(args, role);
    }
    if args.batch_size == 0 || args.batch_size > crate::mpc::protocol::MAX_BATCH {
        return Err(Error::invalid(
            "--batch-size",
            args.batch_size,
            format!("1 to {}", crate::mpc::protocol::MAX_BATCH),
        ));
    }
    let config = RunConfig::load(&args.run_dir.join("config.toml"), &[])?;
    let data = config.data.load()?;
    let loaded = load_model(&args.run_dir, &data.train)?;
    let weights = encode_weights(&loaded.arch, &loaded.weights)?;
    let test = &data.test;
    let limit = args.limit.unwrap_or(test.len()).min(test.len());
    if limit == 0 {
        return Err(Error::invalid("--limit", 0, "at least one test example"));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("mpc-infer"));
    // The references: the float model (candle) and the plaintext fixed-point model.
    let indices: Vec<usize> = (0..limit).collect();
    let mut float_pred = Vec::with_capacity(limit);
    for chunk in indices.chunks(1000) {
        let (x, _) = crate::model::dataset_batch(test, chunk)?;
        let predicted = loaded.model.forward(&x)?.argmax(1)?.to_vec1::<u32>()?;
        float_pred.extend(predicted.into_iter().map(|p| p as usize));
    }
    let inputs = encoded_inputs(test, limit)?;
    let mut stats = FixedPointStats::default();
    let fixed: Vec<Vec<i64>> = inputs
        .chunks_exact(loaded.arch.input_len)
        .map(|x| fixed_point_forward(&loaded.arch, &weights, x, &mut stats))
        .collect();

    // The three parties.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut dealer = Role::spawn("dealer", &role_args(args, "dealer", &[]))?;
    let dealer_address = dealer.line("listening ", deadline)?;
    let mut owner = Role::spawn(
        "model owner",
        &role_args(args, "owner", &[("--dealer", dealer_address.clone())]),
    )?;
    let owner_address = owner.line("listening ", deadline)?;
    let mut client = Role::spawn(
        "client",
        &role_args(
            args,
            "client",
            &[("--dealer", dealer_address), ("--owner", owner_address)],
        ),
    )?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for role in [&mut client, &mut owner, &mut dealer] {
        let text = role.line("report ", deadline)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Malformed {
            what: "mpc",
            message: format!("the {}'s report: {e}", role.name),
        })?;
        let _ = role.child.wait();
        reports.push(value);
    }
    let wall = started.elapsed().as_secs_f64();
    let (client_r, owner_r, dealer_r) = (&reports[0], &reports[1], &reports[2]);
    let logits: Vec<Vec<i64>> =
        serde_json::from_value(client_r["logits"].clone()).map_err(|e| Error::Malformed {
            what: "mpc",
            message: format!("the client's logits: {e}"),
        })?;
    if logits.len() != limit {
        return Err(Error::Malformed {
            what: "mpc",
            message: format!("the client reported {} examples of {limit}", logits.len()),
        });
    }
    let _ = owner_r;
    let labels = &test.labels[..limit];
    let mpc_pred: Vec<usize> = logits.iter().map(|l| argmax(l)).collect();
    let fixed_pred: Vec<usize> = fixed.iter().map(|l| argmax(l)).collect();
    let accuracy = |pred: &[usize]| {
        pred.iter()
            .zip(labels)
            .filter(|(p, y)| **p == **y as usize)
            .count() as f64
            / limit as f64
    };
    let agree = mpc_pred
        .iter()
        .zip(&fixed_pred)
        .filter(|(a, b)| a == b)
        .count();
    let largest_gap = logits
        .iter()
        .zip(&fixed)
        .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).unsigned_abs()))
        .max()
        .unwrap_or(0);
    let mut batch_seconds: Vec<f64> =
        serde_json::from_value(client_r["batch_seconds"].clone()).unwrap_or_default();
    let online_seconds: f64 = batch_seconds.iter().sum();
    let median_batch = median(&mut batch_seconds);
    let setup_bytes = client_r["setup_bytes"].as_u64().unwrap_or(0);
    let online_bytes = client_r["bytes_sent"].as_u64().unwrap_or(0)
        + client_r["bytes_received"].as_u64().unwrap_or(0)
        - setup_bytes;
    let dealer_bytes = dealer_r["bytes_sent"].as_u64().unwrap_or(0);
    let result = json!({
        "run_dir": args.run_dir.display().to_string(),
        "examples": limit,
        "batch_size": args.batch_size,
        "mpc_accuracy": accuracy(&mpc_pred),
        "fixed_point_accuracy": accuracy(&fixed_pred),
        "float_accuracy": accuracy(&float_pred),
        "identical_to_fixed_point": agree,
        "largest_logit_gap_ulps": largest_gap,
        "expected_truncation_failures": stats.expected_failures,
        "largest_truncated_magnitude_log2": (stats.largest as f64).log2(),
        "online_seconds": online_seconds,
        "median_batch_seconds": median_batch,
        "ms_per_image": 1e3 * online_seconds / limit as f64,
        "images_per_second": limit as f64 / online_seconds,
        "online_bytes_per_image": online_bytes as f64 / limit as f64,
        "setup_bytes": setup_bytes,
        "dealer_bytes_per_image": dealer_bytes as f64 / limit as f64,
        "dealer_compute_seconds": dealer_r["compute_seconds"],
        "wall_seconds": wall,
        "frac_bits": crate::mpc::FRAC_BITS,
    });
    write_report(&out, &result, labels, &mpc_pred, &fixed_pred, &float_pred)?;
    let table = vec![
        (
            "examples".into(),
            format!("{limit} in batches of {}", args.batch_size),
        ),
        (
            "accuracy".into(),
            format!(
                "shared {:.2}%, fixed point {:.2}%, float {:.2}%",
                100.0 * accuracy(&mpc_pred),
                100.0 * accuracy(&fixed_pred),
                100.0 * accuracy(&float_pred)
            ),
        ),
        (
            "identical predictions".into(),
            format!("{agree} of {limit} (shared vs plaintext fixed point)"),
        ),
        (
            "online".into(),
            format!(
                "{:.2} ms per image, {:.0} images/s, {:.1} KB per image",
                1e3 * online_seconds / limit as f64,
                limit as f64 / online_seconds,
                online_bytes as f64 / limit as f64 / 1e3
            ),
        ),
        (
            "dealer".into(),
            format!(
                "{:.1} KB per image, {:.2} s compute",
                dealer_bytes as f64 / limit as f64 / 1e3,
                dealer_r["compute_seconds"].as_f64().unwrap_or(f64::NAN)
            ),
        ),
        (
            "report".into(),
            out.join("mpc-infer.md").display().to_string(),
        ),
    ];
    Ok(Output {
        json: result,
        table,
    })
}

fn write_report(
    out: &Path,
    result: &Value,
    labels: &[u32],
    mpc: &[usize],
    fixed: &[usize],
    float: &[usize],
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let mut csv = String::from("index,label,shared,fixed_point,float\n");
    for i in 0..labels.len() {
        csv.push_str(&format!(
            "{i},{},{},{},{}\n",
            labels[i], mpc[i], fixed[i], float[i]
        ));
    }
    write_atomic(&out.join("predictions.csv"), csv.as_bytes())?;
    let pretty = serde_json::to_string_pretty(result).map_err(|e| Error::Tensor(e.to_string()))?;
    write_atomic(&out.join("mpc-infer.json"), pretty.as_bytes())?;
    let f = |k: &str| result[k].as_f64().unwrap_or(f64::NAN);
    let n = f("examples");
    let md = format!(
        "# Secret-shared inference\n\n\
         Run `{run}`, {n} test examples in batches of {batch}, three processes on loopback.\n\n\
         ## Trust model\n\n\
         - **Parties:** the model owner (party 0) holds the weights; the client (party 1) holds \
           the inputs. Each holds additive shares over Z_2^64 of every intermediate value and \
           sees only uniformly masked openings. The client alone learns the logits; the owner \
           learns nothing about the inputs. The layer shapes are public.\n\
         - **Dealer** (CrypTen's trusted first party): hands out Beaver triples that do not \
           depend on the inputs or weights. It must not collude with either party: with its \
           masks, a party's openings would reveal the other's data.\n\
         - **Semi-honest:** the parties follow the protocol; a deviating party can corrupt the \
           result (there are no MACs).\n\
         - **Statistical:** local truncation (SecureML) fails with probability |v|/2^63 for \
           a value v: expected failures over this run {fail:.2e}.\n\n\
         ## Results\n\n\
         | | |\n|---|---|\n\
         | accuracy, shared | {ma:.2}% |\n\
         | accuracy, plaintext fixed point ({frac} fractional bits) | {fa:.2}% |\n\
         | accuracy, float model | {fl:.2}% |\n\
         | predictions identical to the fixed-point model | {agree} of {n} |\n\
         | largest logit difference | {gap} units of 2^-{frac} |\n\
         | online time per image | {ms:.3} ms ({ips:.0} images/s) |\n\
         | online bytes per image (both directions) | {ob:.0} |\n\
         | setup bytes (weight shares, opened weights) | {sb:.0} |\n\
         | dealer bytes per image | {db:.0} |\n\
         | dealer compute | {dc:.2} s |\n",
        run = result["run_dir"].as_str().unwrap_or(""),
        batch = result["batch_size"],
        fail = f("expected_truncation_failures"),
        ma = 100.0 * f("mpc_accuracy"),
        fa = 100.0 * f("fixed_point_accuracy"),
        fl = 100.0 * f("float_accuracy"),
        frac = crate::mpc::FRAC_BITS,
        agree = result["identical_to_fixed_point"],
        gap = result["largest_logit_gap_ulps"],
        ms = f("ms_per_image"),
        ips = f("images_per_second"),
        ob = f("online_bytes_per_image"),
        sb = f("setup_bytes"),
        db = f("dealer_bytes_per_image"),
        dc = f("dealer_compute_seconds"),
    );
    write_atomic(&out.join("mpc-infer.md"), md.as_bytes())?;
    Ok(())
}
