//! Helpers shared by the integration tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
