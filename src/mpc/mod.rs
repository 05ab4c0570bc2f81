//! Two-party secure computation for secret-shared inference (issue 17, part 1): additive
//! secret sharing over Z_{2^64} with fixed-point encoding, Beaver multiplication from a
//! dealer's triples (elementwise, matrix and convolution), local truncation, and the
//! inference protocol between a model owner and a client.
//!
//! Trust model (CrypTen's, Knott et al. 2021): two parties that follow the protocol and do
//! not collude, and a dealer that hands out correlated randomness (Beaver triples) that
//! does not depend on the inputs and must not collude with either party. Each party's view
//! is its shares and the opened values x − a, y − b, which are uniform on Z_{2^64} whatever
//! x and y are. The client learns the logits (and so the prediction); the owner learns
//! nothing of the input; the architecture (layer shapes) is public.
//!
//! No tensors: pure functions over shares, and links that carry framed words.

pub mod link;
pub mod program;
pub mod protocol;
pub mod share;

pub use link::{Link, MemoryLink, TcpLink};
pub use program::{
    Architecture, Conv, FixedPointStats, LayerWeights, Op, argmax, encode_weights,
    fixed_point_forward,
};
pub use protocol::{
    ClientReport, DealerReport, OwnerReport, Plan, run_client, run_dealer, run_owner,
};
pub use share::{
    Dealer, FRAC_BITS, MatrixTriple, Party, SquarePair, Triple, decode, encode, reconstruct,
    share_vec,
};
