//! SecAgg+ costs (issue 15's cost line): one client's work per round at m parameters with
//! k = 11 (10 neighbours, threshold 6), its upload in bytes per parameter, and the server's
//! unmasking of 100 clients with 10 dropped after stage 2. Median and minimum of the repeats.
//!
//!   taskset -c 0 cargo bench --bench secagg -- [M] [REPEATS]     (default 1000000 5)

use std::time::Instant;

use dptrain::mechanism::shares::ShareNoise;
use dptrain::sampling::secure_rng::secure_rng;
use dptrain::secagg::messages::{NeighbourKeys, SharesForHolder};
use dptrain::secagg::quantise::{Quantiser, scale_for_bits};
use dptrain::secagg::{Client, Graph, RoundParams, Server};

fn params(round: u64, words: usize) -> RoundParams {
    RoundParams {
        round,
        clients: 100,
        degree: 11,
        threshold: 6,
        words,
        bits: 20,
        graph_seed: [round as u8; 32],
    }
}

fn seed(round: u64, id: u32) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&round.to_le_bytes());
    s[8..12].copy_from_slice(&id.to_le_bytes());
    s
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stats(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.2} ms, min {:.2} ms",
        1e3 * v[v.len() / 2],
        1e3 * v[0]
    )
}

/// Stages 1-2 for every client; returns the clients, the server and each holder's shares.
fn share(
    round: u64,
    words: usize,
) -> (
    Vec<Client>,
    Server,
    std::collections::BTreeMap<u32, SharesForHolder>,
    std::collections::BTreeMap<u32, NeighbourKeys>,
) {
    let p = params(round, words);
    let mut server = Server::new(&p).unwrap();
    let graph: Graph = server.graph().clone();
    let mut clients = Vec::new();
    let mut inbox = Vec::new();
    for id in 0..p.clients {
        let (c, m) = Client::new(&p, &graph, id, &seed(round, id)).unwrap();
        clients.push(c);
        inbox.push((id, m.encode()));
    }
    let keys = server.collect_keys(inbox).unwrap();
    let inbox = keys
        .iter()
        .map(|(id, m)| (*id, clients[*id as usize].share_keys(m).unwrap().encode()))
        .collect();
    let held = server.collect_shares(inbox).unwrap();
    (clients, server, held, keys)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let words: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let repeats: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    println!("secagg bench: m = {words}, k = 11, t = 6, b = 20, {repeats} repeats");
    let input: Vec<u32> = (0..words as u32).map(|i| i & 0xfffff).collect();
    // One client's stages, its neighbours' work done beforehand (untimed).
    let (mut stage_times, mut totals) = (vec![Vec::new(); 4], Vec::new());
    let mut upload = 0usize;
    for r in 0..repeats as u64 {
        let round = 100 + r;
        let p = params(round, words);
        let graph = Graph::new(&p).unwrap();
        // Client 0 of a full-size round; the others' stages are not timed.
        let mut server = Server::new(&p).unwrap();
        let mut clients = Vec::new();
        let mut inbox = Vec::new();
        let mut t_new = 0.0;
        for id in 0..p.clients {
            let start = Instant::now();
            let (c, m) = Client::new(&p, &graph, id, &seed(round, id)).unwrap();
            if id == 0 {
                t_new = start.elapsed().as_secs_f64();
            }
            clients.push(c);
            inbox.push((id, m.encode()));
        }
        let keys = server.collect_keys(inbox).unwrap();
        let mut inbox = Vec::new();
        let mut t_share = 0.0;
        for (id, m) in &keys {
            let start = Instant::now();
            let bytes = clients[*id as usize].share_keys(m).unwrap().encode();
            if *id == 0 {
                t_share = start.elapsed().as_secs_f64();
            }
            inbox.push((*id, bytes));
        }
        let held = server.collect_shares(inbox).unwrap();
        let start = Instant::now();
        let masked = clients[0].masked_input(&held[&0], &input).unwrap().encode();
        let t_mask = start.elapsed().as_secs_f64();
        upload = masked.len();
        // The others' masked inputs (untimed) and the unmask request.
        let mut inbox = vec![(0u32, masked)];
        for id in 1..p.clients {
            inbox.push((
                id,
                clients[id as usize]
                    .masked_input(&held[&id], &input)
                    .unwrap()
                    .encode(),
            ));
        }
        let request = server.collect_masked(inbox).unwrap();
        let start = Instant::now();
        let _ = clients[0].unmask(&request).unwrap().encode();
        let t_unmask = start.elapsed().as_secs_f64();
        for (i, t) in [t_new, t_share, t_mask, t_unmask].into_iter().enumerate() {
            stage_times[i].push(t);
        }
        totals.push(t_new + t_share + t_mask + t_unmask);
    }
    for (name, times) in ["keys", "share keys", "masked input", "unmask"]
        .iter()
        .zip(stage_times)
    {
        println!("client {name:<13} {}", stats(times));
    }
    println!("client total         {}", stats(totals.clone()));
    // Quantisation of a clipped update (rotation, scaling, conditional rounding, wrapping)
    // at the same b, and a Skellam noise share, per round; the masked vector then has the
    // padded length d.
    let update: Vec<f32> = (0..words)
        .map(|i| ((i as f32) * 0.37).sin() / (words as f32).sqrt())
        .collect();
    let scale = scale_for_bits(20, 100, 1.0, words, 0.0, 1e-4).unwrap();
    let quantiser = Quantiser::new(words, 1.0, scale, (-0.5f64).exp(), 20, [7; 32]).unwrap();
    let noise = ShareNoise::with_stddev(true, 1000.0).unwrap();
    let mut rng = secure_rng().unwrap();
    let (mut quantise, mut shares) = (Vec::new(), Vec::new());
    for _ in 0..repeats {
        let start = Instant::now();
        let mut rounded = quantiser.round(&update, &mut rng).unwrap();
        let wrapped = quantiser.wrap(&rounded);
        quantise.push(start.elapsed().as_secs_f64());
        assert_eq!(wrapped.len(), quantiser.padded());
        let start = Instant::now();
        noise.add_to(&mut rounded, &mut rng).unwrap();
        shares.push(start.elapsed().as_secs_f64());
    }
    println!(
        "client quantise      {} (d = {})",
        stats(quantise.clone()),
        quantiser.padded()
    );
    println!(
        "client Skellam share {} (σ = 1000 integer units)",
        stats(shares)
    );
    println!(
        "client total + quantise: median {:.2} ms; upload of the quantised update {:.3} bytes per parameter",
        1e3 * (median(&totals) + median(&quantise)),
        2.5 * quantiser.padded() as f64 / words as f64
    );
    println!(
        "client upload        {upload} bytes = {:.3} bytes per parameter",
        upload as f64 / words as f64
    );
    // The server: 100 clients, 10 dropped after sharing; unmasking timed.
    let mut server_times = Vec::new();
    for r in 0..repeats as u64 {
        let round = 200 + r;
        let p = params(round, words);
        let (mut clients, mut server, held, _) = share(round, words);
        let inbox: Vec<(u32, Vec<u8>)> = (10..p.clients)
            .map(|id| {
                (
                    id,
                    clients[id as usize]
                        .masked_input(&held[&id], &input)
                        .unwrap()
                        .encode(),
                )
            })
            .collect();
        let start = Instant::now();
        let request = server.collect_masked(inbox).unwrap();
        let decode = start.elapsed().as_secs_f64();
        let inbox = request
            .survivors
            .iter()
            .map(|&id| (id, clients[id as usize].unmask(&request).unwrap().encode()))
            .collect();
        let start = Instant::now();
        let sum = server.unmask(inbox).unwrap();
        server_times.push(decode + start.elapsed().as_secs_f64());
        assert_eq!(sum.len(), words);
        assert_eq!(sum[1], 90);
    }
    println!(
        "server unmask 100 clients, 10 dropped: {}",
        stats(server_times)
    );
}
