//! The live socket table: which sockets exist, named by (network namespace,
//! protocol, four-tuple), and which processes hold them.
//!
//! A socket's identity is its inode (`socket:[N]`): several sockets can share
//! a four-tuple (`SO_REUSEPORT` listeners; an accepted connection shares its
//! listener's local address), so entries are keyed by inode, with an index
//! from a keyed hash of the [`TupleKey`] to the inodes that carry it (the
//! entry's own key confirms a match, so the index need not store the key
//! again: memory per socket is what a daemon's size is made of).
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
//!
//! Owners are bounded too: each fork copies every socket of the parent into
//! the child, so 10k sockets × 10k idle children would be 10⁸ owner records.
//! A socket lists at most `max_owners` owners ([`DEFAULT_MAX_OWNERS`]); past
//! that, further owners are counted in [`SocketEntry::inherited_more`]
//! instead (an inherited owner gives up its place to one that acted on the
//! socket, and is counted). Each counted process remembers which sockets
//! count it (`Process::collapsed`), so its exit, exec or a reconciliation
//! takes it off exactly those counts; siblings forked from an unchanged
//! parent share one such set, so a counted child costs a fixed record, not
//! a copy of its parent's holdings.

mod process;
mod reconcile;
mod snapshot;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{BuildHasher as _, BuildHasherDefault, Hasher, RandomState},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use smallvec::SmallVec;

pub use process::{Details, Process, VerifyRequest};
pub use reconcile::Reconciled;

use crate::event::{Comm, Event, EventKind, Family, Proto, start_ticks};

/// `TCP_SYN_SENT` as the kernel numbers TCP states.
const TCP_SYN_SENT: u8 = 2;

/// Default maximum number of sockets in the table.
pub const DEFAULT_CAP: usize = 1 << 20;

/// Default maximum number of owners listed per socket.
pub const DEFAULT_MAX_OWNERS: usize = 64;

/// What names a socket on the wire: (network namespace, protocol, local,
/// remote). Stored compactly (44 bytes, against 72 with two `SocketAddr`s):
/// it is kept twice per socket, in the entry and in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TupleKey {
    pub netns: u32,
    src_port: u16,
    dst_port: u16,
    /// IPv4 in the first 4 bytes when `family` is IPv4.
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    proto: Proto,
    family: Family,
}

impl TupleKey {
    /// Both addresses of one family (an IPv4 one beside an IPv6 one is
    /// stored IPv4-mapped, as the kernel holds it).
    pub fn new(netns: u32, proto: Proto, src: SocketAddr, dst: SocketAddr) -> Self {
        let v4 = |a: &SocketAddr| match a.ip() {
            IpAddr::V4(ip) => Some(ip.octets()),
            IpAddr::V6(_) => None,
        };
        let (family, src_ip, dst_ip) = match (v4(&src), v4(&dst)) {
            (Some(s), Some(d)) => (Family::Ipv4, pad(s), pad(d)),
            _ => (Family::Ipv6, v6(src.ip()), v6(dst.ip())),
        };
        Self {
            netns,
            src_port: src.port(),
            dst_port: dst.port(),
            src_ip,
            dst_ip,
            proto,
            family,
        }
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(self.ip(&self.src_ip), self.src_port)
    }

    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(self.ip(&self.dst_ip), self.dst_port)
    }

    fn ip(&self, raw: &[u8; 16]) -> IpAddr {
        match self.family {
            Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3])),
            Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*raw)),
        }
    }
}

fn pad(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&v4);
    a
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
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

/// Owners of one socket: nearly always one, kept inline.
pub type Owners = SmallVec<[Owner; 1]>;

/// One socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEntry {
    pub inode: u64,
    pub key: TupleKey,
    pub state: SockState,
    pub owners: Owners,
    /// Owners beyond the bound of `max_owners`, counted instead of listed
    /// (nearly always children forked from a listed owner).
    pub inherited_more: u32,
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
    by_inode: HashMap<u64, SocketEntry, BuildHasherDefault<InodeHasher>>,
    /// Keyed hash of a [`TupleKey`] → inodes (collisions are resolved by
    /// comparing the entries' keys).
    by_tuple: HashMap<u64, SmallVec<[u64; 1]>, BuildHasherDefault<PreHashed>>,
    tuple_hasher: RandomState,
    /// Sockets per network namespace (to look a tuple up in every namespace).
    netns: HashMap<u32, usize>,
    processes: HashMap<u32, Process>,
    /// (inode, seq) in insertion order; stale pairs are skipped lazily.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    cap: usize,
    max_owners: usize,
    evictions: u64,
    /// Counts changes; entries and processes remember when they were touched
    /// so a reconciliation can tell what changed after its snapshot began.
    clock: u64,
    /// While a reconciliation is in flight: inodes removed since it began.
    tombstones: Option<HashSet<u64>>,
    /// Sockets whose last known owner went (it exited, or a re-check found
    /// it had closed its copy) while the socket stayed: someone no hook saw
    /// may hold it. Taken by [`SocketTable::take_orphaned`]; a socket
    /// that a snapshot itself found without a holder (held in another pid
    /// namespace, or only by a descriptor in flight) is not listed, so it
    /// does not make the table re-snapshot again and again.
    orphaned: Vec<u64>,
    /// More were orphaned than `orphaned` keeps.
    orphaned_overflow: bool,
}

/// Most orphaned sockets remembered between two re-checks.
const ORPHANED_KEPT: usize = 65_536;

impl SocketTable {
    pub fn new(cap: usize) -> Self {
        Self {
            by_inode: HashMap::default(),
            by_tuple: HashMap::default(),
            tuple_hasher: RandomState::new(),
            netns: HashMap::new(),
            processes: HashMap::new(),
            order: VecDeque::new(),
            next_seq: 0,
            cap: cap.max(1),
            max_owners: DEFAULT_MAX_OWNERS,
            evictions: 0,
            clock: 0,
            tombstones: None,
            orphaned: Vec::new(),
            orphaned_overflow: false,
        }
    }

    /// Notes that `inode` may have lost its last owner.
    fn note_orphan(&mut self, inode: u64) {
        if self.orphaned.len() < ORPHANED_KEPT {
            self.orphaned.push(inode);
        } else {
            self.orphaned_overflow = true;
        }
    }

    /// Whether a socket lost its last owner since the previous call and is
    /// still without one (then a snapshot should find who holds it).
    pub fn take_orphaned(&mut self) -> bool {
        let overflow = std::mem::take(&mut self.orphaned_overflow);
        let found = self
            .orphaned
            .iter()
            .any(|i| self.by_inode.get(i).is_some_and(|e| e.owners.is_empty()));
        self.orphaned.clear();
        overflow || found
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

    /// Sets how many owners a socket lists (at least 1); the rest are counted.
    pub fn set_max_owners(&mut self, n: usize) {
        self.max_owners = n.max(1);
    }

    pub fn max_owners(&self) -> usize {
        self.max_owners
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
        let key = *key;
        self.by_tuple
            .get(&self.tuple_hasher.hash_one(key))
            .into_iter()
            .flatten()
            .filter_map(|i| self.by_inode.get(i))
            .filter(move |e| e.key == key)
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
            protos
                .iter()
                .flat_map(move |&proto| self.lookup(&TupleKey::new(netns, proto, src, dst)))
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

    /// Applies one socket event (a `connect_result` that failed changes
    /// nothing: the socket stays its owner's until it is released).
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
            // `EINPROGRESS` (syscalls), or a TCP socket still in SYN_SENT (the
            // socket layer reports the attempt before the SYN leaves).
            EventKind::Connect
                if e.error == Some(libc::EINPROGRESS)
                    || (e.proto == Proto::Tcp && e.state == TCP_SYN_SENT) =>
            {
                SockState::Connecting
            }
            EventKind::Connect | EventKind::ConnectResult => SockState::Connected,
            EventKind::Fork
            | EventKind::Exec
            | EventKind::Exit
            | EventKind::CloseStats
            | EventKind::ExecInfo
            | EventKind::Flow => {
                return Change::Unchanged;
            }
        };
        let key = TupleKey::new(e.netns, e.proto, e.src, e.dst);
        self.note_process(e.pid, start_ticks(e.start_ns), e.process_comm, e.uid);
        let owner = Owner {
            pid: e.pid,
            tid: e.tid,
            comm: e.comm,
            source: OwnerSource::Event,
        };
        self.upsert(e.inode, key, state, Some(owner))
    }

    /// Inserts or updates the socket `inode`, adding or refreshing `owner`.
    fn upsert(
        &mut self,
        inode: u64,
        key: TupleKey,
        state: SockState,
        owner: Option<Owner>,
    ) -> Change {
        let clock = self.clock;
        let change = if let Some(entry) = self.by_inode.get_mut(&inode) {
            let old_key = entry.key;
            entry.touched = clock;
            entry.key = key;
            entry.state = state;
            if old_key != key {
                let (old, new) = (
                    self.tuple_hasher.hash_one(old_key),
                    self.tuple_hasher.hash_one(key),
                );
                unindex(&mut self.by_tuple, old, inode);
                self.by_tuple.entry(new).or_default().push(inode);
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
                    state,
                    owners: Owners::new(),
                    inherited_more: 0,
                    seq,
                    touched: clock,
                },
            );
            self.by_tuple
                .entry(self.tuple_hasher.hash_one(key))
                .or_default()
                .push(inode);
            *self.netns.entry(key.netns).or_default() += 1;
            self.order.push_back((inode, seq));
            self.compact_order();
            Change::Inserted
        };
        if let Some(owner) = owner {
            self.place_owner(inode, owner);
        }
        change
    }

    /// Adds or refreshes `owner` of socket `inode` within the owner bound;
    /// past it, the newcomer (or an inherited owner it displaces) is
    /// counted in `inherited_more`. `owner.pid` must be in the registry.
    fn place_owner(&mut self, inode: u64, owner: Owner) {
        let Some(e) = self.by_inode.get_mut(&inode) else {
            return;
        };
        let pid = owner.pid;
        let listed = e.owners.iter().any(|o| o.pid == pid);
        if !listed && e.owners.len() >= self.max_owners {
            let displace = (owner.source < OwnerSource::Inherited)
                .then(|| {
                    e.owners
                        .iter()
                        .rposition(|o| o.source == OwnerSource::Inherited)
                })
                .flatten();
            let Some(i) = displace else {
                if let Some(p) = self.processes.get_mut(&pid)
                    && Arc::make_mut(&mut p.collapsed).insert(inode)
                {
                    e.inherited_more += 1;
                }
                return;
            };
            let out = e.owners.remove(i).pid;
            if let Some(p) = self.processes.get_mut(&out) {
                p.sockets.remove(&inode);
                if Arc::make_mut(&mut p.collapsed).insert(inode) {
                    e.inherited_more += 1;
                }
            }
        }
        merge_owner(&mut e.owners, owner);
        if let Some(p) = self.processes.get_mut(&pid) {
            p.sockets.insert(inode);
            if p.collapsed.contains(&inode) {
                Arc::make_mut(&mut p.collapsed).remove(&inode);
                e.inherited_more = e.inherited_more.saturating_sub(1);
            }
        }
    }

    /// Takes `pid` off the count of socket `inode` (it does not hold it).
    fn uncount(&mut self, pid: u32, inode: u64) {
        if let Some(p) = self.processes.get_mut(&pid)
            && p.collapsed.contains(&inode)
        {
            Arc::make_mut(&mut p.collapsed).remove(&inode);
            if let Some(e) = self.by_inode.get_mut(&inode) {
                e.inherited_more = e.inherited_more.saturating_sub(1);
            }
        }
    }

    /// Removes a socket and its owners' references to it.
    fn remove(&mut self, inode: u64) -> Change {
        let Some(entry) = self.by_inode.remove(&inode) else {
            return Change::Unchanged;
        };
        if let Some(t) = &mut self.tombstones {
            t.insert(inode);
        }
        unindex(
            &mut self.by_tuple,
            self.tuple_hasher.hash_one(entry.key),
            inode,
        );
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
fn merge_owner(owners: &mut Owners, owner: Owner) {
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

fn unindex(
    by_tuple: &mut HashMap<u64, SmallVec<[u64; 1]>, BuildHasherDefault<PreHashed>>,
    hash: u64,
    inode: u64,
) {
    if let Some(v) = by_tuple.get_mut(&hash) {
        v.retain(|i| *i != inode);
        if v.is_empty() {
            by_tuple.remove(&hash);
        }
    }
}

/// A set of socket inodes (a process's holdings): O(1) insert and remove
/// even for a process holding hundreds of thousands of sockets.
pub type InodeSet = HashSet<u64, BuildHasherDefault<InodeHasher>>;

/// Hashes kernel-assigned numbers (inodes): one multiply spreads sequential
/// values over every bit, which the hash table's probing needs.
#[derive(Default)]
pub struct InodeHasher(u64);

impl Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A hasher for keys that are already keyed hashes: passes them through.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}
