//! Token-sequence data (`dataset = "tokens"`): one example per line of a JSONL file
//! (`{"label": 1, "tokens": [5, 17, 3]}`) or a CSV file with a header `label,tokens` and
//! the ids separated by spaces (`1,5 17 3`). Files may be gzip-compressed (`.gz`).
//!
//! Every id must be below `vocab_size`; a sequence longer than `max_len` is cut to its
//! first `max_len` ids (the statement says how many were), a shorter one is padded with
//! `padding_id` (which then must not occur as a real token). The examples become
//! (max_len) rows of ids for `embedding` / `embedding_bag` layers, whose `mean_pool` and
//! bag means skip the padding.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::idx::gunzip_if_gzip;
use super::{Dataset, Vocabulary};
use crate::error::{Error, Result};

/// Where token data lives and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The training file (`.jsonl` or `.csv`, optionally `.gz`).
    pub train: PathBuf,
    /// The test file.
    pub test: PathBuf,
    /// Number of distinct ids (ids are 0 to vocab_size − 1).
    pub vocab_size: usize,
    /// Length every sequence is padded or cut to.
    pub max_len: usize,
    /// The padding id (default 0).
    #[serde(default)]
    pub padding_id: u32,
    /// Number of classes (labels are 0 to classes − 1).
    pub classes: usize,
}

/// Both splits, and how many sequences were cut.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Training examples.
    pub train: Dataset,
    /// Test examples.
    pub test: Dataset,
    /// Sequences of the training file longer than `max_len`.
    pub truncated: usize,
}

fn parse_error(path: &Path, line: usize, message: String) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        location: format!("line {line}"),
        message,
    }
}

impl TokenConfig {
    /// Range checks.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 2 {
            return Err(Error::invalid(
                "data.vocab_size",
                self.vocab_size,
                "at least 2",
            ));
        }
        if self.max_len == 0 {
            return Err(Error::invalid("data.max_len", 0, "at least 1"));
        }
        if self.padding_id as usize >= self.vocab_size {
            return Err(Error::invalid(
                "data.padding_id",
                self.padding_id,
                format!("an id below data.vocab_size = {}", self.vocab_size),
            ));
        }
        if self.classes < 2 {
            return Err(Error::invalid("data.classes", self.classes, "at least 2"));
        }
        Ok(())
    }

    /// Training examples, N.
    pub fn train_size(&self) -> Result<usize> {
        Ok(read_file(self, &self.train)?.0.len())
    }
}

/// One parsed line: label and ids.
type Example = (u32, Vec<u32>);

fn parse_jsonl_line(text: &str) -> std::result::Result<Example, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let label = value
        .get("label")
        .and_then(|l| l.as_u64())
        .ok_or("no whole-number `label`")?;
    let tokens = value
        .get("tokens")
        .and_then(|t| t.as_array())
        .ok_or("no `tokens` array")?
        .iter()
        .map(|t| {
            t.as_u64()
                .ok_or_else(|| format!("token {t} is not a whole number ≥ 0"))
        })
        .collect::<std::result::Result<Vec<u64>, String>>()?;
    let big = |v: u64| u32::try_from(v).map_err(|_| format!("id {v} is too large"));
    Ok((
        big(label)?,
        tokens
            .into_iter()
            .map(big)
            .collect::<std::result::Result<_, _>>()?,
    ))
}

fn parse_csv_line(text: &str) -> std::result::Result<Example, String> {
    let (label, tokens) = text.split_once(',').ok_or("expected `label,tokens`")?;
    let label = label
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("label {label:?} is not a whole number"))?;
    let tokens = tokens
        .split_whitespace()
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| format!("token {t:?} is not a whole number ≥ 0"))
        })
        .collect::<std::result::Result<_, _>>()?;
    Ok((label, tokens))
}

fn read_file(config: &TokenConfig, path: &Path) -> Result<(Vec<Example>, usize)> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = gunzip_if_gzip(&raw, path)?;
    let text = std::str::from_utf8(&text)
        .map_err(|e| parse_error(path, 0, format!("not UTF-8 text: {e}")))?;
    let name = path.to_string_lossy();
    let csv = name.ends_with(".csv") || name.ends_with(".csv.gz");
    let mut examples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        if csv && index == 0 {
            if line.trim() != "label,tokens" {
                return Err(parse_error(
                    path,
                    1,
                    format!("header {line:?}: expected `label,tokens`"),
                ));
            }
            continue;
        }
        let (label, tokens) = match csv {
            true => parse_csv_line(line),
            false => parse_jsonl_line(line),
        }
        .map_err(|m| parse_error(path, number, m))?;
        if label as usize >= config.classes {
            return Err(parse_error(
                path,
                number,
                format!(
                    "label {label} is out of range: data.classes = {}",
                    config.classes
                ),
            ));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= config.vocab_size) {
            return Err(parse_error(
                path,
                number,
                format!(
                    "token id {bad} is beyond the vocabulary: data.vocab_size = {} (ids 0 to {})",
                    config.vocab_size,
                    config.vocab_size - 1
                ),
            ));
        }
        if tokens.contains(&config.padding_id) {
            return Err(parse_error(
                path,
                number,
                format!(
                    "the padding id {} occurs as a token; pick a data.padding_id no real token uses",
                    config.padding_id
                ),
            ));
        }
        examples.push((label, tokens));
    }
    if examples.is_empty() {
        return Err(parse_error(path, 0, "no examples".into()));
    }
    let truncated = examples
        .iter()
        .filter(|(_, t)| t.len() > config.max_len)
        .count();
    Ok((examples, truncated))
}

fn to_dataset(config: &TokenConfig, examples: Vec<Example>) -> Dataset {
    let mut features = Vec::with_capacity(examples.len() * config.max_len);
    let mut labels = Vec::with_capacity(examples.len());
    for (label, tokens) in examples {
        labels.push(label);
        let kept = tokens.len().min(config.max_len);
        features.extend(tokens[..kept].iter().map(|&t| t as f32));
        features.extend(std::iter::repeat_n(
            config.padding_id as f32,
            config.max_len - kept,
        ));
    }
    Dataset {
        features,
        labels,
        feature_shape: vec![config.max_len],
        classes: config.classes,
        vocab: Some(Vocabulary {
            size: config.vocab_size,
            padding: Some(config.padding_id),
        }),
    }
}

/// Reads, checks and pads both splits.
pub fn load_tokens(config: &TokenConfig) -> Result<Tokens> {
    config.validate()?;
    if config.vocab_size > 1 << 24 {
        return Err(Error::invalid(
            "data.vocab_size",
            config.vocab_size,
            "at most 2^24 (ids are stored exactly as f32)",
        ));
    }
    let (train, truncated) = read_file(config, &config.train)?;
    let (test, _) = read_file(config, &config.test)?;
    Ok(Tokens {
        train: to_dataset(config, train),
        test: to_dataset(config, test),
        truncated,
    })
}
