//! The `dptrain` binary: parse the command line, run it, print, map errors to exit codes.

use std::io::Write;
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
            let text = match cli.json {
                true => format!("{}\n", output.json),
                false => output.render_table(),
            };
            // A reader that closed the pipe (`| head`) is not an error of ours; any other
            // failure to write is reported, never a panic.
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("error: writing the result to standard output: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
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
