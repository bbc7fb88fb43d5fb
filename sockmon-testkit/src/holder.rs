//! Processes that hold sockets open until told to let go, so that a test or
//! a benchmark has sockets whose owner is a real process other than itself.
//!
//! Every holder speaks one protocol: it opens its sockets, writes one line
//! on stdout saying what it holds, and keeps them until its stdin closes (or
//! it is killed). [`Holder`] is the parent's handle on one such process.
//! Two holders are built on it:
//!
//! - [`Python`]: a small mixed set for attribution tests (TCP listeners,
//!   bound UDP sockets, an established pair per listener, optionally a
//!   forked child that shares them all), from `python3`, which the project's
//!   setup installs;
//! - [`Connections`]: N loopback connections for lookups, memory and
//!   start-up measured against a realistic table. A process may hold only
//!   as many descriptors as `RLIMIT_NOFILE`'s hard limit allows (20,000
//!   here, and raising it needs CAP_SYS_RESOURCE, which even root may lack
//!   in a container), so they are spread over as many processes as needed,
//!   each running [`hold_connections`] (the benchmark's `worker hold`).
//!   Their clients close with `SO_LINGER {1, 0}`, so no TIME_WAIT is left
//!   for the next step.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::child::{ChildGuard, signal};

/// A process holding sockets (see the module's protocol); stopped when
/// dropped: its stdin is closed, then it is stopped by its PID.
#[derive(Debug)]
pub struct Holder {
    stdin: Option<ChildStdin>,
    guard: ChildGuard,
    ready: mpsc::Receiver<io::Result<String>>,
}

impl Holder {
    /// Starts `cmd` with piped stdin and stdout. Its line is read on a
    /// thread of its own, so several holders open their sockets at once.
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut guard = ChildGuard::spawn(cmd)?;
        let stdin = guard.child()?.stdin.take();
        let stdout = guard.child_stdout().context("the holder has no stdout")?;
        let (tx, ready) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        Ok(Self {
            stdin,
            guard,
            ready,
        })
    }

    /// Waits at most `timeout` for the line saying what it holds.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<String> {
        match self.ready.recv_timeout(timeout) {
            Ok(Ok(line)) if !line.is_empty() => Ok(line),
            Ok(Ok(_)) => bail!(
                "{} ended before it held its sockets (its error is above)",
                self.guard.name()
            ),
            Ok(Err(e)) => Err(e).with_context(|| format!("reading {}", self.guard.name())),
            Err(_) => bail!(
                "{} did not open its sockets within {timeout:?}",
                self.guard.name()
            ),
        }
    }

    /// The holder's PID.
    pub fn pid(&self) -> u32 {
        self.guard.pid()
    }

    /// Lets go (EOF on its stdin) and waits at most `timeout` for it to
    /// exit; an exit other than success is an error.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = self.guard.wait_timeout(timeout)?;
        if !status.success() {
            bail!("a socket holder ended with {status}");
        }
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // EOF first: a holder that is still well lets go by itself (and so
        // does any child it forked with the same stdin); the guard then
        // stops whatever is left by its PID.
        drop(self.stdin.take());
    }
}

/// A python process holding `listen` TCP listeners on 127.0.0.1, `udp`
/// bound UDP sockets and, per listener, one established pair (both ends its
/// own); with `fork`, a child that inherits all of them. Both exit when it
/// is dropped.
#[derive(Debug)]
pub struct Python {
    holder: Holder,
    /// The holder's pid, and its forked child's if any.
    pub pids: Vec<u32>,
    /// `ip:port` of each listener.
    pub listeners: Vec<String>,
}

const PYTHON: &str = r#"
import os, socket, sys
listen, udp, fork = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
keep = []
for _ in range(listen):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64); keep.append(s)
for _ in range(udp):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); keep.append(u)
for s in keep[:listen]:
    c = socket.create_connection(s.getsockname()); a, _ = s.accept(); keep += [c, a]
child = 0
if fork:
    child = os.fork()
    if child == 0:
        sys.stdin.read(); os._exit(0)
addrs = " ".join("%s:%d" % s.getsockname() for s in keep[:listen])
print("ready", child, addrs, flush=True)
sys.stdin.read()
"#;

impl Python {
    /// Starts the holder and waits until every socket is open.
    pub fn start(listen: usize, udp: usize, fork: bool) -> anyhow::Result<Self> {
        let mut holder = Holder::spawn(Command::new("/usr/bin/python3").args([
            "-c",
            PYTHON,
            &listen.to_string(),
            &udp.to_string(),
            if fork { "1" } else { "0" },
        ]))?;
        let line = holder.wait_ready(Duration::from_secs(60))?;
        let mut f = line.split_whitespace();
        if f.next() != Some("ready") {
            bail!("the python holder said {line:?}");
        }
        let forked: u32 = f
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the python holder said {line:?}"))?;
        let mut pids = vec![holder.pid()];
        if forked != 0 {
            pids.push(forked);
        }
        Ok(Self {
            holder,
            pids,
            listeners: f.map(str::to_string).collect(),
        })
    }

    /// The holder's own PID (the first of [`Python::pids`]).
    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        // The forked child exits when its stdin closes (the holder's drop);
        // make sure, by its PID.
        drop(self.holder.stdin.take());
        for &pid in &self.pids[1..] {
            let _ = signal(pid, libc::SIGKILL);
        }
    }
}

/// Opening tens of thousands of connections takes seconds; this is the limit.
const OPEN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a connection holder may take to exit once told.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors a holder keeps free for everything else it opens.
const FD_RESERVE: u64 = 512;

/// What a [`hold_connections`] process reports (its one line, JSON) once
/// every connection is open.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Held {
    /// Socket descriptors held (clients, accepted and listeners).
    pub sockets: usize,
    pub listeners: Vec<u16>,
    /// (client port, server port) of some connections, spread over all.
    pub sample: Vec<(u16, u16)>,
    pub open_secs: f64,
}

/// N loopback connections held by as many processes as the descriptor
/// limit requires.
#[derive(Debug)]
pub struct Connections {
    procs: Vec<Holder>,
    /// What all holder processes hold together.
    pub held: Held,
}

impl Connections {
    /// Opens `conns` connections and waits until all are open.
    /// `command(n)` is a command that runs [`hold_connections`] for `n`
    /// connections in a process of its own.
    pub fn start(conns: usize, mut command: impl FnMut(usize) -> Command) -> anyhow::Result<Self> {
        let per_proc = conns_per_process(nofile_hard()?)?;
        let mut procs = Vec::new();
        let mut left = conns;
        while left > 0 {
            let n = left.min(per_proc);
            procs.push(Holder::spawn(&mut command(n))?);
            left -= n;
        }
        let mut parts = Vec::with_capacity(procs.len());
        for p in &mut procs {
            let line = p.wait_ready(OPEN_TIMEOUT)?;
            parts.push(
                serde_json::from_str::<Held>(&line)
                    .with_context(|| format!("bad holder output {line:?} (its error is above)"))?,
            );
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
        for p in self.procs.drain(..) {
            p.stop(STOP_TIMEOUT)?;
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

/// The holding side of [`Connections`], in the process that holds: opens
/// `conns` loopback connections (`per_listener` per listening port: each
/// destination has its own ephemeral port space), prints [`Held`] with
/// `sample` of their four-tuples as one JSON line, and holds them until
/// stdin closes.
pub fn hold_connections(conns: usize, per_listener: usize, sample: usize) -> anyhow::Result<()> {
    let per_listener = per_listener.max(1);
    let listeners_n = conns.div_ceil(per_listener);
    raise_nofile((2 * conns + listeners_n + 256) as u64)?;
    let t0 = Instant::now();
    let mut listeners = Vec::with_capacity(listeners_n);
    let mut streams = Vec::with_capacity(2 * conns);
    let mut tuples = Vec::with_capacity(conns);
    for i in 0..conns {
        if i % per_listener == 0 {
            listeners.push(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?);
        }
        let l = listeners.last().context("no listener")?;
        let c = TcpStream::connect(l.local_addr()?)
            .with_context(|| format!("connection {i} of {conns}"))?;
        reset_on_close(&c)?;
        let (a, _) = l.accept()?;
        tuples.push((c.local_addr()?.port(), a.local_addr()?.port()));
        streams.push(c);
        streams.push(a);
    }
    let held = Held {
        sockets: streams.len() + listeners.len(),
        listeners: listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<io::Result<_>>()?,
        sample: spread(&tuples, sample),
        open_secs: t0.elapsed().as_secs_f64(),
    };
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, &held)?;
    out.write_all(b"\n")?;
    out.flush()?;
    drop(out);
    // Hold until the parent closes our stdin (or dies).
    let mut sink = Vec::new();
    io::stdin().read_to_end(&mut sink)?;
    if streams.is_empty() && conns > 0 {
        bail!("no connections were held");
    }
    Ok(())
}

/// Up to `n` items spread evenly over `all`.
fn spread<T: Copy>(all: &[T], n: usize) -> Vec<T> {
    if all.is_empty() || n == 0 {
        return Vec::new();
    }
    let step = (all.len() / n).max(1);
    all.iter().step_by(step).take(n).copied().collect()
}

/// `SO_LINGER {1, 0}`: close() sends RST and skips TIME_WAIT, so loops of
/// many connections never run out of ephemeral ports.
pub fn reset_on_close(s: &TcpStream) -> io::Result<()> {
    let lin = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the fd is open for the lifetime of `s`; we pass a pointer to a
    // local struct and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const lin).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The hard limit of open files (what a process may raise its own to).
fn nofile_hard() -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    Ok(lim.rlim_max)
}

/// Raises this process's open-file limit to at least `want` (root may raise
/// the hard limit too, up to `fs.nr_open`).
fn raise_nofile(want: u64) -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    if lim.rlim_cur >= want {
        return Ok(());
    }
    let new = libc::rlimit {
        rlim_cur: want,
        rlim_max: lim.rlim_max.max(want),
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        let e = io::Error::last_os_error();
        bail!(
            "cannot raise RLIMIT_NOFILE to {want} (hard limit {}): {e}; run as root or raise `ulimit -Hn`",
            lim.rlim_max
        );
    }
    Ok(())
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

    #[test]
    fn spread_is_even_and_bounded() {
        let v: Vec<u32> = (0..10).collect();
        assert_eq!(spread(&v, 3), vec![0, 3, 6]);
        assert_eq!(spread(&v, 20), v);
        assert!(spread(&v, 0).is_empty());
    }

    #[test]
    fn a_holder_lets_go_when_told_and_reports_a_bad_exit() {
        let sh = |script: &str| {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", script]);
            c
        };
        let mut h = Holder::spawn(&mut sh("echo held; cat >/dev/null")).unwrap();
        assert_eq!(h.wait_ready(Duration::from_secs(10)).unwrap(), "held\n");
        h.stop(Duration::from_secs(10)).unwrap();
        let mut bad = Holder::spawn(&mut sh("echo held; cat >/dev/null; exit 3")).unwrap();
        bad.wait_ready(Duration::from_secs(10)).unwrap();
        assert!(bad.stop(Duration::from_secs(10)).is_err());
        let mut silent = Holder::spawn(&mut sh("exit 0")).unwrap();
        assert!(silent.wait_ready(Duration::from_secs(10)).is_err());
    }

    #[test]
    fn the_python_holder_holds_what_it_says() {
        if !std::path::Path::new("/usr/bin/python3").exists() {
            return;
        }
        let p = Python::start(2, 1, true).unwrap();
        assert_eq!((p.pids.len(), p.listeners.len()), (2, 2));
        assert_eq!(p.pids[0], p.pid());
        let forked = p.pids[1];
        assert!(p.listeners.iter().all(|l| l.starts_with("127.0.0.1:")));
        drop(p);
        let gone = (0..200).any(|_| {
            thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(format!("/proc/{forked}/stat"))
                .map_or(true, |s| s.contains(") Z"))
        });
        assert!(gone, "the forked child outlived its holder");
    }
}
