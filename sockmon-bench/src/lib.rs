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
//! Parts (`--part`, one module each under [`parts`]): `rate`
//! (connection-rate overhead and syscall tax), `completeness` (events
//! delivered at full speed, ring-size sweep), `lookup` (who owns this
//! four-tuple: API, CLI, `ss`, `lsof`), `memory` (daemon bytes per socket),
//! `startup` (time to READY with sockets open, against `ss -tunap`), `soak`
//! (minutes of churn from short-lived processes: nothing missed, memory
//! given back, table agrees with `ss`), `top` (`sockmon top`'s CPU in a real
//! terminal at set event rates, reading the daemon's sums against reading
//! every event).
//!
//! `--quick` runs each part briefly and only checks that each produced
//! numbers; the full run also rewrites the generated section of
//! `BENCHMARKS.md`. Raw numbers go to `target/bench/`.
//!
//! This crate measures; the task runner (xtask) installs what it uses,
//! builds sockmon and itself in release mode, re-executes that build, boots
//! the Debian guests, and tells it where things are ([`Paths`]). Sockets
//! held by other processes and `ss`'s view of them come from
//! `sockmon-testkit`, which the integration tests share.

mod api;
mod cli;
mod events;
mod fmt;
pub mod parts;
mod procs;
mod report;
mod stats;
mod tools;
mod tracers;
mod worker;

use std::time::Instant;

use anyhow::bail;

pub use cli::{BenchArgs, BenchKernel, WorkerCmd};
pub use report::update_guest_section;
pub use tools::Paths;
pub use worker::WorkerArgs;

use parts::{Options, Plan};
use report::{Machine, Results};
use tools::Tools;

/// Measures on this machine (every part asked for, the report printed and
/// written) or, with `--in-guest`, the rate part inside a Debian guest
/// (its markdown on stdout only). `--kernel debian-*` on the host is the
/// task runner's: it boots the guest, which runs this with `--in-guest`.
pub fn run(args: &BenchArgs, paths: &Paths) -> anyhow::Result<()> {
    let tools = Tools::new(args.sockmon, paths);
    let plan = Plan::new(&Options {
        quick: args.quick,
        rounds: args.rounds,
        guest: args.in_guest,
    });
    if args.in_guest {
        return in_guest(plan, &tools, paths);
    }
    let names: Vec<&str> = if args.parts.is_empty() {
        parts::NAMES.to_vec()
    } else {
        args.parts.iter().map(String::as_str).collect()
    };
    let started = Instant::now();
    let machine = Machine::probe(&tools, &paths.root)?;
    let mut results = Results::new(machine, plan.clone(), tools.sockmon.mode);
    for name in names {
        if !results.parts.run(name, &plan.parts, &tools) {
            bail!("no part is called {name:?}");
        }
    }
    results.finish(started.elapsed());
    let written = report::write(&results, &paths.root)?;
    println!("{}", report::markdown(&results));
    for path in written {
        eprintln!("xtask bench: wrote {}", path.display());
    }
    results.check_numbers()
}

/// Inside the guest: the rate and syscall-tax part, its markdown on stdout
/// (the guest's plan sends it to the console); nothing is written (the
/// guest's view of the tree is read-only).
fn in_guest(plan: Plan, tools: &Tools, paths: &Paths) -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = Machine::probe(tools, &paths.root)?;
    let mut results = Results::new(machine, plan.clone(), tools.sockmon.mode);
    results.parts.rate.run(&plan.parts.rate, tools);
    results.finish(started.elapsed());
    print!("{}", report::guest_markdown(&results));
    let rate = &results.parts.rate.outcome;
    if rate.done().is_none() {
        bail!(
            "the rate part failed: {}",
            rate.why_not().unwrap_or_default()
        );
    }
    Ok(())
}

/// A workload process (`xtask bench worker JOB`, started by the benchmark
/// itself): runs the job and prints what it measured.
pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    worker::run(args)
}
