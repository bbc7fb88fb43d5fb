//! `cargo xtask bench`: the task runner's side of the benchmarks, whose
//! parts, measurements and report are the `sockmon-bench` crate.
//!
//! Here is only what needs the task runner: installing what the benchmarks
//! use and building sockmon and xtask in release mode; re-executing that
//! release build (the measuring side, stream readers and API clients, must
//! be as quick as the workloads, which an unoptimised build is not); for
//! `--kernel debian-*`, booting the guest (`guest`) and writing its report
//! into BENCHMARKS.md; and routing the hidden `bench worker JOB` (the
//! workloads, which the release build runs in processes of their own) to
//! the crate.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sockmon_bench::{BenchArgs, BenchKernel, Paths, WorkerCmd};

use crate::{
    guest::{self, Guest},
    run::{cargo, exec, is_root, root},
    setup,
};

/// Set in the environment of the release build this run re-executes (and
/// by the guest's plan, `guest/bench.sh`, which runs the host's build).
const PREPARED: &str = "SOCKMON_BENCH_PREPARED";

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(WorkerCmd::Worker(w)) = &args.worker {
        return sockmon_bench::worker(w);
    }
    if !is_root() {
        bail!(
            "the benchmarks load eBPF programs and hold 100,000 sockets: run them as root (sudo -E cargo xtask bench)"
        );
    }
    if env::var_os(PREPARED).is_none() {
        prepare()?;
        return reexec_release();
    }
    if args.kernel != BenchKernel::Host && !args.in_guest {
        return bench_in_guest(args);
    }
    let release = release_dir()?;
    sockmon_bench::run(
        args,
        &Paths {
            root: root(),
            sockmon: release.join("sockmon"),
            worker: release.join("xtask"),
            worker_args: vec!["bench".into(), "worker".into()],
        },
    )
}

/// `--kernel debian-*` on the host: boots the guest, which runs the rate
/// part (`--in-guest`), and puts its report in BENCHMARKS.md.
fn bench_in_guest(args: &BenchArgs) -> anyhow::Result<()> {
    let guest = match args.kernel {
        BenchKernel::Debian61 => Guest::Debian61,
        BenchKernel::Debian612 => Guest::Debian612,
        BenchKernel::Host => bail!("the host is measured in place"),
    };
    let run = guest::bench(
        guest,
        &release_dir()?.join("xtask"),
        args.rounds.unwrap_or(5),
        args.guest_cpus,
        Duration::from_secs(args.guest_timeout),
    )?;
    println!("{}", run.markdown);
    let path = root().join("BENCHMARKS.md");
    sockmon_bench::update_guest_section(
        &path,
        guest.name(),
        &run.package,
        run.wall,
        &run.markdown,
    )?;
    eprintln!(
        "xtask bench: wrote the {} section of {}",
        guest.name(),
        path.display()
    );
    Ok(())
}

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

/// Runs the same command line with the release build of xtask, which
/// [`prepare`] just built.
fn reexec_release() -> anyhow::Result<()> {
    let mut cmd = Command::new(target_dir().join("release/xtask"));
    cmd.args(env::args_os().skip(1)).env(PREPARED, "1");
    exec(&mut cmd)
}

/// The release build's directory, once it runs: this executable's own (the
/// guest's plan runs the host's build by its path, with none of cargo's
/// environment), so the `sockmon` beside it is the one built with it.
fn release_dir() -> anyhow::Result<PathBuf> {
    let me = env::current_exe().context("finding this executable")?;
    me.parent()
        .map(Path::to_path_buf)
        .with_context(|| format!("{} has no directory", me.display()))
}

/// Where [`prepare`]'s cargo builds: `CARGO_TARGET_DIR` (relative to the
/// workspace root, where cargo runs), else `target/`.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |d| root().join(d))
}
