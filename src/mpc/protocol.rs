//! Secret-shared inference: the model owner (party 0), the client (party 1) and the dealer,
//! each a function over its links, so one code path runs in threads (tests) and in
//! processes on loopback (`dptrain mpc-infer`).
//!
//! 1. The owner sends the public [`Architecture`] to the client and the dealer; the client
//!    sends the plan (examples, batch size) to both.
//! 2. The dealer draws a mask B per layer for the session and sends each party its share.
//!    The owner shares its fixed-point weights with the client; both open F = W − B once
//!    (uniform, since B is: B never masks anything else).
//! 3. Per batch, the dealer sends shares of (A, C = op(A, B)) for every layer and of (a, a²)
//!    for every square, drawn afresh; the client shares its input; each layer opens
//!    E = X − A and computes Z = C + op(E, B + F) + op(A, F), the owner adding op(E, F);
//!    the owner sends its share of the logits to the client, who alone learns them.
//!
//! Weight masks reused across batches are the usual offline/online split for a fixed model
//! (SecureML §4.2; Delphi): each opened E uses a fresh A, so the view stays uniform.

use std::time::{Duration, Instant};

use rand::RngCore;

use crate::error::{Error, Result};
use crate::mpc::link::{Expect, Link};
use crate::mpc::program::{Architecture, Op, bilinear, pool_factor, window_sums};
use crate::mpc::share::{FRAC_BITS, Party, reconstruct, share_vec, truncate};

/// Tags of the frames outside the per-operation openings.
const TAG_ARCH: u16 = 0xFF00;
const TAG_PLAN: u16 = 0xFF01;
const TAG_INPUT: u16 = 0xFF02;
const TAG_OUTPUT: u16 = 0xFF03;
const TAG_WEIGHT: u16 = 0xFE00;
const TAG_BIAS: u16 = 0xFD00;
const TAG_SESSION: u16 = 0xFC00;
const TAG_MASK_A: u16 = 0xFB00;
const TAG_MASK_C: u16 = 0xFA00;

fn tag(base: u16, op: usize) -> u16 {
    base + op as u16
}

/// The largest batch accepted from a plan.
pub const MAX_BATCH: usize = 4096;

fn send_bytes(link: &mut dyn Link, tag: u16, bytes: &[u8]) -> Result<()> {
    let mut words = vec![bytes.len() as u64];
    words.extend(bytes.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    }));
    link.send(tag, &words)
}

fn recv_bytes(link: &mut dyn Link, tag: u16, what: &str) -> Result<Vec<u8>> {
    let words = link.recv(&Expect {
        tag,
        len: None,
        what,
    })?;
    let len = words.first().copied().unwrap_or(u64::MAX);
    if words.is_empty() || len.div_ceil(8) != words.len() as u64 - 1 {
        return Err(Error::Malformed {
            what: "mpc",
            message: format!("{what}: a byte length of {len} in {} words", words.len()),
        });
    }
    let mut bytes: Vec<u8> = words[1..].iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.truncate(len as usize);
    Ok(bytes)
}

fn send_architecture(link: &mut dyn Link, arch: &Architecture) -> Result<()> {
    let json = serde_json::to_vec(arch).map_err(|e| Error::Tensor(e.to_string()))?;
    send_bytes(link, TAG_ARCH, &json)
}

fn recv_architecture(link: &mut dyn Link) -> Result<Architecture> {
    let bytes = recv_bytes(link, TAG_ARCH, "the model's architecture")?;
    let arch: Architecture = serde_json::from_slice(&bytes).map_err(|e| Error::Malformed {
        what: "mpc",
        message: format!("the model's architecture: {e}"),
    })?;
    arch.check()?;
    Ok(arch)
}

/// How many examples, in batches of how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Examples in all.
    pub examples: usize,
    /// Examples per batch (the last batch may be smaller).
    pub batch: usize,
}

impl Plan {
    /// The batch sizes in order.
    pub fn batches(&self) -> impl Iterator<Item = usize> + use<> {
        let (n, b) = (self.examples, self.batch.max(1));
        (0..n.div_ceil(b)).map(move |i| b.min(n - i * b))
    }
}

fn recv_plan(link: &mut dyn Link) -> Result<Plan> {
    let words = link.recv(&Expect {
        tag: TAG_PLAN,
        len: Some(2),
        what: "the client's plan",
    })?;
    let plan = Plan {
        examples: words[0] as usize,
        batch: words[1] as usize,
    };
    if plan.examples == 0 || plan.batch == 0 || plan.batch > MAX_BATCH {
        return Err(Error::invalid(
            "mpc plan",
            format!("{} examples in batches of {}", plan.examples, plan.batch),
            format!("at least one example, batches of 1 to {MAX_BATCH}"),
        ));
    }
    Ok(plan)
}

fn needs_mask(op: &Op) -> bool {
    !matches!(op, Op::AvgPool2d { .. })
}

/// The dealer's correlated randomness for one batch of one party: shares of (A, C) per
/// operation that multiplies (layers and squares; empty for pooling).
type BatchMasks = Vec<(Vec<u64>, Vec<u64>)>;

/// Draws a batch's masks for both parties. `weight_masks` holds B per operation (empty
/// where the operation has no weights).
fn deal_batch(
    arch: &Architecture,
    weight_masks: &[Vec<u64>],
    batch: usize,
    rng: &mut impl RngCore,
) -> (BatchMasks, BatchMasks) {
    let (mut zero, mut one) = (Vec::new(), Vec::new());
    for (op, b) in arch.ops.iter().zip(weight_masks) {
        let a: Vec<u64> = (0..batch * op.in_len()).map(|_| rng.next_u64()).collect();
        let c = match op {
            Op::Conv2d(_) | Op::Linear { .. } => bilinear(op, &a, b, batch),
            Op::Square { .. } => a.iter().map(|x| x.wrapping_mul(*x)).collect(),
            Op::AvgPool2d { .. } => {
                zero.push((Vec::new(), Vec::new()));
                one.push((Vec::new(), Vec::new()));
                continue;
            }
        };
        let (a0, a1) = share_vec(&a, rng);
        let (c0, c1) = share_vec(&c, rng);
        zero.push((a0, c0));
        one.push((a1, c1));
    }
    (zero, one)
}

/// What the dealer did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DealerReport {
    /// Seconds spent drawing and computing the correlated randomness.
    pub compute_seconds: f64,
    /// Bytes sent to the two parties.
    pub bytes_sent: u64,
    /// Examples served.
    pub examples: usize,
}

/// The dealer: reads the architecture from the owner and the plan from the client, then
/// sends each party its session and per-batch material. `rng` must be a CSPRNG.
pub fn run_dealer(
    owner: &mut dyn Link,
    client: &mut dyn Link,
    rng: &mut impl RngCore,
) -> Result<DealerReport> {
    let arch = recv_architecture(owner)?;
    let plan = recv_plan(client)?;
    let mut compute = Duration::ZERO;
    let start = Instant::now();
    let weight_masks: Vec<Vec<u64>> = arch
        .ops
        .iter()
        .map(|op| {
            let len = op.parameter_lens().map_or(0, |(w, _)| w);
            (0..len).map(|_| rng.next_u64()).collect()
        })
        .collect();
    compute += start.elapsed();
    for (i, b) in weight_masks.iter().enumerate() {
        if b.is_empty() {
            continue;
        }
        let (b0, b1) = share_vec(b, rng);
        owner.send(tag(TAG_SESSION, i), &b0)?;
        client.send(tag(TAG_SESSION, i), &b1)?;
    }
    for batch in plan.batches() {
        let start = Instant::now();
        let (zero, one) = deal_batch(&arch, &weight_masks, batch, rng);
        compute += start.elapsed();
        send_batch_masks(owner, &arch, &zero)?;
        send_batch_masks(client, &arch, &one)?;
    }
    Ok(DealerReport {
        compute_seconds: compute.as_secs_f64(),
        bytes_sent: owner.bytes_sent() + client.bytes_sent(),
        examples: plan.examples,
    })
}

fn send_batch_masks(link: &mut dyn Link, arch: &Architecture, masks: &BatchMasks) -> Result<()> {
    for (i, (a, c)) in masks.iter().enumerate() {
        if needs_mask(&arch.ops[i]) {
            link.send(tag(TAG_MASK_A, i), a)?;
            link.send(tag(TAG_MASK_C, i), c)?;
        }
    }
    Ok(())
}

fn recv_batch_masks(
    dealer: &mut dyn Link,
    arch: &Architecture,
    batch: usize,
) -> Result<BatchMasks> {
    arch.ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            if !needs_mask(op) {
                return Ok((Vec::new(), Vec::new()));
            }
            let what_a = format!("the dealer's input mask of operation {i} ({})", op.name());
            let what_c = format!("the dealer's product mask of operation {i} ({})", op.name());
            let a = dealer.recv(&Expect {
                tag: tag(TAG_MASK_A, i),
                len: Some(batch * op.in_len()),
                what: &what_a,
            })?;
            let c = dealer.recv(&Expect {
                tag: tag(TAG_MASK_C, i),
                len: Some(batch * op.out_len()),
                what: &what_c,
            })?;
            Ok((a, c))
        })
        .collect()
}

/// One party's state for a session: per layer its shares of W and b, its share of the
/// mask B, and the opened F = W − B.
struct Layer {
    bias: Vec<u64>,
    /// op(E, ·) multiplies this: B_i + F for party 0, B_i for party 1.
    with_e: Vec<u64>,
    /// F = W − B.
    opened: Vec<u64>,
}

/// One party of the two: its role, the architecture and its layers' shares.
pub struct PartyModel {
    party: Party,
    arch: Architecture,
    layers: Vec<Option<Layer>>,
}

fn add(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect()
}

fn sub(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter().zip(b).map(|(x, y)| x.wrapping_sub(*y)).collect()
}

impl PartyModel {
    /// Opens F = W − B for every layer with the other party, from this party's shares of
    /// the weights (weight, bias per operation with parameters) and of the dealer's masks.
    fn setup(
        party: Party,
        arch: Architecture,
        weights: Vec<(Vec<u64>, Vec<u64>)>,
        masks: Vec<Vec<u64>>,
        peer: &mut dyn Link,
    ) -> Result<PartyModel> {
        let mut weights = weights.into_iter();
        let mut masks = masks.into_iter();
        let mut layers = Vec::with_capacity(arch.ops.len());
        for (i, op) in arch.ops.iter().enumerate() {
            let Some((wl, _)) = op.parameter_lens() else {
                layers.push(None);
                continue;
            };
            let (w, bias) = weights.next().unwrap_or_default();
            let b = masks.next().unwrap_or_default();
            let mine = sub(&w, &b);
            let what = format!("the opened weights of operation {i} ({})", op.name());
            let theirs = peer.exchange(
                i as u16,
                &mine,
                &Expect {
                    tag: i as u16,
                    len: Some(wl),
                    what: &what,
                },
            )?;
            let opened = add(&mine, &theirs);
            let with_e = match party {
                Party::Zero => add(&b, &opened),
                Party::One => b,
            };
            layers.push(Some(Layer {
                bias,
                with_e,
                opened,
            }));
        }
        Ok(PartyModel {
            party,
            arch,
            layers,
        })
    }

    /// This party's share of the logits of a batch, from its share of the inputs.
    fn forward(
        &self,
        mut x: Vec<u64>,
        batch: usize,
        masks: &BatchMasks,
        peer: &mut dyn Link,
    ) -> Result<Vec<u64>> {
        for (i, op) in self.arch.ops.iter().enumerate() {
            let what = format!(
                "the other party's opened input of operation {i} ({})",
                op.name()
            );
            let expect = Expect {
                tag: i as u16,
                len: Some(batch * op.in_len()),
                what: &what,
            };
            x = match op {
                Op::Conv2d(_) | Op::Linear { .. } => {
                    let layer = self.layers[i].as_ref().ok_or_else(|| {
                        Error::Tensor(format!("mpc: operation {i} has no weights"))
                    })?;
                    let (a, c) = &masks[i];
                    let mine = sub(&x, a);
                    let e = add(&mine, &peer.exchange(i as u16, &mine, &expect)?);
                    let mut z = add(c, &bilinear(op, &e, &layer.with_e, batch));
                    z = add(&z, &bilinear(op, a, &layer.opened, batch));
                    truncate(self.party, &mut z, FRAC_BITS);
                    let per_bias = op.out_len() / layer.bias.len().max(1);
                    for (k, v) in z.iter_mut().enumerate() {
                        let channel = (k % op.out_len()) / per_bias;
                        *v = v.wrapping_add(layer.bias[channel]);
                    }
                    z
                }
                Op::Square { .. } => {
                    let (a, c) = &masks[i];
                    let mine = sub(&x, a);
                    let e = add(&mine, &peer.exchange(i as u16, &mine, &expect)?);
                    let mut z: Vec<u64> = (0..e.len())
                        .map(|k| {
                            let mut z = c[k].wrapping_add(e[k].wrapping_mul(a[k]).wrapping_mul(2));
                            if self.party == Party::Zero {
                                z = z.wrapping_add(e[k].wrapping_mul(e[k]));
                            }
                            z
                        })
                        .collect();
                    truncate(self.party, &mut z, FRAC_BITS);
                    z
                }
                Op::AvgPool2d { kernel, .. } => {
                    let factor = pool_factor(*kernel);
                    let mut z = window_sums(op, &x, batch);
                    z.iter_mut().for_each(|v| *v = v.wrapping_mul(factor));
                    truncate(self.party, &mut z, FRAC_BITS);
                    z
                }
            };
        }
        Ok(x)
    }
}

fn recv_session(dealer: &mut dyn Link, arch: &Architecture) -> Result<Vec<Vec<u64>>> {
    arch.layers()
        .map(|(i, op)| {
            let what = format!("the dealer's weight mask of operation {i} ({})", op.name());
            dealer.recv(&Expect {
                tag: tag(TAG_SESSION, i),
                len: op.parameter_lens().map(|(w, _)| w),
                what: &what,
            })
        })
        .collect()
}

/// What the model owner did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OwnerReport {
    /// Examples served.
    pub examples: usize,
    /// Bytes sent to the client.
    pub bytes_sent: u64,
}

/// The model owner (party 0): shares its fixed-point weights (one (weight, bias) per layer,
/// as [`crate::mpc::program::encode_weights`] gives them) and computes its half of every
/// batch the client asks for. It never sees an input or a logit.
pub fn run_owner(
    client: &mut dyn Link,
    dealer: &mut dyn Link,
    arch: &Architecture,
    weights: &[(Vec<u64>, Vec<u64>)],
    rng: &mut impl RngCore,
) -> Result<OwnerReport> {
    arch.check()?;
    send_architecture(client, arch)?;
    send_architecture(dealer, arch)?;
    let plan = recv_plan(client)?;
    let masks = recv_session(dealer, arch)?;
    let mut mine = Vec::with_capacity(weights.len());
    for ((i, _), (w, b)) in arch.layers().zip(weights) {
        let (w0, w1) = share_vec(w, rng);
        let (b0, b1) = share_vec(b, rng);
        client.send(tag(TAG_WEIGHT, i), &w1)?;
        client.send(tag(TAG_BIAS, i), &b1)?;
        mine.push((w0, b0));
    }
    let model = PartyModel::setup(Party::Zero, arch.clone(), mine, masks, client)?;
    for batch in plan.batches() {
        let masks = recv_batch_masks(dealer, arch, batch)?;
        let x = client.recv(&Expect {
            tag: TAG_INPUT,
            len: Some(batch * arch.input_len),
            what: "the client's input share",
        })?;
        let logits = model.forward(x, batch, &masks, client)?;
        client.send(TAG_OUTPUT, &logits)?;
    }
    Ok(OwnerReport {
        examples: plan.examples,
        bytes_sent: client.bytes_sent(),
    })
}

/// What the client got.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientReport {
    /// Fixed-point logits, example by example.
    pub logits: Vec<Vec<i64>>,
    /// Wall seconds of each batch's online phase (input shared → logits reconstructed).
    pub batch_seconds: Vec<f64>,
    /// Bytes sent to the owner.
    pub bytes_sent: u64,
    /// Bytes received from the owner.
    pub bytes_received: u64,
    /// Of those bytes (both directions), the setup's: weight shares and opened weights.
    pub setup_bytes: u64,
}

/// The client (party 1): sends its plan, receives its shares of the weights, and gets the
/// logits of `inputs` (fixed point, `examples × input_len`, row-major) in batches of
/// `batch`, revealed to it alone.
pub fn run_client(
    owner: &mut dyn Link,
    dealer: &mut dyn Link,
    inputs: &[u64],
    batch: usize,
    rng: &mut impl RngCore,
) -> Result<ClientReport> {
    let arch = recv_architecture(owner)?;
    if inputs.is_empty() || !inputs.len().is_multiple_of(arch.input_len) {
        return Err(Error::invalid(
            "mpc inputs",
            format!("{} values", inputs.len()),
            format!(
                "a positive multiple of the model's input length {}",
                arch.input_len
            ),
        ));
    }
    let plan = Plan {
        examples: inputs.len() / arch.input_len,
        batch,
    };
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::invalid(
            "mpc batch size",
            batch,
            format!("1 to {MAX_BATCH}"),
        ));
    }
    let words = [plan.examples as u64, plan.batch as u64];
    owner.send(TAG_PLAN, &words)?;
    dealer.send(TAG_PLAN, &words)?;
    let masks = recv_session(dealer, &arch)?;
    let mut mine = Vec::new();
    for (i, op) in arch.layers() {
        let (wl, bl) = op.parameter_lens().unwrap_or((0, 0));
        let what_w = format!("the owner's weight share of operation {i} ({})", op.name());
        let what_b = format!("the owner's bias share of operation {i} ({})", op.name());
        let w = owner.recv(&Expect {
            tag: tag(TAG_WEIGHT, i),
            len: Some(wl),
            what: &what_w,
        })?;
        let b = owner.recv(&Expect {
            tag: tag(TAG_BIAS, i),
            len: Some(bl),
            what: &what_b,
        })?;
        mine.push((w, b));
    }
    let model = PartyModel::setup(Party::One, arch.clone(), mine, masks, owner)?;
    let classes = arch.classes();
    let mut report = ClientReport {
        logits: Vec::with_capacity(plan.examples),
        batch_seconds: Vec::new(),
        bytes_sent: 0,
        bytes_received: 0,
        setup_bytes: owner.bytes_sent() + owner.bytes_received(),
    };
    let mut offset = 0;
    for batch in plan.batches() {
        let masks = recv_batch_masks(dealer, &arch, batch)?;
        let start = Instant::now();
        let x = &inputs[offset * arch.input_len..(offset + batch) * arch.input_len];
        offset += batch;
        let (x0, x1) = share_vec(x, rng);
        owner.send(TAG_INPUT, &x0)?;
        let z = model.forward(x1, batch, &masks, owner)?;
        let theirs = owner.recv(&Expect {
            tag: TAG_OUTPUT,
            len: Some(batch * classes),
            what: "the owner's share of the logits",
        })?;
        let logits = reconstruct(&z, &theirs)?;
        report.batch_seconds.push(start.elapsed().as_secs_f64());
        report.logits.extend(
            logits
                .chunks_exact(classes)
                .map(|l| l.iter().map(|&v| v as i64).collect()),
        );
    }
    report.bytes_sent = owner.bytes_sent();
    report.bytes_received = owner.bytes_received();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mpc::link::MemoryLink;
    use crate::mpc::program::{
        Conv, FixedPointStats, LayerWeights, argmax, encode_weights, fixed_point_forward,
    };
    use crate::mpc::share::{decode, encode};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// conv(1→3, k3, s1, p1) on 6×6 → x² → 2×2 mean → linear(27 → 5) → x² → linear(5 → 4).
    fn small() -> Architecture {
        let conv = Conv {
            in_channels: 1,
            height: 6,
            width: 6,
            out_channels: 3,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        Architecture {
            input_len: 36,
            ops: vec![
                Op::Conv2d(conv),
                Op::Square { len: 108 },
                Op::AvgPool2d {
                    channels: 3,
                    height: 6,
                    width: 6,
                    kernel: 2,
                },
                Op::Linear {
                    inputs: 27,
                    outputs: 5,
                },
                Op::Square { len: 5 },
                Op::Linear {
                    inputs: 5,
                    outputs: 4,
                },
            ],
        }
    }

    fn random_weights(arch: &Architecture, rng: &mut ChaCha20Rng) -> Vec<LayerWeights> {
        arch.layers()
            .map(|(_, op)| {
                let (w, b) = op.parameter_lens().unwrap();
                LayerWeights {
                    weight: (0..w).map(|_| rng.random_range(-0.5..0.5)).collect(),
                    bias: (0..b).map(|_| rng.random_range(-0.2..0.2)).collect(),
                }
            })
            .collect()
    }

    fn run_all(
        arch: &Architecture,
        weights: &[(Vec<u64>, Vec<u64>)],
        inputs: &[u64],
        batch: usize,
    ) -> Result<ClientReport> {
        let timeout = Duration::from_secs(20);
        let (mut owner_client, mut client_owner) = MemoryLink::pair(timeout);
        let (mut owner_dealer, mut dealer_owner) = MemoryLink::pair(timeout);
        let (mut client_dealer, mut dealer_client) = MemoryLink::pair(timeout);
        std::thread::scope(|s| {
            let owner = s.spawn(|| {
                let mut rng = ChaCha20Rng::seed_from_u64(10);
                run_owner(
                    &mut owner_client,
                    &mut owner_dealer,
                    arch,
                    weights,
                    &mut rng,
                )
            });
            let dealer = s.spawn(|| {
                let mut rng = ChaCha20Rng::seed_from_u64(11);
                run_dealer(&mut dealer_owner, &mut dealer_client, &mut rng)
            });
            let mut rng = ChaCha20Rng::seed_from_u64(12);
            let client = run_client(
                &mut client_owner,
                &mut client_dealer,
                inputs,
                batch,
                &mut rng,
            );
            owner.join().unwrap()?;
            dealer.join().unwrap()?;
            client
        })
    }

    /// The three roles in threads: every example's shared logits are the plaintext
    /// fixed-point model's within the truncations' rounding, and the predictions agree.
    #[test]
    fn shared_inference_reproduces_the_fixed_point_model() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let arch = small();
        arch.check().unwrap();
        let weights = encode_weights(&arch, &random_weights(&arch, &mut rng)).unwrap();
        let examples = 23;
        let inputs: Vec<u64> = (0..examples * arch.input_len)
            .map(|_| encode(rng.random_range(-2.0..2.0)).unwrap())
            .collect();
        let report = run_all(&arch, &weights, &inputs, 5).unwrap();
        assert_eq!(report.logits.len(), examples);
        assert_eq!(report.batch_seconds.len(), 5);
        for (k, got) in report.logits.iter().enumerate() {
            let x = &inputs[k * arch.input_len..(k + 1) * arch.input_len];
            let want = fixed_point_forward(&arch, &weights, x, &mut FixedPointStats::default());
            for (g, w) in got.iter().zip(&want) {
                let (g, w) = (decode(*g as u64), decode(*w as u64));
                assert!(
                    (g - w).abs() <= 1e-3 * (1.0 + w.abs()),
                    "example {k}: {g} vs {w}"
                );
            }
            assert_eq!(argmax(got), argmax(&want), "example {k}");
        }
    }

    /// A client that goes away after its plan: the owner and the dealer stop with a
    /// connection error naming what they waited for; nothing panics.
    #[test]
    fn a_party_that_disconnects_stops_the_others_with_an_error() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let arch = small();
        let weights = encode_weights(&arch, &random_weights(&arch, &mut rng)).unwrap();
        let timeout = Duration::from_millis(500);
        let (mut owner_client, mut client_owner) = MemoryLink::pair(timeout);
        let (mut owner_dealer, mut dealer_owner) = MemoryLink::pair(timeout);
        let (client_dealer, mut dealer_client) = MemoryLink::pair(timeout);
        let (owner, dealer) = std::thread::scope(|s| {
            let owner = s.spawn(|| {
                run_owner(
                    &mut owner_client,
                    &mut owner_dealer,
                    &arch,
                    &weights,
                    &mut rng,
                )
            });
            let dealer = s.spawn(|| {
                let mut rng = ChaCha20Rng::seed_from_u64(3);
                run_dealer(&mut dealer_owner, &mut dealer_client, &mut rng)
            });
            // The client reads the architecture, sends a plan to the owner only, and leaves.
            recv_architecture(&mut client_owner).unwrap();
            client_owner.send(TAG_PLAN, &[4, 2]).unwrap();
            drop(client_owner);
            drop(client_dealer);
            (owner.join().unwrap(), dealer.join().unwrap())
        });
        let owner = owner.unwrap_err().to_string();
        assert!(owner.contains("connection"), "{owner}");
        let dealer = dealer.unwrap_err().to_string();
        assert!(dealer.contains("the client's plan"), "{dealer}");
    }

    /// A frame with the wrong magic, version, tag or length is refused with a message;
    /// random and truncated bytes never panic the decoder.
    #[test]
    fn the_frame_decoder_refuses_malformed_messages() {
        use crate::mpc::link::{frame, unframe};
        let expect = Expect {
            tag: 3,
            len: Some(2),
            what: "a test frame",
        };
        let good = frame(3, &[7, 9]);
        assert_eq!(unframe(&good, &expect).unwrap(), vec![7, 9]);
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(
            unframe(&bad, &expect)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut bad = good.clone();
        bad[4] = 9;
        assert!(
            unframe(&bad, &expect)
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        assert!(
            unframe(&frame(4, &[7, 9]), &expect)
                .unwrap_err()
                .to_string()
                .contains("tag")
        );
        assert!(
            unframe(&frame(3, &[7]), &expect)
                .unwrap_err()
                .to_string()
                .contains("words")
        );
        assert!(unframe(&good[..20], &expect).is_err());
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if rng.random_bool(0.5) && bytes.len() >= 8 {
                bytes[..8].copy_from_slice(&good[..8]);
            }
            let any = Expect {
                tag: 3,
                len: None,
                what: "fuzz",
            };
            let _ = unframe(&bytes, &any);
            let _ = unframe(&bytes, &expect);
        }
        for cut in 0..good.len() {
            assert!(unframe(&good[..cut], &expect).is_err(), "cut at {cut}");
        }
    }

    /// An architecture whose shapes do not chain is refused before any message.
    #[test]
    fn a_malformed_architecture_is_refused() {
        let mut arch = small();
        arch.ops[3] = Op::Linear {
            inputs: 26,
            outputs: 5,
        };
        let err = arch.check().unwrap_err().to_string();
        assert!(
            err.contains("operation 3 (linear)") && err.contains("27"),
            "{err}"
        );
        assert!(encode_weights(&small(), &[]).is_err());
    }
}
