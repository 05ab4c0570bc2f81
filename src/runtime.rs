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

/// mimalloc's `mi_option_purge_delay` (mimalloc.h of v3, the version libmimalloc-sys builds: the option
/// after `mi_option_deprecated_eager_commit_delay` = 14; libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Applies the settings.
///
/// - The binary and the benches allocate with mimalloc (`#[global_allocator]`), told never
///   to purge freed memory: a training step allocates and frees the same large buffers
///   every step (im2col patches, attention maps: tens to hundreds of MB), and returning
///   them to the OS made every step pay page faults and the kernel's zeroing of fresh
///   pages. With glibc's malloc that was a third of a ResNet-20 step even with its
///   thresholds raised (below), because a worker thread's arena maps anything above
///   64 MiB afresh. Measured with `dptrain bench` on 2 cores, private samples/s, glibc →
///   mimalloc: ResNet-20-GN 75-88 → 235-248, transformer 137 → 343, convnet-GN 722 →
///   1,125, the MNIST cnn 12,500-13,000 → 17,500. The price is peak RSS on the ResNet
///   (2.8 GB, as with glibc; one glibc arena gave 2.1 GB at 186 samples/s).
/// - glibc's malloc (C code, and a caller that keeps the system allocator) keeps freed
///   memory in the process: mmap only above 1 GiB, no trimming.
/// - candle's pool does not spin ([`CANDLE_SPIN_LIMIT`]) unless
///   `CANDLE_BARRIER_POOL_SPIN_LIMIT` is set.
///
/// # Safety
/// Call it first thing in `main`, before any other thread exists: it sets an environment
/// variable, which is not thread-safe.
pub unsafe fn configure_process() {
    keep_freed_memory();
    // SAFETY: no other thread runs yet (the caller's contract).
    unsafe {
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", CANDLE_SPIN_LIMIT);
        }
        if let Some(threads) = threads_per_local_rank() {
            std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        }
    }
}

/// The allocator part of [`configure_process`], safe to call with other threads running (a
/// library loaded into another program, as the Python package is): mimalloc never purges
/// freed memory, glibc's malloc keeps it too.
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set and mallopt only change allocator tunables; both are
    // thread-safe.
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Under an MPI launcher with several ranks on this machine (`mpirun -np W`), each rank's
/// share of the cores (at least one), so that W ranks do not run W times as many threads
/// as there are cores; None when RAYON_NUM_THREADS is set or no launcher says so. rayon's
/// and candle's pools both read RAYON_NUM_THREADS.
fn threads_per_local_rank() -> Option<usize> {
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        return None;
    }
    // OpenMPI, MPICH/Hydra.
    let local: usize = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.parse().ok())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (local > 1).then(|| (cores / local).max(1))
}

#[cfg(test)]
mod tests {
    use super::MI_OPTION_PURGE_DELAY;

    #[test]
    fn the_purge_delay_index_is_the_option_whose_default_is_1000_ms() {
        // mimalloc v3's options.c sets purge_delay's default to 1000 (ms; its header still
        // says 10); neither neighbouring option has that default, so a wrong index fails
        // here (unless the environment sets it).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option; mimalloc initialises itself on first use.
            let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(value, 1000);
            let neighbour = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY - 1) };
            assert_ne!(neighbour, 1000);
            let next = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 1) };
            assert_ne!(next, 1000);
        }
    }
}
