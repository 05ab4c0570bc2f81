//! `dptrain evaluate RUN_DIR` and `dptrain predict RUN_DIR INPUT`: a trained run's model
//! used again. The model is rebuilt from the run's config.toml and its weights are loaded
//! strictly (`train::load_weights`); data go through the run's own preprocessing.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use super::Output;
use crate::config::federated::{FederatedRunConfig, is_federated};
use crate::config::{DataConfig, RunConfig};
use crate::data::Dataset;
use crate::data::mnist::{ImageSet, read_images_of};
use crate::data::table::{TableFile, load_input_table};
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::model::{Model, ModelConfig};
use crate::train::{evaluate_detailed, load_weights, predict};

/// Flags of `dptrain evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// A finished run directory of `dptrain train` or `dptrain federate` (config.toml and
    /// model.safetensors).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// Other data of the run's schema instead of its own test split: a config (`.toml`,
    /// its test split) or, for a table run, a CSV file with the label column (read with
    /// the run's preprocessing).
    #[arg(long, value_name = "CONFIG_OR_TABLE")]
    pub data: Option<PathBuf>,
    /// Lines to skip at the start of a CSV file given by --data (before any header).
    #[arg(long, default_value_t = 0)]
    pub skip_rows: usize,
}

/// Flags of `dptrain predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A finished run directory (config.toml and model.safetensors).
    #[arg(value_name = "RUN_DIR")]
    pub run_dir: PathBuf,
    /// The examples: an IDX image file (`*-idx3-ubyte[.gz]`) for an image run, or a CSV file
    /// of the run's table columns, with or without the label column, for a table run.
    #[arg(value_name = "INPUT")]
    pub input: PathBuf,
    /// Where to write the predictions (default RUN_DIR/predictions.csv): `index` (the
    /// image's) or `line` (the table row's line in INPUT), `predicted`, `prob_<class>`...,
    /// and `label` when labels are known.
    #[arg(long, value_name = "FILE.csv")]
    pub out: Option<PathBuf>,
    /// IDX labels of INPUT's images: adds the true label to each row and the accuracy.
    #[arg(long, value_name = "IDX")]
    pub labels: Option<PathBuf>,
    /// Lines to skip at the start of a CSV INPUT (before any header).
    #[arg(long, default_value_t = 0)]
    pub skip_rows: usize,
}

/// What a run directory says about its model: its data and model sections.
struct SavedRun {
    data: DataConfig,
    model: ModelConfig,
}

impl SavedRun {
    /// Reads RUN_DIR/config.toml (a training or a federated run's).
    fn load(dir: &Path) -> Result<SavedRun> {
        let config = dir.join("config.toml");
        if !config.exists() && dir.join("sweep.csv").exists() {
            return Err(Error::Usage(format!(
                "{} is a sweep: evaluate one of its runs (the folders listed in sweep.csv)",
                dir.display()
            )));
        }
        let (data, model) = data_and_model(&config)?;
        Ok(SavedRun { data, model })
    }

    /// The model of the config on data shaped like `data`, with the run's weights.
    fn model(&self, dir: &Path, data: &Dataset) -> Result<Model> {
        let file = dir.join("model.safetensors");
        if !file.exists() {
            return Err(Error::Usage(format!(
                "{} has no model.safetensors: the run did not finish (continue it with \
                 --resume) or its weights were not kept",
                dir.display()
            )));
        }
        let model = Model::for_data(&self.model, data, 0)?;
        load_weights(&model, &file)?;
        Ok(model)
    }

    /// The image set of an IDX run, if it is one.
    fn image_set(&self) -> Option<ImageSet> {
        match self.data {
            DataConfig::Mnist(_) => Some(ImageSet::Mnist),
            DataConfig::FashionMnist(_) => Some(ImageSet::FashionMnist),
            _ => None,
        }
    }

    /// The run's test split, or the test split of another config of the same kind, or a
    /// CSV file through the run's table preprocessing; the name of what was evaluated.
    fn evaluation_data(&self, other: Option<&Path>, skip_rows: usize) -> Result<(Dataset, String)> {
        let Some(path) = other else {
            let splits = self.data.load()?;
            let name = match splits.test_is_holdout {
                true => "holdout",
                false => "test",
            };
            return Ok((splits.test, name.into()));
        };
        if path.extension().is_some_and(|e| e == "toml") {
            let (data, _) = data_and_model(path)?;
            self.same_schema(&data, path)?;
            let splits = data.load()?;
            return Ok((splits.test, format!("test split of {}", path.display())));
        }
        Ok((
            self.table_file(path, skip_rows)?,
            path.display().to_string(),
        ))
    }

    /// Refuses another config's data that the run's model cannot read as its own.
    fn same_schema(&self, other: &DataConfig, path: &Path) -> Result<()> {
        let same = match (&self.data, other) {
            (DataConfig::Mnist(_), DataConfig::Mnist(_))
            | (DataConfig::FashionMnist(_), DataConfig::FashionMnist(_)) => true,
            (DataConfig::Csv(ours), DataConfig::Csv(theirs)) => ours.columns == theirs.columns,
            (ours, theirs) => std::mem::discriminant(ours) == std::mem::discriminant(theirs),
        };
        match same {
            true => Ok(()),
            false => Err(Error::invalid(
                format!("--data {}", path.display()),
                "data of another kind or schema",
                format!(
                    "the run's kind of data with the same columns ({})",
                    data_kind(&self.data)
                ),
            )),
        }
    }

    /// A CSV file of the run's table schema, encoded as the run encoded its test file
    /// (the encoding fixed from the config, or from the run's training file where the
    /// config leaves a column to the data).
    fn table_file(&self, path: &Path, skip_rows: usize) -> Result<Dataset> {
        let (data, labelled, _) = self.input_table(path, skip_rows)?;
        if !labelled {
            return Err(Error::invalid(
                path.display().to_string(),
                "rows without the label column",
                "labelled rows to evaluate on (predict takes rows without labels)",
            ));
        }
        Ok(data)
    }

    /// [`SavedRun::table_file`] for predictions: the rows may lack the label column.
    /// Returns the rows, whether they had labels and each row's line in the file.
    fn input_table(&self, path: &Path, skip_rows: usize) -> Result<(Dataset, bool, Vec<u64>)> {
        let DataConfig::Csv(table) = &self.data else {
            return Err(Error::invalid(
                path.display().to_string(),
                "a CSV file",
                format!(
                    "data the run's model reads: this run trained on {}",
                    data_kind(&self.data)
                ),
            ));
        };
        let mut table = table.clone();
        table.holdout = 0;
        let input = TableFile {
            path: path.to_path_buf(),
            skip_rows,
        };
        let (loaded, labelled) = load_input_table(&table, &input)?;
        Ok((loaded.test, labelled, loaded.encoding.test_lines))
    }
}

/// The data and model sections of a config file, a training or a federated run's.
fn data_and_model(path: &Path) -> Result<(DataConfig, ModelConfig)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match is_federated(&text) {
        true => {
            let run = FederatedRunConfig::load(path, &[])?;
            (run.data, run.model)
        }
        false => {
            let run = RunConfig::load(path, &[])?;
            (run.data, run.model)
        }
    })
}

/// The name of a kind of data, for messages.
fn data_kind(data: &DataConfig) -> &'static str {
    match data {
        DataConfig::Mnist(_) => "MNIST images",
        DataConfig::FashionMnist(_) => "Fashion-MNIST images",
        DataConfig::Csv(_) => "a CSV table",
        DataConfig::Tokens(_) => "tokens",
        DataConfig::Cifar10(_) => "CIFAR-10 images",
        DataConfig::SyntheticImages(_) => "synthetic images",
        DataConfig::SyntheticTokens(_) => "synthetic tokens",
    }
}

/// `dptrain evaluate`.
pub fn evaluate(args: &EvaluateArgs) -> Result<Output> {
    let run = SavedRun::load(&args.run_dir)?;
    let (data, evaluated_on) = run.evaluation_data(args.data.as_deref(), args.skip_rows)?;
    let model = run.model(&args.run_dir, &data)?;
    let evaluation = evaluate_detailed(&model, &data)?;
    let mut json = json!({
        "run_directory": args.run_dir.display().to_string(),
        "evaluated_on": evaluated_on,
        "examples": evaluation.examples,
        "classes": evaluation.classes,
        "accuracy": evaluation.accuracy,
        "loss": evaluation.loss,
        "confusion_matrix": evaluation.confusion,
    });
    let mut table = vec![
        (
            "run directory".to_string(),
            args.run_dir.display().to_string(),
        ),
        ("evaluated on".into(), evaluated_on.clone()),
        ("examples".into(), evaluation.examples.to_string()),
        (
            "accuracy".into(),
            format!("{:.2}%", 100.0 * evaluation.accuracy),
        ),
        ("loss".into(), format!("{:.4}", evaluation.loss)),
    ];
    if let Some(binary) = evaluation.binary {
        json["auc"] = json!(binary.auc);
        json["predicted_positive_rate"] = json!(binary.predicted_positive_rate);
        json["positive_rate"] = json!(binary.positive_rate);
        table.push(("AUC".into(), format!("{:.4}", binary.auc)));
    }
    // On its own split, the figure the run reported, to compare.
    if args.data.is_none()
        && let Ok(text) = std::fs::read(args.run_dir.join("summary.json"))
        && let Ok(summary) = serde_json::from_slice::<serde_json::Value>(&text)
    {
        json["summary_test_accuracy"] = summary["test_accuracy"].clone();
        json["reproduces_summary"] =
            json!(summary["test_accuracy"].as_f64() == Some(evaluation.accuracy));
    }
    let rows: Vec<String> = evaluation
        .confusion
        .iter()
        .enumerate()
        .map(|(label, row)| {
            let counts: Vec<String> = row.iter().map(u64::to_string).collect();
            format!("{label}: {}", counts.join(" "))
        })
        .collect();
    table.push(("confusion (true: predicted)".into(), rows.join("; ")));
    Ok(Output { json, table })
}

/// `dptrain predict`.
pub fn predict_command(args: &PredictArgs) -> Result<Output> {
    let run = SavedRun::load(&args.run_dir)?;
    // The rows, whether their labels are known, and each row's name in the output (the
    // image's index; the table row's line in its file).
    let (data, labelled, rows) = match run.image_set() {
        Some(set) => {
            let mut images = read_images_of(&args.input, set)?;
            if let Some(labels) = &args.labels {
                let labelled = crate::data::mnist::read_split_of(&args.input, labels, set)?;
                images.labels = labelled.labels;
            }
            let rows = (0..images.len() as u64).collect();
            (images, args.labels.is_some(), rows)
        }
        None if args.labels.is_some() => {
            return Err(Error::invalid(
                "--labels",
                args.labels
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "IDX labels for an image run (a table's labels are its label column)",
            ));
        }
        None => run.input_table(&args.input, args.skip_rows)?,
    };
    let model = run.model(&args.run_dir, &data)?;
    let predictions = predict(&model, &data)?;
    let classes = data.classes;
    let row_name = match run.image_set() {
        Some(_) => "index",
        None => "line",
    };
    let mut csv = format!("{row_name},predicted");
    for class in 0..classes {
        csv.push_str(&format!(",prob_{class}"));
    }
    if labelled {
        csv.push_str(",label");
    }
    csv.push('\n');
    let mut correct = 0usize;
    for (row, prediction) in predictions.iter().enumerate() {
        csv.push_str(&format!("{},{}", rows[row], prediction.class));
        for &p in &prediction.probabilities {
            // Shortest round-trip forms; tiny probabilities in scientific notation.
            match p == 0.0 || p >= 1e-4 {
                true => csv.push_str(&format!(",{p}")),
                false => csv.push_str(&format!(",{p:e}")),
            }
        }
        if labelled {
            let label = data.labels[row];
            correct += usize::from(label == prediction.class);
            csv.push_str(&format!(",{label}"));
        }
        csv.push('\n');
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.run_dir.join("predictions.csv"));
    write_atomic(&out, csv.as_bytes())?;
    let mut json = json!({
        "run_directory": args.run_dir.display().to_string(),
        "input": args.input.display().to_string(),
        "rows": predictions.len(),
        "classes": classes,
        "written": out.display().to_string(),
    });
    let mut table = vec![
        ("input".to_string(), args.input.display().to_string()),
        ("rows".into(), predictions.len().to_string()),
        ("written".into(), out.display().to_string()),
    ];
    if labelled {
        let accuracy = correct as f64 / predictions.len().max(1) as f64;
        json["accuracy"] = json!(accuracy);
        table.push(("accuracy".into(), format!("{:.2}%", 100.0 * accuracy)));
    }
    Ok(Output { json, table })
}
