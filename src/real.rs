//! The element types of the hand-written kernels and of the DP step: f32 (training) and
//! f64 (checks against autograd at 1e-12, users who want double precision).

/// The element types the hand-written kernels run in: f32 (training) and f64 (checks at
/// 1e-12, users who want double precision). Every kernel is written once over `T: Real`;
/// [`real!`] picks the instance from a tensor's dtype.
pub trait Real:
    candle_core::WithDType + num_traits::Float + std::iter::Sum + Default + std::fmt::Debug
{
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
    /// The value as an f64 (exact).
    fn wide(self) -> f64;
    /// One draw of N(0, 1) from `rng`.
    fn standard_normal(rng: &mut impl rand::Rng) -> Self;
}

impl Real for f32 {
    fn of(v: f64) -> Self {
        v as f32
    }
    fn wide(self) -> f64 {
        f64::from(self)
    }
    fn standard_normal(rng: &mut impl rand::Rng) -> Self {
        rng.sample(rand_distr::StandardNormal)
    }
}

impl Real for f64 {
    fn of(v: f64) -> Self {
        v
    }
    fn wide(self) -> f64 {
        self
    }
    fn standard_normal(rng: &mut impl rand::Rng) -> Self {
        rng.sample(rand_distr::StandardNormal)
    }
}

/// Runs `$body` with the type alias `$t` bound to f32 or f64 after `$dtype`, or returns an
/// error naming `$op` for any other dtype.
macro_rules! real {
    ($dtype:expr, $op:expr, |$t:ident| $body:expr) => {
        match $dtype {
            candle_core::DType::F32 => {
                #[allow(dead_code)]
                type $t = f32;
                $body
            }
            candle_core::DType::F64 => {
                #[allow(dead_code)]
                type $t = f64;
                $body
            }
            other => Err($crate::error::Error::Tensor(format!(
                "{}: f32 or f64 tensors only, got {other:?}",
                $op
            ))),
        }
    };
}
pub(crate) use real;
