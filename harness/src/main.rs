//! `mnfuzz`: the library's command line ([`harness::cli`]) and `hunt`,
//! which times the engines on this suite's own planted bugs. Exit codes:
//! 0 clean, 1 divergence found, 2 bad input or usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod hunt;

#[derive(Parser)]
#[command(
    name = "mnfuzz",
    version,
    about = "Fuzzing and differential testing of mmu interval notifiers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(flatten)]
    Common(harness::cli::Cmd),
    /// Time each engine to the first detection of planted bugs.
    Hunt(hunt::HuntArgs),
}

fn main() -> ExitCode {
    // Before anything else (and before any thread): the linux target's
    // child processes start as this binary.
    harness::linux::zygote_main_if_requested();
    harness::cli::exit(match Cli::parse().cmd {
        Cmd::Common(cmd) => harness::cli::run_cmd(cmd),
        Cmd::Hunt(args) => hunt::main(args),
    })
}
