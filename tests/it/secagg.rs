//! Secure aggregation's messages and the server's handling of bad ones (issue 15): every
//! message round-trips its encoding; the decoders refuse random, truncated and mutated
//! bytes without panicking; a client that sends a malformed, replayed, misnamed or foreign
//! message is dropped with its reason and the round still unmasks the others' sum.

use dptrain::Error;
use dptrain::secagg::messages::{
    AdvertiseKeys, EncryptedShares, MaskedInput, NeighbourKeys, Share, SharesForHolder,
    UnmaskRequest, UnmaskShares,
};
use dptrain::secagg::{Client, Graph, RoundParams, Server};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn samples(rng: &mut ChaCha8Rng) -> Vec<Vec<u8>> {
    let key = |rng: &mut ChaCha8Rng| rng.random::<[u8; 32]>();
    let blob = |rng: &mut ChaCha8Rng| (0..rng.random_range(0..80)).map(|_| rng.random()).collect();
    vec![
        AdvertiseKeys {
            round: 3,
            client: 9,
            cipher_key: key(rng),
            mask_key: key(rng),
        }
        .encode(),
        NeighbourKeys {
            round: 3,
            keys: vec![(1, key(rng), key(rng)), (4, key(rng), key(rng))],
        }
        .encode(),
        EncryptedShares {
            round: 3,
            client: 2,
            shares: vec![(1, blob(rng)), (5, blob(rng))],
        }
        .encode(),
        SharesForHolder {
            round: 3,
            shares: vec![(0, blob(rng)), (7, blob(rng))],
        }
        .encode(),
        MaskedInput {
            round: 3,
            client: 2,
            bits: 20,
            values: (0..37).map(|_| rng.random::<u32>() & 0xfffff).collect(),
        }
        .encode(),
        UnmaskRequest {
            round: 3,
            survivors: vec![0, 2, 5],
            dropped: vec![1],
        }
        .encode(),
        UnmaskShares {
            round: 3,
            client: 2,
            seed_shares: vec![Share {
                owner: 0,
                bytes: blob(rng),
            }],
            key_shares: vec![Share {
                owner: 1,
                bytes: blob(rng),
            }],
        }
        .encode(),
    ]
}

fn decode_any(bytes: &[u8]) -> Vec<Result<(), Error>> {
    vec![
        AdvertiseKeys::decode(bytes).map(|_| ()),
        NeighbourKeys::decode(bytes).map(|_| ()),
        EncryptedShares::decode(bytes).map(|_| ()),
        SharesForHolder::decode(bytes).map(|_| ()),
        MaskedInput::decode(bytes).map(|_| ()),
        UnmaskRequest::decode(bytes).map(|_| ()),
        UnmaskShares::decode(bytes).map(|_| ()),
    ]
}

#[test]
fn messages_round_trip_and_masked_inputs_pack_b_bits() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let encoded = samples(&mut rng);
    // Each encoding decodes as its own type only.
    for (i, bytes) in encoded.iter().enumerate() {
        let ok: Vec<bool> = decode_any(bytes).iter().map(Result::is_ok).collect();
        assert_eq!(ok.iter().filter(|&&b| b).count(), 1, "sample {i}: {ok:?}");
        assert!(ok[i], "sample {i}");
    }
    for bits in [1u32, 7, 20, 31, 32] {
        let mask = if bits == 32 {
            u32::MAX
        } else {
            (1 << bits) - 1
        };
        let values: Vec<u32> = (0..1001).map(|_| rng.random::<u32>() & mask).collect();
        let message = MaskedInput {
            round: 1,
            client: 4,
            bits,
            values,
        };
        let bytes = message.encode();
        assert_eq!(MaskedInput::decode(&bytes).unwrap(), message, "{bits} bits");
        // Header (tag, round, client, bits, count) + ⌈1001 b / 8⌉ bytes.
        assert_eq!(bytes.len(), 21 + (1001 * bits as usize).div_ceil(8));
    }
}

#[test]
fn decoders_refuse_random_truncated_and_mutated_bytes_without_panicking() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let encoded = samples(&mut rng);
    for case in 0..20_000 {
        let mut bytes = encoded[case % encoded.len()].clone();
        match case % 4 {
            0 => bytes.truncate(rng.random_range(0..bytes.len())),
            1 => {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            2 => bytes.extend((0..rng.random_range(1..9)).map(|_| rng.random::<u8>())),
            _ => {
                bytes = (0..rng.random_range(0..200))
                    .map(|_| rng.random())
                    .collect()
            }
        }
        // Errors, when any, are Malformed and name the message.
        for result in decode_any(&bytes) {
            if let Err(e) = result {
                assert!(matches!(e, Error::Malformed { .. }), "{e}");
            }
        }
    }
    // A count claiming more entries than the bytes hold is refused before allocating.
    let mut huge = vec![2u8];
    huge.extend_from_slice(&3u64.to_le_bytes());
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = NeighbourKeys::decode(&huge).unwrap_err().to_string();
    assert!(err.contains("entries"), "{err}");
}

/// One round of 12 clients in which client 3 replays its stage-1 message of another round,
/// client 5 sends garbage as its masked input, client 7 sends a masked input naming client
/// 8, and an id outside the round writes: those are dropped with reasons; the others' sum
/// is unmasked exactly.
#[test]
fn bad_client_messages_drop_their_sender_and_the_round_goes_on() {
    let params = RoundParams::recommended(5, 12, 4, 24, [4; 32]).unwrap();
    let mut server = Server::new(&params).unwrap();
    let graph: Graph = server.graph().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let inputs: Vec<Vec<u32>> = (0..12)
        .map(|_| (0..4).map(|_| rng.random::<u32>() & 0xffffff).collect())
        .collect();
    let mut clients = Vec::new();
    let mut inbox = Vec::new();
    for id in 0..12u32 {
        let (client, mut message) = Client::new(&params, &graph, id, &[id as u8; 32]).unwrap();
        if id == 3 {
            message.round = 4; // a replay from round 4
        }
        clients.push(client);
        inbox.push((id, message.encode()));
    }
    inbox.push((40, inbox[0].1.clone())); // not a client of the round
    let keys = server.collect_keys(inbox).unwrap();
    assert!(!keys.contains_key(&3));
    let inbox = keys
        .iter()
        .map(|(id, m)| (*id, clients[*id as usize].share_keys(m).unwrap().encode()))
        .collect();
    let held = server.collect_shares(inbox).unwrap();
    let mut inbox = Vec::new();
    for (id, m) in &held {
        let mut masked = clients[*id as usize]
            .masked_input(m, &inputs[*id as usize])
            .unwrap();
        let bytes = match id {
            5 => vec![5u8; 9],
            7 => {
                masked.client = 8;
                masked.encode()
            }
            _ => masked.encode(),
        };
        inbox.push((*id, bytes));
    }
    let request = server.collect_masked(inbox).unwrap();
    assert_eq!(request.dropped, vec![5, 7]);
    let inbox = request
        .survivors
        .iter()
        .map(|&id| (id, clients[id as usize].unmask(&request).unwrap().encode()))
        .collect();
    let sum = server.unmask(inbox).unwrap();
    let mut expected = vec![0u32; 4];
    for &id in &request.survivors {
        for (e, v) in expected.iter_mut().zip(&inputs[id as usize]) {
            *e = e.wrapping_add(*v) & 0xffffff;
        }
    }
    assert_eq!(sum, expected);
    let reasons: Vec<String> = server
        .dropped()
        .iter()
        .map(|(id, why)| format!("{id}: {why}"))
        .collect();
    for (id, what) in [
        (3, "round 4"),
        (40, "not a client"),
        (5, "malformed MaskedInput"),
        (7, "naming client"),
    ] {
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with(&format!("{id}: ")) && r.contains(what)),
            "{id}: {reasons:?}"
        );
    }
}
