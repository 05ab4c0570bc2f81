//! Checkpoints: everything a run needs to continue exactly where it stopped, written at the
//! end of every epoch into `<run>/checkpoint/`, atomically as a whole (the new checkpoint is
//! written beside the old one and swapped in by renames; the last good one survives a crash
//! at any point).
//!
//! The ledger travels with the checkpoint: a resumed run's ε continues from it and its budget
//! checks include every step already taken.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::epoch::EpochRecord;
use super::inner::OptimizerState;
use crate::error::{Error, Result};
use crate::fs::write_atomic;
use crate::privacy::Ledger;
use crate::schedule::Plateau;

/// The folder of the current checkpoint inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";

/// The scalar part of a checkpoint (state.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointState {
    /// Format version.
    pub format: u32,
    /// The run config the checkpoint belongs to (TOML text), to refuse a different one.
    pub config: String,
    /// Steps taken.
    pub steps: u64,
    /// The next epoch (1-based).
    pub next_epoch: usize,
    /// Metrics rows so far.
    pub epochs: Vec<EpochRecord>,
    /// Every step taken.
    pub ledger: Ledger,
    /// The sampler's stream position (decimal u128).
    pub sampler_position: String,
    /// Noise calls so far.
    pub noise_calls: u64,
    /// Adaptive clipping: C and the count noise stream's position.
    pub clipper: Option<(f64, String)>,
    /// The plateau schedule's state.
    pub plateau: Plateau,
    /// Training seconds before the checkpoint.
    pub wall_seconds: f64,
    /// Adam's steps (0 for SGD).
    pub optimizer_steps: u64,
    /// A checkpoint taken within an epoch (Ctrl-C): the epoch's sums so far.
    #[serde(default)]
    pub epoch_loss: f64,
    /// Examples sampled so far in the epoch.
    #[serde(default)]
    pub epoch_examples: u64,
    /// Non-finite examples so far in the epoch.
    #[serde(default)]
    pub epoch_nonfinite: u64,
}

/// A whole checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Scalars and records.
    pub state: CheckpointState,
    /// The model's parameters, in [`crate::model::Model::parameters`] order.
    pub params: Vec<Tensor>,
    /// The inner optimizer's tensors.
    pub optimizer: OptimizerState,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &Path, message: impl Into<String>) -> Error {
    Error::Parse {
        path: path.to_path_buf(),
        location: "checkpoint".into(),
        message: message.into(),
    }
}

/// Parses a decimal u128 from a checkpoint.
pub fn parse_position(text: &str, path: &Path) -> Result<u128> {
    text.parse()
        .map_err(|_| corrupt(path, format!("expected a stream position, found `{text}`")))
}

impl Checkpoint {
    /// Writes the checkpoint into `<run_dir>/checkpoint/`, replacing the previous one only
    /// once the new one is complete.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let mut tensors = std::collections::HashMap::new();
        for (i, p) in self.params.iter().enumerate() {
            tensors.insert(format!("param.{i}"), p.clone());
        }
        for (name, t) in &self.optimizer.tensors {
            tensors.insert(name.clone(), t.clone());
        }
        let state = serde_json::to_string_pretty(&self.state).expect("plain data serialises");
        save_dir(run_dir, &tensors, state.as_bytes())
    }

    /// The newest complete checkpoint of `run_dir`.
    pub fn load(run_dir: &Path) -> Result<Checkpoint> {
        let (state_path, bytes, mut tensors) = load_dir(run_dir)?;
        let state: CheckpointState = parse_state(&state_path, &bytes)?;
        if state.format != 1 {
            return Err(corrupt(
                &state_path,
                format!("unknown format {}", state.format),
            ));
        }
        let params = take_params(&mut tensors);
        let optimizer = OptimizerState {
            tensors: tensors.into_iter().collect(),
            steps: state.optimizer_steps,
        };
        Ok(Checkpoint {
            state,
            params,
            optimizer,
        })
    }
}

/// Writes `tensors` (tensors.safetensors) and `state` (state.json) as the checkpoint of
/// `run_dir`: into `checkpoint.new/`, then swapped in by renames, so that the last good
/// checkpoint survives a crash at any point.
pub fn save_dir(
    run_dir: &Path,
    tensors: &std::collections::HashMap<String, Tensor>,
    state: &[u8],
) -> Result<()> {
    std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
    let current = run_dir.join(CHECKPOINT_DIR);
    let new = run_dir.join(format!("{CHECKPOINT_DIR}.new"));
    let old = run_dir.join(format!("{CHECKPOINT_DIR}.old"));
    if new.exists() {
        std::fs::remove_dir_all(&new).map_err(io(&new))?;
    }
    std::fs::create_dir_all(&new).map_err(io(&new))?;
    let weights = new.join("tensors.safetensors");
    candle_core::safetensors::save(tensors, &weights)?;
    write_atomic(&new.join("state.json"), state)?;
    // Swap: current → old, new → current, drop old. A crash leaves `current`, or `old`
    // with a complete `new`, and `load_dir` takes the newest complete one.
    if current.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        std::fs::rename(&current, &old).map_err(io(&current))?;
    }
    std::fs::rename(&new, &current).map_err(io(&new))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io(&old))?;
    }
    Ok(())
}

/// The newest complete checkpoint of `run_dir` written by [`save_dir`]: the path of its
/// state.json, that file's bytes and its tensors by name.
pub fn load_dir(
    run_dir: &Path,
) -> Result<(PathBuf, Vec<u8>, std::collections::HashMap<String, Tensor>)> {
    let candidates: Vec<PathBuf> = [CHECKPOINT_DIR, "checkpoint.new", "checkpoint.old"]
        .iter()
        .map(|d| run_dir.join(d))
        .filter(|d| d.join("state.json").is_file() && d.join("tensors.safetensors").is_file())
        .collect();
    let Some(dir) = candidates.first() else {
        return Err(corrupt(
            &run_dir.join(CHECKPOINT_DIR),
            "no complete checkpoint (state.json and tensors.safetensors) in this run directory",
        ));
    };
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
    let weights = dir.join("tensors.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu)
        .map_err(|e| corrupt(&weights, e.to_string()))?;
    Ok((state_path, bytes, tensors))
}

/// Parses a checkpoint's state.json, naming the line and column of a fault.
pub fn parse_state<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        location: format!("line {}, column {}", e.line(), e.column()),
        message: e.to_string(),
    })
}

/// Removes `param.0`, `param.1`, ... from `tensors`, in order.
pub fn take_params(tensors: &mut std::collections::HashMap<String, Tensor>) -> Vec<Tensor> {
    let mut params = Vec::new();
    while let Some(t) = tensors.remove(&format!("param.{}", params.len())) {
        params.push(t);
    }
    params
}
