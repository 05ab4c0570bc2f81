use dptrain::privacy::*;
use std::time::Instant;
fn main() {
    let n = 100_000u64;
    let mut ledger = Ledger::new();
    for t in 0..n {
        ledger.push(
            PrivacyEvent::new(256.0 / 60000.0, 1.5 * (-(t as f64) / n as f64).exp(), 1).unwrap(),
        );
    }
    let s = Instant::now();
    let mut acc = RdpAccountant::default();
    acc.compose_ledger(&ledger).unwrap();
    println!("compose (eager): {:?}", s.elapsed());
    let s = Instant::now();
    let e = acc.epsilon(1e-5).unwrap();
    println!("epsilon: {:?} {:?}", s.elapsed(), e);
    let r = acc.rdp().unwrap().to_vec();
    let o = acc.orders().values();
    for (a, v) in o.iter().zip(&r).take(40) {
        print!("{a}:{v:.3} ");
    }
    println!();
}
