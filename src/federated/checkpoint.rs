//! A federated run's checkpoint, written after every round into `<run>/checkpoint/` by the
//! same atomic swap as training checkpoints ([`crate::train::checkpoint::save_dir`]): the
//! global model, the server optimizer's state, the streams' positions (client sample,
//! server noise, adaptive clipping's count noise), every silo's state and the ledger.
//!
//! A run killed in the middle of a round resumes from the end of the last finished round:
//! nothing of the unfinished round was released (the checkpoint and the metrics are written
//! after it), and the seeded streams draw that round again exactly as before.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::run::RoundRecord;
use crate::error::Result;
use crate::privacy::Ledger;
use crate::train::OptimizerState;
use crate::train::checkpoint::{corrupt, load_dir, parse_position, parse_state, save_dir};

/// The format written by this version.
const FORMAT: u32 = 1;

/// What one silo keeps between rounds, in a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiloCheckpoint {
    /// Every step the silo took.
    pub ledger: Ledger,
    /// Its sampler's stream position (decimal u128).
    pub sampler_position: String,
    /// Its noise stream's position.
    pub noise_position: u64,
}

/// The scalar part of a federated checkpoint (state.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedState {
    /// Format version.
    pub format: u32,
    /// The run's config (TOML text), to refuse resuming with a different one.
    pub config: String,
    /// Metrics rows of the finished rounds.
    pub rounds: Vec<RoundRecord>,
    /// Client-level: every round's event (empty under silo-level DP, where each silo keeps
    /// its own).
    pub ledger: Ledger,
    /// Distributed DP: the rounds booked so far, as ledger CSV text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distributed_ledger: Option<String>,
    /// The client sampler's stream position (decimal u128).
    pub sampler_position: String,
    /// The server noise stream's position.
    pub noise_position: u64,
    /// Adaptive clipping: C and the count noise stream's position (decimal u128).
    pub clipper: Option<(f64, String)>,
    /// The server optimizer's steps (FedAdam).
    pub optimizer_steps: u64,
    /// Silo-level: each silo's state.
    pub silos: Vec<SiloCheckpoint>,
    /// Seconds spent in the rounds so far.
    pub wall_seconds: f64,
}

/// A whole federated checkpoint.
#[derive(Debug, Clone)]
pub struct FederatedCheckpoint {
    /// Scalars, records and ledgers.
    pub state: FederatedState,
    /// The global model's parameters, in the module's order.
    pub params: Vec<Tensor>,
    /// The server optimizer's tensors.
    pub optimizer: OptimizerState,
}

impl FederatedState {
    /// A state of this version's format, to be filled in.
    pub fn new(config: String) -> Self {
        FederatedState {
            format: FORMAT,
            config,
            rounds: Vec::new(),
            ledger: Ledger::new(),
            distributed_ledger: None,
            sampler_position: "0".into(),
            noise_position: 0,
            clipper: None,
            optimizer_steps: 0,
            silos: Vec::new(),
            wall_seconds: 0.0,
        }
    }
}

impl FederatedCheckpoint {
    /// Writes `<run_dir>/checkpoint/`, replacing the previous one only once complete.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
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
    pub fn load(run_dir: &Path) -> Result<FederatedCheckpoint> {
        let (state_path, bytes, mut tensors) = load_dir(run_dir)?;
        let state: FederatedState = parse_state(&state_path, &bytes)?;
        if state.format != FORMAT {
            return Err(corrupt(
                &state_path,
                format!(
                    "unknown format {} (this version writes {FORMAT})",
                    state.format
                ),
            ));
        }
        // Positions are checked here, so that a resumed run cannot fail half-restored.
        parse_position(&state.sampler_position, &state_path)?;
        if let Some((_, position)) = &state.clipper {
            parse_position(position, &state_path)?;
        }
        for silo in &state.silos {
            parse_position(&silo.sampler_position, &state_path)?;
        }
        let params = crate::train::checkpoint::take_params(&mut tensors);
        Ok(FederatedCheckpoint {
            optimizer: OptimizerState {
                tensors: tensors.into_iter().collect(),
                steps: state.optimizer_steps,
            },
            state,
            params,
        })
    }

    /// A decimal stream position of this checkpoint (checked by [`Self::load`]).
    pub fn position(text: &str) -> u128 {
        text.parse().unwrap_or(0)
    }
}
