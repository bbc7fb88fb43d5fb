//! The soak's long-lived side, started before the churn: one `worker
//! soak-server` process with a loopback listener (an acceptor per
//! concurrent client) and a UDP receiver, on ports it picks and reports;
//! at the end it reports what it saw.

use std::{
    io::{BufRead as _, BufReader},
    process::{ChildStdin, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sockmon_testkit::child::ChildGuard;

use crate::{
    tools::Tools,
    worker::{Job, Served},
};

/// The long-lived server process.
pub(super) struct Server {
    guard: ChildGuard,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<anyhow::Result<Served>>,
    /// What it said when it started serving: its pid and ports.
    pub served: Served,
}

impl Server {
    /// Starts the server (on ports it picks) with one acceptor per
    /// concurrent client, like the rate loop.
    pub fn start(tools: &Tools, threads: usize) -> anyhow::Result<Self> {
        let job = Job::SoakServer {
            threads,
            port: 0,
            udp_port: 0,
        };
        let mut cmd = tools.worker_command(&job);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn(&mut cmd)?;
        let stdin = guard.child()?.stdin.take();
        let stdout = guard
            .child_stdout()
            .context("the soak server has no stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let r = line.map_err(anyhow::Error::from).and_then(|l| {
                    serde_json::from_str::<Served>(&l)
                        .with_context(|| format!("bad soak server output {l:?}"))
                });
                if tx.send(r).is_err() {
                    break;
                }
            }
        });
        let served = lines
            .recv_timeout(Duration::from_secs(30))
            .context("the soak server did not start (its error is above)")??;
        Ok(Self {
            guard,
            stdin,
            lines,
            served,
        })
    }

    /// Ends the server (EOF on its stdin); returns its final report.
    pub fn stop(mut self) -> anyhow::Result<Served> {
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(Duration::from_secs(30))?;
        if !status.success() {
            bail!("the soak server ended with {status}");
        }
        self.lines
            .recv_timeout(Duration::from_secs(5))
            .context("the soak server gave no final report")?
    }
}

