//! `cargo xtask`: everything a fresh clone needs, in one place.
//!
//! - `setup`: install what building and testing need and is missing (the
//!   nightly `rust-src` component, `bpf-linker` built against the nightly's
//!   own LLVM and cached, Debian packages used by tests);
//! - `test`: setup, then fmt, clippy and every test layer (as root), on this
//!   machine's kernel and inside Debian's kernels under qemu (`guest/`);
//! - `watch`: setup, build, run `sockmon watch` as root;
//! - `bench`: benchmarks against bare runs, bpftrace, `ss` and `lsof` (the
//!   `sockmon-bench` crate; `bench.rs` prepares, re-executes and boots guests);
//! - `install`: build in release mode, install the binary, the systemd unit and the config;
//! - `package`: the Debian package, with cargo-deb (see `package.rs`).

mod bench;
mod guest;
mod install;
mod layers;
mod package;
mod run;
mod setup;
mod test;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "sockmon project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the toolchain parts and packages the build and tests need.
    Setup,
    /// Setup, then check formatting and lints and run every test (needs root; uses sudo otherwise).
    Test(test::TestArgs),
    /// Setup, build in release mode and run `sockmon watch` (as root) with these arguments.
    Watch {
        /// Arguments for `sockmon watch`, e.g. `-- --json --port 443`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Benchmarks, side by side: overhead, completeness, lookup, memory, start-up (as root).
    Bench(sockmon_bench::BenchArgs),
    /// Build in release mode; install the binary, the systemd unit and the default config.
    Install(install::InstallArgs),
    /// Build the Debian package (.deb) with cargo-deb: binary, unit, config, man pages, completions.
    Package(package::PackageArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all().and_then(|()| setup::packaging()),
        Command::Test(args) => test::run(&args),
        Command::Watch { args } => watch::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Install(args) => install::run(&args),
        Command::Package(args) => package::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
