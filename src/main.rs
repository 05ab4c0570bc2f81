//! The `dptrain` binary: parse the command line, run it, print, map errors to exit codes.

use std::process::ExitCode;

/// mimalloc keeps the large, short-lived tensors of a training step in reused memory; with
/// glibc's allocator every step paid for page faults and zeroing of fresh pages.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use dptrain::Error;
use dptrain::cli::{Cli, run};

fn main() -> ExitCode {
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
