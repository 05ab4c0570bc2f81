//! Which clients join a round, and the privacy event that choice makes.
//!
//! Client-level DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018) is accounted as DP-SGD
//! over clients: each round is `PoissonSampled(q, Gaussian(z))` with q the probability that
//! a client joins and z the noise multiplier of the clipped sum. That amplification holds
//! only if every client joins independently with probability q, which is what
//! [`ClientSampling::Poisson`] does (seeded, or from an OS-seeded CSPRNG in secure mode,
//! through `sampling::PoissonSampler`). A fixed number of clients per round
//! ([`ClientSampling::Fixed`], as Flower and TensorFlow Federated sample) is accounted
//! without amplification (`NoAmplification`, i.e. at rate 1), and the report says so.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::privacy::DpEvent;
use crate::sampling::PoissonSampler;

/// How the clients of a round are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientSampling {
    /// Each client joins each round independently with probability `expected_clients / N`
    /// (accounted with amplification).
    Poisson {
        /// The expected number of clients per round, qN.
        expected_clients: usize,
    },
    /// Exactly `clients` distinct clients per round, uniformly at random (accounted without
    /// amplification).
    Fixed {
        /// Clients per round.
        clients: usize,
    },
}

impl ClientSampling {
    /// The rate a round samples clients at: q = expected (or fixed) clients over N.
    pub fn sample_rate(&self, population: usize) -> f64 {
        let per_round = match *self {
            ClientSampling::Poisson { expected_clients } => expected_clients,
            ClientSampling::Fixed { clients } => clients,
        };
        per_round as f64 / population as f64
    }

    /// Checks the count against the population.
    pub fn validate(&self, population: usize) -> Result<()> {
        let (key, count) = match *self {
            ClientSampling::Poisson { expected_clients } => {
                ("federated.sampling.expected_clients", expected_clients)
            }
            ClientSampling::Fixed { clients } => ("federated.sampling.clients", clients),
        };
        if count == 0 || count > population {
            return Err(Error::invalid(
                key,
                count,
                format!("a whole number from 1 to the number of clients ({population})"),
            ));
        }
        Ok(())
    }

    /// The privacy event of one round whose clipped sum (sensitivity: one client's clipped
    /// update) gets Gaussian noise at multiplier `noise_multiplier`.
    ///
    /// # Privacy
    /// Poisson: `PoissonSampled(q, Gaussian(z))` (Abadi et al. 2016 over clients; McMahan
    /// et al. 2018). Fixed: the same wrapped in `NoAmplification`, accounted at rate 1: the
    /// amplification theorems the accountants implement are for Poisson sampling.
    pub fn round_event(&self, population: usize, noise_multiplier: f64) -> DpEvent {
        self.round_event_of(population, DpEvent::Gaussian { noise_multiplier })
    }

    /// [`ClientSampling::round_event`] with another noise mechanism (the discrete Gaussian of
    /// secure mode).
    pub fn round_event_of(&self, population: usize, noise: DpEvent) -> DpEvent {
        let sampled = DpEvent::PoissonSampled {
            sample_rate: self.sample_rate(population),
            event: Box::new(noise),
        };
        match self {
            ClientSampling::Poisson { .. } => sampled,
            ClientSampling::Fixed { clients } => DpEvent::NoAmplification {
                sampling: format!(
                    "{clients} of {population} clients per round, without replacement"
                ),
                event: Box::new(sampled),
            },
        }
    }
}

/// Draws each round's clients.
#[derive(Debug)]
pub enum ClientSampler {
    /// Poisson sampling of clients.
    Poisson(PoissonSampler),
    /// A fixed number per round, seeded.
    Fixed {
        /// Clients per round.
        clients: usize,
        /// All clients.
        population: usize,
        /// The stream.
        rng: ChaCha20Rng,
    },
}

impl ClientSampler {
    /// A sampler of `population` clients; `seed` None draws from an OS-seeded CSPRNG
    /// (secure mode, Poisson only: a fixed-size secure sampler is not offered).
    pub fn new(sampling: ClientSampling, population: usize, seed: Option<u64>) -> Result<Self> {
        sampling.validate(population)?;
        Ok(match (sampling, seed) {
            (ClientSampling::Poisson { expected_clients }, Some(seed)) => ClientSampler::Poisson(
                PoissonSampler::with_expected_batch_size(expected_clients, population, seed)?,
            ),
            (ClientSampling::Poisson { expected_clients }, None) => {
                ClientSampler::Poisson(PoissonSampler::secure(expected_clients, population)?)
            }
            (ClientSampling::Fixed { clients }, Some(seed)) => ClientSampler::Fixed {
                clients,
                population,
                rng: ChaCha20Rng::seed_from_u64(seed),
            },
            (ClientSampling::Fixed { .. }, None) => {
                return Err(Error::invalid(
                    "federated.sampling.kind",
                    "fixed",
                    "poisson in secure mode (fixed-size client sampling is neither amplified \
                     nor offered from the OS generator)",
                ));
            }
        })
    }

    /// The stream's position, for checkpoints.
    pub fn position(&self) -> u128 {
        match self {
            ClientSampler::Poisson(sampler) => sampler.position(),
            ClientSampler::Fixed { rng, .. } => rng.get_word_pos(),
        }
    }

    /// Continues from [`ClientSampler::position`] (a secure sampler draws fresh anyway).
    pub fn seek(&mut self, position: u128) {
        match self {
            ClientSampler::Poisson(sampler) => sampler.seek(position),
            ClientSampler::Fixed { rng, .. } => rng.set_word_pos(position),
        }
    }

    /// The clients of the next round, ascending.
    pub fn sample(&mut self) -> Vec<usize> {
        match self {
            ClientSampler::Poisson(sampler) => sampler.sample(),
            ClientSampler::Fixed {
                clients,
                population,
                rng,
            } => {
                let mut chosen = sample(rng, *population, *clients).into_vec();
                chosen.sort_unstable();
                chosen
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::{Accountant, AccountantSettings, PrivacyEvent};

    #[test]
    fn the_realised_participation_rate_is_q() {
        let (population, expected) = (3383, 120);
        let sampling = ClientSampling::Poisson {
            expected_clients: expected,
        };
        let mut sampler = ClientSampler::new(sampling, population, Some(9)).unwrap();
        let rounds = 2000;
        let joined: usize = (0..rounds).map(|_| sampler.sample().len()).sum();
        let q = expected as f64 / population as f64;
        let n = (rounds * population) as f64;
        // Binomial(n, q): |z| < 4.9 is a 1e-6 false-failure bound.
        let z = (joined as f64 - n * q) / (n * q * (1.0 - q)).sqrt();
        assert!(z.abs() < 4.9, "joined {joined}, z = {z}");
    }

    #[test]
    fn fixed_rounds_have_exactly_their_clients_and_no_amplification() {
        let sampling = ClientSampling::Fixed { clients: 10 };
        let mut sampler = ClientSampler::new(sampling, 100, Some(1)).unwrap();
        for _ in 0..50 {
            let round = sampler.sample();
            assert_eq!(round.len(), 10);
            assert!(round.windows(2).all(|w| w[0] < w[1]) && round[9] < 100);
        }
        let event = sampling.round_event(100, 1.0);
        let block = event.blocks().unwrap()[0];
        assert_eq!(
            (block.sample_rate, block.nominal_sample_rate),
            (1.0, Some(0.1))
        );
        let poisson = ClientSampling::Poisson {
            expected_clients: 10,
        };
        assert_eq!(
            poisson.round_event(100, 1.0).blocks().unwrap(),
            vec![PrivacyEvent::new(0.1, 1.0, 1).unwrap()]
        );
        // Ten rounds of each: the fixed ones cost far more.
        let epsilon = |event: &DpEvent| {
            let mut accountant = Accountant::new(AccountantSettings::rdp()).unwrap();
            for _ in 0..10 {
                accountant.compose_event(event).unwrap();
            }
            accountant.epsilon(1e-5).unwrap().epsilon
        };
        assert!(epsilon(&event) > 3.0 * epsilon(&poisson.round_event(100, 1.0)));
    }

    #[test]
    fn bad_samplings_are_refused_naming_the_key() {
        for (sampling, key) in [
            (
                ClientSampling::Poisson {
                    expected_clients: 0,
                },
                "federated.sampling.expected_clients",
            ),
            (
                ClientSampling::Fixed { clients: 101 },
                "federated.sampling.clients",
            ),
        ] {
            let err = ClientSampler::new(sampling, 100, Some(0))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
        let secure_fixed = ClientSampler::new(ClientSampling::Fixed { clients: 5 }, 100, None);
        assert!(
            secure_fixed
                .unwrap_err()
                .to_string()
                .contains("federated.sampling.kind")
        );
    }
}
