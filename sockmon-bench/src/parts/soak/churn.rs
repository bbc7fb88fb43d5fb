//! The soak's churn: a fixed number of short-lived `worker churn`
//! processes at a time, a new one started as each exits, for the planned
//! time; what each reports is summed, and the daemon's RSS is sampled once
//! a second meanwhile.

use std::{
    process::{ChildStdout, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use sockmon_testkit::child::ChildGuard;

use super::{KEEP, Shape};
use crate::{
    procs::rss_bytes,
    tools::{Tools, read_all},
    tracers::Attached,
    worker::{Churned, Job},
};

/// A churn process that runs longer than this is stopped (and reported).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// The name every churn process of this run takes (unique to the run, at
/// most 15 bytes): the UDP subscription is filtered to it.
pub(super) fn comm() -> String {
    format!("smchurn{}", std::process::id() % 10_000_000)
}

/// What the churn did, summed over its processes.
#[derive(Debug, Default)]
pub(super) struct Churn {
    pub secs: f64,
    pub processes: u64,
    pub unreported: u64,
    pub spawn_failed: u64,
    pub conns: u64,
    pub failed: u64,
    pub unanswered: u64,
    pub udp_sent: u64,
    pub udp_failed: u64,
    /// (seconds since the churn started, daemon RSS), once a second.
    pub rss: Vec<(f64, u64)>,
    pub errors: Vec<String>,
}

impl Churn {
    fn add(&mut self, c: &Churned) {
        self.conns += c.conns + c.conn_unanswered;
        self.failed += c.conn_failed;
        self.unanswered += c.conn_unanswered;
        self.udp_sent += c.udp_sent;
        self.udp_failed += c.udp_failed;
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < KEEP {
            self.errors.push(e);
        }
    }
}

struct Running {
    guard: ChildGuard,
    stdout: Option<ChildStdout>,
    started: Instant,
}

/// Keeps `shape.procs` churn processes running for `shape.secs`, then waits
/// for the last ones; samples the daemon's RSS once a second meanwhile.
pub(super) fn run(
    tools: &Tools,
    shape: &Shape,
    job: &Job,
    daemon: &mut Attached,
) -> anyhow::Result<Churn> {
    let pid = daemon.pid().context("no daemon pid")?;
    let mut out = Churn::default();
    let mut running: Vec<Running> = Vec::with_capacity(shape.procs);
    let t0 = Instant::now();
    let stop_starting = t0 + Duration::from_secs_f64(shape.secs);
    let mut next_sample = t0;
    loop {
        let now = Instant::now();
        let mut i = 0;
        while i < running.len() {
            if let Some(status) = running[i].guard.try_wait()? {
                let r = running.swap_remove(i);
                match report(r.stdout, status) {
                    Ok(c) => out.add(&c),
                    Err(e) => {
                        out.unreported += 1;
                        out.error(format!("a churn process: {e:#}"));
                    }
                }
            } else if now.duration_since(running[i].started) > PROCESS_TIMEOUT {
                // Dropping the guard stops it.
                drop(running.swap_remove(i));
                out.unreported += 1;
                out.error(format!(
                    "a churn process ran longer than {PROCESS_TIMEOUT:?} and was stopped"
                ));
            } else {
                i += 1;
            }
        }
        if now < stop_starting {
            while running.len() < shape.procs {
                match spawn(tools, job) {
                    Ok(r) => {
                        running.push(r);
                        out.processes += 1;
                    }
                    // Out of processes for a moment (a shared machine):
                    // tried again on the next turn.
                    Err(e) => {
                        out.spawn_failed += 1;
                        out.error(format!("{e:#}"));
                        break;
                    }
                }
            }
        } else if running.is_empty() {
            break;
        }
        if now >= next_sample {
            daemon.ensure_running()?;
            out.rss
                .push((now.duration_since(t0).as_secs_f64(), rss_bytes(pid)?));
            next_sample += Duration::from_secs(1);
        }
        thread::sleep(Duration::from_millis(1));
    }
    out.secs = t0.elapsed().as_secs_f64();
    Ok(out)
}

fn spawn(tools: &Tools, job: &Job) -> anyhow::Result<Running> {
    let mut cmd = tools.worker_command(job);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    let stdout = guard.child_stdout();
    Ok(Running {
        guard,
        stdout,
        started: Instant::now(),
    })
}

/// What an exited churn process printed (one short line: it fits the pipe).
fn report(stdout: Option<ChildStdout>, status: ExitStatus) -> anyhow::Result<Churned> {
    if !status.success() {
        bail!("exited with {status}");
    }
    let text = read_all(stdout)?;
    let line = text.lines().last().context("it printed nothing")?;
    serde_json::from_str(line).with_context(|| format!("bad churn output {line:?}"))
}

