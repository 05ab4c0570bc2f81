//! Splitting a training set into clients (federated simulation): IID, by label (each
//! client holds about k classes), Dirichlet(α) label skew, or by a key per example (a CSV
//! table's categorical column: one silo per value).
//!
//! Every scheme is seeded and deterministic; the result lists each client's example
//! indices, and [`Partition::manifest_csv`] is what the run directory keeps (client →
//! example count). A partition that leaves a client without examples is an error naming the
//! key to change: an empty client would join rounds with nothing to say.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the training set is split into clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionConfig {
    /// Shuffled, then cut into `clients` parts of sizes differing by at most one.
    Iid {
        /// Number of clients.
        clients: usize,
    },
    /// Pathological non-IID (McMahan et al. 2017, §3): sorted by label, cut into
    /// `clients · classes_per_client` shards of equal size, each client given
    /// `classes_per_client` shards at random (about that many classes each).
    ByLabel {
        /// Number of clients.
        clients: usize,
        /// Shards, so about classes, per client.
        classes_per_client: usize,
    },
    /// Label skew (Hsu, Qi & Brown 2019): each class's examples are split over the clients
    /// in proportions drawn from Dirichlet(α, ..., α); small α, few classes per client.
    Dirichlet {
        /// Number of clients.
        clients: usize,
        /// Concentration α > 0.
        alpha: f64,
    },
    /// One client per distinct value of a column of a CSV table (a silo per hospital,
    /// region, ...), in sorted order of the values.
    ByColumn {
        /// The column's name in the table's header.
        column: String,
    },
}

impl PartitionConfig {
    /// The scheme's name in configs.
    pub fn name(&self) -> &'static str {
        match self {
            PartitionConfig::Iid { .. } => "iid",
            PartitionConfig::ByLabel { .. } => "by_label",
            PartitionConfig::Dirichlet { .. } => "dirichlet",
            PartitionConfig::ByColumn { .. } => "by_column",
        }
    }
}

/// The clients' example indices into the training set, client by client.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    /// Each client's examples (indices into the training set), ascending.
    pub clients: Vec<Vec<usize>>,
    /// Each client's name: `client-<i>`, or the column's value for a column partition.
    pub names: Vec<String>,
}

const KEY: &str = "federated.partition";

impl Partition {
    /// Splits `labels.len()` examples as `config` says, with randomness from `seed`.
    /// `keys` holds one value per example for a column partition (the column's values, as
    /// read from the table) and is ignored otherwise.
    pub fn new(
        config: &PartitionConfig,
        labels: &[u32],
        keys: Option<&[String]>,
        seed: u64,
    ) -> Result<Partition> {
        let n = labels.len();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let check_clients = |clients: usize| -> Result<()> {
            if clients == 0 || clients > n {
                return Err(Error::invalid(
                    format!("{KEY}.clients"),
                    clients,
                    format!("a whole number from 1 to the training examples ({n})"),
                ));
            }
            Ok(())
        };
        let (clients, names) = match config {
            PartitionConfig::Iid { clients } => {
                check_clients(*clients)?;
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                (cut(&order, *clients), numbered(*clients))
            }
            PartitionConfig::ByLabel {
                clients,
                classes_per_client,
            } => {
                check_clients(*clients)?;
                let shards = clients
                    .checked_mul(*classes_per_client)
                    .unwrap_or(usize::MAX);
                if *classes_per_client == 0 || shards > n {
                    return Err(Error::invalid(
                        format!("{KEY}.classes_per_client"),
                        classes_per_client,
                        format!(
                            "at least 1, with clients × classes_per_client shards at most \
                             the training examples ({n})"
                        ),
                    ));
                }
                // Shuffle first so that equal labels are in random order, then a stable
                // sort by label.
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng);
                order.sort_by_key(|&i| labels[i]);
                let pieces = cut(&order, shards);
                let mut deal: Vec<usize> = (0..shards).collect();
                deal.shuffle(&mut rng);
                let parts = deal
                    .chunks(*classes_per_client)
                    .map(|mine| {
                        mine.iter()
                            .flat_map(|&s| pieces[s].iter().copied())
                            .collect()
                    })
                    .collect();
                (parts, numbered(*clients))
            }
            PartitionConfig::Dirichlet { clients, alpha } => {
                check_clients(*clients)?;
                let gamma = Gamma::new(*alpha, 1.0).ok().filter(|_| alpha.is_finite());
                let Some(gamma) = gamma else {
                    return Err(Error::invalid(
                        format!("{KEY}.alpha"),
                        alpha,
                        "a finite number above 0",
                    ));
                };
                let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
                for (i, &label) in labels.iter().enumerate() {
                    by_class.entry(label).or_default().push(i);
                }
                let mut parts = vec![Vec::new(); *clients];
                for members in by_class.values_mut() {
                    members.shuffle(&mut rng);
                    // Dirichlet(α) proportions as normalised Gamma(α, 1) draws.
                    let weights: Vec<f64> = (0..*clients).map(|_| gamma.sample(&mut rng)).collect();
                    let total: f64 = weights.iter().sum();
                    let mut start = 0usize;
                    let mut cumulative = 0.0;
                    for (client, weight) in weights.iter().enumerate() {
                        cumulative += weight;
                        let end = match client + 1 == *clients {
                            true => members.len(),
                            false => ((cumulative / total) * members.len() as f64)
                                .round()
                                .min(members.len() as f64)
                                as usize,
                        };
                        let end = end.max(start);
                        parts[client].extend_from_slice(&members[start..end]);
                        start = end;
                    }
                }
                (parts, numbered(*clients))
            }
            PartitionConfig::ByColumn { column } => {
                let Some(keys) = keys else {
                    return Err(Error::invalid(
                        format!("{KEY}.kind"),
                        "by_column",
                        format!(
                            "a CSV table data set (the column `{column}` is read from its \
                             header); use iid, by_label or dirichlet for image data"
                        ),
                    ));
                };
                if keys.len() != n {
                    return Err(Error::Tensor(format!(
                        "{} column values for {n} training examples",
                        keys.len()
                    )));
                }
                let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for (i, key) in keys.iter().enumerate() {
                    groups.entry(key.as_str()).or_default().push(i);
                }
                let names = groups.keys().map(|k| k.to_string()).collect();
                (groups.into_values().collect(), names)
            }
        };
        let mut clients: Vec<Vec<usize>> = clients;
        for part in &mut clients {
            part.sort_unstable();
        }
        if let Some(empty) = clients.iter().position(Vec::is_empty) {
            return Err(Error::invalid(
                format!("{KEY}.{}", empty_key(config)),
                config_value(config),
                format!(
                    "a partition that leaves no client empty (client {empty} of {} got no \
                     examples); use fewer clients or a larger α",
                    clients.len()
                ),
            ));
        }
        Ok(Partition { clients, names })
    }

    /// The number of clients.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    /// True when there are no clients.
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The manifest: `client,name,examples` and one row per client.
    pub fn manifest_csv(&self) -> String {
        let mut out = String::from("client,name,examples\n");
        for (i, (name, part)) in self.names.iter().zip(&self.clients).enumerate() {
            out.push_str(&format!("{i},{},{}\n", csv_field(name), part.len()));
        }
        out
    }
}

/// `client-0`, `client-1`, ...
fn numbered(clients: usize) -> Vec<String> {
    (0..clients).map(|i| format!("client-{i}")).collect()
}

/// `order` cut into `parts` consecutive runs of sizes differing by at most one.
fn cut(order: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let (n, base, extra) = (order.len(), order.len() / parts, order.len() % parts);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let end = (start + base + usize::from(p < extra)).min(n);
        out.push(order[start..end].to_vec());
        start = end;
    }
    out
}

/// The key whose value decides whether a client ends empty.
fn empty_key(config: &PartitionConfig) -> &'static str {
    match config {
        PartitionConfig::Dirichlet { .. } => "alpha",
        PartitionConfig::ByColumn { .. } => "column",
        _ => "clients",
    }
}

fn config_value(config: &PartitionConfig) -> String {
    match config {
        PartitionConfig::Iid { clients } | PartitionConfig::ByLabel { clients, .. } => {
            clients.to_string()
        }
        PartitionConfig::Dirichlet { alpha, .. } => alpha.to_string(),
        PartitionConfig::ByColumn { column } => column.clone(),
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize, classes: u32) -> Vec<u32> {
        // Deterministic, uneven class sizes.
        (0..n)
            .map(|i| ((i * 7 + i / 13) as u32) % classes)
            .collect()
    }

    /// Every example is in exactly one client.
    fn assert_exact_cover(partition: &Partition, n: usize) {
        let mut seen = vec![0u8; n];
        for part in &partition.clients {
            for &i in part {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "not an exact cover");
    }

    #[test]
    fn iid_parts_differ_in_size_by_at_most_one_and_cover_every_example() {
        let labels = labels(1003, 10);
        let p = Partition::new(&PartitionConfig::Iid { clients: 10 }, &labels, None, 1).unwrap();
        assert_exact_cover(&p, 1003);
        let sizes: Vec<usize> = p.clients.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap(), 1);
        // Seeded: the same seed, the same split; another seed, another.
        let again = Partition::new(&PartitionConfig::Iid { clients: 10 }, &labels, None, 1);
        assert_eq!(again.unwrap(), p);
        let other = Partition::new(&PartitionConfig::Iid { clients: 10 }, &labels, None, 2);
        assert_ne!(other.unwrap(), p);
    }

    #[test]
    fn by_label_gives_each_client_about_k_classes() {
        let labels = labels(6000, 10);
        let config = PartitionConfig::ByLabel {
            clients: 300,
            classes_per_client: 2,
        };
        let p = Partition::new(&config, &labels, None, 7).unwrap();
        assert_exact_cover(&p, 6000);
        let classes: Vec<usize> = p
            .clients
            .iter()
            .map(|part| {
                let mut seen: Vec<u32> = part.iter().map(|&i| labels[i]).collect();
                seen.sort_unstable();
                seen.dedup();
                seen.len()
            })
            .collect();
        // A shard (10 examples) may straddle a class boundary: at most 2 classes per shard.
        assert!(classes.iter().all(|&c| (1..=4).contains(&c)), "{classes:?}");
        let mean = classes.iter().sum::<usize>() as f64 / classes.len() as f64;
        assert!(
            (1.8..=2.3).contains(&mean),
            "mean classes per client {mean}"
        );
    }

    #[test]
    fn dirichlet_skew_grows_as_alpha_shrinks() {
        let labels = labels(20_000, 10);
        let mean_classes = |alpha: f64| {
            let config = PartitionConfig::Dirichlet { clients: 20, alpha };
            let p = Partition::new(&config, &labels, None, 3).unwrap();
            assert_exact_cover(&p, 20_000);
            p.clients
                .iter()
                .map(|part| {
                    // Classes holding at least 5% of the client's examples.
                    let mut counts = [0usize; 10];
                    part.iter().for_each(|&i| counts[labels[i] as usize] += 1);
                    counts.iter().filter(|&&c| c * 20 >= part.len()).count()
                })
                .sum::<usize>() as f64
                / 20.0
        };
        let (skewed, even) = (mean_classes(0.1), mean_classes(100.0));
        assert!(skewed < 5.0 && even > 9.5, "α 0.1: {skewed}, α 100: {even}");
    }

    #[test]
    fn a_column_gives_one_silo_per_value_in_sorted_order() {
        let keys: Vec<String> = ["b", "a", "c", "a", "b", "a"].map(String::from).to_vec();
        let config = PartitionConfig::ByColumn {
            column: "region".into(),
        };
        let p = Partition::new(&config, &[0; 6], Some(&keys), 0).unwrap();
        assert_eq!(p.names, ["a", "b", "c"]);
        assert_eq!(p.clients, vec![vec![1, 3, 5], vec![0, 4], vec![2]]);
        assert_eq!(
            p.manifest_csv(),
            "client,name,examples\n0,a,3\n1,b,2\n2,c,1\n"
        );
    }

    #[test]
    fn bad_partitions_are_refused_naming_the_key() {
        let labels = labels(100, 10);
        let cases = [
            (
                PartitionConfig::Iid { clients: 0 },
                "federated.partition.clients",
            ),
            (
                PartitionConfig::Iid { clients: 101 },
                "federated.partition.clients",
            ),
            (
                PartitionConfig::ByLabel {
                    clients: 60,
                    classes_per_client: 2,
                },
                "federated.partition.classes_per_client",
            ),
            (
                PartitionConfig::Dirichlet {
                    clients: 5,
                    alpha: 0.0,
                },
                "federated.partition.alpha",
            ),
            (
                // 90 clients over 100 examples at a tiny α: some client gets nothing.
                PartitionConfig::Dirichlet {
                    clients: 90,
                    alpha: 0.01,
                },
                "leaves no client empty",
            ),
            (
                PartitionConfig::ByColumn {
                    column: "sex".into(),
                },
                "a CSV table data set",
            ),
        ];
        for (config, expected) in cases {
            let err = Partition::new(&config, &labels, None, 0)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{config:?}: {err}");
        }
    }
}
