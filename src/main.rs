//! The `dptrain` binary: parse the command line, run it, print, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dptrain::Error;
use dptrain::cli::{Cli, run};

/// mimalloc, kept from returning freed memory to the OS (`runtime::configure_process`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // SAFETY: the first statement of main; no other thread exists yet.
    unsafe { dptrain::runtime::configure_process() };
    let cli = Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => tracing::Level::WARN,
        (false, 0) => tracing::Level::INFO,
        (false, 1) => tracing::Level::DEBUG,
        (false, _) => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(level)
        .without_time()
        .with_target(cli.verbose > 0)
        .with_level(cli.verbose > 0)
        .init();
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
