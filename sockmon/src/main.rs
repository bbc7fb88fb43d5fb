//! The `sockmon` binary: parse → init logging → dispatch.

use std::process::ExitCode;

use clap::Parser as _;
use sockmon::{
    cli::{Cli, Command},
    cmd, logging,
};

fn main() -> ExitCode {
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
                Command::Daemon(_) => unreachable!("handled above"),
            }
        }
    }
}
