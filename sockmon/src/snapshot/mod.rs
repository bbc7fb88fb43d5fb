//! The start-up snapshot: every TCP and UDP socket that exists when sockmon
//! starts, in every network namespace, and the processes that hold each.
//!
//! Why: the eBPF probes only see what happens after they attach. Sockets
//! opened before then (a server's listeners, long-lived connections) would
//! stay unknown until they are closed; the snapshot fills the table first,
//! and live events correct it from then on.
//!
//! How: sockets come from the kernel's socket diagnostics over netlink
//! ([`diag`]), one dump per namespace, entered from a dedicated thread
//! (`netns`); owners come from the descriptor tables in `/proc`
//! (`procfs`). The two halves run in parallel, and are joined by socket
//! inode, which is unique across namespaces. Rows are folded exactly as
//! live events are (IPv4-mapped IPv6 addresses become IPv4), so a snapshot
//! row and an event about the same socket compare equal.
//!
//! Where sock_diag cannot answer (its TCP/UDP handlers are modules on most
//! distribution kernels, and a machine may be unable to load them), the
//! sockets of a namespace come from `/proc/net` instead ([`procnet`]); the
//! snapshot says which source it used ([`Snapshot::sources`],
//! [`Snapshot::fallback`]), and so do `status` and the metrics. One missing
//! source never stops the daemon. `SOCKMON_SNAPSHOT_NO_SOCK_DIAG=1` in the
//! environment skips sock_diag on purpose ([`NO_SOCK_DIAG_ENV`]: for tests,
//! and for a kernel whose sock_diag misbehaves).
//!
//! A snapshot is not atomic: a socket opened or closed while it is taken may
//! be missing, or have no holder. Live events cover that window.
//!
//! Every dump has a deadline ([`set_dump_deadline`]) and takes answers from
//! the kernel only (see `diag`): a namespace whose owner forges replies or
//! stalls its dump is skipped with the reason, and the rest of the snapshot,
//! and every later one, goes on.

pub mod diag;
pub mod netns;
pub mod procnet;

use crate::procfs;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io,
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::event::{Family, Proto};

/// One socket as sock_diag reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockRow {
    /// Inode of the network namespace (as `st_ino` of `/proc/PID/ns/net`).
    pub netns: u32,
    /// `idiag_inode`, the N of `socket:[N]`. Never 0: sockets without one
    /// (TIME_WAIT, request sockets) are dropped.
    pub inode: u64,
    pub proto: Proto,
    /// After folding IPv4-mapped IPv6 to IPv4.
    pub family: Family,
    /// Local side.
    pub src: SocketAddr,
    /// Remote side; the unspecified address and port 0 when there is none.
    pub dst: SocketAddr,
    /// The kernel's `sk_state` (TCP_ESTABLISHED = 1 … TCP_LISTEN = 10; UDP
    /// reports 7 when unconnected, 1 when connected).
    pub state: u8,
    /// `idiag_uid`: the socket owner's uid.
    pub uid: u32,
}

/// What `/proc` says about a pid (it lives with the readers).
pub use crate::procfs::ProcRow;

#[derive(Debug, Default)]
pub struct Snapshot {
    pub sockets: Vec<SockRow>,
    /// Socket inode → pids (thread-group ids, each once, sorted) whose
    /// descriptor tables hold it. Only inodes of `sockets` are keys; a socket
    /// that no process holds (any more) has no entry.
    pub holders: HashMap<u64, Vec<u32>>,
    /// Every pid that appears in `holders`.
    pub processes: HashMap<u32, ProcRow>,
    /// How long [`take`] took.
    pub duration: Duration,
    /// Namespaces that could not be read, with the reason. A namespace may
    /// vanish mid-snapshot: that is recorded here, not an error.
    pub skipped_netns: Vec<(u32, String)>,
    /// How many namespaces each source answered for.
    pub sources: BTreeMap<Source, usize>,
    /// Why sock_diag was not used where it was not (the first reason seen),
    /// or `None` when it answered for every namespace.
    pub fallback: Option<String>,
    /// Netlink datagrams that came from a sender other than the kernel (a
    /// namespace owner forging replies) and were dropped.
    pub forged_datagrams: u64,
}

/// Where the sockets of a namespace were read from, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The kernel's socket diagnostics over netlink ([`diag`]).
    SockDiag,
    /// The text tables `/proc/net/{tcp,tcp6,udp,udp6}` ([`procnet`]).
    ProcNet,
}

impl Source {
    /// The name shown in `status` and the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Source::SockDiag => "sock_diag",
            Source::ProcNet => "proc_net",
        }
    }
}

impl Snapshot {
    /// The sources used, by name, joined with `+` in order of preference
    /// (`sock_diag`, `proc_net`, or `sock_diag+proc_net`).
    pub fn source_names(&self) -> String {
        let names: Vec<&str> = self.sources.keys().map(|s| s.name()).collect();
        names.join("+")
    }
}

/// Environment variable that, set to `1`, makes every snapshot skip
/// sock_diag and read `/proc/net` (what a kernel without the diag modules
/// gets). Read by [`Options::from_env`].
pub const NO_SOCK_DIAG_ENV: &str = "SOCKMON_SNAPSHOT_NO_SOCK_DIAG";

/// Which sources a snapshot may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Try sock_diag first (else go straight to `/proc/net`).
    pub sock_diag: bool,
}

impl Options {
    /// Every source, unless [`NO_SOCK_DIAG_ENV`] is `1`.
    pub fn from_env() -> Self {
        Self {
            sock_diag: std::env::var_os(NO_SOCK_DIAG_ENV).is_none_or(|v| v != "1"),
        }
    }
}

/// The deadline of one sock_diag dump, in milliseconds.
static DUMP_DEADLINE_MS: AtomicU64 = AtomicU64::new(diag::DEFAULT_DEADLINE.as_millis() as u64);

/// Sets how long each sock_diag dump of later snapshots may take (the
/// daemon's `snapshot.dump_deadline_ms`).
pub fn set_dump_deadline(d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    DUMP_DEADLINE_MS.store(ms, Ordering::Relaxed);
}

fn dump_deadline() -> Duration {
    Duration::from_millis(DUMP_DEADLINE_MS.load(Ordering::Relaxed))
}

/// A sock_diag socket with the configured deadline.
pub fn diag_socket() -> Result<diag::DiagSocket, diag::DiagError> {
    let mut d = diag::DiagSocket::open()?;
    d.set_deadline(dump_deadline());
    Ok(d)
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read /proc: {0}")]
    Proc(#[source] io::Error),
    #[error("cannot list the sockets of our own network namespace from any source: {0}")]
    NoSource(String),
    #[error("snapshot worker thread: {0}")]
    Worker(#[source] io::Error),
}

/// Takes the whole snapshot. Blocking (from async code, use
/// `spawn_blocking`); needs root (`CAP_SYS_ADMIN` and `CAP_SYS_PTRACE`) to
/// see other users' descriptors and enter other namespaces. What cannot be
/// read without them is left out, not an error.
pub fn take() -> Result<Snapshot, SnapshotError> {
    take_with(Options::from_env())
}

/// [`take`], with the sources given by `opts`.
pub fn take_with(opts: Options) -> Result<Snapshot, SnapshotError> {
    let started = Instant::now();
    let pids = procfs::pids().map_err(SnapshotError::Proc)?;
    let own = netns::current().map_err(SnapshotError::Proc)?;
    let targets = netns::enumerate(&pids, own);
    let mut snap = Snapshot::default();
    // The descriptor scan and the netlink dumps run side by side.
    let fds = std::thread::scope(|s| {
        let scan = std::thread::Builder::new()
            .name("sockmon-fdscan".into())
            .spawn_scoped(s, || procfs::socket_fds(&pids))
            .map_err(SnapshotError::Worker)?;
        read_sockets(own.1, &targets, opts, &mut snap)?;
        scan.join()
            .map_err(|_| SnapshotError::Worker(io::Error::other("the fd scan panicked")))
    })?;
    snap.holders = holders(&snap.sockets, fds);
    snap.processes = processes(&mut snap.holders);
    snap.duration = started.elapsed();
    Ok(snap)
}

/// Fills `snap.sockets` from our own namespace (`own`, read where we are)
/// and from each of `targets` (entered one by one), `snap.skipped_netns`
/// with those that could not be read, and `snap.sources`/`snap.fallback`
/// with where the rows came from. When sock_diag fails in our own
/// namespace it is not tried in the others (its modules are missing for
/// the whole machine; each try would spawn a module request).
fn read_sockets(
    own: u32,
    targets: &[netns::Target],
    opts: Options,
    snap: &mut Snapshot,
) -> Result<(), SnapshotError> {
    if !opts.sock_diag {
        snap.fallback = Some(format!("sock_diag skipped: {NO_SOCK_DIAG_ENV}=1"));
    }
    let first = read_namespace(own, opts.sock_diag).map_err(SnapshotError::NoSource)?;
    let use_diag = first.source == Source::SockDiag;
    fn note(ino: u32, read: Read, snap: &mut Snapshot) {
        note_forged(&mut snap.forged_datagrams, ino, read.forged);
        *snap.sources.entry(read.source).or_default() += 1;
        if snap.fallback.is_none() {
            snap.fallback = read.diag_error;
        }
        snap.sockets.extend(read.rows);
    }
    note(own, first, snap);
    let outcomes = netns::in_each(targets, |ino| {
        read_namespace(ino, use_diag).map(|r| (ino, r))
    })
    .map_err(SnapshotError::Worker)?;
    for outcome in outcomes {
        match outcome {
            netns::Outcome::Done((ino, read)) => note(ino, read, snap),
            netns::Outcome::Skipped(ino, reason) => snap.skipped_netns.push((ino, reason)),
        }
    }
    Ok(())
}

/// The sockets of the calling thread's namespace (inode `ino`).
struct Read {
    rows: Vec<SockRow>,
    source: Source,
    /// Why sock_diag did not answer, when it was tried and failed.
    diag_error: Option<String>,
    /// Datagrams not sent by the kernel, dropped (see `diag`).
    forged: u64,
}

/// Reads the calling thread's namespace from sock_diag (if `use_diag`),
/// else, or if that fails, from `/proc/net`. Fails only if no source answers.
fn read_namespace(ino: u32, use_diag: bool) -> Result<Read, String> {
    let mut rows = Vec::new();
    let mut diag_error = None;
    if use_diag {
        let mut forged = 0;
        let result = diag_socket().and_then(|mut d| {
            let r = d.dump_all(ino, &mut rows);
            forged = d.forged();
            r
        });
        match result {
            Ok(()) => {
                return Ok(Read {
                    rows,
                    source: Source::SockDiag,
                    diag_error: None,
                    forged,
                });
            }
            Err(e) => {
                rows.clear();
                diag_error = Some(format!("sock_diag: {e}"));
            }
        }
    }
    match procnet::read_all(ino, &mut rows) {
        Ok(()) => Ok(Read {
            rows,
            source: Source::ProcNet,
            diag_error,
            forged: 0,
        }),
        Err(e) => Err(match diag_error {
            Some(d) => format!("{d}; /proc/net: {e}"),
            None => format!("/proc/net: {e}"),
        }),
    }
}

fn note_forged(total: &mut u64, netns: u32, forged: u64) {
    if forged > 0 {
        tracing::warn!(
            "snapshot: dropped {forged} netlink datagrams not sent by the kernel in network namespace {netns}"
        );
        *total += forged;
    }
}

/// Groups `(inode, pid)` pairs by inode, keeping only the inodes of
/// `sockets`; each pid once, sorted.
fn holders(sockets: &[SockRow], fds: Vec<(u64, u32)>) -> HashMap<u64, Vec<u32>> {
    let known: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let mut holders: HashMap<u64, Vec<u32>> = HashMap::with_capacity(known.len());
    for (inode, pid) in fds {
        if known.contains(&inode) {
            holders.entry(inode).or_default().push(pid);
        }
    }
    for pids in holders.values_mut() {
        pids.sort_unstable();
        pids.dedup();
    }
    holders
}

/// Reads every process in `holders`; those that exited meanwhile are removed
/// from `holders` (and inodes left without a holder with them).
fn processes(holders: &mut HashMap<u64, Vec<u32>>) -> HashMap<u32, ProcRow> {
    let pids: HashSet<u32> = holders.values().flatten().copied().collect();
    let mut buf = Vec::with_capacity(4096);
    let processes: HashMap<u32, ProcRow> = pids
        .into_iter()
        .filter_map(|pid| Some((pid, procfs::process(pid, &mut buf)?)))
        .collect();
    holders.retain(|_, pids| {
        pids.retain(|pid| processes.contains_key(pid));
        !pids.is_empty()
    });
    processes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(inode: u64) -> SockRow {
        SockRow {
            netns: 1,
            inode,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            src: "127.0.0.1:1".parse().unwrap(),
            dst: "0.0.0.0:0".parse().unwrap(),
            state: 10,
            uid: 0,
        }
    }

    #[test]
    fn holders_keep_known_inodes_with_each_pid_once_sorted() {
        let fds = vec![(5, 30), (5, 10), (5, 30), (6, 10), (99, 10)];
        let h = holders(&[row(5), row(6), row(7)], fds);
        assert_eq!(h.len(), 2);
        assert_eq!(h[&5], [10, 30]);
        assert_eq!(h[&6], [10]);
    }

    #[test]
    fn processes_that_exited_are_dropped_from_holders() {
        let me = std::process::id();
        let gone = 0x7fff_fff0;
        let mut h = HashMap::from([(5, vec![me, gone]), (6, vec![gone])]);
        let p = processes(&mut h);
        assert_eq!(h, HashMap::from([(5, vec![me])]));
        assert_eq!(p.keys().copied().collect::<Vec<_>>(), [me]);
        assert_eq!(p[&me].pid, me);
    }
}
