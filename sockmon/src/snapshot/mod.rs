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
//! A snapshot is not atomic: a socket opened or closed while it is taken may
//! be missing, or have no holder. Live events cover that window.

pub mod diag;
mod netns;

use crate::procfs;
use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::event::{Comm, Family, Proto};

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

/// A process holding at least one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRow {
    pub pid: u32,
    /// `/proc/PID/comm`: the process leader's name.
    pub comm: Comm,
    /// Real uid (first field of `Uid:` in `/proc/PID/status`).
    pub uid: u32,
    /// Field 22 of `/proc/PID/stat`: start time in clock ticks after boot.
    pub start_ticks: u64,
}

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
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read /proc: {0}")]
    Proc(#[source] io::Error),
    #[error("cannot list the sockets of our own network namespace: {0}")]
    Diag(#[source] diag::DiagError),
    #[error("snapshot worker thread: {0}")]
    Worker(#[source] io::Error),
}

/// Takes the whole snapshot. Blocking (from async code, use
/// `spawn_blocking`); needs root (`CAP_SYS_ADMIN` and `CAP_SYS_PTRACE`) to
/// see other users' descriptors and enter other namespaces. What cannot be
/// read without them is left out, not an error.
pub fn take() -> Result<Snapshot, SnapshotError> {
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
        read_sockets(own.1, &targets, &mut snap)?;
        scan.join()
            .map_err(|_| SnapshotError::Worker(io::Error::other("the fd scan panicked")))
    })?;
    snap.holders = holders(&snap.sockets, fds);
    snap.processes = processes(&mut snap.holders);
    snap.duration = started.elapsed();
    Ok(snap)
}

/// Fills `snap.sockets` from our own namespace (`own`, read where we are)
/// and from each of `targets` (entered one by one), and `snap.skipped_netns`
/// with those that could not be read.
fn read_sockets(
    own: u32,
    targets: &[netns::Target],
    snap: &mut Snapshot,
) -> Result<(), SnapshotError> {
    diag::DiagSocket::open()
        .and_then(|mut d| d.dump_all(own, &mut snap.sockets))
        .map_err(SnapshotError::Diag)?;
    let outcomes = netns::in_each(targets, |ino| {
        let mut rows = Vec::new();
        diag::DiagSocket::open()
            .and_then(|mut d| d.dump_all(ino, &mut rows))
            .map(|()| rows)
            .map_err(|e| e.to_string())
    })
    .map_err(SnapshotError::Worker)?;
    for outcome in outcomes {
        match outcome {
            netns::Outcome::Done(rows) => snap.sockets.extend(rows),
            netns::Outcome::Skipped(ino, reason) => snap.skipped_netns.push((ino, reason)),
        }
    }
    Ok(())
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
