//! `lru-fuzz`: mnfuzz's command line with the `lru` strategy registered.
//! `lru-fuzz fuzz --target mirror --strategy lru` fuzzes it; replay,
//! minimize, explain and soak (`--strategy lru`) work on it as on a
//! built-in strategy.

use std::process::ExitCode;

fn main() -> ExitCode {
    if let Err(e) = own_strategy::register() {
        eprintln!("lru-fuzz: {e}");
        return ExitCode::from(2);
    }
    harness::cli::main()
}
