//! Additive shares over Z_{2^64}, fixed-point values, Beaver products and truncation.
//!
//! - **Fixed point.** x ↦ round(x · 2^f) as a two's-complement word, f = [`FRAC_BITS`].
//! - **Sharing.** x = x₀ + x₁ mod 2^64, x₀ uniform.
//! - **Beaver multiplication** (Beaver 1991). With a triple c = a·b shared by the dealer,
//!   each party opens e_i = x_i − a_i and f_i = y_i − b_i. Both learn e = x − a and f = y − b,
//!   which are uniform because a and b are. Then z_i = c_i + e·b_i + f·a_i, plus e·f for
//!   party 0, and z₀ + z₁ = x·y. Matrix triples (A, B, C = AB) do the same for a product of
//!   matrices: E = X − A, F = Y − B, Z_i = C_i + E·B_i + A_i·F (+ E·F for party 0).
//! - **Truncation** (Mohassel & Zhang 2017, SecureML §4.1, Thm. 1). A product carries 2f
//!   fractional bits. Party 0 shifts its share arithmetically by f, party 1 shifts the
//!   negation of its share and negates back. The result is off by at most 1 unit in the last
//!   place, except with probability 2^{ℓ_x + 1 − 64} for |x| < 2^{ℓ_x}.

use rand::RngCore;

use crate::error::{Error, Result};

/// f: fractional bits of the fixed-point encoding.
pub const FRAC_BITS: u32 = 16;

/// The largest |x| encoded: 2^15, so an encoded value is below 2^31 and a product of two
/// (2f = 32 fractional bits) below 2^62: it never wraps. Truncation needs more room: it
/// fails (a wrong result, not a wrap) with probability 2^{ℓ+1−64} when the product is below
/// 2^ℓ in fixed point, e.g. 2^{−20} for |x·y| < 2^11. The inference code must keep its
/// products that small, and says so where it multiplies.
pub const MAX_ABS: f64 = (1u64 << 15) as f64;

/// `x` in fixed point; refuses a non-finite value or |x| > [`MAX_ABS`].
pub fn encode(x: f64) -> Result<u64> {
    if !(x.is_finite() && x.abs() <= MAX_ABS) {
        return Err(Error::invalid(
            "mpc fixed-point value",
            x,
            format!("a finite number of magnitude at most {MAX_ABS}"),
        ));
    }
    Ok((x * f64::from(1u32 << FRAC_BITS)).round() as i64 as u64)
}

/// The value of a fixed-point word.
pub fn decode(v: u64) -> f64 {
    v as i64 as f64 / f64::from(1u32 << FRAC_BITS)
}

/// Additive shares of each value: (party 0's uniform words, party 1's differences).
pub fn share_vec(values: &[u64], rng: &mut impl RngCore) -> (Vec<u64>, Vec<u64>) {
    let first: Vec<u64> = values.iter().map(|_| rng.next_u64()).collect();
    let second = values
        .iter()
        .zip(&first)
        .map(|(v, r)| v.wrapping_sub(*r))
        .collect();
    (first, second)
}

/// The values of two parties' shares.
pub fn reconstruct(a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    same_len(a.len(), b.len(), "shares")?;
    Ok(a.iter().zip(b).map(|(x, y)| x.wrapping_add(*y)).collect())
}

fn same_len(a: usize, b: usize, what: &str) -> Result<()> {
    match a == b {
        true => Ok(()),
        false => Err(Error::invalid(
            format!("mpc {what}"),
            format!("{a} and {b} values"),
            "equal lengths",
        )),
    }
}

/// Which of the two parties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Party 0 (adds the public e·f term; shifts its own share in truncation).
    Zero,
    /// Party 1.
    One,
}

/// One party's shares of an elementwise triple c = a·b.
#[derive(Debug, Clone, PartialEq)]
pub struct Triple {
    /// Shares of a.
    pub a: Vec<u64>,
    /// Shares of b.
    pub b: Vec<u64>,
    /// Shares of c = a·b.
    pub c: Vec<u64>,
}

/// One party's shares of a matrix triple C = A·B (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixTriple {
    /// Rows of A and C.
    pub rows: usize,
    /// Columns of A, rows of B.
    pub inner: usize,
    /// Columns of B and C.
    pub cols: usize,
    /// Shares of A (rows × inner).
    pub a: Vec<u64>,
    /// Shares of B (inner × cols).
    pub b: Vec<u64>,
    /// Shares of C = A·B (rows × cols).
    pub c: Vec<u64>,
}

/// The dealer: correlated randomness for both parties, drawn from `rng` (a CSPRNG in
/// deployment, [`crate::sampling::secure_rng::secure_rng`]).
pub struct Dealer<R> {
    rng: R,
}

impl<R: RngCore> Dealer<R> {
    /// A dealer drawing from `rng`.
    pub fn new(rng: R) -> Self {
        Dealer { rng }
    }

    fn uniform(&mut self, len: usize) -> Vec<u64> {
        (0..len).map(|_| self.rng.next_u64()).collect()
    }

    /// Shares of `len` elementwise triples, (party 0's, party 1's).
    pub fn triple(&mut self, len: usize) -> (Triple, Triple) {
        let (a, b) = (self.uniform(len), self.uniform(len));
        let c: Vec<u64> = a.iter().zip(&b).map(|(x, y)| x.wrapping_mul(*y)).collect();
        let (a0, a1) = share_vec(&a, &mut self.rng);
        let (b0, b1) = share_vec(&b, &mut self.rng);
        let (c0, c1) = share_vec(&c, &mut self.rng);
        (
            Triple {
                a: a0,
                b: b0,
                c: c0,
            },
            Triple {
                a: a1,
                b: b1,
                c: c1,
            },
        )
    }

    /// Shares of a matrix triple for a (rows × inner)·(inner × cols) product.
    pub fn matrix_triple(
        &mut self,
        rows: usize,
        inner: usize,
        cols: usize,
    ) -> (MatrixTriple, MatrixTriple) {
        let (a, b) = (self.uniform(rows * inner), self.uniform(inner * cols));
        let c = matmul(&a, &b, rows, inner, cols);
        let (a0, a1) = share_vec(&a, &mut self.rng);
        let (b0, b1) = share_vec(&b, &mut self.rng);
        let (c0, c1) = share_vec(&c, &mut self.rng);
        let make = |a, b, c| MatrixTriple {
            rows,
            inner,
            cols,
            a,
            b,
            c,
        };
        (make(a0, b0, c0), make(a1, b1, c1))
    }
}

impl<R: RngCore> Dealer<R> {
    /// Shares of `len` square pairs (a, a²) for x² (the polynomial activation), cheaper
    /// than a triple: one opened word per value instead of two.
    pub fn square(&mut self, len: usize) -> (SquarePair, SquarePair) {
        let a = self.uniform(len);
        let c: Vec<u64> = a.iter().map(|x| x.wrapping_mul(*x)).collect();
        let (a0, a1) = share_vec(&a, &mut self.rng);
        let (c0, c1) = share_vec(&c, &mut self.rng);
        (SquarePair { a: a0, c: c0 }, SquarePair { a: a1, c: c1 })
    }
}

/// One party's shares of square pairs c = a².
#[derive(Debug, Clone, PartialEq)]
pub struct SquarePair {
    /// Shares of a.
    pub a: Vec<u64>,
    /// Shares of c = a².
    pub c: Vec<u64>,
}

/// Squaring step 1: this party's x_i − a_i, sent to the other party.
pub fn square_open(x: &[u64], pair: &SquarePair) -> Result<Vec<u64>> {
    same_len(x.len(), pair.a.len(), "square input")?;
    Ok(sub(x, &pair.a))
}

/// Squaring step 2: this party's share of x² from the opened e = x − a:
/// x² = (e + a)² = e² + 2e·a + a², so z_i = c_i + 2e·a_i (+ e² for party 0).
pub fn square_finish(party: Party, e: &[u64], pair: &SquarePair) -> Result<Vec<u64>> {
    same_len(e.len(), pair.c.len(), "opened e")?;
    Ok((0..e.len())
        .map(|i| {
            let mut z = pair.c[i].wrapping_add(e[i].wrapping_mul(pair.a[i]).wrapping_mul(2));
            if party == Party::Zero {
                z = z.wrapping_add(e[i].wrapping_mul(e[i]));
            }
            z
        })
        .collect())
}

/// Shares times a public fixed-point constant, then truncated: each party alone (average
/// pooling's 1/k², a layer's scale). The result carries the truncation's ±1 ulp.
pub fn scale_public(party: Party, shares: &mut [u64], constant: f64) -> Result<()> {
    let k = encode(constant)?;
    shares.iter_mut().for_each(|v| *v = v.wrapping_mul(k));
    truncate(party, shares, FRAC_BITS);
    Ok(())
}

/// (rows × inner)·(inner × cols) over Z_{2^64}, row-major.
pub fn matmul(a: &[u64], b: &[u64], rows: usize, inner: usize, cols: usize) -> Vec<u64> {
    let mut out = vec![0u64; rows * cols];
    for i in 0..rows {
        let row = &mut out[i * cols..(i + 1) * cols];
        for k in 0..inner {
            let aik = a[i * inner + k];
            for (o, bkj) in row.iter_mut().zip(&b[k * cols..(k + 1) * cols]) {
                *o = o.wrapping_add(aik.wrapping_mul(*bkj));
            }
        }
    }
    out
}

fn sub(x: &[u64], y: &[u64]) -> Vec<u64> {
    x.iter().zip(y).map(|(a, b)| a.wrapping_sub(*b)).collect()
}

fn add_into(acc: &mut [u64], x: &[u64]) {
    acc.iter_mut()
        .zip(x)
        .for_each(|(a, b)| *a = a.wrapping_add(*b));
}

/// Beaver step 1: this party's (x_i − a_i, y_i − b_i), sent to the other party.
pub fn beaver_open(x: &[u64], y: &[u64], triple: &Triple) -> Result<(Vec<u64>, Vec<u64>)> {
    same_len(x.len(), triple.a.len(), "product input x")?;
    same_len(y.len(), triple.b.len(), "product input y")?;
    Ok((sub(x, &triple.a), sub(y, &triple.b)))
}

/// Beaver step 2: this party's share of x·y from the opened e = x − a and f = y − b (both
/// parties' step-1 messages added).
pub fn beaver_finish(party: Party, e: &[u64], f: &[u64], triple: &Triple) -> Result<Vec<u64>> {
    same_len(e.len(), triple.c.len(), "opened e")?;
    same_len(f.len(), triple.c.len(), "opened f")?;
    Ok((0..e.len())
        .map(|i| {
            let mut z = triple.c[i]
                .wrapping_add(e[i].wrapping_mul(triple.b[i]))
                .wrapping_add(f[i].wrapping_mul(triple.a[i]));
            if party == Party::Zero {
                z = z.wrapping_add(e[i].wrapping_mul(f[i]));
            }
            z
        })
        .collect())
}

/// Matrix Beaver step 1: this party's (X_i − A_i, Y_i − B_i).
pub fn matrix_open(x: &[u64], y: &[u64], triple: &MatrixTriple) -> Result<(Vec<u64>, Vec<u64>)> {
    same_len(x.len(), triple.a.len(), "matrix product input X")?;
    same_len(y.len(), triple.b.len(), "matrix product input Y")?;
    Ok((sub(x, &triple.a), sub(y, &triple.b)))
}

/// Matrix Beaver step 2: this party's share of X·Y from the opened E = X − A, F = Y − B.
pub fn matrix_finish(
    party: Party,
    e: &[u64],
    f: &[u64],
    triple: &MatrixTriple,
) -> Result<Vec<u64>> {
    let (rows, inner, cols) = (triple.rows, triple.inner, triple.cols);
    same_len(e.len(), rows * inner, "opened E")?;
    same_len(f.len(), inner * cols, "opened F")?;
    let mut z = triple.c.clone();
    add_into(&mut z, &matmul(e, &triple.b, rows, inner, cols));
    add_into(&mut z, &matmul(&triple.a, f, rows, inner, cols));
    if party == Party::Zero {
        add_into(&mut z, &matmul(e, f, rows, inner, cols));
    }
    Ok(z)
}

/// Local truncation by `bits` (SecureML): party 0 shifts its share arithmetically, party 1
/// shifts the negation of its share and negates back.
pub fn truncate(party: Party, shares: &mut [u64], bits: u32) {
    for v in shares.iter_mut() {
        *v = match party {
            Party::Zero => ((*v as i64) >> bits) as u64,
            Party::One => (((v.wrapping_neg()) as i64) >> bits).wrapping_neg() as u64,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn values(rng: &mut ChaCha20Rng, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-scale..scale)).collect()
    }

    fn enc(v: &[f64]) -> Vec<u64> {
        v.iter().map(|&x| encode(x).unwrap()).collect()
    }

    /// Shares and the two Beaver steps, both parties, then truncation: the product of
    /// shared fixed-point values within 2 units in the last place of x·y (rounding of the
    /// inputs included), over 10,000 random pairs.
    #[test]
    fn beaver_products_of_shared_values_match_the_plaintext_product() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let n = 10_000;
        let (x, y) = (values(&mut rng, n, 40.0), values(&mut rng, n, 40.0));
        let (x0, x1) = share_vec(&enc(&x), &mut rng);
        let (y0, y1) = share_vec(&enc(&y), &mut rng);
        let mut dealer = Dealer::new(ChaCha20Rng::seed_from_u64(2));
        let (t0, t1) = dealer.triple(n);
        let (e0, f0) = beaver_open(&x0, &y0, &t0).unwrap();
        let (e1, f1) = beaver_open(&x1, &y1, &t1).unwrap();
        let e = reconstruct(&e0, &e1).unwrap();
        let f = reconstruct(&f0, &f1).unwrap();
        let mut z0 = beaver_finish(Party::Zero, &e, &f, &t0).unwrap();
        let mut z1 = beaver_finish(Party::One, &e, &f, &t1).unwrap();
        truncate(Party::Zero, &mut z0, FRAC_BITS);
        truncate(Party::One, &mut z1, FRAC_BITS);
        let z = reconstruct(&z0, &z1).unwrap();
        let ulp = 1.0 / f64::from(1u32 << FRAC_BITS);
        for i in 0..n {
            let want = x[i] * y[i];
            // Input rounding: |x|·ulp/2 + |y|·ulp/2, truncation: 2 ulp.
            let tolerance = (x[i].abs() + y[i].abs()) * ulp / 2.0 + 2.0 * ulp;
            assert!(
                (decode(z[i]) - want).abs() <= tolerance,
                "{i}: {} vs {want}",
                decode(z[i])
            );
        }
    }

    /// A shared matrix product (4 × 50)·(50 × 3) against the plaintext f64 product.
    #[test]
    fn matrix_triples_give_the_shared_matrix_product() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (rows, inner, cols) = (4, 50, 3);
        let x = values(&mut rng, rows * inner, 2.0);
        let y = values(&mut rng, inner * cols, 2.0);
        let (x0, x1) = share_vec(&enc(&x), &mut rng);
        let (y0, y1) = share_vec(&enc(&y), &mut rng);
        let (t0, t1) = Dealer::new(ChaCha20Rng::seed_from_u64(4)).matrix_triple(rows, inner, cols);
        let (e0, f0) = matrix_open(&x0, &y0, &t0).unwrap();
        let (e1, f1) = matrix_open(&x1, &y1, &t1).unwrap();
        let (e, f) = (
            reconstruct(&e0, &e1).unwrap(),
            reconstruct(&f0, &f1).unwrap(),
        );
        let mut z0 = matrix_finish(Party::Zero, &e, &f, &t0).unwrap();
        let mut z1 = matrix_finish(Party::One, &e, &f, &t1).unwrap();
        truncate(Party::Zero, &mut z0, FRAC_BITS);
        truncate(Party::One, &mut z1, FRAC_BITS);
        let z = reconstruct(&z0, &z1).unwrap();
        let ulp = 1.0 / f64::from(1u32 << FRAC_BITS);
        for i in 0..rows {
            for j in 0..cols {
                let want: f64 = (0..inner).map(|k| x[i * inner + k] * y[k * cols + j]).sum();
                let got = decode(z[i * cols + j]);
                assert!(
                    (got - want).abs() <= inner as f64 * 2.0 * ulp + 2.0 * ulp,
                    "({i}, {j}): {got} vs {want}"
                );
            }
        }
    }

    /// One party's shares of a constant look uniform: the top bit is set about half the time
    /// (the other party's share carries the value).
    #[test]
    fn a_party_alone_holds_a_uniform_word() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let (first, _) = share_vec(&vec![encode(1.0).unwrap(); 20_000], &mut rng);
        let ones = first.iter().filter(|v| *v >> 63 == 1).count();
        assert!((9_500..10_500).contains(&ones), "{ones}");
    }

    /// Shared squares and a public scale (x² / 4, as an activation then a 2×2 average
    /// pool's factor would give) within the rounding bound of the plaintext.
    #[test]
    fn shared_squares_and_public_scales_match_the_plaintext() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let n = 5_000;
        let x = values(&mut rng, n, 40.0);
        let (x0, x1) = share_vec(&enc(&x), &mut rng);
        let (p0, p1) = Dealer::new(ChaCha20Rng::seed_from_u64(8)).square(n);
        let e = reconstruct(
            &square_open(&x0, &p0).unwrap(),
            &square_open(&x1, &p1).unwrap(),
        )
        .unwrap();
        let mut z0 = square_finish(Party::Zero, &e, &p0).unwrap();
        let mut z1 = square_finish(Party::One, &e, &p1).unwrap();
        truncate(Party::Zero, &mut z0, FRAC_BITS);
        truncate(Party::One, &mut z1, FRAC_BITS);
        scale_public(Party::Zero, &mut z0, 0.25).unwrap();
        scale_public(Party::One, &mut z1, 0.25).unwrap();
        let z = reconstruct(&z0, &z1).unwrap();
        let ulp = 1.0 / f64::from(1u32 << FRAC_BITS);
        for i in 0..n {
            let want = x[i] * x[i] / 4.0;
            let tolerance = x[i].abs() * ulp / 4.0 + 3.0 * ulp;
            assert!(
                (decode(z[i]) - want).abs() <= tolerance,
                "{i}: {} vs {want}",
                decode(z[i])
            );
        }
    }

    #[test]
    fn bad_inputs_are_refused() {
        assert!(encode(f64::NAN).is_err());
        assert!(encode(2.0 * MAX_ABS).is_err());
        assert!(encode(MAX_ABS).is_ok());
        assert!(reconstruct(&[1, 2], &[1]).is_err());
        let (t0, _) = Dealer::new(ChaCha20Rng::seed_from_u64(6)).triple(3);
        assert!(beaver_open(&[1, 2], &[1, 2, 3], &t0).is_err());
        assert!(beaver_finish(Party::Zero, &[1], &[1, 2, 3], &t0).is_err());
        assert_eq!(decode(encode(-2.5).unwrap()), -2.5);
    }
}
