//! The round's public parameters and its neighbour graph (Bell, Bonawitz, Gascón, Lepoint &
//! Raykova 2020, "Secure single-server aggregation with (poly)logarithmic overhead", §3).
//!
//! Each client shares its secrets with, and exchanges pairwise masks with, only its k − 1
//! neighbours: a circulant ring of degree k − 1 over a permutation of the clients drawn from a
//! public seed by a CSPRNG (ChaCha20), not chosen by the server. With k ≥ n every client is
//! every other's neighbour: full SecAgg (Bonawitz et al. 2017).

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};

/// A round's public parameters, known to the server and every client before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundParams {
    /// The round's number (bound into every key derivation, so no key serves two rounds).
    pub round: u64,
    /// n: the clients of the round, identified 0..n.
    pub clients: u32,
    /// k: each client's neighbourhood including itself (odd; n or more means full SecAgg).
    pub degree: u32,
    /// t: shares needed to reconstruct a secret, from 2 to k (its holders: the client's k − 1
    /// neighbours and itself).
    pub threshold: u32,
    /// m: the masked vector's length in words of `bits` bits.
    pub words: usize,
    /// b: the modulus is 2^b (1 to 32).
    pub bits: u32,
    /// The public seed of the neighbour graph (drawn from a CSPRNG by whoever starts the
    /// round, and published).
    pub graph_seed: [u8; 32],
}

impl RoundParams {
    /// Parameters for n clients with k = 2⌈log₂ n⌉ + 1 (odd, capped at n: full SecAgg for
    /// n ≤ 15) and t = ⌊k/2⌋ + 1 of its k − 1 neighbours, the setting of the recommended design
    /// (shared docs/federated.md) after Bell et al.'s k = O(log n): a client's secrets survive
    /// up to k − 1 − t of its neighbours dropping, and fewer than t colluding neighbours learn
    /// nothing of them.
    pub fn recommended(
        round: u64,
        clients: u32,
        words: usize,
        bits: u32,
        graph_seed: [u8; 32],
    ) -> Result<Self> {
        let log2 = u32::BITS - clients.saturating_sub(1).leading_zeros();
        let degree = (2 * log2 + 1).min(clients.max(1));
        // The k holders (neighbours and the client itself): a majority must cooperate.
        let threshold = (degree / 2 + 1).max(2);
        let params = RoundParams {
            round,
            clients,
            degree,
            threshold,
            words,
            bits,
            graph_seed,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the ranges: 2 ≤ n, 2 ≤ k ≤ 256 (shares over GF(2^8)), 2 ≤ t ≤ min(k, n),
    /// 1 ≤ b ≤ 32, m ≥ 1.
    pub fn validate(&self) -> Result<()> {
        let key = "secagg";
        if self.clients < 2 {
            return Err(Error::invalid(
                format!("{key}.clients"),
                self.clients,
                "at least 2 clients (one client's sum is its input)",
            ));
        }
        let holders = self.neighbours_per_client() + 1;
        if !(2..=256).contains(&self.degree) {
            return Err(Error::invalid(
                format!("{key}.degree"),
                self.degree,
                "from 2 (a client and one neighbour) to 256 (shares over GF(2^8))",
            ));
        }
        if self.threshold < 2 || self.threshold > holders {
            return Err(Error::invalid(
                format!("{key}.threshold"),
                self.threshold,
                format!("from 2 to the {holders} holders of a client's shares (itself included)"),
            ));
        }
        if !(1..=32).contains(&self.bits) {
            return Err(Error::invalid(
                format!("{key}.bits"),
                self.bits,
                "from 1 to 32",
            ));
        }
        if self.words == 0 {
            return Err(Error::invalid(format!("{key}.words"), 0, "at least 1"));
        }
        Ok(())
    }

    /// k − 1 neighbours per client (n − 1 under full SecAgg).
    pub fn neighbours_per_client(&self) -> u32 {
        (self.degree.min(self.clients)).saturating_sub(1)
    }

    /// The mask of the modulus 2^b.
    pub fn modulus_mask(&self) -> u32 {
        match self.bits {
            32 => u32::MAX,
            b => (1u32 << b) - 1,
        }
    }

    /// Whether `client` is one of the round's.
    pub fn has_client(&self, client: u32) -> bool {
        client < self.clients
    }
}

/// The neighbour graph of a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    /// Each client's neighbours, ascending (never itself).
    neighbours: Vec<Vec<u32>>,
}

impl Graph {
    /// The circulant graph of `params`: clients permuted by ChaCha20 from the public seed,
    /// each linked to the (k − 1)/2 clients on either side of it on the ring (or to every
    /// other client when k ≥ n).
    pub fn new(params: &RoundParams) -> Result<Self> {
        params.validate()?;
        let n = params.clients as usize;
        let holders = params.neighbours_per_client() as usize;
        let mut order: Vec<u32> = (0..params.clients).collect();
        order.shuffle(&mut ChaCha20Rng::from_seed(params.graph_seed));
        let mut position = vec![0usize; n];
        for (i, &client) in order.iter().enumerate() {
            position[client as usize] = i;
        }
        let neighbours = (0..n)
            .map(|client| {
                let mut list: Vec<u32> = match holders + 1 >= n {
                    true => (0..params.clients)
                        .filter(|&v| v as usize != client)
                        .collect(),
                    false => {
                        let at = position[client];
                        // An even number of neighbours splits evenly; an odd one takes the
                        // extra on the right (k even is allowed, if unusual).
                        let left = holders / 2;
                        let right = holders - left;
                        (1..=left)
                            .map(|d| order[(at + n - d) % n])
                            .chain((1..=right).map(|d| order[(at + d) % n]))
                            .collect()
                    }
                };
                list.sort_unstable();
                list.dedup();
                list
            })
            .collect();
        Ok(Graph { neighbours })
    }

    /// `client`'s neighbours, ascending.
    pub fn neighbours(&self, client: u32) -> &[u32] {
        self.neighbours
            .get(client as usize)
            .map_or(&[][..], Vec::as_slice)
    }

    /// Whether `a` and `b` are neighbours.
    pub fn linked(&self, a: u32, b: u32) -> bool {
        self.neighbours(a).binary_search(&b).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recommended_degree_is_logarithmic_and_the_graph_symmetric() {
        let params = RoundParams::recommended(1, 100, 4, 32, [7; 32]).unwrap();
        assert_eq!((params.degree, params.threshold), (15, 8));
        let graph = Graph::new(&params).unwrap();
        for u in 0..100 {
            assert_eq!(graph.neighbours(u).len(), 14, "client {u}");
            for &v in graph.neighbours(u) {
                assert!(graph.linked(v, u), "{u} → {v} but not back");
                assert_ne!(u, v);
            }
        }
        // Another seed, another graph; the same seed, the same graph.
        let other = Graph::new(&RoundParams {
            graph_seed: [8; 32],
            ..params.clone()
        })
        .unwrap();
        assert_ne!(graph, other);
        assert_eq!(graph, Graph::new(&params).unwrap());
        // Small rounds are full SecAgg.
        let small = RoundParams::recommended(1, 5, 4, 32, [7; 32]).unwrap();
        let full = Graph::new(&small).unwrap();
        assert_eq!(full.neighbours(2), &[0, 1, 3, 4]);
        assert!(small.threshold <= 5);
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_key() {
        let good = RoundParams::recommended(1, 10, 4, 16, [0; 32]).unwrap();
        for (bad, key) in [
            (
                RoundParams {
                    clients: 1,
                    ..good.clone()
                },
                "secagg.clients",
            ),
            (
                RoundParams {
                    threshold: 50,
                    ..good.clone()
                },
                "secagg.threshold",
            ),
            (
                RoundParams {
                    bits: 33,
                    ..good.clone()
                },
                "secagg.bits",
            ),
            (RoundParams { words: 0, ..good }, "secagg.words"),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
