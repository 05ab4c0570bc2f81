//! Helpers shared by the integration tests.

use std::collections::HashMap;

use dptrain::data::{Dataset, Mnist, MnistConfig, load_mnist};
use dptrain::privacy::{Conversion, Orders, PrivacyEvent, PrivacySpent, RdpAccountant};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The shipped MNIST, read once per test process (checksums are checked in data.rs).
pub fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| {
        load_mnist(&MnistConfig {
            dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/mnist"),
            verify_checksums: false,
            ..MnistConfig::default()
        })
        .unwrap()
    })
}

/// The first `n` examples of `data`.
pub fn head(data: &Dataset, n: usize) -> Dataset {
    data.split_at(n).0
}

/// A path under `tests/data`.
pub fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
}

/// One row of a reference CSV, by column name.
pub struct Row(HashMap<String, String>);

impl Row {
    /// The raw text of a column.
    pub fn text(&self, column: &str) -> &str {
        self.0
            .get(column)
            .unwrap_or_else(|| panic!("no column {column}"))
    }

    /// A column as f64 (Python `repr` floats, `inf` included).
    pub fn f64(&self, column: &str) -> f64 {
        let text = self.text(column);
        text.parse()
            .unwrap_or_else(|_| panic!("column {column}: `{text}` is not a number"))
    }

    /// A column as u64.
    pub fn u64(&self, column: &str) -> u64 {
        self.text(column).parse().unwrap()
    }
}

/// All rows of a CSV under `tests/data`.
pub fn rows(relative: &str) -> Vec<Row> {
    let mut reader = csv::Reader::from_path(data(relative)).unwrap();
    let header = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            Row(header
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect())
        })
        .collect()
}

/// |a − b| / |b|, with equal infinities and exact zeros counting as 0.
pub fn relative_error(a: f64, b: f64) -> f64 {
    if a == b { 0.0 } else { ((a - b) / b).abs() }
}

/// What `steps` steps at (q, σ) spend at δ under the default orders.
pub fn spent(q: f64, sigma: f64, steps: u64, delta: f64, conversion: Conversion) -> PrivacySpent {
    let mut accountant = RdpAccountant::new(Orders::dp_accounting_default(), conversion);
    accountant
        .compose(PrivacyEvent::new(q, sigma, steps).unwrap())
        .unwrap();
    accountant.epsilon(delta).unwrap()
}

/// ε of `steps` steps at (q, σ) and δ, default orders and conversion.
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> f64 {
    spent(q, sigma, steps, delta, Conversion::Improved).epsilon
}

/// The `dptrain` binary run with `args` from the repository root.
pub fn dptrain(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dptrain"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("the dptrain binary runs")
}

/// The one JSON object `dptrain args` prints; the test fails with stderr if it fails.
pub fn dptrain_json(args: &[&str]) -> serde_json::Value {
    let out = dptrain(args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}
