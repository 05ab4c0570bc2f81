//! The config of a federated run (`dptrain federate CONFIG`): the data and model of a run
//! config, and a `[federated]` table with the partition, the clients' local training and
//! the client-level privacy of the rounds.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DataConfig, apply_override, span_location};
use crate::error::{Error, Result};
use crate::federated::{ClientLevelConfig, LocalTraining, PartitionConfig};
use crate::model::ModelConfig;

/// A federated run's config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedRunConfig {
    /// Name of the run (the default output folder is `reports/<name>`).
    pub name: String,
    /// Seed of the model init, the partition, the client sample and the server's noise.
    pub seed: u64,
    /// The data set (its training split is partitioned into clients).
    pub data: DataConfig,
    /// The network.
    pub model: ModelConfig,
    /// Clients and rounds.
    pub federated: FederatedConfig,
}

/// The `[federated]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedConfig {
    /// How the training set is split into clients.
    pub partition: PartitionConfig,
    /// How each client trains in a round.
    pub local: LocalTraining,
    /// Client-level DP-FedAvg: rounds, client sampling, clip, noise, server optimizer.
    pub client_level: ClientLevelConfig,
}

impl FederatedRunConfig {
    /// Reads `path`, applies `overrides` (`key.path=value`, TOML values), checks ranges.
    pub fn load(path: &Path, overrides: &[String]) -> Result<FederatedRunConfig> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config_error = |location: String, message: String| Error::Parse {
            path: path.to_path_buf(),
            location,
            message,
        };
        let mut table: toml::Table = toml::from_str(&text)
            .map_err(|e| config_error(span_location(&text, &e), e.message().to_string()))?;
        for assignment in overrides {
            apply_override(&mut table, assignment)
                .map_err(|message| config_error(format!("--set {assignment}"), message))?;
        }
        let config: FederatedRunConfig = match overrides.is_empty() {
            true => toml::from_str(&text)
                .map_err(|e| config_error(span_location(&text, &e), e.message().to_string()))?,
            false => toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    config_error("with --set overrides".into(), e.message().to_string())
                })?,
        };
        config
            .validate()
            .map_err(|e| config_error("validation".into(), e.to_string()))?;
        Ok(config)
    }

    /// Range checks the types cannot express (the partition and the sampling are checked
    /// against the data when the run starts).
    pub fn validate(&self) -> Result<()> {
        let local = &self.federated.local;
        if local.epochs == 0 || local.batch_size == 0 {
            return Err(Error::invalid(
                "federated.local.epochs / batch_size",
                format!("{} / {}", local.epochs, local.batch_size),
                "whole numbers at least 1",
            ));
        }
        local.optimizer.validate()?;
        let privacy = &self.federated.client_level;
        crate::privacy::conversion::check_delta(privacy.delta).map_err(|_| {
            Error::invalid(
                "federated.client_level.delta",
                privacy.delta,
                "a number in (0, 1)",
            )
        })?;
        if !(privacy.clip_norm > 0.0 && privacy.clip_norm.is_finite()) {
            return Err(Error::invalid(
                "federated.client_level.clip_norm",
                privacy.clip_norm,
                "a finite number above 0",
            ));
        }
        privacy.server_optimizer.validate()
    }
}
