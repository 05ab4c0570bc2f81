//! Tabular data from CSV files described in the config (`dataset = "csv"`): the Adult
//! benchmark and any table like it.
//!
//! Every column of the file is declared, in order, with its kind:
//! - `numeric`: parsed as a finite number, optionally `log` (ln(1 + x)), then scaled with
//!   public constants: `range = [lo, hi]` maps the clamped value to [−1, 1], or `mean`/`std`
//!   standardises it; `bins` (public cut points) adds one-hot buckets. With none of them,
//!   mean and standard deviation are computed from the training file (**data-derived**: not
//!   covered by the privacy guarantee, and privacy.md says so).
//! - `categorical`: one-hot over `values` (public, e.g. a data set's documented categories);
//!   without `values`, the sorted categories of the training file (data-derived). A value
//!   outside the vocabulary is an error, or with `unknown = "other"` one extra slot.
//! - `label`: the binary target, `positive` values give class 1, `negative` values class 0
//!   (without `negative`, every other value is 0).
//! - `ignore`: read and dropped.
//!
//! Missing values (`missing` markers such as `?`) are an error, drop the row
//! (`on_missing = "drop"`), or are encoded (`on_missing = "encode"`: a categorical column
//! gets one extra "missing" slot, a numeric one the value 0, the centre of its scale). Files
//! may be gzip-compressed (`.gz`) and may start with rows to skip (Adult's test file opens
//! with `|1x3 Cross validator`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Dataset;
use super::idx::{gunzip_if_gzip, read_sha256sums, verify_sha256};
use crate::error::{Error, Result};

/// A CSV data set: files, format and the columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// The training file.
    pub train: TableFile,
    /// The test file.
    pub test: TableFile,
    /// A `SHA256SUMS` file listing both files (checked before reading), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksums: Option<PathBuf>,
    /// The field separator, one character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: String,
    /// Strip spaces around fields (Adult separates fields by `, `). Default true.
    #[serde(default = "yes")]
    pub trim: bool,
    /// The first (non-skipped) row names the columns; it must match `columns`.
    #[serde(default)]
    pub header: bool,
    /// Field values that mean "missing" (e.g. `?`).
    #[serde(default)]
    pub missing: Vec<String>,
    /// What a missing value does.
    #[serde(default)]
    pub on_missing: OnMissing,
    /// Hold out the last `holdout` training rows as the evaluation set (for tuning; the
    /// test file is then not read for evaluation). 0: off.
    #[serde(default)]
    pub holdout: usize,
    /// Every column of the file, in order.
    pub columns: Vec<Column>,
}

fn comma() -> String {
    ",".into()
}

fn yes() -> bool {
    true
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableFile {
    /// The path (`.gz` is decompressed).
    pub path: PathBuf,
    /// Lines to skip at the start of the file (before any header).
    #[serde(default)]
    pub skip_rows: usize,
}

/// What a missing value does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    /// Stop with an error naming the file, line and column.
    #[default]
    Error,
    /// Drop the row (the counts are reported).
    Drop,
    /// A categorical column's extra "missing" slot; a numeric column's value 0.
    Encode,
}

/// What a categorical value outside the vocabulary does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Stop with an error naming the file, line, column and value.
    #[default]
    Error,
    /// One extra "other" slot.
    Other,
}

/// A column and how it becomes features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Column {
    /// A number, scaled.
    Numeric {
        /// The column's name.
        name: String,
        /// Apply ln(1 + x) first (for heavy tails such as capital gains; x ≥ 0).
        #[serde(default)]
        log: bool,
        /// Public bounds, in the column's units: the value is clamped to them and mapped
        /// to [−1, 1] (after `log`, the bounds are transformed too).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range: Option<[f64; 2]>,
        /// Public mean (with `std`): standardisation; of ln(1 + x) when `log`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mean: Option<f64>,
        /// Public standard deviation (with `mean`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        std: Option<f64>,
        /// Public cut points (ascending, in the column's units before `log`): one-hot
        /// buckets x < b₀, b₀ ≤ x < b₁, …, x ≥ bₖ, as well as the scaled value when a range
        /// or mean/std is given (alone otherwise). Lets a linear model bend.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bins: Option<Vec<f64>>,
    },
    /// A category, one-hot encoded.
    Categorical {
        /// The column's name.
        name: String,
        /// The vocabulary (public); without it, the training file's categories.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        values: Option<Vec<String>>,
        /// What a value outside the vocabulary does.
        #[serde(default)]
        unknown: Unknown,
    },
    /// The binary label.
    Label {
        /// The column's name.
        name: String,
        /// Values of the positive class (1).
        positive: Vec<String>,
        /// Values of the negative class (0); empty: every other value.
        #[serde(default)]
        negative: Vec<String>,
    },
    /// Read and dropped.
    Ignore {
        /// The column's name.
        name: String,
    },
}

impl Column {
    /// True when the column's scaling or vocabulary must come from the training data: a
    /// numeric column with no range, mean/std or bins, a categorical one without values.
    pub fn is_data_derived(&self) -> bool {
        match self {
            Column::Numeric {
                range,
                mean,
                std,
                bins,
                ..
            } => range.is_none() && (mean.is_none() || std.is_none()) && bins.is_none(),
            Column::Categorical { values, .. } => values.is_none(),
            Column::Label { .. } | Column::Ignore { .. } => false,
        }
    }

    /// The column's name.
    pub fn name(&self) -> &str {
        match self {
            Column::Numeric { name, .. }
            | Column::Categorical { name, .. }
            | Column::Label { name, .. }
            | Column::Ignore { name } => name,
        }
    }
}

/// How the features were made: names, and which columns used statistics of the private
/// training data (not covered by the privacy guarantee).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    /// One name per feature (`age`, `workclass=Private`, ...).
    pub feature_names: Vec<String>,
    /// Columns whose scaling or vocabulary came from the training file.
    pub data_derived: Vec<String>,
    /// Rows dropped for missing values: (train, test).
    pub dropped: (usize, usize),
    /// The line in its file of every test row (empty for a holdout).
    pub test_lines: Vec<u64>,
}

/// The training and evaluation splits of a table.
#[derive(Debug, Clone)]
pub struct Table {
    /// Training rows.
    pub train: Dataset,
    /// Test rows, or the holdout.
    pub test: Dataset,
    /// True when `test` is the holdout taken from the training file.
    pub test_is_holdout: bool,
    /// How the features were made.
    pub encoding: Encoding,
}

impl TableConfig {
    /// Checks the declaration alone (no file is read).
    pub fn validate(&self) -> Result<()> {
        if self.delimiter.len() != 1 {
            return Err(Error::invalid(
                "data.delimiter",
                format!("{:?}", self.delimiter),
                "a single one-byte character such as \",\" or \";\"",
            ));
        }
        let labels = self
            .columns
            .iter()
            .filter(|c| matches!(c, Column::Label { .. }))
            .count();
        if labels != 1 {
            return Err(Error::invalid(
                "data.columns",
                format!("{labels} label columns"),
                "exactly one column of kind \"label\"",
            ));
        }
        let mut seen = BTreeSet::new();
        for column in &self.columns {
            let name = column.name();
            if !seen.insert(name) {
                return Err(Error::invalid(
                    "data.columns",
                    name,
                    "distinct column names",
                ));
            }
            let key = |field: &str| format!("data.columns.{name}.{field}");
            match column {
                Column::Numeric {
                    range,
                    mean,
                    std,
                    bins,
                    ..
                } => {
                    if let Some(bins) = bins {
                        let ascending = bins.windows(2).all(|w| w[0] < w[1]);
                        if bins.is_empty() || !ascending || bins.iter().any(|b| !b.is_finite()) {
                            return Err(Error::invalid(
                                key("bins"),
                                format!("{bins:?}"),
                                "at least one finite cut point, strictly ascending",
                            ));
                        }
                    }
                    if let Some([lo, hi]) = range {
                        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
                            return Err(Error::invalid(
                                key("range"),
                                format!("[{lo}, {hi}]"),
                                "two finite numbers, the first below the second",
                            ));
                        }
                        if mean.is_some() || std.is_some() {
                            return Err(Error::invalid(
                                key("mean"),
                                "set with range",
                                "either range or mean and std, not both",
                            ));
                        }
                    }
                    match (mean, std) {
                        (Some(m), Some(s)) if !(m.is_finite() && s.is_finite() && *s > 0.0) => {
                            return Err(Error::invalid(
                                key("std"),
                                s,
                                "a finite mean and a finite std above 0",
                            ));
                        }
                        (Some(_), None) | (None, Some(_)) => {
                            return Err(Error::invalid(
                                key(if mean.is_some() { "std" } else { "mean" }),
                                "missing",
                                "mean and std together",
                            ));
                        }
                        _ => {}
                    }
                }
                Column::Categorical {
                    values: Some(values),
                    ..
                } => {
                    if values.is_empty() {
                        return Err(Error::invalid(
                            key("values"),
                            "[]",
                            "at least one category (or leave it out to take them from the \
                             training file)",
                        ));
                    }
                    let distinct: BTreeSet<&String> = values.iter().collect();
                    if distinct.len() != values.len() {
                        return Err(Error::invalid(
                            key("values"),
                            "a repeated category",
                            "distinct categories",
                        ));
                    }
                }
                Column::Label {
                    positive, negative, ..
                } => {
                    if positive.is_empty() {
                        return Err(Error::invalid(
                            key("positive"),
                            "[]",
                            "at least one value of the positive class",
                        ));
                    }
                    if let Some(both) = positive.iter().find(|p| negative.contains(p)) {
                        return Err(Error::invalid(
                            key("negative"),
                            both,
                            "values that are not also positive",
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One parsed file: the fields of each kept row, and where each row was.
struct RawTable {
    rows: Vec<Vec<String>>,
    lines: Vec<u64>,
    path: PathBuf,
    dropped: usize,
}

fn parse_error(path: &Path, location: String, message: String) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        location,
        message,
    }
}

/// The file's text, decompressed when it is gzip.
fn read_text(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(gunzip_if_gzip(&raw, path)?.into_owned())
}

/// The rows of one file's (decompressed) bytes: skips its first rows, checks the header and
/// the field count of every row, and applies the missing-value rule.
fn parse_rows(config: &TableConfig, file: &TableFile, bytes: &[u8]) -> Result<RawTable> {
    parse_rows_with(config, file, bytes, false)
}

/// [`parse_rows`]; `without_label`: the file lacks the label column (rows to predict), and
/// each row gets the label's first positive value in its place, which nothing reads.
fn parse_rows_with(
    config: &TableConfig,
    file: &TableFile,
    bytes: &[u8],
    without_label: bool,
) -> Result<RawTable> {
    let path = &file.path;
    // Skip whole lines (before CSV parsing: skipped lines need not be CSV at all).
    let mut start = 0;
    for skipped in 0..file.skip_rows {
        match bytes[start..].iter().position(|&b| b == b'\n') {
            Some(end) => start += end + 1,
            None => {
                return Err(parse_error(
                    path,
                    format!("line {}", skipped + 1),
                    format!(
                        "the file ends before the {} rows to skip (skip_rows)",
                        file.skip_rows
                    ),
                ));
            }
        }
    }
    let offset = file.skip_rows as u64;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(config.delimiter.as_bytes()[0])
        .has_headers(config.header)
        .flexible(true)
        .trim(if config.trim {
            csv::Trim::All
        } else {
            csv::Trim::None
        })
        .from_reader(&bytes[start..]);
    let label = config
        .columns
        .iter()
        .enumerate()
        .find_map(|(i, c)| match c {
            Column::Label { positive, .. } => {
                Some((i, positive.first().cloned().unwrap_or_default()))
            }
            _ => None,
        });
    let names: Vec<&str> = config
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !(without_label && label.as_ref().is_some_and(|(l, _)| l == i)))
        .map(|(_, c)| c.name())
        .collect();
    if config.header {
        let header = reader
            .headers()
            .map_err(|e| parse_error(path, format!("line {}", offset + 1), e.to_string()))?;
        let found: Vec<&str> = header.iter().collect();
        if found != names {
            return Err(parse_error(
                path,
                format!("line {} (header)", offset + 1),
                format!(
                    "the header is `{}`, but data.columns declares `{}`",
                    found.join(","),
                    names.join(",")
                ),
            ));
        }
    }
    let mut table = RawTable {
        rows: Vec::new(),
        lines: Vec::new(),
        path: path.clone(),
        dropped: 0,
    };
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line()) + offset;
            parse_error(path, format!("line {line}"), e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line()) + offset;
        if record.len() != names.len() {
            return Err(parse_error(
                path,
                format!("line {line}"),
                format!(
                    "{} fields, expected {} ({})",
                    record.len(),
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        let mut row: Vec<String> = record.iter().map(str::to_string).collect();
        let left_out = match (without_label, &label) {
            (true, Some((at, placeholder))) => {
                row.insert(*at, placeholder.clone());
                Some(*at)
            }
            _ => None,
        };
        // The file's column (1-based) of a config column: one less after a left-out label.
        let in_file = |column: usize| column + usize::from(left_out.is_none_or(|at| column < at));
        // Ignored columns may hold anything, missing markers included.
        let missing_at = row.iter().zip(&config.columns).position(|(field, column)| {
            !matches!(column, Column::Ignore { .. }) && config.missing.iter().any(|m| m == field)
        });
        if let Some(column) = missing_at {
            match config.on_missing {
                OnMissing::Error => {
                    return Err(parse_error(
                        path,
                        format!(
                            "line {line}, column {} ({})",
                            in_file(column),
                            config.columns[column].name()
                        ),
                        format!(
                            "missing value `{}`; set data.on_missing = \"drop\" or \"encode\"",
                            &row[column]
                        ),
                    ));
                }
                OnMissing::Drop => {
                    table.dropped += 1;
                    continue;
                }
                OnMissing::Encode => {}
            }
        }
        table.rows.push(row);
        table.lines.push(line);
    }
    if table.rows.is_empty() {
        return Err(parse_error(
            path,
            format!("line {}", offset + 1),
            "no rows: expected at least one record".into(),
        ));
    }
    Ok(table)
}

/// A numeric column's scaling: value ↦ (value − shift) · scale, after clamping to the
/// bounds when set.
#[derive(Debug, Clone, Copy)]
struct Scaling {
    shift: f64,
    scale: f64,
    clamp: Option<(f64, f64)>,
}

/// How one column becomes features, fixed before any row is encoded.
enum Plan {
    Numeric {
        log: bool,
        /// None: no scaled feature (bins only).
        scaled: Option<Scaling>,
        /// Cut points on the raw value (one-hot buckets), and whether a missing value has
        /// its own slot after them.
        bins: Option<Vec<f64>>,
        missing_slot: bool,
    },
    Categorical {
        index: HashMap<String, usize>,
        width: usize,
        other: Option<usize>,
        missing: Option<usize>,
    },
    Label {
        positive: Vec<String>,
        negative: Vec<String>,
    },
    Ignore,
}

/// A numeric field: its value, and the value after `ln(1 + x)` when `log` (else the same).
fn number(
    table: &RawTable,
    row: usize,
    column: usize,
    name: &str,
    log: bool,
) -> Result<(f64, f64)> {
    let text = &table.rows[row][column];
    let at = || format!("line {}, column {} ({name})", table.lines[row], column + 1);
    let value: f64 = text.parse().map_err(|_| {
        parse_error(
            &table.path,
            at(),
            format!("expected a number, found `{text}`"),
        )
    })?;
    if !value.is_finite() {
        return Err(parse_error(
            &table.path,
            at(),
            format!("expected a finite number, found `{text}`"),
        ));
    }
    if !log {
        return Ok((value, value));
    }
    if value < 0.0 {
        return Err(parse_error(
            &table.path,
            at(),
            format!("{value} is negative: `log = true` takes values of at least 0"),
        ));
    }
    Ok((value, value.ln_1p()))
}

/// Loads and encodes both files of `config` (checksums first, when listed; the test file
/// is not read when a holdout replaces it).
pub fn load_table(config: &TableConfig) -> Result<Table> {
    config.validate()?;
    if let Some(sums_path) = &config.checksums {
        let sums = read_sha256sums(sums_path)?;
        verify_sha256(&config.train.path, &sums, sums_path)?;
        verify_sha256(&config.test.path, &sums, sums_path)?;
    }
    let train = read_text(&config.train.path)?;
    let test = match config.holdout {
        0 => read_text(&config.test.path)?,
        _ => Vec::new(),
    };
    parse_table(config, &train, &test)
}

/// The text of column `name` for every training example of `config`, in the order of
/// [`load_table`]'s training split (rows dropped for missing values and the holdout are left
/// out as there): the keys of a federated partition by that column.
pub fn train_column(config: &TableConfig, name: &str) -> Result<Vec<String>> {
    let Some(c) = config.columns.iter().position(|c| c.name() == name) else {
        let names: Vec<&str> = config.columns.iter().map(|c| c.name()).collect();
        return Err(Error::invalid(
            "federated.partition.column",
            name,
            format!("one of the table's columns ({})", names.join(", ")),
        ));
    };
    let raw = parse_rows(config, &config.train, &read_text(&config.train.path)?)?;
    let rows = raw.rows.len().saturating_sub(config.holdout);
    Ok(raw
        .rows
        .into_iter()
        .take(rows)
        .map(|mut row| std::mem::take(&mut row[c]))
        .collect())
}

/// Rows to predict: the training file of `config` (checksummed when listed; it fixes the
/// encoding of columns the config leaves to the data) and `input`, a CSV of the table's
/// columns with or without the label column, as the test split. Returns the table and
/// whether the input had labels; `encoding.test_lines` gives each row's line in `input`.
pub fn load_input_table(config: &TableConfig, input: &TableFile) -> Result<(Table, bool)> {
    config.validate()?;
    if let Some(sums_path) = &config.checksums {
        let sums = read_sha256sums(sums_path)?;
        verify_sha256(&config.train.path, &sums, sums_path)?;
    }
    let train = read_text(&config.train.path)?;
    let bytes = read_text(&input.path)?;
    let train_raw = parse_rows(config, &config.train, &train)?;
    // Labelled unless the first row has one field fewer than the columns.
    let has_label = config
        .columns
        .iter()
        .any(|c| matches!(c, Column::Label { .. }));
    match parse_rows(config, input, &bytes) {
        Ok(raw) => Ok((encode_table(config, train_raw, Some(raw))?, true)),
        // Not as labelled rows: as rows without the label, else the first error.
        Err(e) => match has_label.then(|| parse_rows_with(config, input, &bytes, true)) {
            Some(Ok(raw)) => Ok((encode_table(config, train_raw, Some(raw))?, false)),
            _ => Err(e),
        },
    }
}

/// [`load_table`] on the two files' text (after any decompression), without checksums
/// (`test` is unused with a holdout). The config's paths appear in messages only.
pub fn parse_table(config: &TableConfig, train: &[u8], test: &[u8]) -> Result<Table> {
    config.validate()?;
    let train_raw = parse_rows(config, &config.train, train)?;
    let test_raw = match config.holdout {
        0 => Some(parse_rows(config, &config.test, test)?),
        _ => None,
    };
    encode_table(config, train_raw, test_raw)
}

/// Fixes every column's encoding and encodes both splits.
fn encode_table(
    config: &TableConfig,
    train_raw: RawTable,
    test_raw: Option<RawTable>,
) -> Result<Table> {
    let missing = |text: &str| config.missing.iter().any(|m| m == text);
    // Fix every column's encoding, from the config or (flagged) from the training file.
    let mut plans = Vec::new();
    let data_derived: Vec<String> = config
        .columns
        .iter()
        .filter(|c| c.is_data_derived())
        .map(|c| c.name().to_string())
        .collect();
    let mut feature_names = Vec::new();
    for (c, column) in config.columns.iter().enumerate() {
        let name = column.name();
        let plan = match column {
            Column::Numeric {
                log,
                range,
                mean,
                std,
                bins,
                ..
            } => {
                let transform = |v: f64| if *log { v.max(0.0).ln_1p() } else { v };
                let scaled = match (range, mean, std) {
                    (Some([lo, hi]), _, _) => {
                        let (lo, hi) = (transform(*lo), transform(*hi));
                        // [lo, hi] ↦ [−1, 1].
                        Some(Scaling {
                            shift: (lo + hi) / 2.0,
                            scale: 2.0 / (hi - lo),
                            clamp: Some((lo, hi)),
                        })
                    }
                    // Mean and std describe the value after `log`.
                    (None, Some(m), Some(s)) => Some(Scaling {
                        shift: *m,
                        scale: 1.0 / s,
                        clamp: None,
                    }),
                    _ if bins.is_some() => None,
                    _ => {
                        let mut values = Vec::new();
                        for row in 0..train_raw.rows.len() {
                            if !missing(&train_raw.rows[row][c]) {
                                values.push(number(&train_raw, row, c, name, *log)?.1);
                            }
                        }
                        let n = values.len().max(1) as f64;
                        let m = values.iter().sum::<f64>() / n;
                        let s = (values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n).sqrt();
                        Some(Scaling {
                            shift: m,
                            scale: if s > 0.0 { 1.0 / s } else { 1.0 },
                            clamp: None,
                        })
                    }
                };
                if scaled.is_some() {
                    feature_names.push(name.to_string());
                }
                let missing_slot = bins.is_some() && config.on_missing == OnMissing::Encode;
                if let Some(bins) = bins {
                    feature_names.push(format!("{name}<{}", bins[0]));
                    for pair in bins.windows(2) {
                        feature_names.push(format!("{name}∈[{},{})", pair[0], pair[1]));
                    }
                    feature_names.push(format!("{name}≥{}", bins[bins.len() - 1]));
                    if missing_slot {
                        feature_names.push(format!("{name}=(missing)"));
                    }
                }
                Plan::Numeric {
                    log: *log,
                    scaled,
                    bins: bins.clone(),
                    missing_slot,
                }
            }
            Column::Categorical {
                values, unknown, ..
            } => {
                let vocabulary: Vec<String> = match values {
                    Some(values) => values.clone(),
                    None => {
                        let seen: BTreeSet<&String> = train_raw
                            .rows
                            .iter()
                            .map(|r| &r[c])
                            .filter(|v| !missing(v))
                            .collect();
                        seen.into_iter().cloned().collect()
                    }
                };
                let mut width = vocabulary.len();
                feature_names.extend(vocabulary.iter().map(|v| format!("{name}={v}")));
                let other = (*unknown == Unknown::Other).then(|| {
                    feature_names.push(format!("{name}=(other)"));
                    width += 1;
                    width - 1
                });
                let missing_slot = (config.on_missing == OnMissing::Encode).then(|| {
                    feature_names.push(format!("{name}=(missing)"));
                    width += 1;
                    width - 1
                });
                Plan::Categorical {
                    index: vocabulary
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (v, i))
                        .collect(),
                    width,
                    other,
                    missing: missing_slot,
                }
            }
            Column::Label {
                positive, negative, ..
            } => Plan::Label {
                positive: positive.clone(),
                negative: negative.clone(),
            },
            Column::Ignore { .. } => Plan::Ignore,
        };
        plans.push(plan);
    }
    let width = feature_names.len();
    let encode = |table: &RawTable| -> Result<Dataset> {
        let mut features = Vec::with_capacity(table.rows.len() * width);
        let mut labels = Vec::with_capacity(table.rows.len());
        for row in 0..table.rows.len() {
            for (c, (plan, column)) in plans.iter().zip(&config.columns).enumerate() {
                let text = table.rows[row][c].as_str();
                let name = column.name();
                let at = || format!("line {}, column {} ({name})", table.lines[row], c + 1);
                let is_missing = missing(text);
                match plan {
                    Plan::Numeric {
                        log,
                        scaled,
                        bins,
                        missing_slot,
                    } => {
                        // The raw value for the bins, the transformed one for scaling.
                        let (raw, value) = match is_missing {
                            true => (None, None),
                            false => {
                                let (raw, value) = number(table, row, c, name, *log)?;
                                (Some(raw), Some(value))
                            }
                        };
                        if let Some(Scaling {
                            shift,
                            scale,
                            clamp,
                        }) = scaled
                        {
                            let x = value.map_or(0.0, |v| {
                                let v = clamp.map_or(v, |(lo, hi)| v.clamp(lo, hi));
                                (v - shift) * scale
                            });
                            features.push(x as f32);
                        }
                        if let Some(bins) = bins {
                            let slots = bins.len() + 1 + usize::from(*missing_slot);
                            let slot = match raw {
                                Some(x) => bins.partition_point(|&b| b <= x),
                                None => bins.len() + 1,
                            };
                            let start = features.len();
                            features.resize(start + slots, 0.0);
                            features[start + slot] = 1.0;
                        }
                    }
                    Plan::Categorical {
                        index,
                        width,
                        other,
                        missing,
                    } => {
                        let slot = match (is_missing, index.get(text)) {
                            (true, _) => missing.expect("missing rows exist only when encoded"),
                            (false, Some(&i)) => i,
                            (false, None) => other.ok_or_else(|| {
                                parse_error(
                                    &table.path,
                                    at(),
                                    format!(
                                        "unknown category `{text}`: not in the column's \
                                         values; add it, or set unknown = \"other\""
                                    ),
                                )
                            })?,
                        };
                        let start = features.len();
                        features.resize(start + width, 0.0);
                        features[start + slot] = 1.0;
                    }
                    Plan::Label { positive, negative } => {
                        if is_missing {
                            return Err(parse_error(
                                &table.path,
                                at(),
                                format!("missing label `{text}`: a row needs its label"),
                            ));
                        }
                        let label = if positive.iter().any(|p| p == text) {
                            1
                        } else if negative.is_empty() || negative.iter().any(|n| n == text) {
                            0
                        } else {
                            return Err(parse_error(
                                &table.path,
                                at(),
                                format!(
                                    "label `{text}` is neither positive ({}) nor negative ({})",
                                    positive.join(", "),
                                    negative.join(", ")
                                ),
                            ));
                        };
                        labels.push(label);
                    }
                    Plan::Ignore => {}
                }
            }
        }
        Ok(Dataset {
            features,
            labels,
            feature_shape: vec![width],
            classes: 2,
            vocab: None,
        })
    };
    let train = encode(&train_raw)?;
    if config.holdout >= train.len() {
        return Err(Error::invalid(
            "data.holdout",
            config.holdout,
            format!("fewer than the {} training rows", train.len()),
        ));
    }
    let (train, test, test_is_holdout, test_dropped, test_lines) = match test_raw {
        Some(test_raw) => (
            train,
            encode(&test_raw)?,
            false,
            test_raw.dropped,
            test_raw.lines.clone(),
        ),
        None => {
            let (train, holdout) = train.split_at(train.len() - config.holdout);
            (train, holdout, true, 0, Vec::new())
        }
    };
    Ok(Table {
        train,
        test,
        test_is_holdout,
        encoding: Encoding {
            feature_names,
            data_derived,
            dropped: (train_raw.dropped, test_dropped),
            test_lines,
        },
    })
}
