//! Stage 3 of the DP step: the update. The noised sum is divided by the expected batch size
//! q·N, a public constant (never the realised batch size, which is private), and handed to
//! an inner optimizer as the gradient. Everything from here on is post-processing of a
//! private release, so any optimizer may follow: SGD with momentum, Adam, and the server
//! optimizers of federated averaging (FedAvgM, FedAdam; Reddi et al. 2021), all behind one
//! trait, [`InnerOptimizer`].

use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::clipped_sum::{SumValue, Sums};
use crate::error::{Error, Result};
use crate::real::real;

/// An optimizer that takes a gradient per parameter and updates the parameters.
pub trait InnerOptimizer: Send {
    /// One update of `params` by `grads` (one per parameter, same shapes, in order).
    fn step(&mut self, params: &[Var], grads: &[Tensor]) -> Result<()>;

    /// The learning rate of the next steps.
    fn learning_rate(&self) -> f64;

    /// Sets the learning rate (learning-rate schedules cost no privacy).
    fn set_learning_rate(&mut self, learning_rate: f64);

    /// The optimizer's state, for checkpoints.
    fn state(&self) -> OptimizerState;

    /// Restores [`InnerOptimizer::state`] for `params`; errors if a tensor is missing or
    /// misshapen.
    fn restore(&mut self, params: &[Var], state: &OptimizerState) -> Result<()>;
}

/// The inner optimizer's state, for checkpoints: named tensors and a step count.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// `velocity.<i>` (SGD with momentum), `adam_m.<i>` and `adam_v.<i>` (Adam),
    /// `fedadam_m.<i>` and `fedadam_v.<i>` (FedAdam).
    pub tensors: Vec<(String, Tensor)>,
    /// Adam's and FedAdam's steps so far (0 for SGD).
    pub steps: u64,
}

impl OptimizerState {
    /// The tensor `name`, checked against the shape of `like`; None when absent.
    fn find(&self, name: &str, like: &Var) -> Result<Option<Tensor>> {
        match self.tensors.iter().find(|(n, _)| n == name) {
            Some((_, t)) if t.dims() == like.dims() => Ok(Some(t.clone())),
            Some((_, t)) => Err(Error::Tensor(format!(
                "checkpoint: {name} has shape {:?}, the model needs {:?}",
                t.dims(),
                like.dims()
            ))),
            None => Ok(None),
        }
    }

    /// The tensor `name`, which must be present.
    fn require(&self, name: &str, like: &Var) -> Result<Tensor> {
        self.find(name, like)?
            .ok_or_else(|| Error::Tensor(format!("checkpoint: optimizer tensor {name} missing")))
    }
}

/// The inner optimizer of training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// SGD, optionally with (heavy-ball) momentum: v ← μv + g, θ ← θ − lr·v.
    Sgd {
        /// Learning rate.
        learning_rate: f64,
        /// Momentum μ ∈ [0, 1).
        #[serde(default)]
        momentum: f64,
    },
    /// Adam (Kingma & Ba 2015), bias-corrected, no weight decay.
    Adam {
        /// Learning rate.
        learning_rate: f64,
        /// β₁.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂.
        #[serde(default = "default_beta2")]
        beta2: f64,
    },
}

fn default_beta1() -> f64 {
    0.9
}

fn default_beta2() -> f64 {
    0.999
}

fn check_learning_rate(name: &'static str, learning_rate: f64) -> Result<()> {
    if !(learning_rate > 0.0 && learning_rate.is_finite()) {
        return Err(Error::invalid(
            name,
            learning_rate,
            "a finite number above 0",
        ));
    }
    Ok(())
}

fn check_unit(name: &'static str, value: f64) -> Result<()> {
    if !(0.0..1.0).contains(&value) {
        return Err(Error::invalid(name, value, "a number in [0, 1)"));
    }
    Ok(())
}

impl OptimizerConfig {
    /// The learning rate.
    pub fn learning_rate(&self) -> f64 {
        match self {
            OptimizerConfig::Sgd { learning_rate, .. }
            | OptimizerConfig::Adam { learning_rate, .. } => *learning_rate,
        }
    }

    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        check_learning_rate("training.optimizer.learning_rate", self.learning_rate())?;
        match *self {
            OptimizerConfig::Sgd { momentum, .. } => {
                check_unit("training.optimizer.momentum", momentum)
            }
            OptimizerConfig::Adam { beta1, beta2, .. } => {
                check_unit("training.optimizer.beta1", beta1)?;
                check_unit("training.optimizer.beta2", beta2)
            }
        }
    }

    /// The optimizer for `params`.
    pub fn build(&self, params: &[Var]) -> Result<Box<dyn InnerOptimizer>> {
        self.validate()?;
        Ok(match *self {
            OptimizerConfig::Sgd {
                learning_rate,
                momentum,
            } => Box::new(SgdMomentum::new(params.len(), learning_rate, momentum)),
            OptimizerConfig::Adam {
                learning_rate,
                beta1,
                beta2,
            } => Box::new(Adam::new(params, learning_rate, beta1, beta2)?),
        })
    }
}

/// The server optimizer of federated averaging (Reddi et al. 2021, "Adaptive Federated
/// Optimization", Alg. 2): it treats the negated average client update −Δ as a gradient.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerOptimizerConfig {
    /// FedAvg (McMahan et al. 2017) with server learning rate η and momentum β
    /// (FedAvgM, Hsu et al. 2019): m ← βm + Δ, x ← x + ηm. β = 0 and η = 1 is plain FedAvg.
    FedAvgM {
        /// Server learning rate η.
        #[serde(default = "default_server_learning_rate")]
        learning_rate: f64,
        /// Momentum β ∈ [0, 1).
        #[serde(default)]
        momentum: f64,
    },
    /// FedAdam: m ← β₁m + (1 − β₁)Δ, v ← β₂v + (1 − β₂)Δ², x ← x + η·m/(√v + τ), no bias
    /// correction (Reddi et al. 2021, Alg. 2).
    FedAdam {
        /// Server learning rate η.
        learning_rate: f64,
        /// β₁.
        #[serde(default = "default_beta1")]
        beta1: f64,
        /// β₂.
        #[serde(default = "default_fedadam_beta2")]
        beta2: f64,
        /// τ, the adaptivity (Reddi et al. use 1e-3).
        #[serde(default = "default_tau")]
        tau: f64,
    },
}

fn default_server_learning_rate() -> f64 {
    1.0
}

fn default_fedadam_beta2() -> f64 {
    0.99
}

fn default_tau() -> f64 {
    1e-3
}

impl ServerOptimizerConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ServerOptimizerConfig::FedAvgM {
                learning_rate,
                momentum,
            } => {
                check_learning_rate("server_optimizer.learning_rate", learning_rate)?;
                check_unit("server_optimizer.momentum", momentum)
            }
            ServerOptimizerConfig::FedAdam {
                learning_rate,
                beta1,
                beta2,
                tau,
            } => {
                check_learning_rate("server_optimizer.learning_rate", learning_rate)?;
                check_unit("server_optimizer.beta1", beta1)?;
                check_unit("server_optimizer.beta2", beta2)?;
                if !(tau > 0.0 && tau.is_finite()) {
                    return Err(Error::invalid(
                        "server_optimizer.tau",
                        tau,
                        "a finite number above 0",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The optimizer for `params`: its `step` takes −Δ (the pseudo-gradient).
    pub fn build(&self, params: &[Var]) -> Result<Box<dyn InnerOptimizer>> {
        self.validate()?;
        Ok(match *self {
            // x + η(βm + Δ) is SGD with momentum on −Δ.
            ServerOptimizerConfig::FedAvgM {
                learning_rate,
                momentum,
            } => Box::new(SgdMomentum::new(params.len(), learning_rate, momentum)),
            ServerOptimizerConfig::FedAdam {
                learning_rate,
                beta1,
                beta2,
                tau,
            } => Box::new(Adam::fed(params, learning_rate, beta1, beta2, tau)?),
        })
    }
}

/// SGD with momentum (candle's SGD has none): v ← μv + g, θ ← θ − lr·v.
#[derive(Debug)]
pub struct SgdMomentum {
    velocity: Vec<Option<Tensor>>,
    learning_rate: f64,
    momentum: f64,
}

impl SgdMomentum {
    /// For `parameters` parameters.
    pub fn new(parameters: usize, learning_rate: f64, momentum: f64) -> Self {
        SgdMomentum {
            velocity: vec![None; parameters],
            learning_rate,
            momentum,
        }
    }
}

/// Errors unless there is one gradient per parameter of the same shape.
fn check_grads(params: &[Var], grads: &[Tensor]) -> Result<()> {
    if params.len() != grads.len() {
        return Err(Error::Tensor(format!(
            "{} gradients for {} parameters",
            grads.len(),
            params.len()
        )));
    }
    if let Some((p, g)) = params.iter().zip(grads).find(|(p, g)| p.dims() != g.dims()) {
        return Err(Error::Tensor(format!(
            "a gradient of shape {:?} for a parameter of shape {:?}",
            g.dims(),
            p.dims()
        )));
    }
    Ok(())
}

impl InnerOptimizer for SgdMomentum {
    fn step(&mut self, params: &[Var], grads: &[Tensor]) -> Result<()> {
        check_grads(params, grads)?;
        if self.velocity.len() != params.len() {
            return Err(Error::Tensor(format!(
                "an optimizer for {} parameters stepped with {}",
                self.velocity.len(),
                params.len()
            )));
        }
        for ((var, g), velocity) in params.iter().zip(grads).zip(&mut self.velocity) {
            let direction = match velocity.take() {
                Some(v) if self.momentum > 0.0 => ((v * self.momentum)? + g)?,
                _ => g.clone(),
            };
            var.set(&(var.as_tensor() - (&direction * self.learning_rate)?)?)?;
            if self.momentum > 0.0 {
                *velocity = Some(direction);
            }
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            tensors: self
                .velocity
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.as_ref().map(|v| (format!("velocity.{i}"), v.clone())))
                .collect(),
            steps: 0,
        }
    }

    fn restore(&mut self, params: &[Var], state: &OptimizerState) -> Result<()> {
        self.velocity = params
            .iter()
            .enumerate()
            .map(|(i, var)| state.find(&format!("velocity.{i}"), var))
            .collect::<Result<_>>()?;
        Ok(())
    }
}

/// Adam (Kingma & Ba 2015) with bias correction, written here so that its moments can be
/// saved in checkpoints (candle's AdamW keeps them private); without bias correction and
/// with ε = τ it is FedAdam's server update on the pseudo-gradient g = −Δ: m ← β₁m +
/// (1 − β₁)g, v ← β₂v + (1 − β₂)g², x ← x − η·m/(√v + τ) (Reddi et al. 2021, Alg. 2).
#[derive(Debug)]
pub struct Adam {
    first: Vec<Tensor>,
    second: Vec<Tensor>,
    steps: u64,
    learning_rate: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    /// False for FedAdam.
    bias_correction: bool,
    /// The checkpoint names' prefix: `adam` or `fedadam`.
    prefix: &'static str,
}

fn zeros_of(params: &[Var]) -> Result<Vec<Tensor>> {
    params
        .iter()
        .map(|v| Ok(v.as_tensor().zeros_like()?))
        .collect()
}

impl Adam {
    /// For `params`, moments at zero.
    pub fn new(params: &[Var], learning_rate: f64, beta1: f64, beta2: f64) -> Result<Self> {
        Ok(Adam {
            first: zeros_of(params)?,
            second: zeros_of(params)?,
            steps: 0,
            learning_rate,
            beta1,
            beta2,
            eps: 1e-8,
            bias_correction: true,
            prefix: "adam",
        })
    }

    /// FedAdam for `params`, moments at zero: no bias correction, τ in the denominator.
    pub fn fed(
        params: &[Var],
        learning_rate: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    ) -> Result<Self> {
        Ok(Adam {
            eps: tau,
            bias_correction: false,
            prefix: "fedadam",
            ..Adam::new(params, learning_rate, beta1, beta2)?
        })
    }
}

impl InnerOptimizer for Adam {
    fn step(&mut self, params: &[Var], grads: &[Tensor]) -> Result<()> {
        check_grads(params, grads)?;
        self.steps += 1;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (((var, g), m), v) in params
            .iter()
            .zip(grads)
            .zip(&mut self.first)
            .zip(&mut self.second)
        {
            *m = ((&*m * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = match self.bias_correction {
                true => ((&*m / c1)? / ((&*v / c2)?.sqrt()? + self.eps)?)?,
                false => (&*m / (v.sqrt()? + self.eps)?)?,
            };
            var.set(&(var.as_tensor() - (update * self.learning_rate)?)?)?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.learning_rate
    }

    fn set_learning_rate(&mut self, learning_rate: f64) {
        self.learning_rate = learning_rate;
    }

    fn state(&self) -> OptimizerState {
        OptimizerState {
            tensors: moments(self.prefix, &self.first, &self.second),
            steps: self.steps,
        }
    }

    fn restore(&mut self, params: &[Var], state: &OptimizerState) -> Result<()> {
        for (i, var) in params.iter().enumerate() {
            self.first[i] = state.require(&format!("{}_m.{i}", self.prefix), var)?;
            self.second[i] = state.require(&format!("{}_v.{i}", self.prefix), var)?;
        }
        self.steps = state.steps;
        Ok(())
    }
}

/// `<prefix>_m.<i>` and `<prefix>_v.<i>`.
fn moments(prefix: &str, first: &[Tensor], second: &[Tensor]) -> Vec<(String, Tensor)> {
    first
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{prefix}_m.{i}"), m.clone()))
        .chain(
            second
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{prefix}_v.{i}"), v.clone())),
        )
        .collect()
}

/// Stage 3: ÷ the expected batch size, then the inner optimizer.
pub struct Update {
    expected_batch_size: f64,
    inner: Box<dyn InnerOptimizer>,
}

impl Update {
    /// Divides by `expected_batch_size` (q·N, public) and steps `inner`.
    pub fn new(expected_batch_size: f64, inner: Box<dyn InnerOptimizer>) -> Result<Self> {
        if !(expected_batch_size > 0.0 && expected_batch_size.is_finite()) {
            return Err(Error::invalid(
                "expected_batch_size",
                expected_batch_size,
                "a number above 0",
            ));
        }
        Ok(Update {
            expected_batch_size,
            inner,
        })
    }

    /// The inner optimizer.
    pub fn inner(&self) -> &dyn InnerOptimizer {
        self.inner.as_ref()
    }

    /// The inner optimizer, to change its learning rate or restore its state.
    pub fn inner_mut(&mut self) -> &mut dyn InnerOptimizer {
        self.inner.as_mut()
    }

    /// The divisor q·N.
    pub fn expected_batch_size(&self) -> f64 {
        self.expected_batch_size
    }

    /// Updates `params` with the noised sums: g = S / (q·N), then the inner step.
    ///
    /// # Privacy
    /// Post-processing of the privatised sums: q·N is a public constant (Abadi et al.
    /// 2016; Opacus `scale_grad`), never the realised batch size.
    pub fn apply(&mut self, params: &[Var], sums: Sums) -> Result<()> {
        let grads = real!(sums.dtype(), "update", |T| self
            .gradients::<T>(params, sums))?;
        self.inner.step(params, &grads)
    }

    fn gradients<T: SumValue>(&self, params: &[Var], sums: Sums) -> Result<Vec<Tensor>> {
        let sums =
            T::unwrap(sums).ok_or_else(|| Error::Tensor("sums of another precision".into()))?;
        if sums.len() != params.len() {
            return Err(Error::Tensor(format!(
                "{} sums for {} parameters",
                sums.len(),
                params.len()
            )));
        }
        let scale = T::of(1.0 / self.expected_batch_size);
        params
            .iter()
            .zip(sums)
            .map(|(param, mut sum)| {
                sum.iter_mut().for_each(|v| *v *= scale);
                Ok(Tensor::from_vec(sum, param.shape(), &Device::Cpu)?)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    fn scalar(var: &Var) -> f64 {
        var.as_tensor().to_vec1::<f64>().unwrap()[0]
    }

    #[test]
    fn fedadam_follows_reddi_et_al_by_hand() {
        let x = Var::from_vec(vec![1.0f64], 1, &Device::Cpu).unwrap();
        let params = [x.clone()];
        let config = ServerOptimizerConfig::FedAdam {
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        };
        let mut server = config.build(&params).unwrap();
        let (mut m, mut v, mut expected) = (0.0f64, 0.0f64, 1.0f64);
        for delta in [0.5f64, -0.2, 0.3] {
            let g = Tensor::from_vec(vec![-delta], 1, &Device::Cpu).unwrap();
            server.step(&params, &[g]).unwrap();
            m = 0.9 * m + 0.1 * delta;
            v = 0.99 * v + 0.01 * delta * delta;
            expected += 0.1 * m / (v.sqrt() + 1e-3);
            assert!(
                (scalar(&x) - expected).abs() < 1e-12,
                "{} vs {expected}",
                scalar(&x)
            );
        }
    }

    #[test]
    fn fedavgm_follows_its_definition_by_hand() {
        let x = Var::from_vec(vec![0.0f64], 1, &Device::Cpu).unwrap();
        let params = [x.clone()];
        let config = ServerOptimizerConfig::FedAvgM {
            learning_rate: 0.5,
            momentum: 0.9,
        };
        let mut server = config.build(&params).unwrap();
        let (mut m, mut expected) = (0.0f64, 0.0f64);
        for delta in [1.0f64, 1.0, -2.0] {
            let g = Tensor::from_vec(vec![-delta], 1, &Device::Cpu).unwrap();
            server.step(&params, &[g]).unwrap();
            m = 0.9 * m + delta;
            expected += 0.5 * m;
            assert!((scalar(&x) - expected).abs() < 1e-12);
        }
    }

    #[test]
    fn the_update_divides_by_the_expected_batch_size_only() {
        let x = Var::from_vec(vec![0.0f64, 0.0], 2, &Device::Cpu).unwrap();
        let sgd = OptimizerConfig::Sgd {
            learning_rate: 1.0,
            momentum: 0.0,
        };
        let params = std::slice::from_ref(&x);
        let mut update = Update::new(4.0, sgd.build(params).unwrap()).unwrap();
        update
            .apply(params, Sums::F64(vec![vec![2.0, -8.0]]))
            .unwrap();
        assert_eq!(x.as_tensor().to_vec1::<f64>().unwrap(), vec![-0.5, 2.0]);
        // Sums of the wrong precision or count are refused.
        assert!(
            update
                .apply(params, Sums::zeros(&[2], DType::F32).unwrap())
                .is_err()
        );
        assert!(update.apply(params, Sums::F64(vec![])).is_err());
        assert!(Update::new(0.0, sgd.build(&[]).unwrap()).is_err());
    }

    #[test]
    fn bad_server_optimizers_are_refused() {
        let bad = [
            ServerOptimizerConfig::FedAvgM {
                learning_rate: 0.0,
                momentum: 0.0,
            },
            ServerOptimizerConfig::FedAvgM {
                learning_rate: 1.0,
                momentum: 1.0,
            },
            ServerOptimizerConfig::FedAdam {
                learning_rate: 1.0,
                beta1: 0.9,
                beta2: 0.99,
                tau: 0.0,
            },
        ];
        for config in bad {
            assert!(config.build(&[]).is_err(), "{config:?}");
        }
    }
}
