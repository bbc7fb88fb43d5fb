//! The command line of `cargo xtask bench`, kept beside the parts it names:
//! the task runner mounts [`BenchArgs`] as its `bench` subcommand and hands
//! it to [`crate::run`] (or, for the hidden `worker`, to [`crate::worker`]).

use clap::{Args, Subcommand, ValueEnum, builder::PossibleValuesParser};

use crate::{parts, tracers::SockmonMode, worker::WorkerArgs};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run each part briefly and only check that each produced numbers.
    #[arg(long)]
    pub quick: bool,
    /// Only these parts (repeatable; default: all).
    #[arg(long = "part", value_parser = PossibleValuesParser::new(parts::NAMES))]
    pub parts: Vec<String>,
    /// Rounds of every part that repeats (default: 7 for rate, 5 for memory
    /// and start-up; quick: 5, 1 and 3).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub rounds: Option<u16>,
    /// Which sockmon counts as "attached" (default: the daemon if this
    /// sockmon has it, else `watch --json`).
    #[arg(long, value_enum)]
    pub sockmon: Option<SockmonMode>,
    /// Where to measure: this machine's kernel, or the rate and syscall-tax
    /// part inside a Debian kernel under qemu (every attach mode, bare and
    /// bpftrace side by side; ratios only: software emulation distorts
    /// absolute speed). A guest run rewrites its own section of BENCHMARKS.md.
    #[arg(long, value_enum, default_value = "host")]
    pub kernel: BenchKernel,
    /// vCPUs of the guest (`--kernel debian-*`).
    #[arg(long, default_value_t = 2)]
    pub guest_cpus: u32,
    /// Seconds the guest may run before it is killed.
    #[arg(long, default_value_t = 5400)]
    pub guest_timeout: u64,
    /// Set by the guest's plan: this run is inside a guest.
    #[arg(long, hide = true)]
    pub in_guest: bool,
    #[command(subcommand)]
    pub worker: Option<WorkerCmd>,
}

#[derive(Subcommand, Debug)]
pub enum WorkerCmd {
    /// A workload process (started by the benchmark itself).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Which kernel `bench` measures on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BenchKernel {
    Host,
    #[value(name = "debian-6.1")]
    Debian61,
    #[value(name = "debian-6.12")]
    Debian612,
}
