//! The live socket table: which sockets exist, named by (network namespace,
//! protocol, four-tuple), and which processes hold them.
//!
//! A socket's identity is its inode (`socket:[N]`): several sockets can share
//! a four-tuple (`SO_REUSEPORT` listeners; an accepted connection shares its
//! listener's local address), so entries are keyed by inode, with an index
//! from [`TupleKey`] to the inodes that currently carry it.
//!
//! Owners are processes (thread groups) holding a descriptor to the socket.
//! Each says how it was learned ([`OwnerSource`]): it acted on the socket
//! (certain), it was found in `/proc/PID/fd` at start-up (certain at that
//! moment), or it was forked from an owner (inferred; re-checked at exec,
//! since close-on-exec descriptors vanish there). Processes are tracked in a
//! registry with their start time, so a reused PID is never merged with the
//! process that had it before (see `process.rs`).
//!
//! The table is owned by one task and changed only through `apply*` methods.
//! Bounded: at most `cap` sockets; when full, the socket inserted longest ago
//! is evicted (FIFO by insertion) and counted. A socket whose close was lost
//! never gets another event, while a live one is re-found by the next
//! reconciliation, so evicting the oldest is the cheapest correct choice.

mod process;
mod reconcile;
mod snapshot;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

pub use process::{Process, VerifyRequest};
pub use reconcile::Reconciled;

use crate::{
    clock::WallTime,
    event::{Comm, Event, EventKind, Family, Proto, start_ticks},
};

/// Default maximum number of sockets in the table.
pub const DEFAULT_CAP: usize = 1 << 20;

/// What names a socket on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub netns: u32,
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// A socket's state as far as ownership is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockState {
    /// Has a local address, nothing more (an unconnected UDP socket too).
    Bound,
    Listening,
    /// A non-blocking TCP connect in progress.
    Connecting,
    /// TCP established, or a connected UDP socket.
    Connected,
    /// Any other TCP state seen in a snapshot (closing, time-wait...).
    Closing,
}

impl SockState {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::Listening => "listen",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Closing => "closing",
        }
    }

    /// From the kernel's `sk_state` number (TCP_* values; UDP uses 7 and 1).
    pub const fn from_kernel(state: u8) -> Self {
        match state {
            1 => Self::Connected,
            2 | 3 => Self::Connecting,
            7 => Self::Bound,
            10 => Self::Listening,
            _ => Self::Closing,
        }
    }
}

/// How an owner was learned, from most to least certain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OwnerSource {
    /// The process acted on the socket (bind, listen, connect, accept, send).
    Event,
    /// Its descriptor table held the socket in the start-up snapshot.
    Snapshot,
    /// Forked from an owner: it holds the socket unless it closed it since.
    Inherited,
}

impl OwnerSource {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Event => "event",
            Self::Snapshot => "snapshot",
            Self::Inherited => "inherited",
        }
    }
}

/// A process holding a socket. Process-wide facts (uid, start time, names)
/// live in the registry ([`SocketTable::process`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// The thread that last acted on the socket (the pid itself when none did).
    pub tid: u32,
    /// That thread's name.
    pub comm: Comm,
    pub source: OwnerSource,
}

/// One socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    pub inode: u64,
    pub key: TupleKey,
    pub family: Family,
    pub state: SockState,
    pub owners: Vec<Owner>,
    /// When the table first learned of it.
    pub since: WallTime,
    /// Insertion sequence number (eviction order).
    seq: u64,
    /// The table's change clock when an event last touched it.
    touched: u64,
}

/// What an `apply*` call did to the socket it concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Inserted,
    Updated,
    Removed,
    /// Nothing (a failure, a close of an unknown socket, a process event).
    Unchanged,
}

/// The live table. See the module docs for the model and its bounds.
#[derive(Debug)]
pub struct SocketTable {
    by_inode: HashMap<u64, SocketEntry>,
    by_tuple: HashMap<TupleKey, Vec<u64>>,
    /// Sockets per network namespace (to look a tuple up in every namespace).
    netns: HashMap<u32, usize>,
    processes: HashMap<u32, Process>,
    /// (inode, seq) in insertion order; stale pairs are skipped lazily.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
    evictions: u64,
    /// Counts changes; entries and processes remember when they were touched
    /// so a reconciliation can tell what changed after its snapshot began.
    clock: u64,
    /// While a reconciliation is in flight: inodes removed since it began.
    tombstones: Option<std::collections::HashSet<u64>>,
}

impl SocketTable {
    pub fn new(cap: usize) -> Self {
        Self {
            by_inode: HashMap::new(),
            by_tuple: HashMap::new(),
            netns: HashMap::new(),
            processes: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            evictions: 0,
            clock: 0,
            tombstones: None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Sockets evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn get(&self, inode: u64) -> Option<&SocketEntry> {
        self.by_inode.get(&inode)
    }

    /// Every socket currently named by `key`.
    pub fn lookup<'a>(&'a self, key: &TupleKey) -> impl Iterator<Item = &'a SocketEntry> + use<'a> {
        self.by_tuple
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|i| self.by_inode.get(i))
    }

    /// Every socket named `src → dst`, in namespace `netns` or in any, of
    /// protocol `proto` or of either.
    pub fn lookup_any(
        &self,
        proto: Option<Proto>,
        src: SocketAddr,
        dst: SocketAddr,
        netns: Option<u32>,
    ) -> impl Iterator<Item = &SocketEntry> {
        let spaces: Vec<u32> = match netns {
            Some(n) => vec![n],
            None => self.netns.keys().copied().collect(),
        };
        let protos: &[Proto] = match proto {
            Some(Proto::Tcp) => &[Proto::Tcp],
            Some(Proto::Udp) => &[Proto::Udp],
            None => &[Proto::Tcp, Proto::Udp],
        };
        spaces.into_iter().flat_map(move |netns| {
            protos.iter().flat_map(move |&proto| {
                self.lookup(&TupleKey {
                    netns,
                    proto,
                    src,
                    dst,
                })
            })
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &SocketEntry> {
        self.by_inode.values()
    }

    /// Every process in the registry.
    pub fn processes(&self) -> impl Iterator<Item = &Process> {
        self.processes.values()
    }

    /// The registry record of a live process that owns sockets.
    pub fn process(&self, pid: u32) -> Option<&Process> {
        self.processes.get(&pid)
    }

    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Applies one socket event.
    pub fn apply(&mut self, e: &Event) -> Change {
        self.clock += 1;
        if e.inode == 0 {
            return Change::Unchanged;
        }
        let state = match e.kind {
            EventKind::Close => return self.remove(e.inode),
            _ if e.error.is_some_and(|err| err != libc::EINPROGRESS) => return Change::Unchanged,
            EventKind::Bind => SockState::Bound,
            EventKind::Listen => SockState::Listening,
            EventKind::Accept => SockState::Connected,
            EventKind::Connect if e.error == Some(libc::EINPROGRESS) => SockState::Connecting,
            EventKind::Connect => SockState::Connected,
            EventKind::Fork | EventKind::Exec | EventKind::Exit => return Change::Unchanged,
        };
        let key = TupleKey {
            netns: e.netns,
            proto: e.proto,
            src: e.src,
            dst: e.dst,
        };
        self.note_process(e.pid, start_ticks(e.start_ns), e.process_comm, e.uid);
        let owner = Owner {
            pid: e.pid,
            tid: e.tid,
            comm: e.comm,
            source: OwnerSource::Event,
        };
        self.upsert(e.inode, key, e.family, state, Some(owner), e.time)
    }

    /// Inserts or updates the socket `inode`, adding or refreshing `owner`.
    fn upsert(
        &mut self,
        inode: u64,
        key: TupleKey,
        family: Family,
        state: SockState,
        owner: Option<Owner>,
        time: WallTime,
    ) -> Change {
        let pid = owner.as_ref().map(|o| o.pid);
        let clock = self.clock;
        let change = if let Some(entry) = self.by_inode.get_mut(&inode) {
            let old_key = entry.key;
            entry.touched = clock;
            entry.key = key;
            entry.family = family;
            entry.state = state;
            if let Some(owner) = owner {
                merge_owner(&mut entry.owners, owner);
            }
            if old_key != key {
                unindex(&mut self.by_tuple, &old_key, inode);
                self.by_tuple.entry(key).or_default().push(inode);
                if old_key.netns != key.netns {
                    release_netns(&mut self.netns, old_key.netns);
                    *self.netns.entry(key.netns).or_default() += 1;
                }
            }
            Change::Updated
        } else {
            if self.by_inode.len() >= self.cap {
                self.evict_oldest();
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            self.by_inode.insert(
                inode,
                SocketEntry {
                    inode,
                    key,
                    family,
                    state,
                    owners: owner.into_iter().collect(),
                    since: time,
                    seq,
                    touched: clock,
                },
            );
            self.by_tuple.entry(key).or_default().push(inode);
            *self.netns.entry(key.netns).or_default() += 1;
            self.order.push_back((inode, seq));
            self.compact_order();
            Change::Inserted
        };
        if let Some(p) = pid.and_then(|pid| self.processes.get_mut(&pid))
            && !p.sockets.contains(&inode)
        {
            p.sockets.push(inode);
        }
        change
    }

    /// Removes a socket and its owners' references to it.
    fn remove(&mut self, inode: u64) -> Change {
        let Some(entry) = self.by_inode.remove(&inode) else {
            return Change::Unchanged;
        };
        if let Some(t) = &mut self.tombstones {
            t.insert(inode);
        }
        unindex(&mut self.by_tuple, &entry.key, inode);
        release_netns(&mut self.netns, entry.key.netns);
        for o in &entry.owners {
            self.forget_holding(o.pid, inode);
        }
        Change::Removed
    }

    fn evict_oldest(&mut self) {
        while let Some((inode, seq)) = self.order.pop_front() {
            if self.by_inode.get(&inode).is_some_and(|e| e.seq == seq) {
                self.remove(inode);
                self.evictions += 1;
                return;
            }
        }
    }

    /// Drops stale order entries once they outnumber live ones.
    fn compact_order(&mut self) {
        if self.order.len() > 2 * self.by_inode.len() + 1024 {
            let live = &self.by_inode;
            self.order
                .retain(|(inode, seq)| live.get(inode).is_some_and(|e| e.seq == *seq));
        }
    }
}

/// Adds `owner`, or refreshes the existing owner of the same pid. An owner
/// never loses certainty: an inherited owner that acts becomes `Event`, a
/// snapshot owner is not downgraded by an inherited one.
fn merge_owner(owners: &mut Vec<Owner>, owner: Owner) {
    match owners.iter_mut().find(|o| o.pid == owner.pid) {
        Some(o) if owner.source <= o.source => *o = owner,
        Some(_) => {}
        None => owners.push(owner),
    }
}

fn release_netns(counts: &mut HashMap<u32, usize>, netns: u32) {
    if let Some(n) = counts.get_mut(&netns) {
        *n -= 1;
        if *n == 0 {
            counts.remove(&netns);
        }
    }
}

fn unindex(by_tuple: &mut HashMap<TupleKey, Vec<u64>>, key: &TupleKey, inode: u64) {
    if let Some(v) = by_tuple.get_mut(key) {
        v.retain(|i| *i != inode);
        if v.is_empty() {
            by_tuple.remove(key);
        }
    }
}
