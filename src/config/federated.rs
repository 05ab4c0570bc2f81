//! The config of a federated run (`dptrain federate CONFIG`): the data and model of a run
//! config, and a `[federated]` table with the partition and one privacy mode:
//! `[federated.client_level]` (with `federated.local`, the clients' training) or
//! `[federated.silo_level]`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{DataConfig, apply_override, span_location};
use crate::error::{Error, Result};
use crate::federated::{ClientLevelConfig, LocalTraining, PartitionConfig, SiloLevelConfig};
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

/// The `[federated]` table: a partition and exactly one privacy mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedConfig {
    /// How the training set is split into clients (or silos).
    pub partition: PartitionConfig,
    /// How each client trains in a round (client-level DP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalTraining>,
    /// Client-level DP-FedAvg: rounds, client sampling, clip, noise, server optimizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_level: Option<ClientLevelConfig>,
    /// Silo-level DP: every silo's own DP-SGD steps, the server's weighted mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silo_level: Option<SiloLevelConfig>,
}

/// The privacy mode of a federated run.
#[derive(Debug, Clone, Copy)]
pub enum FederatedMode<'a> {
    /// Client-level DP-FedAvg with each client's local training.
    ClientLevel(&'a LocalTraining, &'a ClientLevelConfig),
    /// Silo-level DP.
    SiloLevel(&'a SiloLevelConfig),
}

impl FederatedConfig {
    /// The run's mode: exactly one of `[federated.client_level]` (with `federated.local`)
    /// and `[federated.silo_level]`.
    pub fn mode(&self) -> Result<FederatedMode<'_>> {
        match (&self.client_level, &self.silo_level, &self.local) {
            (Some(client), None, Some(local)) => Ok(FederatedMode::ClientLevel(local, client)),
            (Some(_), None, None) => Err(Error::invalid(
                "federated.local",
                "missing",
                "the clients' local training (epochs, batch_size, optimizer) of a \
                 client-level run",
            )),
            (None, Some(silo), None) => Ok(FederatedMode::SiloLevel(silo)),
            (None, Some(_), Some(_)) => Err(Error::invalid(
                "federated.local",
                "given",
                "nothing under silo-level DP (the silos' steps are set in \
                 federated.silo_level: local_steps, sample_rate, optimizer)",
            )),
            (client, silo, _) => Err(Error::invalid(
                "federated.client_level / federated.silo_level",
                match (client.is_some(), silo.is_some()) {
                    (true, true) => "both",
                    _ => "neither",
                },
                "exactly one of them: the run's privacy mode",
            )),
        }
    }
}

/// True when a config's text is a federated run's (it has a `[federated]` table): run
/// directories of `dptrain train` and `dptrain federate` both hold a config.toml.
pub fn is_federated(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("[federated"))
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
        let check_delta = |key: &'static str, delta: f64| {
            crate::privacy::conversion::check_delta(delta)
                .map_err(|_| Error::invalid(key, delta, "a number in (0, 1)"))
        };
        let check_clip = |key: &'static str, clip: f64| match clip > 0.0 && clip.is_finite() {
            true => Ok(()),
            false => Err(Error::invalid(key, clip, "a finite number above 0")),
        };
        match self.federated.mode()? {
            FederatedMode::ClientLevel(local, privacy) => {
                if local.epochs == 0 || local.batch_size == 0 {
                    return Err(Error::invalid(
                        "federated.local.epochs / batch_size",
                        format!("{} / {}", local.epochs, local.batch_size),
                        "whole numbers at least 1",
                    ));
                }
                local.optimizer.validate()?;
                check_delta("federated.client_level.delta", privacy.delta)?;
                check_clip("federated.client_level.clip_norm", privacy.clip_norm)?;
                if let Some(adaptive) = privacy.adaptive_clipping {
                    adaptive.validate().map_err(|e| {
                        Error::Usage(e.to_string().replace("privacy.", "federated.client_level."))
                    })?;
                }
                privacy.server_optimizer.validate()
            }
            FederatedMode::SiloLevel(privacy) => {
                check_delta("federated.silo_level.delta", privacy.delta)?;
                check_clip("federated.silo_level.clip_norm", privacy.clip_norm)?;
                privacy.optimizer.validate()?;
                privacy.server_optimizer.validate()
            }
        }
    }
}
