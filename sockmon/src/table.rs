//! The live socket table: which sockets exist, named by (network namespace,
//! protocol, four-tuple), and which processes hold them.
//!
//! A socket's identity is its inode (`socket:[N]`): several sockets can share
//! a four-tuple (`SO_REUSEPORT` listeners, an accepted connection beside its
//! listener's local address, the same tuple in two namespaces is already
//! told apart by `netns`). The table therefore keys entries by inode and keeps
//! an index from [`TupleKey`] to the inodes that currently carry it.
//!
//! The table is owned by one task and changed only through [`SocketTable::apply`].
//!
//! Bounded: at most `cap` entries. When full, the entry inserted longest ago
//! is evicted to make room (FIFO by insertion), and counted: sockets that
//! live long are the ones most likely to have been seen again since (and, in
//! the daemon, re-found by the next snapshot), while a closed socket whose
//! close was lost never gets another event.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
};

use crate::{
    clock::WallTime,
    event::{Comm, Event, EventKind, Family, Proto},
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
    /// Has a local address, nothing more.
    Bound,
    Listening,
    /// A non-blocking TCP connect in progress.
    Connecting,
    /// TCP established, or a connected UDP socket.
    Connected,
}

impl SockState {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bound => "bound",
            Self::Listening => "listen",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
        }
    }
}

/// How an owner was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerSource {
    /// The process acted on the socket (bind, listen, connect, accept).
    Event,
}

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// The thread that acted.
    pub tid: u32,
    pub comm: Comm,
    pub uid: u32,
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
    pub since: WallTime,
    /// Insertion sequence number (for eviction order).
    seq: u64,
}

/// What [`SocketTable::apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Inserted,
    Updated,
    Removed,
    /// The event changes nothing (a failure, or a close of an unknown socket).
    Unchanged,
}

/// The live table. See the module docs for the model and its bounds.
#[derive(Debug)]
pub struct SocketTable {
    by_inode: HashMap<u64, SocketEntry>,
    by_tuple: HashMap<TupleKey, Vec<u64>>,
    /// (inode, seq) in insertion order; stale pairs are skipped lazily.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
    evictions: u64,
}

impl SocketTable {
    pub fn new(cap: usize) -> Self {
        Self {
            by_inode: HashMap::new(),
            by_tuple: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            evictions: 0,
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

    /// Entries evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn get(&self, inode: u64) -> Option<&SocketEntry> {
        self.by_inode.get(&inode)
    }

    /// Every socket currently named by `key`.
    pub fn lookup(&self, key: &TupleKey) -> impl Iterator<Item = &SocketEntry> {
        self.by_tuple
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|i| self.by_inode.get(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &SocketEntry> {
        self.by_inode.values()
    }

    /// Applies one event.
    pub fn apply(&mut self, e: &Event) -> Change {
        if e.inode == 0 {
            return Change::Unchanged;
        }
        match e.kind {
            EventKind::Close => self.remove(e.inode),
            _ if e.error.is_some_and(|err| err != libc::EINPROGRESS) => Change::Unchanged,
            EventKind::Bind => self.upsert(e, SockState::Bound),
            EventKind::Listen => self.upsert(e, SockState::Listening),
            EventKind::Accept => self.upsert(e, SockState::Connected),
            EventKind::Connect => {
                let state = if e.error == Some(libc::EINPROGRESS) {
                    SockState::Connecting
                } else {
                    SockState::Connected
                };
                self.upsert(e, state)
            }
        }
    }

    fn upsert(&mut self, e: &Event, state: SockState) -> Change {
        let key = TupleKey {
            netns: e.netns,
            proto: e.proto,
            src: e.src,
            dst: e.dst,
        };
        let owner = Owner {
            pid: e.pid,
            tid: e.tid,
            comm: e.comm,
            uid: e.uid,
            source: OwnerSource::Event,
        };
        if let Some(entry) = self.by_inode.get_mut(&e.inode) {
            let old_key = entry.key;
            entry.key = key;
            entry.family = e.family;
            entry.state = state;
            match entry.owners.iter_mut().find(|o| o.pid == owner.pid) {
                Some(o) => *o = owner,
                None => entry.owners.push(owner),
            }
            if old_key != key {
                unindex(&mut self.by_tuple, &old_key, e.inode);
                self.by_tuple.entry(key).or_default().push(e.inode);
            }
            return Change::Updated;
        }
        if self.by_inode.len() >= self.cap {
            self.evict_oldest();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_inode.insert(
            e.inode,
            SocketEntry {
                inode: e.inode,
                key,
                family: e.family,
                state,
                owners: vec![owner],
                since: e.time,
                seq,
            },
        );
        self.by_tuple.entry(key).or_default().push(e.inode);
        self.order.push_back((e.inode, seq));
        self.compact_order();
        Change::Inserted
    }

    fn remove(&mut self, inode: u64) -> Change {
        match self.by_inode.remove(&inode) {
            Some(entry) => {
                unindex(&mut self.by_tuple, &entry.key, inode);
                Change::Removed
            }
            None => Change::Unchanged,
        }
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

fn unindex(by_tuple: &mut HashMap<TupleKey, Vec<u64>>, key: &TupleKey, inode: u64) {
    if let Some(v) = by_tuple.get_mut(key) {
        v.retain(|i| *i != inode);
        if v.is_empty() {
            by_tuple.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, inode: u64, pid: u32, src: &str, dst: &str) -> Event {
        Event {
            kind,
            time: WallTime(0),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            pid,
            tid: pid,
            uid: 0,
            comm: Comm::default(),
            netns: 7,
            inode,
            cgroup_id: 0,
            error: None,
            state: 0,
            flags: 0,
        }
    }

    fn key(src: &str, dst: &str) -> TupleKey {
        TupleKey {
            netns: 7,
            proto: Proto::Tcp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
        }
    }

    #[test]
    fn bind_listen_close_lifecycle() {
        let mut t = SocketTable::new(16);
        assert_eq!(
            t.apply(&ev(EventKind::Bind, 10, 100, "0.0.0.0:80", "0.0.0.0:0")),
            Change::Inserted
        );
        assert_eq!(
            t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0")),
            Change::Updated
        );
        let found: Vec<_> = t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].state, SockState::Listening);
        assert_eq!(found[0].owners[0].pid, 100);
        assert_eq!(
            t.apply(&ev(EventKind::Close, 10, 100, "0.0.0.0:80", "0.0.0.0:0")),
            Change::Removed
        );
        assert!(t.is_empty());
        assert_eq!(t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).count(), 0);
    }

    #[test]
    fn accepted_socket_beside_its_listener() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Listen, 10, 100, "127.0.0.1:80", "0.0.0.0:0"));
        t.apply(&ev(
            EventKind::Accept,
            11,
            100,
            "127.0.0.1:80",
            "127.0.0.1:5555",
        ));
        assert_eq!(t.len(), 2);
        let a: Vec<_> = t.lookup(&key("127.0.0.1:80", "127.0.0.1:5555")).collect();
        assert_eq!(a[0].inode, 11);
        assert_eq!(a[0].state, SockState::Connected);
    }

    #[test]
    fn reuseport_listeners_share_a_tuple() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Listen, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Listen, 11, 101, "0.0.0.0:80", "0.0.0.0:0"));
        let mut pids: Vec<u32> = t
            .lookup(&key("0.0.0.0:80", "0.0.0.0:0"))
            .map(|e| e.owners[0].pid)
            .collect();
        pids.sort();
        assert_eq!(pids, vec![100, 101]);
        t.apply(&ev(EventKind::Close, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
        assert_eq!(t.lookup(&key("0.0.0.0:80", "0.0.0.0:0")).count(), 1);
    }

    #[test]
    fn connect_moves_the_socket_to_its_new_tuple() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Bind, 10, 100, "10.0.0.1:4000", "0.0.0.0:0"));
        t.apply(&ev(
            EventKind::Connect,
            10,
            100,
            "10.0.0.1:4000",
            "1.1.1.1:443",
        ));
        assert_eq!(t.lookup(&key("10.0.0.1:4000", "0.0.0.0:0")).count(), 0);
        assert_eq!(t.lookup(&key("10.0.0.1:4000", "1.1.1.1:443")).count(), 1);
    }

    #[test]
    fn in_progress_connect_is_connecting_and_failures_change_nothing() {
        let mut t = SocketTable::new(16);
        let mut e = ev(EventKind::Connect, 10, 100, "10.0.0.1:4000", "1.1.1.1:443");
        e.error = Some(libc::EINPROGRESS);
        t.apply(&e);
        assert_eq!(t.get(10).unwrap().state, SockState::Connecting);
        let mut f = ev(EventKind::Connect, 12, 100, "10.0.0.1:4001", "1.1.1.1:443");
        f.error = Some(libc::ECONNREFUSED);
        assert_eq!(t.apply(&f), Change::Unchanged);
        assert!(t.get(12).is_none());
    }

    #[test]
    fn a_second_process_acting_becomes_a_second_owner() {
        let mut t = SocketTable::new(16);
        t.apply(&ev(EventKind::Bind, 10, 100, "0.0.0.0:80", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Listen, 10, 200, "0.0.0.0:80", "0.0.0.0:0"));
        let pids: Vec<u32> = t.get(10).unwrap().owners.iter().map(|o| o.pid).collect();
        assert_eq!(pids, vec![100, 200]);
    }

    #[test]
    fn full_table_evicts_oldest_and_counts() {
        let mut t = SocketTable::new(2);
        t.apply(&ev(EventKind::Bind, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Bind, 2, 1, "0.0.0.0:2", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Bind, 3, 1, "0.0.0.0:3", "0.0.0.0:0"));
        assert_eq!(t.len(), 2);
        assert_eq!(t.evictions(), 1);
        assert!(t.get(1).is_none());
        assert!(t.get(2).is_some() && t.get(3).is_some());
    }

    #[test]
    fn eviction_skips_entries_already_closed() {
        let mut t = SocketTable::new(2);
        t.apply(&ev(EventKind::Bind, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Bind, 2, 1, "0.0.0.0:2", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Close, 1, 1, "0.0.0.0:1", "0.0.0.0:0"));
        t.apply(&ev(EventKind::Bind, 3, 1, "0.0.0.0:3", "0.0.0.0:0"));
        assert_eq!(t.evictions(), 0);
        t.apply(&ev(EventKind::Bind, 4, 1, "0.0.0.0:4", "0.0.0.0:0"));
        assert_eq!(t.evictions(), 1);
        assert!(t.get(2).is_none());
    }

    #[test]
    fn order_queue_stays_bounded_under_churn() {
        let mut t = SocketTable::new(8);
        for i in 1..100_000u64 {
            t.apply(&ev(EventKind::Bind, i, 1, "0.0.0.0:1", "0.0.0.0:0"));
            t.apply(&ev(EventKind::Close, i, 1, "0.0.0.0:1", "0.0.0.0:0"));
        }
        assert!(t.order.len() <= 2 * t.len() + 1025, "{}", t.order.len());
        assert!(t.is_empty());
    }
}
