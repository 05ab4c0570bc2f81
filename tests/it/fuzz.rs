//! Fuzzing of the readers that take a user's bytes: the config loader, the IDX reader, the
//! metrics CSV reader and the events (ledger) CSV. Each target mutates valid inputs (bit
//! flips, byte changes, cuts, insertions, splices) and also feeds random bytes, and checks
//! that the reader returns (Ok or Err) without panicking.
//!
//! In CI each target runs `DPTRAIN_FUZZ_SECONDS` (default 3) seconds; a long campaign is
//! `DPTRAIN_FUZZ_SECONDS=600 cargo test --release --test it fuzz -- --test-threads 2`.
//! A crash prints the input (hex) to add as a regression test.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use dptrain::config::RunConfig;
use dptrain::data::idx::parse_idx;
use dptrain::privacy::Ledger;
use dptrain::report::records::parse_metrics;

/// SplitMix64: a small deterministic generator (a fixed seed per target, so a campaign can
/// be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Interesting bytes for text formats.
const TOKENS: &[&[u8]] = &[
    b"=",
    b"\"",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"\n",
    b".",
    b"-",
    b"e",
    b"nan",
    b"inf",
    b"1e308",
    b"-0",
    b"0",
    b"99999999999999999999",
    b"#",
    b"\xff",
    b"\x00",
    b"true",
];

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(10) == 0 {
        return (0..rng.below(64)).map(|_| rng.next() as u8).collect();
    }
    let mut data = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.truncate(at),
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, token.iter().copied());
            }
            4 if !data.is_empty() => {
                let end = (at + rng.below(16)).min(data.len());
                data.drain(at.min(end)..end);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let to = (from + rng.below(32)).min(other.len());
                data.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    data
}

/// Runs `target` on mutated inputs for the configured time; panics name the input.
fn fuzz(name: &str, seed: u64, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8])) -> u64 {
    let seconds: f64 = std::env::var("DPTRAIN_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let budget = Duration::from_secs_f64(seconds);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut runs = 0u64;
    let mut crash = None;
    while start.elapsed() < budget {
        let input = mutate(&mut rng, &seeds);
        if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
            crash = Some(input);
            break;
        }
        runs += 1;
    }
    if let Some(input) = crash {
        let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
        panic!("{name}: the reader panicked after {runs} inputs on {hex}");
    }
    eprintln!(
        "fuzz {name}: {runs} inputs in {:.0} s, no panic",
        start.elapsed().as_secs_f64()
    );
    runs
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn fuzz_config_loader() {
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(root().join("configs"))
        .unwrap()
        .chain(std::fs::read_dir(root().join("configs/schedules")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    let runs = fuzz("config", 1, seeds, |input| {
        let text = String::from_utf8_lossy(input);
        let _ = RunConfig::parse(&text, Path::new("fuzz.toml"), &[]);
        let _ = RunConfig::parse(
            &text,
            Path::new("fuzz.toml"),
            &["privacy.delta=1e-6".into()],
        );
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_idx_reader() {
    let idx = |magic: u32, dims: &[u32], payload: &[u8]| -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(payload);
        out
    };
    let seeds = vec![
        idx(0x0803, &[2, 28, 28], &[7; 2 * 784]),
        idx(0x0801, &[3], &[1, 2, 3]),
        idx(0x0803, &[1, 2, 2], &[0, 255, 3, 4]),
    ];
    let mut gz = seeds.clone();
    for s in &seeds {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(s).unwrap();
        gz.push(e.finish().unwrap());
    }
    let runs = fuzz("idx", 2, gz, |input| {
        for dims in [1, 3] {
            let _ = parse_idx(input, Path::new("fuzz.idx"), dims);
        }
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_metrics_csv_reader() {
    let seeds = vec![
        b"epoch,step,train_loss,test_loss,test_accuracy,epsilon,noise_multiplier,clip_norm,nonfinite_examples\n1,235,0.7,0.4,0.88,3.0,0.74,1.0,0\n2,469,0.4,0.38,0.9,3.0,0.74,1.0,2\n".to_vec(),
    ];
    let runs = fuzz("metrics", 3, seeds, |input| {
        let _ = parse_metrics(input, Path::new("metrics.csv"));
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_events_csv_reader() {
    let seeds = vec![
        b"sample_rate,noise_multiplier,steps\n0.004266666666666667,1.1,14063\n0.01,0.8,10\n"
            .to_vec(),
        b"sample_rate,noise_multiplier,steps,count_noise_multiplier\n0.0341,1.92,1172,204.8\n0.5,1.0,3,\n"
            .to_vec(),
    ];
    let runs = fuzz("events", 4, seeds, |input| {
        if let Ok(ledger) = Ledger::parse_csv(input, Path::new("events.csv")) {
            // What parses must account without panicking too.
            let mut accountant = dptrain::privacy::RdpAccountant::default();
            if accountant.compose_ledger(&ledger).is_ok() {
                let _ = accountant.epsilon(1e-5);
            }
        }
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_table_csv_reader() {
    // Adult-like rows under a config with every column kind, bins, missing values encoded
    // and an "other" bucket: mutated train and test texts must give a table or an error.
    let config: dptrain::data::TableConfig = toml::from_str(
        r#"
train = { path = "train.csv" }
test = { path = "test.csv", skip_rows = 1 }
missing = ["?"]
on_missing = "encode"
columns = [
    { name = "age", kind = "numeric", range = [17, 90], bins = [30, 45] },
    { name = "workclass", kind = "categorical", values = ["Private", "State-gov"], unknown = "other" },
    { name = "gain", kind = "numeric", log = true },
    { name = "city", kind = "categorical" },
    { name = "skip", kind = "ignore" },
    { name = "income", kind = "label", positive = [">50K", ">50K."], negative = ["<=50K", "<=50K."] },
]
"#,
    )
    .unwrap();
    let seeds = vec![
        b"39, State-gov, 2174, \"Paris, FR\", 1, <=50K\n50, ?, 0, Lyon, 2, >50K\n".to_vec(),
        b"|1x3 Cross validator\n25, Private, 0, Paris, 3, <=50K.\n38, Other, 7688, ?, 4, >50K.\n"
            .to_vec(),
    ];
    let runs = fuzz("table", 5, seeds.clone(), |input| {
        // The mutated text as the training file, then as the test file.
        let _ = dptrain::data::table::parse_table(&config, input, &seeds[1]);
        let _ = dptrain::data::table::parse_table(&config, &seeds[0], input);
    });
    assert!(runs > 0);
}

/// A message as Flower sends it: a config record and an array record of each dtype, the
/// float32 array cut into chunks of 64 bytes so that the tree has several chunks.
fn flower_message() -> dptrain::federated::flower::records::Deflated {
    use dptrain::federated::flower::npy::{NpyArray, Values};
    use dptrain::federated::flower::records::{Record, config_ints, deflate};
    let arrays = vec![
        (
            "w".to_string(),
            NpyArray::new(vec![4, 8], Values::F32((0..32).map(|i| i as f32).collect())).unwrap(),
        ),
        (
            "b".to_string(),
            NpyArray::new(vec![3], Values::F64(vec![0.5, -1.0, 2.0])).unwrap(),
        ),
        (
            "n".to_string(),
            NpyArray::new(vec![], Values::I64(vec![7])).unwrap(),
        ),
    ];
    let content = vec![
        ("arrays".to_string(), Record::Arrays(arrays)),
        (
            "config".to_string(),
            Record::Config(config_ints(&[("round", 1), ("client", 3)])),
        ),
    ];
    let metadata = dptrain::federated::flower::proto::Metadata {
        run_id: 1,
        message_type: "train".into(),
        ..Default::default()
    };
    deflate(&metadata, &content, 64)
}

#[test]
fn fuzz_npy_reader() {
    use dptrain::federated::flower::npy::{NpyArray, Values};
    let seeds: Vec<Vec<u8>> = [
        NpyArray::new(vec![2, 3], Values::F32(vec![1.0, -2.0, 0.5, 0.0, 3.0, 9.0])).unwrap(),
        NpyArray::new(vec![4], Values::F64(vec![1e300, -0.0, 2.5, 1.0])).unwrap(),
        NpyArray::new(vec![], Values::I64(vec![-5])).unwrap(),
        NpyArray::new(vec![0, 3], Values::F32(vec![])).unwrap(),
    ]
    .iter()
    .map(NpyArray::to_bytes)
    .collect();
    let runs = fuzz("npy", 6, seeds, |input| {
        if let Ok(array) = NpyArray::from_bytes(input) {
            // What reads must write back and read again to the same array.
            let again = NpyArray::from_bytes(&array.to_bytes()).expect("its own bytes read");
            assert_eq!(again.shape, array.shape);
        }
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_flower_object_decoder() {
    use dptrain::federated::flower::objects::{Object, inflate_array, object_id, parse_names};
    let message = flower_message();
    let seeds: Vec<Vec<u8>> = message.objects.iter().map(Object::encode).collect();
    let runs = fuzz("flower-object", 7, seeds, |input| {
        // Under its true id, so that the head, children and body are what is checked.
        if let Ok(object) = Object::decode(&object_id(input), input) {
            let _ = parse_names(&object);
            let _ = inflate_array(&object, &|_| None);
        }
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_flower_message_inflate() {
    // One object of a valid tree replaced by a mutation of itself, kept under the id its
    // parent names (as if its hash had matched): inflating the tree must give a message or
    // an error, never a panic.
    use dptrain::federated::flower::objects::{Object, object_id};
    use dptrain::federated::flower::records::inflate;
    use std::collections::HashMap;
    let message = flower_message();
    let objects: Vec<(String, Object)> = message
        .objects
        .iter()
        .map(|o| (o.id(), o.clone()))
        .collect();
    let seeds: Vec<Vec<u8>> = message.objects.iter().map(Object::encode).collect();
    let which = std::cell::Cell::new(0usize);
    let runs = fuzz("flower-inflate", 8, seeds, |input| {
        let Ok(mutant) = Object::decode(&object_id(input), input) else {
            return;
        };
        let index = which.get() % objects.len();
        which.set(index + 1);
        let mut map: HashMap<String, Object> = objects.iter().cloned().collect();
        map.insert(objects[index].0.clone(), mutant);
        let _ = inflate(&message.message_id, &map);
    });
    assert!(runs > 0);
}

#[test]
fn fuzz_server_step_frames() {
    // The frames `dptrain fl server-step` reads from the ServerApp: a length, then a
    // protobuf RecordDict; mutated streams must give content, an error or the end.
    use dptrain::federated::flower::records::{content_from_proto, content_to_proto};
    use dptrain::federated::flower::server::{read_frame, write_frame};
    use prost::Message;
    let message = flower_message();
    let objects: std::collections::HashMap<String, _> = message
        .objects
        .iter()
        .map(|o| (o.id(), o.clone()))
        .collect();
    let (_, content) =
        dptrain::federated::flower::records::inflate(&message.message_id, &objects).unwrap();
    let mut stream = Vec::new();
    write_frame(&mut stream, &content_to_proto(&content).encode_to_vec()).unwrap();
    write_frame(
        &mut stream,
        &content_to_proto(&content[1..]).encode_to_vec(),
    )
    .unwrap();
    let runs = fuzz("server-step-frames", 9, vec![stream], |input| {
        let mut reader = input;
        for _ in 0..4 {
            match read_frame(&mut reader) {
                Ok(Some(frame)) => {
                    if let Ok(dict) =
                        dptrain::federated::flower::proto::RecordDict::decode(frame.as_slice())
                    {
                        let _ = content_from_proto(dict);
                    }
                }
                _ => break,
            }
        }
    });
    assert!(runs > 0);
}
