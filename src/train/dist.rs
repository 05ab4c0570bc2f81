//! One DP-SGD run over W ranks (`mpirun -np W dptrain train CONFIG --dist mpi`): the DP
//! step's clipped sum is computed in parts spread over the ranks, reduced in fixed-point
//! integers, and every rank adds the same noise and takes the same optimizer step.
//!
//! - **Sampling.** Every rank draws the whole run's Poisson batch from the same seeded stream
//!   (each rank holds the training set), so the batch is the one a single process draws: the
//!   accountant's assumption (one Poisson sample of the whole set at rate q) holds exactly,
//!   and the ledger is unchanged.
//! - **Parts.** The batch is cut into S contiguous parts (`training.dist_parts`, fixed by the
//!   config, not by W); rank r computes the parts s ≡ r (mod W). Each part's clipped sum is
//!   rounded to a fixed-point grid (scale 2^32/C) and the ranks' integer sums are added by
//!   one all-reduce per step. Integer addition is associative, so the reduced sum, and with
//!   it every weight, is the same bit for bit for any W (and any reduction order).
//! - **Noise.** After the all-reduce every rank adds N(0, σ²C²) drawn from the run's seeded
//!   stream, the same draw on every rank. The ranks are one trust domain (one operator's
//!   machines), so this is the single process's mechanism. Independent shares
//!   N(0, σ²C²/W) per rank would make the result depend on W, and shares rounded to the
//!   grid would no longer add up to a Gaussian.
//! - **Rounding.** Rounding each part moves each coordinate by at most half a grid step
//!   C/2^32, and a neighbouring batch can shift which examples fall in which part, so the
//!   rounded sum's L2 sensitivity is at most C' + S·√d·C/2^32 for examples clipped to C'.
//!   Examples are clipped to C' = C·(1 − S·√d/2^32), which keeps it at C, the sensitivity
//!   the ledger books (the inflation of rounding before aggregation, as in Kairouz, Liu &
//!   Steinke 2021, §4; here a relative 1e-6 at S = 8, d = 407,050).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::clipped_sum::{StepStats, Sums};
use crate::error::{Error, Result};
use crate::real::{Real, real};

/// Most parts a step may be cut into.
pub const MAX_PARTS: usize = 1024;
/// Parts when the config names none.
pub const DEFAULT_PARTS: usize = 8;
/// log₂ of the fixed-point scale of a sum, relative to the clip norm: a coordinate of a
/// part's clipped sum is rounded to a multiple of C/2^32.
pub const FIXED_POINT_BITS: i32 = 32;
/// A part's rounded value must stay within ±2^52 (exact in f64), so that the sum of up to
/// [`MAX_PARTS`] parts stays within i64.
const PART_LIMIT: f64 = (1u64 << 52) as f64;
/// Statistics reduced beside the sums: loss (fixed point), batch size, clipped, non-finite.
const STATS: usize = 4;
/// Values rounded per task on the pool.
const ROUND_BLOCK: usize = 16_384;

/// A group of W ranks that add integer vectors: MPI's world, threads of one process, or a
/// single process alone.
pub trait Collective: Send + Sync {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// W.
    fn size(&self) -> usize;
    /// Replaces `values` on every rank by their element-wise sum over the ranks. Every rank
    /// must call it with the same length; the sum must not overflow.
    fn all_reduce_sum(&self, values: &mut [i64]) -> Result<()>;
}

/// One process alone (W = 1): the reduction is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }

    fn size(&self) -> usize {
        1
    }

    fn all_reduce_sum(&self, _values: &mut [i64]) -> Result<()> {
        Ok(())
    }
}

/// W ranks as threads of one process: what MPI's ranks do, without MPI (tests; a machine
/// where mpirun is not installed). A rank that waits longer than the group's timeout for
/// the others, or that finds a rank gone, gets an error instead of waiting forever.
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<GroupState>,
}

struct GroupState {
    size: usize,
    timeout: Duration,
    state: Mutex<Reduction>,
    changed: Condvar,
}

/// One all-reduce in progress: ranks add into `sum`; the last to add publishes it as
/// `result` of `generation`; each rank copies it out.
#[derive(Default)]
struct Reduction {
    generation: u64,
    added: usize,
    sum: Vec<i64>,
    result: Vec<i64>,
    /// Ranks dropped (finished or failed): no reduction can complete after one leaves.
    left: usize,
}

impl ThreadGroup {
    /// The W members of a new group (give one to each thread); each all-reduce waits at
    /// most `timeout` for the others.
    pub fn new(size: usize, timeout: Duration) -> Result<Vec<ThreadGroup>> {
        if size == 0 {
            return Err(Error::invalid("thread group size", 0, "at least 1 rank"));
        }
        let shared = Arc::new(GroupState {
            size,
            timeout,
            state: Mutex::new(Reduction::default()),
            changed: Condvar::new(),
        });
        Ok((0..size)
            .map(|rank| ThreadGroup {
                rank,
                shared: shared.clone(),
            })
            .collect())
    }
}

impl Drop for ThreadGroup {
    fn drop(&mut self) {
        let mut state = lock(&self.shared.state);
        state.left += 1;
        self.shared.changed.notify_all();
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, values: &mut [i64]) -> Result<()> {
        let shared = &*self.shared;
        let gone = || Error::Usage(format!("rank {}: another rank left the group", self.rank));
        let mut state = lock(&shared.state);
        if state.left > 0 {
            return Err(gone());
        }
        if state.added == 0 {
            state.sum = vec![0; values.len()];
        }
        if state.sum.len() != values.len() {
            return Err(Error::Usage(format!(
                "rank {}: an all-reduce of {} values where another rank sent {}",
                self.rank,
                values.len(),
                state.sum.len()
            )));
        }
        for (acc, v) in state.sum.iter_mut().zip(values.iter()) {
            *acc = acc.checked_add(*v).ok_or_else(|| {
                Error::Usage("the all-reduce overflowed i64 (values out of range)".into())
            })?;
        }
        state.added += 1;
        let generation = state.generation;
        if state.added == shared.size {
            state.result = std::mem::take(&mut state.sum);
            state.added = 0;
            state.generation += 1;
            shared.changed.notify_all();
        }
        let deadline = std::time::Instant::now() + shared.timeout;
        while state.generation == generation {
            if state.left > 0 {
                return Err(gone());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Usage(format!(
                    "rank {}: the other ranks did not join the all-reduce within {:?}",
                    self.rank, shared.timeout
                )));
            }
            state = shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        values.copy_from_slice(&state.result);
        Ok(())
    }
}

/// Locks `mutex`, also after a thread panicked holding it (callers keep every critical
/// section to a single update, so the data stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// MPI's world communicator (rsmpi over the system's MPI, feature `mpi`).
#[cfg(feature = "mpi")]
pub struct MpiWorld {
    world: mpi::topology::SimpleCommunicator,
    /// MPI is initialised with `MPI_THREAD_FUNNELED`: only this thread may call it.
    thread: std::thread::ThreadId,
}

/// MPI's lifetime in this process: dropping it finalises MPI (a finished run); a failed
/// run calls [`MpiSession::abort`] instead, which stops every rank at once (a rank that
/// merely exited would leave the others waiting in their next all-reduce).
#[cfg(feature = "mpi")]
pub struct MpiSession {
    universe: mpi::environment::Universe,
}

// SAFETY: MPI is only ever called from the thread that initialised it; `all_reduce_sum`
// checks the calling thread and refuses any other, so sharing the handle is sound.
#[cfg(feature = "mpi")]
unsafe impl Send for MpiWorld {}
// SAFETY: as above.
#[cfg(feature = "mpi")]
unsafe impl Sync for MpiWorld {}

#[cfg(feature = "mpi")]
impl MpiWorld {
    /// Initialises MPI (once per process) and joins its world. A panic anywhere in the
    /// process then aborts it, so that mpirun stops the other ranks instead of leaving
    /// them blocked.
    pub fn init() -> Result<(Self, MpiSession)> {
        use mpi::traits::Communicator;
        let (universe, _) = mpi::initialize_with_threading(mpi::Threading::Funneled)
            .ok_or_else(|| Error::Usage("MPI is already initialised in this process".into()))?;
        let world = universe.world();
        tracing::debug!(rank = world.rank(), size = world.size(), "MPI world joined");
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            std::process::abort();
        }));
        Ok((
            MpiWorld {
                world,
                thread: std::thread::current().id(),
            },
            MpiSession { universe },
        ))
    }
}

#[cfg(feature = "mpi")]
impl MpiSession {
    /// Stops every rank of the job with `code` (MPI_Abort).
    pub fn abort(&self, code: i32) -> ! {
        use mpi::traits::Communicator;
        self.universe.world().abort(code)
    }
}

#[cfg(feature = "mpi")]
impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        use mpi::traits::Communicator;
        self.world.size() as usize
    }

    fn all_reduce_sum(&self, values: &mut [i64]) -> Result<()> {
        use mpi::collective::{CommunicatorCollectives, SystemOperation};
        if std::thread::current().id() != self.thread {
            return Err(Error::Usage(
                "MPI called from a thread other than the one that initialised it".into(),
            ));
        }
        // Every rank sends the same length (the parameters' count, checked at start by
        // `Distributed::check_same` on the config); the crate does not check it.
        let mut sum = vec![0i64; values.len()];
        self.world
            .all_reduce_into(&values[..], &mut sum[..], SystemOperation::sum());
        values.copy_from_slice(&sum);
        Ok(())
    }
}

/// A rank's part of a distributed run: its group and the number of parts per step.
pub struct Distributed {
    collective: Box<dyn Collective>,
    parts: usize,
}

impl Distributed {
    /// Steps cut into `parts` parts over `collective`'s ranks (at least one part per rank,
    /// at most [`MAX_PARTS`]).
    pub fn new(collective: Box<dyn Collective>, parts: usize) -> Result<Self> {
        let ranks = collective.size();
        if !(ranks..=MAX_PARTS).contains(&parts) {
            return Err(Error::invalid(
                "training.dist_parts",
                parts,
                format!(
                    "from the number of ranks ({ranks}) to {MAX_PARTS}: each rank computes \
                     whole parts"
                ),
            ));
        }
        Ok(Distributed { collective, parts })
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// W.
    pub fn ranks(&self) -> usize {
        self.collective.size()
    }

    /// S.
    pub fn parts(&self) -> usize {
        self.parts
    }

    /// The group.
    pub fn collective(&self) -> &dyn Collective {
        self.collective.as_ref()
    }

    /// The parts of `batch` this rank computes: part s is the s-th of S contiguous,
    /// near-equal slices, and rank r takes s ≡ r (mod W).
    pub fn my_parts<'b>(&self, batch: &'b [usize]) -> Vec<&'b [usize]> {
        let (n, s) = (batch.len(), self.parts);
        (self.rank()..s)
            .step_by(self.ranks())
            .map(|part| &batch[part * n / s..(part + 1) * n / s])
            .collect()
    }

    /// The factor C'/C that examples are clipped to so that the rounded sum of `dim`
    /// coordinates keeps L2 sensitivity C (module docs): 1 − S·√d / 2^32.
    pub fn clip_factor(&self, dim: usize) -> f64 {
        1.0 - self.parts as f64 * (dim as f64).sqrt() * 2f64.powi(-FIXED_POINT_BITS)
    }

    /// Every rank checks that all ranks run the same `what` (a digest of the config and
    /// data): they must, or their steps would differ silently.
    pub fn check_same(&self, what: &str, digest: u64) -> Result<()> {
        let ranks = self.ranks();
        // Each rank writes its digest (as two 32-bit halves, so no sum can overflow) in its
        // own slots; the sum then holds every rank's.
        let mut slots = vec![0i64; 2 * ranks];
        slots[2 * self.rank()] = (digest >> 32) as i64;
        slots[2 * self.rank() + 1] = (digest & 0xffff_ffff) as i64;
        self.collective.all_reduce_sum(&mut slots)?;
        for rank in 0..ranks {
            let theirs = ((slots[2 * rank] as u64) << 32) | slots[2 * rank + 1] as u64;
            if theirs != digest {
                return Err(Error::Usage(format!(
                    "rank {rank} runs another {what} than rank {} ({theirs:016x} against \
                     {digest:016x}): start every rank with the same config and data",
                    self.rank()
                )));
            }
        }
        Ok(())
    }
}

/// A step's clipped sums and statistics on the fixed-point grid, as one vector of
/// integers for the all-reduce: the parameters' values in order, then the statistics.
pub struct FixedSums {
    values: Vec<i64>,
    scale: f64,
}

impl FixedSums {
    /// Zeros for parameters of `sizes`, on the grid C/2^32 of clip norm `clip_norm`.
    pub fn new(sizes: &[usize], clip_norm: f64) -> Result<Self> {
        if !(clip_norm > 0.0 && clip_norm.is_finite()) {
            return Err(Error::invalid(
                "privacy.clip_norm",
                clip_norm,
                "a finite clip norm above 0 (the grid of the distributed sum is C/2^32)",
            ));
        }
        Ok(FixedSums {
            values: vec![0; sizes.iter().sum::<usize>() + STATS],
            scale: 2f64.powi(FIXED_POINT_BITS) / clip_norm,
        })
    }

    /// Adds one part's sums and statistics, each value rounded to the grid (half away from
    /// zero).
    pub fn add_part(&mut self, sums: &Sums, stats: &StepStats) -> Result<()> {
        use rayon::prelude::*;
        let scale = self.scale;
        let dim = self.values.len() - STATS;
        if sums.sizes().iter().sum::<usize>() != dim {
            return Err(Error::Tensor(format!(
                "{} sums for {dim} parameter values",
                sums.sizes().iter().sum::<usize>()
            )));
        }
        // In blocks on the pool (the mlp's 407,050 values per part, every step); a value
        // off the grid's range (or NaN) fails its block.
        let out_of_range = real!(sums.dtype(), "distributed sum", |T| {
            let mut rest = &mut self.values[..dim];
            let mut blocks = Vec::new();
            for values in sums.values::<T>("distributed sum")? {
                let (acc, tail) = rest.split_at_mut(values.len());
                rest = tail;
                blocks.extend(acc.chunks_mut(ROUND_BLOCK).zip(values.chunks(ROUND_BLOCK)));
            }
            Ok(blocks.into_par_iter().find_map_any(|(acc, values)| {
                for (a, &v) in acc.iter_mut().zip(values) {
                    let q = (v.wide() * scale).round();
                    if q.is_nan() || q.abs() > PART_LIMIT {
                        return Some(v.wide());
                    }
                    *a += q as i64;
                }
                None
            }))
        })?;
        if let Some(v) = out_of_range {
            return Err(Error::Usage(format!(
                "a clipped sum {v} is beyond the distributed sum's fixed-point range (|v| ≤ \
                 2^20·C): lower the expected batch size per part or raise dist_parts"
            )));
        }
        // The loss on its own grid (2^-32), the counts exact.
        let loss = (stats.loss_sum * 2f64.powi(FIXED_POINT_BITS)).round();
        if loss.is_nan() || loss.abs() > PART_LIMIT {
            return Err(Error::Usage(format!(
                "a part's loss sum {} is beyond the fixed-point range",
                stats.loss_sum
            )));
        }
        let counts = [stats.batch_size, stats.clipped, stats.nonfinite];
        self.values[dim] += loss as i64;
        for (slot, count) in self.values[dim + 1..].iter_mut().zip(counts) {
            *slot += count as i64;
        }
        Ok(())
    }

    /// The integers, for the all-reduce.
    pub fn values_mut(&mut self) -> &mut [i64] {
        &mut self.values
    }

    /// The (reduced) sums back in `sizes` and `dtype`, and the statistics.
    pub fn into_sums(
        self,
        sizes: &[usize],
        dtype: candle_core::DType,
    ) -> Result<(Sums, StepStats)> {
        use rayon::prelude::*;
        let dim = self.values.len() - STATS;
        if sizes.iter().sum::<usize>() != dim {
            return Err(Error::Tensor(format!(
                "{dim} reduced values for parameters of {} values",
                sizes.iter().sum::<usize>()
            )));
        }
        let mut sums = Sums::zeros(sizes, dtype)?;
        let scale = self.scale;
        real!(dtype, "distributed sum", |T| {
            let mut rest = &self.values[..dim];
            let mut blocks = Vec::new();
            for values in sums.values_mut::<T>("distributed sum")? {
                let (fixed, tail) = rest.split_at(values.len().min(rest.len()));
                rest = tail;
                blocks.extend(
                    values
                        .chunks_mut(ROUND_BLOCK)
                        .zip(fixed.chunks(ROUND_BLOCK)),
                );
            }
            blocks.into_par_iter().for_each(|(values, fixed)| {
                for (v, &q) in values.iter_mut().zip(fixed) {
                    *v = T::of(q as f64 / scale);
                }
            });
            Ok(())
        })?;
        let stats = StepStats {
            loss_sum: self.values[dim] as f64 * 2f64.powi(-FIXED_POINT_BITS),
            batch_size: self.values[dim + 1] as usize,
            clipped: self.values[dim + 2] as usize,
            nonfinite: self.values[dim + 3] as usize,
        };
        Ok((sums, stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(size: usize) -> Vec<ThreadGroup> {
        ThreadGroup::new(size, Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn a_thread_group_adds_every_ranks_vector() {
        let members = group(3);
        let sums: Vec<Vec<i64>> = std::thread::scope(|scope| {
            let running: Vec<_> = members
                .iter()
                .map(|member| {
                    scope.spawn(move || {
                        let mut all = Vec::new();
                        // Several reductions in a row: generations must not mix.
                        for round in 0..5i64 {
                            let r = member.rank() as i64;
                            let mut v = vec![r + round, 10 * r, -r];
                            member.all_reduce_sum(&mut v).unwrap();
                            all.extend(v);
                        }
                        all
                    })
                })
                .collect();
            running.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let expected: Vec<i64> = (0..5).flat_map(|round| [3 + 3 * round, 30, -3]).collect();
        for sum in sums {
            assert_eq!(sum, expected);
        }
    }

    #[test]
    fn a_rank_that_leaves_fails_the_others_instead_of_hanging() {
        let mut members = group(2);
        let second = members.pop().unwrap();
        drop(second);
        let mut v = vec![1];
        let error = members[0].all_reduce_sum(&mut v).unwrap_err().to_string();
        assert!(error.contains("left the group"), "{error}");
    }

    #[test]
    fn parts_cover_the_batch_once_whatever_the_ranks() {
        let batch: Vec<usize> = (100..137).collect();
        for ranks in [1usize, 2, 3, 8] {
            let mut seen = Vec::new();
            for member in group(ranks) {
                let dist = Distributed::new(Box::new(member), 8).unwrap();
                for part in dist.my_parts(&batch) {
                    seen.extend_from_slice(part);
                }
            }
            seen.sort_unstable();
            assert_eq!(seen, batch, "{ranks} ranks");
        }
        let error = Distributed::new(Box::new(Solo), 0)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("dist_parts"), "{error}");
    }

    #[test]
    fn fixed_point_sums_round_trip_within_half_a_grid_step() {
        let sizes = [3usize, 2];
        let sums = Sums::F64(vec![vec![0.25, -1.5, 3.0e-9], vec![7.0, -0.1]]);
        let stats = StepStats {
            batch_size: 5,
            loss_sum: 2.5,
            clipped: 2,
            nonfinite: 0,
        };
        let mut fixed = FixedSums::new(&sizes, 2.0).unwrap();
        fixed.add_part(&sums, &stats).unwrap();
        fixed.add_part(&sums, &stats).unwrap();
        let (back, reduced) = fixed.into_sums(&sizes, candle_core::DType::F64).unwrap();
        let Sums::F64(back) = back else { panic!() };
        let step = 2.0 / 2f64.powi(32);
        for (b, s) in back.concat().iter().zip([0.25, -1.5, 3.0e-9, 7.0, -0.1]) {
            assert!((b - 2.0 * s).abs() <= step, "{b} against {}", 2.0 * s);
        }
        assert_eq!(reduced.batch_size, 10);
        assert_eq!(reduced.clipped, 4);
        assert_eq!(reduced.loss_sum, 5.0);
        // A value past the range is refused, not wrapped.
        let huge = Sums::F64(vec![vec![1e12, 0.0, 0.0], vec![0.0, 0.0]]);
        let mut fixed = FixedSums::new(&sizes, 1.0).unwrap();
        assert!(fixed.add_part(&huge, &stats).is_err());
    }

    #[test]
    fn the_clip_factor_pays_for_the_rounding_of_every_part() {
        let dist = Distributed::new(Box::new(Solo), 8).unwrap();
        let d = 407_050usize;
        let c = dist.clip_factor(d);
        // C' + S·√d·C/2^32 = C.
        assert!((c + 8.0 * (d as f64).sqrt() / 2f64.powi(32) - 1.0).abs() < 1e-15);
        assert!(c < 1.0 && c > 0.999_998);
    }
}
