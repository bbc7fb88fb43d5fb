//! The `sockmon` binary: parse → init logging → dispatch.

#![expect(
    unused_crate_dependencies,
    reason = "the binary is a thin shell over the library, which uses the dependencies"
)]

use std::process::ExitCode;

use clap::Parser as _;
use sockmon::{
    cli::{Cli, Command},
    cmd, logging,
};

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let socket = cli.socket_path();
    match cli.command {
        Command::Daemon(args) => {
            let log = logging::init("info");
            cmd::daemon::run(args, cli.socket, log)
        }
        command => {
            let _ = logging::init("warn");
            match command {
                Command::Watch(args) => cmd::watch::run(args.resolve(), &socket, cli.no_daemon),
                Command::Ls(args) => cmd::ls::run(&args, &socket, cli.no_daemon),
                Command::Lookup(args) => cmd::lookup::run(&args, &socket, cli.no_daemon),
                Command::Status(args) => cmd::status::run(&args, &socket),
                Command::Modes(args) => cmd::modes::run(&args),
                Command::Top(args) => cmd::top::run(&args, &socket, cli.no_daemon),
                Command::Generate(args) => cmd::generate::run(&args),
                Command::Audit(args) => cmd::audit::run(&args),
                Command::Baseline(args) => cmd::baseline::run(&args),
                Command::Policy(args) => cmd::policy::run(&args),
                Command::Daemon(_) => unreachable!("handled above"),
            }
        }
    }
}

/// glibc raises its mmap threshold each time a large block is freed, after
/// which large blocks (the socket table's hash tables as they grow) come
/// from the heap and their memory is not given back once they are replaced.
/// A fixed threshold keeps every large block mmapped: freed, it is returned
/// at once, so the daemon's resident size follows its table.
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any thread exists.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
}
