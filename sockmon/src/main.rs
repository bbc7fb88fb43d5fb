//! The `sockmon` binary: parse → init logging → dispatch.

use std::process::ExitCode;

use clap::Parser as _;
use sockmon::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Watch(args) => sockmon::cmd::watch::run(args.resolve()),
    }
}

/// `RUST_LOG` controls verbosity (default: warnings); logs go to stderr.
/// Records from the kernel programs (aya-log) arrive through `log` and are
/// bridged into `tracing`.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
