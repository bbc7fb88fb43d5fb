//! `cargo xtask bench`: what sockmon costs and whether it misses anything,
//! each figure measured side by side with what a user would run instead.
//!
//! Why this shape: the machines are shared and noisy (2 vCPUs, other jobs),
//! so no absolute time is ever compared across runs. Every comparison is
//! made inside one run, interleaved (A B A B, rotating the order per round),
//! and reported as the median with min–max of per-round ratios
//! ([`stats`]). Workloads run in their own process (`xtask bench worker`,
//! from the release build) so the measurer never competes inside them.
//!
//! Parts (`--part`): `rate` (connection-rate overhead and syscall tax),
//! `completeness` (events delivered at full speed, ring-size sweep),
//! `lookup` (who owns this four-tuple: API, CLI, `ss`, `lsof`), `memory`
//! (daemon bytes per socket), `startup` (time to READY with sockets open,
//! against `ss -tunap`), `soak` (minutes of churn from short-lived
//! processes: nothing missed, memory given back, table agrees with `ss`),
//! `top` (`sockmon top`'s CPU in a real terminal at set event rates,
//! reading the daemon's sums against reading every event).
//!
//! `--quick` runs each part briefly and only checks that each produced
//! numbers; the full run also rewrites the generated section of
//! `BENCHMARKS.md`. Raw numbers go to `target/bench/`.

mod api;
mod bpfprof;
mod complete;
mod holder;
mod load;
mod lookup;
mod memory;
mod procs;
mod rate;
mod report;
mod results;
mod soak;
mod startup;
mod stats;
mod targets;
mod top;
mod tracers;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use crate::{
    run::{cargo, exec, is_root, root},
    setup,
};
use load::{Job, Measured};
use tracers::{SockmonCmd, SockmonMode};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run each part briefly and only check that each produced numbers.
    #[arg(long)]
    pub quick: bool,
    /// Only these parts (repeatable; default: all).
    #[arg(long = "part", value_enum)]
    pub parts: Vec<Part>,
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
    Worker(load::WorkerArgs),
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Part {
    Rate,
    Completeness,
    Lookup,
    Memory,
    Startup,
    Soak,
    Top,
}

/// How long and how often each part measures.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Inside a Debian guest: every attach mode side by side, no BPF profile.
    pub guest: bool,
    pub rounds: usize,
    /// Tries of a rate round while another process has syscall tracepoints
    /// attached, before the round is kept anyway (and flagged).
    pub round_tries: usize,
    /// How long to wait for other processes' syscall tracers to go before
    /// measuring anyway.
    pub quiet_wait_s: f64,
    pub warmup_s: f64,
    pub rate_s: f64,
    pub syscall_s: f64,
    pub flood_s: f64,
    pub rings_kib: Vec<u32>,
    pub lookup_conns: usize,
    pub api_samples: usize,
    pub cli_samples: usize,
    pub ss_samples: usize,
    pub lsof_samples: usize,
    /// Live sockets at which memory is measured.
    pub memory_sockets: Vec<usize>,
    pub memory_rounds: usize,
    /// Sockets open when the daemon starts.
    pub startup_sockets: Vec<usize>,
    pub startup_rounds: usize,
    /// How long the soak keeps starting churn processes.
    pub soak_s: f64,
    /// Churn processes running at a time.
    pub soak_procs: usize,
    /// TCP connections and UDP sends (each from a fresh socket) per churn
    /// process.
    pub soak_conns: u64,
    pub soak_udp: u64,
    /// Each window of `sockmon top` under a load, and how many per load and way.
    pub top_s: f64,
    pub top_rounds: usize,
}

impl Plan {
    fn new(quick: bool, rounds: Option<u16>) -> Self {
        let mut p = if quick {
            Self {
                quick,
                guest: false,
                rounds: 5,
                round_tries: 1,
                quiet_wait_s: 0.0,
                warmup_s: 0.1,
                rate_s: 0.3,
                syscall_s: 0.3,
                flood_s: 3.0,
                rings_kib: vec![4096, 65536],
                lookup_conns: 1000,
                api_samples: 300,
                cli_samples: 20,
                ss_samples: 20,
                lsof_samples: 3,
                memory_sockets: vec![0, 5000],
                memory_rounds: 1,
                startup_sockets: vec![0, 5000],
                startup_rounds: 3,
                soak_s: 5.0,
                soak_procs: 4,
                soak_conns: 200,
                soak_udp: 50,
                top_s: 2.0,
                top_rounds: 1,
            }
        } else {
            Self {
                quick,
                guest: false,
                rounds: 7,
                round_tries: 3,
                quiet_wait_s: 120.0,
                warmup_s: 0.3,
                rate_s: 2.0,
                syscall_s: 1.5,
                flood_s: 10.0,
                rings_kib: vec![1024, 4096, 16384, 65536],
                lookup_conns: 10_000,
                api_samples: 5000,
                cli_samples: 300,
                ss_samples: 300,
                lsof_samples: 30,
                memory_sockets: vec![0, 10_000, 100_000],
                memory_rounds: 5,
                startup_sockets: vec![0, 10_000, 100_000],
                startup_rounds: 5,
                soak_s: 180.0,
                soak_procs: 4,
                soak_conns: 200,
                soak_udp: 50,
                top_s: 10.0,
                top_rounds: 3,
            }
        };
        if let Some(r) = rounds {
            p.rounds = usize::from(r);
            p.memory_rounds = usize::from(r);
            p.startup_rounds = usize::from(r);
        }
        p
    }
}

/// The binaries a run uses.
#[derive(Clone, Debug)]
pub struct Tools {
    pub sockmon: SockmonCmd,
    /// The release build of xtask, re-executed for workloads.
    pub worker: PathBuf,
    pub cores: usize,
}

impl Tools {
    /// Runs a workload process to completion and returns what it measured.
    pub fn run_worker(&self, job: &Job) -> anyhow::Result<Measured> {
        let mut cmd = self.worker_command(job);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut guard = procs::ChildGuard::spawn(&mut cmd)?;
        // One short line: it fits the pipe, so reading after the exit is safe.
        let stdout = guard.child_stdout();
        let timeout = Duration::from_secs_f64(job.duration_s() + 120.0);
        let status = guard.wait_timeout(timeout)?;
        if !status.success() {
            bail!("{} failed: {status}", guard.name());
        }
        let out = read_all(stdout)?;
        let line = out.lines().last().context("the workload printed nothing")?;
        serde_json::from_str(line).with_context(|| format!("bad workload output {line:?}"))
    }

    pub fn worker_command(&self, job: &Job) -> Command {
        let mut cmd = Command::new(&self.worker);
        cmd.args(["bench", "worker"]).args(job.to_args());
        cmd
    }
}

fn read_all(r: Option<std::process::ChildStdout>) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s)?;
    }
    Ok(s)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(WorkerCmd::Worker(w)) = &args.worker {
        return load::run(w);
    }
    if !is_root() {
        bail!(
            "the benchmarks load eBPF programs and hold 100,000 sockets: run them as root (sudo -E cargo xtask bench)"
        );
    }
    if std::env::var_os(PREPARED).is_none() {
        prepare()?;
        return reexec_release();
    }
    if args.kernel != BenchKernel::Host && !args.in_guest {
        return bench_in_guest(args);
    }
    let tools = tools(args.sockmon);
    let mut plan = Plan::new(args.quick, args.rounds);
    if args.in_guest {
        plan.guest = true;
        return guest_part(&plan, &tools);
    }
    let parts = if args.parts.is_empty() {
        vec![
            Part::Rate,
            Part::Completeness,
            Part::Lookup,
            Part::Memory,
            Part::Startup,
            Part::Soak,
            Part::Top,
        ]
    } else {
        args.parts.clone()
    };
    let started = Instant::now();
    let machine = report::Machine::probe(&tools)?;
    let mut results = report::Results::new(machine, plan.clone(), tools.sockmon.mode);
    for part in parts {
        eprintln!("xtask bench: part {part:?}");
        run_part(part, &plan, &tools, &mut results);
    }
    results.finish(started.elapsed());
    let written = report::write(&results, &root())?;
    println!("{}", report::markdown(&results));
    for path in written {
        eprintln!("xtask bench: wrote {}", path.display());
    }
    results.check_numbers()
}

/// `--kernel debian-*` on the host: boots the guest, which runs
/// [`guest_part`], and puts its report in BENCHMARKS.md.
fn bench_in_guest(args: &BenchArgs) -> anyhow::Result<()> {
    let guest = match args.kernel {
        BenchKernel::Debian61 => crate::guest::Guest::Debian61,
        BenchKernel::Debian612 => crate::guest::Guest::Debian612,
        BenchKernel::Host => unreachable!("the host is measured in place"),
    };
    let run = crate::guest::bench(
        guest,
        &release_xtask(),
        args.rounds.unwrap_or(5),
        args.guest_cpus,
        Duration::from_secs(args.guest_timeout),
    )?;
    println!("{}", run.markdown);
    let path = root().join("BENCHMARKS.md");
    report::update_guest_section(&path, guest.name(), &run.package, run.wall, &run.markdown)?;
    eprintln!(
        "xtask bench: wrote the {} section of {}",
        guest.name(),
        path.display()
    );
    Ok(())
}

/// Inside the guest: the rate and syscall-tax part, its markdown on stdout
/// (the guest's plan sends it to the console); nothing is written (the
/// guest's view of the tree is read-only).
fn guest_part(plan: &Plan, tools: &Tools) -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = report::Machine::probe(tools)?;
    let mut results = report::Results::new(machine, plan.clone(), tools.sockmon.mode);
    run_part(Part::Rate, plan, tools, &mut results);
    results.finish(started.elapsed());
    print!("{}", report::guest_markdown(&results));
    if results.rate.done().is_none() {
        bail!(
            "the rate part failed: {}",
            results.rate.why_not().unwrap_or_default()
        );
    }
    Ok(())
}

fn run_part(part: Part, plan: &Plan, tools: &Tools, results: &mut report::Results) {
    use report::Outcome;
    match part {
        Part::Rate => results.rate = Outcome::from(rate::run(plan, tools)),
        Part::Completeness => results.completeness = Outcome::from(complete::run(plan, tools)),
        Part::Lookup => results.lookup = daemon_part(tools, || lookup::run(plan, tools)),
        Part::Memory => results.memory = daemon_part(tools, || memory::run(plan, tools)),
        Part::Startup => results.startup = daemon_part(tools, || startup::run(plan, tools)),
        Part::Soak => results.soak = daemon_part(tools, || soak::run(plan, tools)),
        Part::Top => results.top = daemon_part(tools, || top::run(plan, tools)),
    }
}

/// Parts that need `sockmon daemon` are skipped, saying why, without it.
fn daemon_part<T>(tools: &Tools, f: impl FnOnce() -> anyhow::Result<T>) -> report::Outcome<T> {
    if tools.sockmon.mode != SockmonMode::Daemon {
        return report::Outcome::Skipped(format!(
            "needs `sockmon daemon`, which {} does not have yet",
            tools.sockmon.bin.display()
        ));
    }
    report::Outcome::from(f())
}

/// Set in the environment of the release build this run re-executes.
const PREPARED: &str = "SOCKMON_BENCH_PREPARED";

/// Installs what is missing and builds sockmon and xtask in release mode.
fn prepare() -> anyhow::Result<()> {
    setup::all()?;
    setup::debian_packages(&[
        ("bpftrace", "bpftrace"),
        ("lsof", "lsof"),
        ("iproute2", "ss"),
        ("bpftool", "bpftool"),
    ])?;
    exec(cargo().args(["build", "--release", "-p", "sockmon", "-p", "xtask"]))
}

/// Runs the same command line with the release build of xtask: the
/// measuring side (stream readers, API clients) must be as quick as the
/// workloads, which an unoptimised build is not.
fn reexec_release() -> anyhow::Result<()> {
    let mut cmd = Command::new(release_xtask());
    cmd.args(std::env::args_os().skip(1)).env(PREPARED, "1");
    exec(&mut cmd)
}

fn release_xtask() -> PathBuf {
    root().join("target/release/xtask")
}

/// The binaries of this run and the sockmon mode (detected unless given).
fn tools(mode: Option<SockmonMode>) -> Tools {
    let bin = root().join("target/release/sockmon");
    let mode = mode.unwrap_or_else(|| SockmonMode::detect(&bin));
    eprintln!("xtask bench: sockmon attached = {mode:?}");
    Tools {
        sockmon: SockmonCmd { bin, mode },
        worker: release_xtask(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
    }
}

/// Runs a command to completion with its output discarded; returns its
/// wall time (spawn to exit) and whether it succeeded.
pub fn time_command(cmd: &mut Command) -> anyhow::Result<(Duration, bool)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let t0 = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", crate::run::describe(cmd)))?;
    Ok((t0.elapsed(), status.success()))
}
