//! The readers of issue 13 on small files written here in the real formats (no CIFAR-10 or
//! text corpus can be fetched on these machines): CIFAR-10 binary records, token sequences
//! in JSONL and CSV, Fashion-MNIST's normalisation, the synthetic generators; and the plan
//! equals the run: N comes from the data actually configured, for every source.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use dptrain::config::{DataConfig, RunConfig};
use dptrain::data::cifar::{CifarConfig, load_cifar10, read_batch};
use dptrain::data::synthetic::{SyntheticImages, SyntheticTokens};
use dptrain::data::tokens::{TokenConfig, load_tokens};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dptrain-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CIFAR-10 record: label, then 1,024 red, green and blue bytes.
fn record(label: u8, red: u8, green: u8, blue: u8) -> Vec<u8> {
    let mut r = vec![label];
    for v in [red, green, blue] {
        r.extend(std::iter::repeat_n(v, 1024));
    }
    r
}

#[test]
fn cifar10_binary_records_are_read_and_standardised_per_channel() {
    let dir = scratch("cifar");
    let mut bytes = Vec::new();
    for i in 0..3u8 {
        bytes.extend(record(i, 255, 0, 128));
    }
    std::fs::write(dir.join("data_batch_1.bin"), &bytes).unwrap();
    std::fs::write(dir.join("test_batch.bin"), record(9, 0, 255, 0)).unwrap();
    let config = CifarConfig {
        dir: dir.clone(),
        train_files: vec!["data_batch_1.bin".into()],
        test_file: "test_batch.bin".into(),
    };
    let (train, test) = load_cifar10(&config).unwrap();
    assert_eq!((train.len(), test.len()), (3, 1));
    assert_eq!(train.labels, vec![0, 1, 2]);
    assert_eq!(train.feature_shape, vec![3, 32, 32]);
    // Channel 0 of example 1 is 255: (1 − 0.4914)/0.2470; channel 2 is 128/255.
    let x = train.example(1);
    assert!((x[0] - (1.0 - 0.4914) / 0.2470).abs() < 1e-5);
    assert!((x[1024] - (0.0 - 0.4822) / 0.2435).abs() < 1e-5);
    assert!((x[2048] - (128.0 / 255.0 - 0.4465) / 0.2616).abs() < 1e-5);
    // A truncated file and a bad label are errors naming the file and the place.
    std::fs::write(dir.join("short.bin"), &bytes[..5000]).unwrap();
    let err = read_batch(&dir.join("short.bin")).unwrap_err().to_string();
    assert!(
        err.contains("short.bin:byte 3073") && err.contains("truncated"),
        "{err}"
    );
    std::fs::write(dir.join("bad.bin"), record(12, 0, 0, 0)).unwrap();
    let err = read_batch(&dir.join("bad.bin")).unwrap_err().to_string();
    assert!(
        err.contains("record 0") && err.contains("label 12"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn token_config(dir: &Path, train: &str, test: &str) -> TokenConfig {
    TokenConfig {
        train: dir.join(train),
        test: dir.join(test),
        vocab_size: 10,
        max_len: 4,
        padding_id: 0,
        classes: 2,
    }
}

#[test]
fn token_sequences_are_padded_cut_and_checked() {
    let dir = scratch("tokens");
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"label\": 1, \"tokens\": [5, 5, 3]}\n\n{\"label\": 0, \"tokens\": [1, 2, 3, 4, 9, 9]}\n",
    )
    .unwrap();
    std::fs::write(dir.join("test.csv"), "label,tokens\n0,7 8\n1,\n").unwrap();
    let data = load_tokens(&token_config(&dir, "train.jsonl", "test.csv")).unwrap();
    assert_eq!(
        data.train.features,
        vec![5.0, 5.0, 3.0, 0.0, 1.0, 2.0, 3.0, 4.0]
    );
    assert_eq!(data.train.labels, vec![1, 0]);
    assert_eq!(data.truncated, 1);
    assert_eq!(
        data.test.features,
        vec![7.0, 8.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
    let vocab = data.train.vocab.unwrap();
    assert_eq!((vocab.size, vocab.padding), (10, Some(0)));
    // Bad lines: the file, the line and what is expected.
    let cases = [
        (
            "{\"label\": 1, \"tokens\": [3, 10]}\n",
            "line 1: token id 10 is beyond the vocabulary: data.vocab_size = 10",
        ),
        (
            "{\"label\": 0, \"tokens\": [3]}\n{\"label\": 2, \"tokens\": [3]}\n",
            "line 2: label 2 is out of range",
        ),
        (
            "{\"label\": 0, \"tokens\": [3, 0]}\n",
            "the padding id 0 occurs as a token",
        ),
        (
            "{\"label\": 0, \"tokens\": [3, -1]}\n",
            "token -1 is not a whole number",
        ),
        ("not json\n", "line 1: not a JSON object"),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.join("bad.jsonl"), text).unwrap();
        let err = load_tokens(&token_config(&dir, "bad.jsonl", "test.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.jsonl") && err.contains(expected),
            "`{err}` lacks `{expected}`"
        );
    }
    std::fs::write(dir.join("bad.csv"), "tokens,label\n").unwrap();
    let err = load_tokens(&token_config(&dir, "train.jsonl", "bad.csv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.csv:line 1: header"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synthetic_data_is_seeded_and_carries_its_planted_signal() {
    let images = SyntheticImages {
        shape: vec![3, 8, 8],
        train: 50,
        test: 10,
        classes: 4,
        signal: 1.0,
        seed: 5,
    };
    let (a, _) = images.generate().unwrap();
    let (b, _) = images.generate().unwrap();
    assert_eq!(a, b);
    let tokens = SyntheticTokens {
        max_len: 16,
        vocab_size: 100,
        train: 40,
        test: 8,
        classes: 2,
        signal: 0.3,
        seed: 1,
    };
    let (train, _) = tokens.generate().unwrap();
    assert_eq!(train.feature_shape, vec![16]);
    assert!(
        train
            .features
            .iter()
            .all(|&v| (0.0..100.0).contains(&v) && v.fract() == 0.0)
    );
    // Every sequence has at least max_len / 2 real tokens.
    for i in 0..train.len() {
        assert!(train.example(i).iter().filter(|&&v| v != 0.0).count() >= 4);
    }
}

/// Writes an IDX gzip file.
fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8]) {
    let mut raw = magic.to_be_bytes().to_vec();
    for d in dims {
        raw.extend(d.to_be_bytes());
    }
    raw.extend_from_slice(data);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

/// An MNIST-format folder of `n` training and 100 test images (checksums written).
fn small_mnist(n: usize) -> PathBuf {
    let dir = scratch(&format!("mnist-{n}"));
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i * 31 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    write_idx(
        &dir.join("train-images-idx3-ubyte.gz"),
        0x803,
        &[n as u32, 28, 28],
        &pixels,
    );
    write_idx(
        &dir.join("train-labels-idx1-ubyte.gz"),
        0x801,
        &[n as u32],
        &labels,
    );
    write_idx(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        0x803,
        &[100, 28, 28],
        &pixels[..78_400],
    );
    write_idx(
        &dir.join("t10k-labels-idx1-ubyte.gz"),
        0x801,
        &[100],
        &labels[..100],
    );
    let mut sums = String::new();
    for file in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(std::fs::read(dir.join(file)).unwrap());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        sums.push_str(&format!("{hex}  {file}\n"));
    }
    std::fs::write(dir.join("SHA256SUMS"), sums).unwrap();
    dir
}

#[test]
fn every_data_source_plans_with_the_size_the_run_reads() {
    let dir = small_mnist(1_000);
    let tokens_dir = scratch("plan-tokens");
    let lines: String = (0..37)
        .map(|i| format!("{{\"label\": {}, \"tokens\": [{}, 2]}}\n", i % 2, 1 + i % 8))
        .collect();
    std::fs::write(tokens_dir.join("train.jsonl"), &lines).unwrap();
    let test: String = lines.lines().take(3).map(|l| format!("{l}\n")).collect();
    std::fs::write(tokens_dir.join("test.jsonl"), test).unwrap();
    let sources = [
        format!("dataset = \"mnist\"\ndir = {:?}\nholdout = 100", dir.display().to_string()),
        format!("dataset = \"mnist\"\ndir = {:?}", dir.display().to_string()),
        "dataset = \"fashion_mnist\"\ndir = \"datasets/fashion-mnist\"\nvalidation = 500\nvalidation_public = true".into(),
        format!(
            "dataset = \"tokens\"\ntrain = {:?}\ntest = {:?}\nvocab_size = 10\nmax_len = 3\nclasses = 2",
            tokens_dir.join("train.jsonl").display().to_string(),
            tokens_dir.join("test.jsonl").display().to_string()
        ),
        "dataset = \"synthetic_images\"\nshape = [3, 8, 8]\ntrain = 321\ntest = 10\nclasses = 3".into(),
        "dataset = \"synthetic_tokens\"\nmax_len = 8\nvocab_size = 50\ntrain = 123\ntest = 10\nclasses = 2".into(),
    ];
    for data in sources {
        let text = format!(
            "name = \"t\"\nseed = 0\n[data]\n{data}\n[model]\nlayers = [{{ kind = \"flatten\" }}, {{ kind = \"linear\", out_features = \"$classes\" }}]\n\
             [privacy]\ntarget_epsilon = 3.0\ndelta = 1e-5\n[training]\nepochs = 1\nexpected_batch_size = 16\n\
             optimizer = {{ name = \"sgd\", learning_rate = 0.1 }}\n"
        );
        let config = RunConfig::parse(&text, Path::new("t.toml"), &[]).unwrap();
        let planned = config.data.train_size().unwrap();
        let read = config.data.load().unwrap().train.len();
        assert_eq!(planned, read, "{data}");
        if let DataConfig::Mnist(_) = config.data {
            assert!(planned == 900 || planned == 1_000, "{data}: {planned}");
        }
    }
    let _ = std::fs::remove_dir_all(&tokens_dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn account_and_train_agree_on_a_folder_of_another_size() {
    // The example: a 10,000-example folder was planned as if it held 60,000.
    let dir = small_mnist(2_000);
    let out = scratch("plan-run-out");
    let config = out.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"t\"\nseed = 0\n[data]\ndataset = \"mnist\"\ndir = {:?}\n[model]\nkind = \"logreg\"\n\
             [privacy]\ntarget_epsilon = 3.0\ndelta = 1e-5\n[training]\nepochs = 2\nexpected_batch_size = 64\n\
             optimizer = {{ name = \"sgd\", learning_rate = 0.1 }}\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_dptrain");
    let account = Command::new(bin)
        .args(["account", config.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(
        account.status.success(),
        "{}",
        String::from_utf8_lossy(&account.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&account.stdout).unwrap();
    let run_dir = out.join("run");
    let train = Command::new(bin)
        .args([
            "train",
            config.to_str().unwrap(),
            "--out",
            run_dir.to_str().unwrap(),
            "-q",
        ])
        .output()
        .unwrap();
    assert!(
        train.status.success(),
        "{}",
        String::from_utf8_lossy(&train.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(plan["sample_rate"].as_f64().unwrap(), 64.0 / 2000.0);
    assert_eq!(plan["sample_rate"], summary["sample_rate"], "{summary}");
    assert_eq!(plan["steps"], summary["steps"], "{summary}");
    let statement = std::fs::read_to_string(run_dir.join("privacy.md")).unwrap();
    assert!(
        statement.contains("2000") || statement.contains("2,000"),
        "{statement}"
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&dir);
}
