//! Two-party secure computation for secret-shared inference (issue 17, part 1): additive
//! secret sharing over Z_{2^64} with fixed-point encoding, Beaver multiplication from a
//! dealer's triples, and local truncation.
//!
//! Trust model (CrypTen's, Knott et al. 2021): two parties that follow the protocol and do
//! not collude, and a dealer that hands out correlated randomness (Beaver triples) before the
//! inputs are known and then leaves; the dealer must not collude with either party. Each
//! party's view is its shares and the opened values x − a, y − b, which are uniform on
//! Z_{2^64} whatever x and y are.
//!
//! No tensors and no network: pure functions over shares, as `secagg` is.

pub mod share;

pub use share::{
    Dealer, FRAC_BITS, MatrixTriple, Party, SquarePair, Triple, decode, encode, reconstruct,
    share_vec,
};
