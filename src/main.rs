//! The `dptrain` binary: parse the command line, run it, print, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use dptrain::Error;
use dptrain::cli::{Cli, run};

fn main() -> ExitCode {
    // SAFETY: the first statement of main; no other thread exists yet.
    unsafe { dptrain::runtime::configure_process() };
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
