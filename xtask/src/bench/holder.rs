//! The measurer's handle on socket holders (`xtask bench worker hold`):
//! separate processes holding N loopback connections open, so lookups,
//! memory and start-up can be measured against a realistic socket table.
//!
//! A process may hold only as many descriptors as `RLIMIT_NOFILE`'s hard
//! limit allows (20,000 here, and raising it needs CAP_SYS_RESOURCE, which
//! even root may lack in a container), so the connections are spread over as
//! many holder processes as needed. Closing a holder's stdin (or dropping
//! the handle) ends it; its clients use `SO_LINGER {1, 0}` so no TIME_WAIT is
//! left for the next step.

use std::{
    io::{BufRead as _, BufReader},
    process::{ChildStdin, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    Tools,
    load::{Held, Job},
    procs::{self, ChildGuard},
};

/// Opening tens of thousands of connections takes seconds; this is the limit.
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);
/// Descriptors a holder keeps free for everything else it opens.
const FD_RESERVE: u64 = 512;

pub struct Holder {
    procs: Vec<HolderProc>,
    /// What all holder processes hold together.
    pub held: Held,
}

struct HolderProc {
    stdin: Option<ChildStdin>,
    guard: ChildGuard,
}

impl Holder {
    /// Opens `conns` connections over as many processes as the descriptor
    /// limit requires, and waits until all are open.
    pub fn start(tools: &Tools, conns: usize) -> anyhow::Result<Self> {
        let per_proc = conns_per_process(procs::nofile_hard()?)?;
        let mut started = Vec::new();
        let mut left = conns;
        while left > 0 {
            let n = left.min(per_proc);
            started.push(spawn(tools, n)?);
            left -= n;
        }
        let mut procs = Vec::with_capacity(started.len());
        let mut parts = Vec::with_capacity(started.len());
        for (p, rx) in started {
            parts.push(wait_open(rx)?);
            procs.push(p);
        }
        Ok(Self {
            procs,
            held: merge(parts),
        })
    }

    /// Ends every holder (EOF on its stdin) and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        for p in &mut self.procs {
            drop(p.stdin.take());
        }
        for mut p in self.procs.drain(..) {
            let status = p.guard.wait_timeout(Duration::from_secs(60))?;
            if !status.success() {
                bail!("a socket holder ended with {status}");
            }
        }
        Ok(())
    }
}

/// Connections one process can hold (two descriptors each) under `hard`.
fn conns_per_process(hard: u64) -> anyhow::Result<usize> {
    let usable = hard.saturating_sub(FD_RESERVE) / 2;
    if usable < 100 {
        bail!("RLIMIT_NOFILE's hard limit ({hard}) is too low to hold sockets");
    }
    Ok(usize::try_from(usable.min(10_000))?)
}

type Opened = mpsc::Receiver<anyhow::Result<Held>>;

fn spawn(tools: &Tools, conns: usize) -> anyhow::Result<(HolderProc, Opened)> {
    let job = Job::Hold {
        conns,
        per_listener: 10_000,
        sample: 1000,
    };
    let mut cmd = tools.worker_command(&job);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut guard = ChildGuard::spawn(&mut cmd)?;
    let stdin = guard.child()?.stdin.take();
    let stdout = guard.child_stdout().context("the holder has no stdout")?;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let r = BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                serde_json::from_str::<Held>(&line)
                    .with_context(|| format!("bad holder output {line:?} (its error is above)"))
            });
        let _ = tx.send(r);
    });
    Ok((HolderProc { stdin, guard }, rx))
}

fn wait_open(rx: Opened) -> anyhow::Result<Held> {
    match rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(r) => r,
        Err(_) => bail!("a socket holder did not open its connections within {OPEN_TIMEOUT:?}"),
    }
}

/// One view of several holders: samples interleaved so that every process
/// is represented among the first tuples.
fn merge(parts: Vec<Held>) -> Held {
    let longest = parts.iter().map(|p| p.sample.len()).max().unwrap_or(0);
    let mut sample = Vec::new();
    for i in 0..longest {
        sample.extend(parts.iter().filter_map(|p| p.sample.get(i).copied()));
    }
    Held {
        sockets: parts.iter().map(|p| p.sockets).sum(),
        listeners: parts
            .iter()
            .flat_map(|p| p.listeners.iter().copied())
            .collect(),
        sample,
        open_secs: parts.iter().map(|p| p.open_secs).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_fit_the_descriptor_limit() {
        assert_eq!(conns_per_process(20_000).unwrap(), 9_744);
        assert_eq!(conns_per_process(1 << 20).unwrap(), 10_000);
        assert!(conns_per_process(300).is_err());
    }

    #[test]
    fn merged_samples_interleave() {
        let h = |s: Vec<(u16, u16)>, n| Held {
            sockets: n,
            listeners: vec![n as u16],
            sample: s,
            open_secs: n as f64,
        };
        let m = merge(vec![h(vec![(1, 1), (2, 1)], 5), h(vec![(3, 2)], 3)]);
        assert_eq!(m.sample, vec![(1, 1), (3, 2), (2, 1)]);
        assert_eq!((m.sockets, m.listeners.len(), m.open_secs), (8, 2, 5.0));
    }
}
