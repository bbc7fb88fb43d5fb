//! The binaries a run uses and how the parts start them: sockmon, and the
//! workloads, each a process of its own (the release build of the task
//! runner re-executed with `bench worker JOB`), so the measurer never
//! competes inside them.

use std::{
    io::Read as _,
    path::PathBuf,
    process::{ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sockmon_testkit::{
    child::{ChildGuard, describe},
    holder::Connections,
};

use crate::{
    tracers::{SockmonCmd, SockmonMode},
    worker::{Job, Measured},
};

/// Where a run finds what it measures, from the task runner (which builds
/// it): the benchmark itself knows no workspace layout.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The workspace root: `BENCHMARKS.md`, `target/bench/`, the commit measured.
    pub root: PathBuf,
    /// The release `sockmon` binary.
    pub sockmon: PathBuf,
    /// The release build that runs workloads: called with
    /// [`Paths::worker_args`] and then a job, it must hand them to
    /// [`crate::worker`] (`xtask bench worker JOB`).
    pub worker: PathBuf,
    /// The arguments before the job (`bench`, `worker`).
    pub worker_args: Vec<String>,
}

/// The binaries a run uses.
#[derive(Clone, Debug)]
pub struct Tools {
    pub sockmon: SockmonCmd,
    /// The release build of the task runner, re-executed for workloads.
    pub worker: PathBuf,
    pub worker_args: Vec<String>,
    pub cores: usize,
}

impl Tools {
    /// The binaries of this run and the sockmon mode (detected unless given).
    pub fn new(mode: Option<SockmonMode>, paths: &Paths) -> Self {
        let bin = paths.sockmon.clone();
        let mode = mode.unwrap_or_else(|| SockmonMode::detect(&bin));
        eprintln!("xtask bench: sockmon attached = {mode:?}");
        Self {
            sockmon: SockmonCmd { bin, mode },
            worker: paths.worker.clone(),
            worker_args: paths.worker_args.clone(),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// Runs a workload process to completion and returns what it measured.
    pub fn run_worker(&self, job: &Job) -> anyhow::Result<Measured> {
        let mut cmd = self.worker_command(job);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd)?;
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

    /// The command that runs `job` in a workload process.
    pub fn worker_command(&self, job: &Job) -> Command {
        let mut cmd = Command::new(&self.worker);
        cmd.args(&self.worker_args).args(job.to_args());
        cmd
    }

    /// `conns` loopback connections held by workload processes (`worker
    /// hold`), open when this returns.
    pub fn hold(&self, conns: usize) -> anyhow::Result<Connections> {
        Connections::start(conns, |n| {
            self.worker_command(&Job::Hold {
                conns: n,
                per_listener: 10_000,
                sample: 1000,
            })
        })
    }
}

/// Everything left on a child's stdout.
pub fn read_all(r: Option<ChildStdout>) -> anyhow::Result<String> {
    let mut s = String::new();
    if let Some(mut r) = r {
        r.read_to_string(&mut s)?;
    }
    Ok(s)
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
        .with_context(|| format!("cannot start {}", describe(cmd)))?;
    Ok((t0.elapsed(), status.success()))
}
