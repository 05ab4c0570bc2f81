//! Homomorphic encryption of model updates with threshold decryption (issue 17, part 2):
//! clients encrypt their quantised, noised updates under a committee's key; the aggregator
//! adds ciphertexts it cannot read; t of the committee's n members decrypt the sum, each
//! share flooded so that repeated rounds do not leak the key.
//!
//! [`bfv`]: the parameter set (BFV, n = 4096, Q ≈ 2^109, t = 8,380,417, through the pinned
//! `fhe` 0.1.1), encryption with the wrap bound, the aggregator's sum and the upload
//! format. [`committee`]: key generation without a dealer, Shamir shares of the key,
//! flooded decryption shares and their format, the combiner, the known-answer test.
//!
//! No tensors: integer vectors in, integer vectors out. `fhe` types stay inside this room;
//! the federated rounds see bytes and `i64`s through [`crate::he`]'s functions.
//!
//! Trust model (semi-honest): the aggregator and any t − 1 members together learn nothing
//! but the decrypted sum; t colluding members can decrypt any upload of the epoch. Clients
//! are trusted to encrypt honestly (no proofs of well-formed ciphertexts: a client that
//! adds huge noise can spoil the decryption, not learn anything).

pub mod bfv;
pub mod committee;

pub use bfv::{Bfv, CiphertextSum, DEGREE, PLAINTEXT};
pub use committee::{
    CommitteeKey, CommitteeSpec, Flooding, Member, combine, generate, known_answer_test, os_rng,
};
