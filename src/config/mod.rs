//! Run configs: TOML files in `configs/`, `--set key=value` overrides, validation.
//!
//! One visible merge rule: a `--set` beats the file, the file beats the defaults. Unknown
//! keys, wrong types and out-of-range values are errors naming the file, the key and what is
//! expected (the toml crate adds the line and column). The resolved config is saved with
//! every run.

pub mod federated;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{ImageSet, MnistConfig, Splits, TableConfig, load_images, load_table};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::train::{PrivacyConfig, TrainingConfig};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the run (the default output folder is `reports/<name>`).
    pub name: String,
    /// Seed of the model init, the sampler and the fast noise. Required in fast mode; not
    /// accepted with `privacy.secure_noise = true` (batches and noise then come from the
    /// operating system's randomness, and the model init from a fresh OS draw).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// The data set.
    pub data: DataConfig,
    /// The network.
    pub model: ModelConfig,
    /// Privacy: target or noise, δ, clipping.
    pub privacy: PrivacyConfig,
    /// Optimisation.
    pub training: TrainingConfig,
}

/// Which data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dataset", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataConfig {
    /// MNIST from IDX files.
    Mnist(MnistConfig),
    /// Fashion-MNIST from IDX files (same layout; `dir` usually `datasets/fashion-mnist`).
    FashionMnist(MnistConfig),
    /// A table from CSV files (`data::table`), e.g. UCI Adult.
    Csv(TableConfig),
    /// Token sequences from JSONL or CSV files (`data::tokens`).
    Tokens(crate::data::tokens::TokenConfig),
    /// CIFAR-10 binary batches (`data::cifar`).
    Cifar10(crate::data::cifar::CifarConfig),
    /// Seeded images with a planted class pattern (`data::synthetic`), for benchmarks.
    SyntheticImages(crate::data::synthetic::SyntheticImages),
    /// Seeded token sequences with planted class markers (`data::synthetic`).
    SyntheticTokens(crate::data::synthetic::SyntheticTokens),
}

impl DataConfig {
    /// Reads, checks and encodes the data.
    pub fn load(&self) -> Result<Splits> {
        match self {
            DataConfig::Mnist(mnist) | DataConfig::FashionMnist(mnist) => {
                let set = match self {
                    DataConfig::Mnist(_) => ImageSet::Mnist,
                    _ => ImageSet::FashionMnist,
                };
                let data = load_images(mnist, set)?;
                Ok(Splits {
                    train: data.train,
                    test: data.test,
                    test_is_holdout: data.test_is_holdout,
                    validation: data.validation,
                    encoding: None,
                })
            }
            DataConfig::Csv(table) => {
                let data = load_table(table)?;
                Ok(Splits {
                    train: data.train,
                    test: data.test,
                    test_is_holdout: data.test_is_holdout,
                    validation: None,
                    encoding: Some(data.encoding),
                })
            }
            DataConfig::Tokens(tokens) => {
                let data = crate::data::tokens::load_tokens(tokens)?;
                Ok(Splits::plain(data.train, data.test))
            }
            DataConfig::Cifar10(cifar) => {
                let (train, test) = crate::data::cifar::load_cifar10(cifar)?;
                Ok(Splits::plain(train, test))
            }
            DataConfig::SyntheticImages(s) => {
                let (train, test) = s.generate()?;
                Ok(Splits::plain(train, test))
            }
            DataConfig::SyntheticTokens(s) => {
                let (train, test) = s.generate()?;
                Ok(Splits::plain(train, test))
            }
        }
    }

    /// Training examples, N, as the run will see them (images: from the labels file's
    /// header; a table is read).
    pub fn train_size(&self) -> Result<usize> {
        match self {
            DataConfig::Mnist(mnist) | DataConfig::FashionMnist(mnist) => mnist.train_size(),
            DataConfig::Csv(table) => Ok(load_table(table)?.train.len()),
            DataConfig::Tokens(tokens) => tokens.train_size(),
            DataConfig::Cifar10(_) => Ok(self.load()?.train.len()),
            DataConfig::SyntheticImages(s) => Ok(s.train),
            DataConfig::SyntheticTokens(s) => Ok(s.train),
        }
    }
}

impl RunConfig {
    /// Reads `path`, applies `overrides` (`key.path=value`, TOML values), validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        RunConfig::parse(&text, path, overrides)
    }

    /// [`RunConfig::load`] on text; `path` is used in messages.
    pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<RunConfig> {
        let config_error = |location: String, message: String| Error::Parse {
            path: path.to_path_buf(),
            location,
            message,
        };
        let config: RunConfig = if overrides.is_empty() {
            // Straight from the text, so error spans point into the file.
            toml::from_str(text)
                .map_err(|e| config_error(span_location(text, &e), e.message().to_string()))?
        } else {
            let mut table: toml::Table = toml::from_str(text)
                .map_err(|e| config_error(span_location(text, &e), e.message().to_string()))?;
            for assignment in overrides {
                apply_override(&mut table, assignment)
                    .map_err(|message| config_error(format!("--set {assignment}"), message))?;
            }
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    config_error("with --set overrides".into(), e.message().to_string())
                })?
        };
        config.validate().map_err(|e| match e {
            Error::Model {
                path: layer,
                message,
            } => {
                let location = match crate::model::spec::locate(text, &layer) {
                    Some(line) => format!("line {line} (model layer `{layer}`)"),
                    None => format!("model layer `{layer}`"),
                };
                config_error(location, message)
            }
            e => config_error("validation".into(), e.to_string()),
        })?;
        Ok(config)
    }

    /// Range checks that the types alone cannot express.
    pub fn validate(&self) -> Result<()> {
        self.privacy.validate()?;
        match (self.seed, self.privacy.secure_noise) {
            (Some(seed), true) => {
                return Err(Error::invalid(
                    "seed",
                    seed,
                    "no seed with privacy.secure_noise = true (secure runs draw their batches \
                     and noise from the operating system; remove `seed`)",
                ));
            }
            (None, false) => {
                return Err(Error::invalid(
                    "seed",
                    "missing",
                    "a whole number (fast mode replays batches and noise from it), or \
                     privacy.secure_noise = true",
                ));
            }
            _ => {}
        }
        self.training.validate()?;
        // Kinds, fields, blocks, `$`-parameters and frozen paths, before any data is read
        // (shapes are checked when the model is built on the data).
        self.model.expand(2)?;
        if let DataConfig::Csv(table) = &self.data {
            table.validate()?;
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(Error::invalid(
                "name",
                &self.name,
                "a non-empty name without slashes",
            ));
        }
        Ok(())
    }

    /// The resolved config as TOML (saved as `config.toml` in the run directory).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig serialises")
    }

    /// The seed the trainer gets: the config's, or in secure mode a fresh draw from the
    /// operating system (it then only initialises the model, which sees no data).
    pub fn run_seed(&self) -> Result<u64> {
        match self.seed {
            Some(seed) => Ok(seed),
            None => {
                use rand::TryRngCore;
                rand::rngs::OsRng.try_next_u64().map_err(|e| {
                    Error::Usage(format!("the operating system's random source failed: {e}"))
                })
            }
        }
    }

    /// The data folder, for messages.
    pub fn data_dir(&self) -> PathBuf {
        match &self.data {
            DataConfig::Mnist(m) | DataConfig::FashionMnist(m) => m.dir.clone(),
            DataConfig::Csv(t) => t
                .train
                .path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            DataConfig::Tokens(t) => t.train.parent().map(Path::to_path_buf).unwrap_or_default(),
            DataConfig::Cifar10(c) => c.dir.clone(),
            DataConfig::SyntheticImages(_) | DataConfig::SyntheticTokens(_) => PathBuf::new(),
        }
    }
}

/// A model error raised after the config was read (shapes, found when the model is built
/// on the data) as an error in the config file, at the layer's line when it can be found.
pub fn in_config_file(config_path: &Path, e: Error) -> Error {
    match e {
        Error::Model {
            path: layer,
            message,
        } => {
            let text = std::fs::read_to_string(config_path).unwrap_or_default();
            let location = match crate::model::spec::locate(&text, &layer) {
                Some(line) => format!("line {line} (model layer `{layer}`)"),
                None => format!("model layer `{layer}`"),
            };
            Error::Parse {
                path: config_path.to_path_buf(),
                location,
                message,
            }
        }
        e => e,
    }
}

/// `line L, column C` of a toml error, when it has a span.
fn span_location(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}")
        }
        None => "top level".into(),
    }
}

/// Sets `a.b.c = value` in `table`; the value is read as TOML (a bare word is a string,
/// but a bare `none` removes the key: [`remove_key`]). An integer given for a float key
/// becomes a float.
fn apply_override(table: &mut toml::Table, assignment: &str) -> std::result::Result<(), String> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| "expected key.path=value".to_string())?;
    let key = key.trim();
    if raw.trim() == "none" {
        return remove_key(table, key);
    }
    let mut value = match toml::from_str::<toml::Table>(&format!("v = {}", raw.trim())) {
        Ok(mut t) => t.remove("v").expect("parsed above"),
        Err(_) => toml::Value::String(raw.trim().to_string()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).ok_or("empty key")?;
    let mut current = table;
    for part in parts {
        current = current
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| format!("`{part}` is not a table"))?;
    }
    if let (Some(toml::Value::Float(_)), toml::Value::Integer(i)) = (current.get(last), &value) {
        value = toml::Value::Float(*i as f64);
    }
    current.insert(last.to_string(), value);
    Ok(())
}

/// `--set key.path=none`: removes the key (TOML has no null), so that a config can be
/// switched between alternatives from the command line, e.g. from `privacy.target_epsilon`
/// to `privacy.noise_multiplier`. A key that is not there is an error (a typo would
/// otherwise pass silently). A string "none" is still `--set key='"none"'`.
fn remove_key(table: &mut toml::Table, key: &str) -> std::result::Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).ok_or("empty key")?;
    let mut current = table;
    for part in parts {
        current = current
            .get_mut(part)
            .and_then(toml::Value::as_table_mut)
            .ok_or_else(|| format!("no table `{part}` to remove `{key}` from"))?;
    }
    current
        .remove(last)
        .map(|_| ())
        .ok_or_else(|| format!("no key `{key}` to remove (`=none` removes a key that is set)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "t"
seed = 1
[data]
dataset = "mnist"
dir = "datasets/mnist"
[model]
kind = "logreg"
[privacy]
target_epsilon = 3.0
delta = 1e-5
[training]
epochs = 1.0
expected_batch_size = 256
optimizer = { name = "sgd", learning_rate = 1.0 }
"#;

    fn parse(text: &str, overrides: &[&str]) -> Result<RunConfig> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        RunConfig::parse(text, Path::new("c.toml"), &overrides)
    }

    #[test]
    fn a_good_config_round_trips_through_its_resolved_form() {
        let config = parse(GOOD, &[]).unwrap();
        assert_eq!(config.privacy.clip_norm, 1.0);
        assert_eq!(config.training.max_physical_batch, 1024);
        let again = parse(&config.to_toml(), &[]).unwrap();
        assert_eq!(again, config);
    }

    #[test]
    fn none_removes_a_key_so_a_config_can_switch_alternatives() {
        let switched = parse(
            GOOD,
            &[
                "privacy.target_epsilon=none",
                "privacy.noise_multiplier=1.1",
            ],
        )
        .unwrap();
        assert_eq!(switched.privacy.target_epsilon, None);
        assert_eq!(switched.privacy.noise_multiplier, Some(1.1));
        let err = parse(GOOD, &["privacy.noise_multiplier=1.1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--set privacy.target_epsilon=none"), "{err}");
        let err = parse(GOOD, &["privacy.target_epsilom=none"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--set privacy.target_epsilom=none: no key `privacy.target_epsilom`"),
            "{err}"
        );
        let err = parse(GOOD, &["nothing.here=none"]).unwrap_err().to_string();
        assert!(err.contains("no table `nothing`"), "{err}");
    }

    #[test]
    fn overrides_beat_the_file() {
        use crate::train::OptimizerConfig;
        let config = parse(
            GOOD,
            &[
                "privacy.target_epsilon=1",
                "training.optimizer.momentum=0.9",
                "model.kind=cnn",
            ],
        )
        .unwrap();
        assert_eq!(config.privacy.target_epsilon, Some(1.0));
        assert_eq!(config.model.kind, Some(crate::model::ModelKind::Cnn));
        assert!(
            matches!(config.training.optimizer, OptimizerConfig::Sgd { momentum, .. } if momentum == 0.9)
        );
    }

    #[test]
    fn bad_configs_name_the_file_the_key_and_the_place() {
        let cases = [
            (
                GOOD.replace("seed = 1", "seed = 1\nsede = 2"),
                vec![],
                "c.toml:line 4, column 1: unknown field `sede`",
            ),
            (
                GOOD.replace("kind = \"logreg\"", "kind = \"resnet\""),
                vec![],
                "unknown variant `resnet`, expected one of `logreg`, `mlp`, `cnn`",
            ),
            (
                GOOD.replace("delta = 1e-5", "delta = 2.0"),
                vec![],
                "c.toml:validation: invalid delta = 2: expected a probability in (0, 1)",
            ),
            (
                GOOD.replace("epochs = 1.0", "epochs = \"many\""),
                vec![],
                "invalid type: string \"many\", expected f64",
            ),
            (
                GOOD.replace(
                    "target_epsilon = 3.0",
                    "target_epsilon = 3.0\nnoise_multiplier = 1.0",
                ),
                vec![],
                "one of them: a target ε",
            ),
            (
                GOOD.replace("target_epsilon = 3.0", ""),
                vec![],
                "one of them (or privacy.private = false",
            ),
            (
                GOOD.replace("expected_batch_size = 256", "expected_batch_size = 0"),
                vec![],
                "invalid training.expected_batch_size = 0",
            ),
            (
                GOOD.to_string(),
                vec!["privacy.delta"],
                "c.toml:--set privacy.delta: expected key.path=value",
            ),
            (
                GOOD.to_string(),
                vec!["privacy.clip_norm=-1"],
                "invalid clip_norm = -1",
            ),
            (
                GOOD.replace(
                    "kind = \"logreg\"",
                    "layers = [\n  { kind = \"flatten\" },\n  { kind = \"linear\", out_features = 10, bais = 1 },\n]",
                ),
                vec![],
                "c.toml:line 10 (model layer `1.linear`): linear: unknown field `bais`",
            ),
            ("name = \n".to_string(), vec![], "c.toml:line 1"),
        ];
        for (text, overrides, expected) in cases {
            let err = parse(&text, &overrides).unwrap_err().to_string();
            assert!(err.contains(expected), "`{err}` lacks `{expected}`");
        }
    }
}
