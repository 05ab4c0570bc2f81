//! Process-wide settings for fast CPU training, applied once at start-up by the binary and
//! the benches (a library must not change them behind its caller's back).

/// Worker spin budget of candle's thread pool, unless the environment sets one.
///
/// candle's element-wise ops run on its own pool, whose workers spin 25,000 rounds after
/// each op before they sleep, while the matrix products run on rayon's pool. With as many
/// threads per pool as cores (two here), a spinning candle worker holds a core that a rayon
/// thread needs: the cnn's step was up to 1.7x slower than with no spinning (measured with
/// `dptrain bench`, and much worse on a busy machine).
pub const CANDLE_SPIN_LIMIT: &str = "0";

/// Applies the settings.
///
/// - glibc keeps freed memory in the process: a training step allocates and frees the
///   same large buffers every step, and glibc's defaults (mmap above 128 KiB, trim on free)
///   made every step pay page faults and the zeroing of fresh pages (a quarter of the
///   mlp's step).
/// - candle's pool does not spin ([`CANDLE_SPIN_LIMIT`]) unless
///   `CANDLE_BARRIER_POOL_SPIN_LIMIT` is set.
///
/// # Safety
/// Call it first thing in `main`, before any other thread exists: it sets an environment
/// variable, which is not thread-safe.
pub unsafe fn configure_process() {
    // SAFETY: no other thread runs yet (the caller's contract); mallopt only changes
    // allocator tunables.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
        }
    }
}
