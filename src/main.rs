//! The `dptrain` binary: parse the command line, run it, print, map errors to exit codes.

use std::process::ExitCode;

/// Keeps freed memory in the process: a training step allocates and frees the same large
/// tensors every step, and glibc's defaults (mmap above 128 KiB, trim on free) made every
/// step pay for page faults and the zeroing of fresh pages (a quarter of the mlp's time).
fn keep_freed_memory() {
    // SAFETY: mallopt only changes allocator tunables; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

use clap::Parser;
use dptrain::Error;
use dptrain::cli::{Cli, run};

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(output) => {
            if cli.json {
                println!("{}", output.json);
            } else {
                print!("{}", output.render_table());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                Error::Usage(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
