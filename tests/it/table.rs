//! The CSV data source on small fixtures (tests/data/csv/): quoting, Adult's `, ` separator,
//! its test file's first line and trailing dots, missing values, ragged rows, unknown
//! categories, bad numbers; and the binary metrics.

use std::path::PathBuf;

use dptrain::data::table::{TableConfig, load_table};
use dptrain::train::auc;

use crate::support::data;

fn config(text: &str) -> TableConfig {
    let text = text.replace("$DIR", data("csv").to_str().unwrap());
    toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn error(text: &str) -> String {
    load_table(&config(text)).unwrap_err().to_string()
}

const QUOTED: &str = r#"
train = { path = "$DIR/quoted.csv" }
test = { path = "$DIR/quoted.csv" }
header = true
columns = [
    { name = "name", kind = "ignore" },
    { name = "city", kind = "categorical", values = ["Paris", 'Lyon "centre"'] },
    { name = "income", kind = "numeric", mean = 20.0, std = 10.0 },
    { name = "label", kind = "label", positive = ["yes"], negative = ["no"] },
]
"#;

#[test]
fn quoted_fields_keep_their_commas_and_quotes() {
    let table = load_table(&config(QUOTED)).unwrap();
    // city one-hot (2), then income standardised with the config's public mean and std.
    assert_eq!(table.train.feature_shape, vec![3]);
    assert_eq!(
        table.train.features,
        vec![1.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.05]
    );
    assert_eq!(table.train.labels, vec![1, 0, 1]);
    assert_eq!(table.train.classes, 2);
    assert_eq!(
        table.encoding.feature_names,
        vec!["city=Paris", "city=Lyon \"centre\"", "income"]
    );
    assert!(table.encoding.data_derived.is_empty());
}

/// Adult's layout: `, ` separators, `?` for missing, a test file that opens with a
/// non-record line and labels ending in a dot.
fn adult_like(on_missing: &str, skip: usize) -> String {
    format!(
        r#"
train = {{ path = "$DIR/adult-like.data" }}
test = {{ path = "$DIR/adult-like.test", skip_rows = {skip} }}
missing = ["?"]
on_missing = "{on_missing}"
columns = [
    {{ name = "age", kind = "numeric", range = [17, 90], bins = [30, 45] }},
    {{ name = "workclass", kind = "categorical", values = ["Private", "State-gov", "Self-emp"] }},
    {{ name = "capital-gain", kind = "numeric", log = true, range = [0, 99999] }},
    {{ name = "income", kind = "label", positive = [">50K", ">50K."], negative = ["<=50K", "<=50K."] }},
]
"#
    )
}

#[test]
fn adults_separator_first_line_dots_and_missing_values() {
    let table = load_table(&config(&adult_like("encode", 1))).unwrap();
    assert_eq!(
        table.test.labels,
        vec![0, 1],
        "trailing dots read as labels"
    );
    assert_eq!(table.train.labels, vec![0, 1]);
    // age scaled to [−1, 1] + 3 buckets + missing slot; workclass 3 + missing; gain.
    let names = &table.encoding.feature_names;
    assert_eq!(names.len(), 1 + 4 + 4 + 1, "{names:?}");
    let row = |d: &dptrain::data::Dataset, i: usize| d.example(i).to_vec();
    let age = |x: f32| (x - 53.5) / 36.5;
    let gain = |x: f64| ((x.ln_1p() - 99999f64.ln_1p() / 2.0) / (99999f64.ln_1p() / 2.0)) as f32;
    // Test row 2: 38, ?, 7688, >50K. (workclass missing: its own slot).
    let expected = [
        vec![age(38.0), 0.0, 1.0, 0.0, 0.0],
        vec![0.0, 0.0, 0.0, 1.0],
        vec![gain(7688.0)],
    ]
    .concat();
    let found = row(&table.test, 1);
    assert_eq!(found.len(), expected.len());
    for (f, e) in found.iter().zip(&expected) {
        assert!((f - e).abs() < 1e-6, "{found:?} vs {expected:?}");
    }
    // Train row 1: 39, State-gov, 2174 (age bucket 30 ≤ 39 < 45).
    let found = row(&table.train, 0);
    assert_eq!(&found[1..5], &[0.0, 1.0, 0.0, 0.0]);
    assert_eq!(&found[5..9], &[0.0, 1.0, 0.0, 0.0]);
    assert!((found[9] - gain(2174.0)).abs() < 1e-6);

    // A `?` in an ignored column is no missing value.
    let ignoring = adult_like("error", 1).replace(
        r#"{ name = "workclass", kind = "categorical", values = ["Private", "State-gov", "Self-emp"] }"#,
        r#"{ name = "workclass", kind = "ignore" }"#,
    );
    assert_eq!(load_table(&config(&ignoring)).unwrap().test.len(), 2);
    // Dropping instead: the test row with `?` goes, and is counted.
    let dropped = load_table(&config(&adult_like("drop", 1))).unwrap();
    assert_eq!(dropped.test.len(), 1);
    assert_eq!(dropped.encoding.dropped, (0, 1));
    // Or an error naming file, line and column.
    let err = error(&adult_like("error", 1));
    assert!(
        err.contains("adult-like.test:line 3, column 2 (workclass): missing value `?`"),
        "{err}"
    );
    // Without skipping the odd first line: a clear error about it.
    let err = error(&adult_like("encode", 0));
    assert!(
        err.contains(
            "adult-like.test:line 1: 1 fields, expected 4 (age, workclass, capital-gain, income)"
        ),
        "{err}"
    );
}

#[test]
fn gzip_files_read_like_plain_ones() {
    let dir = std::env::temp_dir().join(format!("dptrain-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["adult-like.data", "adult-like.test"] {
        let plain = std::fs::read(data("csv").join(name)).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, &plain).unwrap();
        std::fs::write(dir.join(format!("{name}.gz")), encoder.finish().unwrap()).unwrap();
    }
    let text = adult_like("encode", 1)
        .replace(
            "$DIR/adult-like.data",
            &format!("{}/adult-like.data.gz", dir.display()),
        )
        .replace(
            "$DIR/adult-like.test",
            &format!("{}/adult-like.test.gz", dir.display()),
        );
    let zipped = load_table(&config(&text)).unwrap();
    let plain = load_table(&config(&adult_like("encode", 1))).unwrap();
    assert_eq!(zipped.train, plain.train);
    assert_eq!(zipped.test, plain.test);
    // A truncated gzip file is named as such.
    let gz = dir.join("adult-like.data.gz");
    let bytes = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_table(&config(&text)).unwrap_err().to_string();
    assert!(
        err.contains("adult-like.data.gz:gzip stream: cannot decompress"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

const SMALL: &str = r#"
train = { path = "$DIR/FILE" }
test = { path = "$DIR/FILE" }
header = true
columns = [
    { name = "a", kind = "numeric", range = [0, 10] },
    { name = "b", kind = "categorical", values = ["x", "y"] UNKNOWN },
    { name = "label", kind = "label", positive = ["1"], negative = ["0"] },
]
"#;

fn small(file: &str, unknown: &str) -> String {
    SMALL.replace("FILE", file).replace("UNKNOWN", unknown)
}

#[test]
fn bad_rows_are_errors_naming_file_line_and_column() {
    let cases = [
        (
            small("ragged.csv", ""),
            "ragged.csv:line 3: 2 fields, expected 3 (a, b, label)",
        ),
        (
            small("unknown.csv", ""),
            "unknown.csv:line 3, column 2 (b): unknown category `z`: not in the column's values",
        ),
        (
            small("nan.csv", ""),
            "nan.csv:line 2, column 1 (a): expected a finite number, found `NaN`",
        ),
        (
            small("empty-field.csv", ""),
            "empty-field.csv:line 2, column 1 (a): expected a number, found ``",
        ),
        (
            small("quoted.csv", ""),
            "quoted.csv:line 1 (header): the header is `name,city,income,label`, but \
             data.columns declares `a,b,label`",
        ),
    ];
    for (text, expected) in cases {
        let err = error(&text);
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    }
}

#[test]
fn an_unknown_category_can_go_to_an_other_bucket() {
    let table = load_table(&config(&small("unknown.csv", r#", unknown = "other""#))).unwrap();
    assert_eq!(
        table.encoding.feature_names,
        vec!["a", "b=x", "b=y", "b=(other)"]
    );
    // Row 2: a = 2 → (2 − 5)/5, b = z → other.
    assert_eq!(table.train.example(1), &[-0.6, 0.0, 0.0, 1.0]);
}

#[test]
fn statistics_from_the_data_are_flagged() {
    let text = r#"
train = { path = "$DIR/quoted.csv" }
test = { path = "$DIR/quoted.csv" }
header = true
columns = [
    { name = "name", kind = "ignore" },
    { name = "city", kind = "categorical" },
    { name = "income", kind = "numeric" },
    { name = "label", kind = "label", positive = ["yes"] },
]
"#;
    let table = load_table(&config(text)).unwrap();
    assert_eq!(table.encoding.data_derived, vec!["city", "income"]);
    // The vocabulary sorted from the training file; income standardised by its own mean.
    assert_eq!(
        table.encoding.feature_names,
        vec!["city=Lyon \"centre\"", "city=Paris", "income"]
    );
    let incomes: Vec<f32> = (0..3).map(|i| table.train.example(i)[2]).collect();
    assert!(incomes.iter().sum::<f32>().abs() < 1e-5, "{incomes:?}");
}

#[test]
fn declarations_are_checked_before_any_file_is_read() {
    let bad = [
        (
            QUOTED.replace(
                r#"kind = "label", positive = ["yes"], negative = ["no"]"#,
                r#"kind = "ignore""#,
            ),
            "exactly one column of kind \"label\"",
        ),
        (
            QUOTED.replace("mean = 20.0, std = 10.0", "mean = 20.0"),
            "data.columns.income.std",
        ),
        (
            QUOTED.replace("mean = 20.0, std = 10.0", "range = [5, 1]"),
            "data.columns.income.range",
        ),
        (
            QUOTED.replace("mean = 20.0, std = 10.0", "bins = [3, 2]"),
            "data.columns.income.bins",
        ),
        (
            QUOTED.replace("header = true", "header = true\ndelimiter = \";;\""),
            "data.delimiter",
        ),
    ];
    for (text, expected) in bad {
        let err = error(&text);
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    }
}

#[test]
fn adult_ships_with_the_expected_rows_and_features() {
    let config = dptrain::config::RunConfig::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/adult-logreg-eps1.toml"),
        &[],
    )
    .unwrap();
    // The config's paths are relative to the repository root.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dptrain::config::DataConfig::Csv(mut table) = config.data else {
        panic!("a csv config");
    };
    for file in [&mut table.train, &mut table.test] {
        file.path = root.join(&file.path);
    }
    table.checksums = table.checksums.map(|c| root.join(c));
    let data = dptrain::config::DataConfig::Csv(table).load().unwrap();
    assert_eq!(data.train.len(), 32_561);
    assert_eq!(data.test.len(), 16_281);
    let positives = data.train.labels.iter().filter(|&&l| l == 1).count();
    assert_eq!(positives, 7_841, "adult.data has 7,841 rows >50K");
    let encoding = data.encoding.unwrap();
    assert!(
        encoding.data_derived.is_empty(),
        "shipped configs use public constants"
    );
    assert_eq!(encoding.dropped, (0, 0));
}

#[test]
fn auc_matches_the_pairwise_count() {
    // Against the definition: P(score⁺ > score⁻) + ½ P(tie), over all pairs.
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let n = 400;
    let labels: Vec<u32> = (0..n).map(|_| next() % 2).collect();
    // Scores on a coarse grid, so ties are common.
    let scores: Vec<f64> = labels
        .iter()
        .map(|&l| f64::from(next() % 20) + f64::from(l) * 3.0)
        .collect();
    let (mut wins, mut pairs) = (0.0, 0.0);
    for i in 0..n {
        for j in 0..n {
            if labels[i] == 1 && labels[j] == 0 {
                pairs += 1.0;
                wins += match scores[i].total_cmp(&scores[j]) {
                    std::cmp::Ordering::Greater => 1.0,
                    std::cmp::Ordering::Equal => 0.5,
                    std::cmp::Ordering::Less => 0.0,
                };
            }
        }
    }
    let fast = auc(&scores, &labels).unwrap();
    assert!(
        (fast - wins / pairs).abs() < 1e-12,
        "{fast} vs {}",
        wins / pairs
    );
    assert_eq!(auc(&[1.0, 2.0], &[0, 1]), Some(1.0));
    assert_eq!(auc(&[1.0, 2.0], &[1, 0]), Some(0.0));
    assert_eq!(auc(&[1.0, 1.0], &[1, 0]), Some(0.5));
    assert_eq!(auc(&[1.0, 2.0], &[1, 1]), None);
}
