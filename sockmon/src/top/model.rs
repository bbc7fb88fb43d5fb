//! What `top` knows: per-process counters fed by the event stream, and the
//! sockets of the table, refreshed from `list` and kept current between
//! refreshes by the stream.
//!
//! The work per event is a counter increment and, for socket events, one
//! hash-map update: everything that costs more (rows, rates, sorting) is
//! done per frame or per second, whatever the event rate. Time is passed in
//! (`now`), so the model is tested without sleeping.
//!
//! Why both sources: the stream alone cannot give live counts (an owner can
//! fork, exit or pass a socket on without a socket event), and the table
//! alone cannot give rates or short-lived connections. The table is the
//! truth for who holds what; the stream is the truth for what happened.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use smallvec::SmallVec;

use super::{decode::Update, filter::Subject, filter::TopFilter};
use crate::{
    event::{
        Comm, Event, EventKind, Proto,
        tally::{Counts, Tally},
    },
    view::SocketView,
};

/// Closed connections stay on screen (greyed) this long.
pub const GREY_FOR: Duration = Duration::from_secs(5);
/// A process without sockets stays listed this long after its last event.
pub const IDLE_FOR: Duration = Duration::from_secs(10);
/// Recent events kept for the Events view.
pub const EVENTS_KEPT: usize = 2000;

/// What one row of the Processes view stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowKey {
    Pid(u32),
    /// A systemd unit, or `runtime:id` of a container (`-`: none known).
    Unit(String),
}

/// Rows per process, or per unit/container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Group {
    #[default]
    Process,
    Unit,
}

/// Per-second rates over the last full second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    pub connects: f64,
    pub failed: f64,
    pub sent: f64,
    pub received: f64,
}

impl Rates {
    fn add(&mut self, o: &Rates) {
        self.connects += o.connects;
        self.failed += o.failed;
        self.sent += o.sent;
        self.received += o.received;
    }
}

/// Counters, their rates over the last second, and the last event counted.
#[derive(Debug, Default)]
struct Meter {
    counts: Counts,
    prev: Counts,
    rates: Rates,
    last: Option<Instant>,
}

impl Meter {
    fn tick(&mut self, dt: f64) {
        let per_s = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
        self.rates = Rates {
            connects: per_s(self.counts.connects, self.prev.connects),
            failed: per_s(self.counts.failed, self.prev.failed),
            sent: per_s(self.counts.sent, self.prev.sent),
            received: per_s(self.counts.received, self.prev.received),
        };
        self.prev = self.counts;
    }

    fn recent(&self, now: Instant) -> bool {
        self.last.is_some_and(|t| now.duration_since(t) < IDLE_FOR)
    }
}

#[derive(Debug, Default)]
struct Proc {
    comm: Comm,
    unit: Option<String>,
    /// Every event of the process since `top` started.
    all: Meter,
    /// Events passing a filter on sockets (port, proto, state) since it was set.
    matched: Meter,
}

/// One socket as `top` keeps it.
#[derive(Clone, Debug)]
pub struct Sock {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// `bound`, `listen`, `connecting`, `connected`, `closing` or `closed`.
    pub state: &'static str,
    /// Owner pids and how each was learned (`event`, `snapshot`, `inherited`).
    pub owners: SmallVec<[(u32, &'static str); 1]>,
    pub first_seen: Instant,
    /// It was open when `top` started (so its age is at least what is shown).
    pub before_start: bool,
    pub closed_at: Option<Instant>,
    pub sent: u64,
    pub received: u64,
    /// `sent`/`received` are real: flow records, or the totals of a TCP close.
    pub bytes_known: bool,
    /// Last time the stream said something about it.
    touched: Instant,
}

/// The model: counters, sockets, recent events.
pub struct Model {
    procs: HashMap<u32, Proc>,
    socks: HashMap<(u32, u64), Sock>,
    events: VecDeque<Event>,
    filter: TopFilter,
    started: Instant,
    /// When the filter was set.
    filter_set: Instant,
    /// A `flow` record was seen: byte counts are real.
    pub flows_on: bool,
    /// Events lost on the way (the daemon's `lost` records, our own lags).
    pub lost: u64,
    events_seen: u64,
    events_prev: u64,
    pub events_per_s: f64,
    last_tick: Instant,
    /// When the last table (`list`) arrived.
    pub table_at: Option<Instant>,
    pub table_sockets: usize,
    /// The counting rule (shared with the daemon's `counters`).
    tally: Tally,
}

/// The state a socket event leaves its socket in (for `state:` filters).
pub fn event_state(e: &Event) -> &'static str {
    match e.kind {
        EventKind::Bind => "bound",
        EventKind::Listen => "listen",
        EventKind::Connect if e.error == Some(libc::EINPROGRESS) => "connecting",
        EventKind::Connect | EventKind::Accept => "connected",
        _ => "closed",
    }
}

fn leader_comm(e: &Event) -> Comm {
    if e.process_comm.as_bytes().is_empty() {
        e.comm
    } else {
        e.process_comm
    }
}

impl Model {
    pub fn new(now: Instant) -> Model {
        Model {
            procs: HashMap::new(),
            socks: HashMap::new(),
            events: VecDeque::with_capacity(EVENTS_KEPT),
            filter: TopFilter::default(),
            started: now,
            filter_set: now,
            flows_on: false,
            lost: 0,
            events_seen: 0,
            events_prev: 0,
            events_per_s: 0.0,
            last_tick: now,
            table_at: None,
            table_sockets: 0,
            tally: Tally::default(),
        }
    }

    pub fn filter(&self) -> &TopFilter {
        &self.filter
    }

    /// A new filter: counters restart (they count what passes it).
    pub fn set_filter(&mut self, f: TopFilter, now: Instant) {
        self.filter = f;
        self.filter_set = now;
        for p in self.procs.values_mut() {
            p.matched = Meter::default();
        }
    }

    /// Whether the filter only picks processes (pid, comm, unit): then the
    /// counters since start apply; a filter on sockets needs its own.
    pub fn per_process(&self) -> bool {
        self.filter.picks_processes_only()
    }

    /// Since when the counters shown count: start, or when a filter on
    /// sockets was set.
    pub fn counting_since(&self) -> Instant {
        if self.per_process() {
            self.started
        } else {
            self.filter_set
        }
    }

    fn meter<'a>(&self, p: &'a Proc) -> &'a Meter {
        if self.per_process() {
            &p.all
        } else {
            &p.matched
        }
    }

    pub fn apply(&mut self, u: Update, now: Instant) {
        match u {
            Update::Event(e) => self.event(e, now),
            Update::Flow {
                pid,
                netns,
                inode,
                sent,
                received,
            } => {
                self.events_seen += 1;
                self.flows_on = true;
                let pass = match self.socks.get_mut(&(netns, inode)) {
                    Some(s) => {
                        s.sent += sent;
                        s.received += received;
                        s.bytes_known = true;
                        let s = s.clone();
                        self.sock_passes(&s, pid)
                    }
                    None => self.filter.is_empty(),
                };
                if let Some(p) = self.procs.get_mut(&pid) {
                    for m in [&mut p.all]
                        .into_iter()
                        .chain(pass.then_some(&mut p.matched))
                    {
                        m.counts.sent += sent;
                        m.counts.received += received;
                        m.last = Some(now);
                    }
                }
            }
            Update::ConnectResult { pid, inode, failed } => {
                // Counted already if the connect itself returned the error
                // (syscall mode); else the connect was counted as opened.
                self.events_seen += 1;
                let delta = self.tally.connect_result(inode, failed);
                if let Some(p) = self.procs.get_mut(&pid) {
                    for m in [&mut p.all, &mut p.matched] {
                        m.counts.add(&delta);
                    }
                }
            }
            Update::Counters { processes, events } => {
                // The daemon counted (only asked for while the filter picks
                // processes, so every count is one of `all`).
                self.events_seen += events;
                for c in processes {
                    let p = self.procs.entry(c.pid).or_default();
                    if !c.comm.as_bytes().is_empty() {
                        p.comm = c.comm;
                    }
                    if c.place.is_some() {
                        p.unit = c.place;
                    }
                    for m in [&mut p.all, &mut p.matched] {
                        m.counts.add(&c.counts);
                        m.last = Some(now);
                    }
                }
            }
            Update::Lost { count, .. } => self.lost += count,
        }
    }

    fn event(&mut self, e: Event, now: Instant) {
        self.events_seen += 1;
        let comm = leader_comm(&e);
        let p = self.procs.entry(e.pid).or_default();
        p.comm = comm;
        let subject = Subject {
            pid: e.pid,
            comm: comm.as_bytes(),
            src_port: e.src.port(),
            dst_port: e.dst.port(),
            proto: e.proto,
            unit: p.unit.as_deref(),
            state: event_state(&e),
        };
        let matched = self.filter.matches(&subject);
        let delta = self.tally.event(&e);
        for m in [&mut p.all]
            .into_iter()
            .chain(matched.then_some(&mut p.matched))
        {
            m.last = Some(now);
            m.counts.add(&delta);
        }
        self.track(&e, now);
        if self.events.len() == EVENTS_KEPT {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Keeps the socket map current between tables.
    fn track(&mut self, e: &Event, now: Instant) {
        if e.inode == 0 || e.error.is_some_and(|err| err != libc::EINPROGRESS) {
            return;
        }
        let key = (e.netns, e.inode);
        if e.kind == EventKind::Close {
            if let Some(s) = self.socks.get_mut(&key)
                && s.closed_at.is_none()
            {
                s.closed_at = Some(now);
                s.state = "closed";
                s.touched = now;
                if let Some(t) = e.life.as_ref().and_then(|l| l.tcp) {
                    s.sent = t.bytes_sent;
                    s.received = t.bytes_received;
                    s.bytes_known = true;
                }
            }
            return;
        }
        let s = self.socks.entry(key).or_insert_with(|| Sock {
            proto: e.proto,
            src: e.src,
            dst: e.dst,
            state: "bound",
            owners: SmallVec::new(),
            first_seen: now,
            before_start: false,
            closed_at: None,
            sent: 0,
            received: 0,
            bytes_known: false,
            touched: now,
        });
        if s.closed_at.is_some() {
            // An inode is reused only after its socket is gone: a new socket.
            *s = Sock {
                owners: SmallVec::new(),
                first_seen: now,
                closed_at: None,
                sent: 0,
                received: 0,
                bytes_known: false,
                ..s.clone()
            };
        }
        if e.kind != EventKind::Bind || s.state == "bound" {
            s.src = e.src;
            s.dst = e.dst;
            s.proto = e.proto;
            s.state = event_state(e);
        }
        s.touched = now;
        if !s.owners.iter().any(|(pid, _)| *pid == e.pid) {
            s.owners.push((e.pid, "event"));
        }
    }

    /// A fresh copy of the table, asked for at `asked`: it replaces what the
    /// stream built, except for what the stream said after `asked`.
    pub fn apply_table(&mut self, sockets: Vec<SocketView>, asked: Instant, now: Instant) {
        let first = self.table_at.is_none();
        self.table_at = Some(now);
        self.table_sockets = sockets.len();
        let mut present = HashSet::with_capacity(sockets.len());
        for v in sockets {
            let (Ok(src_ip), Ok(dst_ip)) = (v.src_ip.parse(), v.dst_ip.parse()) else {
                continue;
            };
            let key = (v.netns, v.inode);
            present.insert(key);
            for o in &v.owners {
                let p = self.procs.entry(o.pid).or_default();
                if let Some(c) = o.comm.as_deref() {
                    p.comm = super::decode::comm_of(c);
                }
                let place = super::decode::place(o.unit.as_deref(), o.container.as_ref());
                if place.is_some() {
                    p.unit = place;
                }
            }
            let s = self.socks.entry(key).or_insert_with(|| Sock {
                proto: Proto::Tcp,
                src: SocketAddr::new(src_ip, v.src_port),
                dst: SocketAddr::new(dst_ip, v.dst_port),
                state: "bound",
                owners: SmallVec::new(),
                first_seen: now,
                before_start: first,
                closed_at: None,
                sent: 0,
                received: 0,
                bytes_known: false,
                touched: asked,
            });
            if s.touched > asked {
                continue; // the stream knows better
            }
            s.proto = if v.proto == "udp" {
                Proto::Udp
            } else {
                Proto::Tcp
            };
            s.src = SocketAddr::new(src_ip, v.src_port);
            s.dst = SocketAddr::new(dst_ip, v.dst_port);
            s.state = state_name(&v.state);
            s.closed_at = None;
            s.owners = v
                .owners
                .iter()
                .map(|o| (o.pid, source_name(&o.source)))
                .collect();
        }
        for (key, s) in &mut self.socks {
            if s.closed_at.is_none() && s.touched <= asked && !present.contains(key) {
                s.closed_at = Some(now);
                s.state = "closed";
            }
        }
    }

    /// Once a second: rates over the second just past, and forgetting what
    /// is long gone (closed sockets, processes without sockets or events).
    pub fn tick(&mut self, now: Instant) {
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        if dt < 1.0 {
            return;
        }
        self.last_tick = now;
        for p in self.procs.values_mut() {
            p.all.tick(dt);
            p.matched.tick(dt);
        }
        self.events_per_s = self.events_seen.saturating_sub(self.events_prev) as f64 / dt;
        self.events_prev = self.events_seen;
        self.socks
            .retain(|_, s| s.closed_at.is_none_or(|t| now.duration_since(t) < GREY_FOR));
        let holders: HashSet<u32> = self
            .socks
            .values()
            .flat_map(|s| s.owners.iter().map(|(pid, _)| *pid))
            .collect();
        self.procs
            .retain(|pid, p| holders.contains(pid) || p.all.recent(now));
    }

    fn subject<'a>(&'a self, s: &'a Sock, pid: u32) -> Subject<'a> {
        let p = self.procs.get(&pid);
        Subject {
            pid,
            comm: p.map_or(&[][..], |p| p.comm.as_bytes()),
            src_port: s.src.port(),
            dst_port: s.dst.port(),
            proto: s.proto,
            unit: p.and_then(|p| p.unit.as_deref()),
            state: s.state,
        }
    }

    fn sock_passes(&self, s: &Sock, pid: u32) -> bool {
        self.filter.matches(&self.subject(s, pid))
    }

    /// The name of a process (raw bytes: escape before showing).
    pub fn comm(&self, pid: u32) -> Option<&[u8]> {
        self.procs.get(&pid).map(|p| p.comm.as_bytes())
    }

    pub fn unit(&self, pid: u32) -> Option<&str> {
        self.procs.get(&pid).and_then(|p| p.unit.as_deref())
    }

    fn key_of(&self, pid: u32, group: Group) -> RowKey {
        match group {
            Group::Process => RowKey::Pid(pid),
            Group::Unit => RowKey::Unit(self.unit(pid).unwrap_or("-").to_string()),
        }
    }

    /// Whether `pid` belongs to row `key`.
    pub fn in_row(&self, pid: u32, key: &RowKey) -> bool {
        match key {
            RowKey::Pid(p) => *p == pid,
            RowKey::Unit(u) => self.unit(pid).unwrap_or("-") == u,
        }
    }

    /// One unordered row per process (or unit) with sockets or recent events.
    pub fn process_rows(&self, group: Group, now: Instant) -> Vec<ProcRow> {
        let mut rows: HashMap<RowKey, ProcRow> = HashMap::new();
        let mut keys_of_pid: HashMap<u32, RowKey> = HashMap::new();
        let mut row_of = |rows: &mut HashMap<RowKey, ProcRow>, pid: u32| -> RowKey {
            keys_of_pid
                .entry(pid)
                .or_insert_with(|| {
                    let key = self.key_of(pid, group);
                    rows.entry(key.clone()).or_insert_with(|| ProcRow {
                        key: key.clone(),
                        ..ProcRow::default()
                    });
                    key
                })
                .clone()
        };
        for (pid, p) in &self.procs {
            let shown = if self.per_process() {
                p.all.recent(now)
                    && self.filter.matches(&Subject {
                        pid: *pid,
                        comm: p.comm.as_bytes(),
                        src_port: 0,
                        dst_port: 0,
                        proto: Proto::Tcp,
                        unit: p.unit.as_deref(),
                        state: "",
                    })
            } else {
                p.matched.recent(now)
            };
            if shown {
                row_of(&mut rows, *pid);
            }
        }
        for s in self.socks.values().filter(|s| s.closed_at.is_none()) {
            for (pid, _) in &s.owners {
                if !self.sock_passes(s, *pid) {
                    continue;
                }
                let key = row_of(&mut rows, *pid);
                if let Some(r) = rows.get_mut(&key) {
                    if is_listener(s) {
                        r.listeners += 1;
                    } else if s.state != "bound" {
                        r.conns += 1;
                    }
                }
            }
        }
        for (pid, key) in &keys_of_pid {
            let (Some(r), Some(p)) = (rows.get_mut(key), self.procs.get(pid)) else {
                continue;
            };
            r.pids.push(*pid);
            let m = self.meter(p);
            r.rates.add(&m.rates);
            r.total += m.counts.opened();
        }
        rows.into_values()
            .map(|mut r| {
                r.pids.sort_unstable();
                r.name = match &r.key {
                    RowKey::Pid(pid) => super::text::shown(self.comm(*pid).unwrap_or_default()),
                    RowKey::Unit(u) => super::text::unit_label(u),
                };
                r
            })
            .collect()
    }

    /// The sockets of row `key` (closed ones for [`GREY_FOR`]), oldest first.
    pub fn connections(&self, key: &RowKey, now: Instant) -> Vec<ConnRow> {
        let mut rows: Vec<ConnRow> = self
            .socks
            .iter()
            .filter_map(|((_, inode), s)| {
                let (pid, source) = s
                    .owners
                    .iter()
                    .find(|(pid, _)| self.in_row(*pid, key) && self.sock_passes(s, *pid))?;
                Some(ConnRow {
                    inode: *inode,
                    pid: *pid,
                    proto: s.proto,
                    local: s.src,
                    remote: s.dst,
                    state: s.state,
                    age: now.duration_since(s.first_seen),
                    before_start: s.before_start,
                    sent: s.sent,
                    received: s.received,
                    bytes_known: s.bytes_known,
                    source,
                    closed: s.closed_at.is_some(),
                    first_seen: s.first_seen,
                    closed_at: s.closed_at,
                })
            })
            .collect();
        // Open ones first, oldest first (new ones go to the bottom of them);
        // then the closed ones, most recently closed first.
        rows.sort_by_key(|r| (r.closed_at.map(std::cmp::Reverse), r.first_seen, r.inode));
        rows
    }

    /// Every listening socket (TCP `listen`, unconnected UDP), by port.
    pub fn listeners(&self) -> Vec<ListenRow> {
        let mut rows: Vec<ListenRow> = self
            .socks
            .iter()
            .filter(|(_, s)| s.closed_at.is_none() && is_listener(s))
            .filter_map(|((netns, inode), s)| {
                let (pid, source) = s
                    .owners
                    .iter()
                    .find(|(pid, _)| self.sock_passes(s, *pid))
                    .or_else(|| s.owners.first().filter(|_| self.filter.is_empty()))?;
                Some(ListenRow {
                    proto: s.proto,
                    local: s.src,
                    netns: *netns,
                    inode: *inode,
                    pid: *pid,
                    owners: s.owners.len(),
                    name: super::text::shown(self.comm(*pid).unwrap_or_default()),
                    unit: self.unit(*pid).map(super::text::unit_label),
                    source,
                })
            })
            .collect();
        rows.sort_by_key(|r| (r.local.port(), r.proto, r.local.ip(), r.netns, r.inode));
        rows
    }

    /// Recent events, newest first, of row `key` (all when `None`) passing
    /// the filter; at most `max`.
    pub fn events(&self, key: Option<&RowKey>, max: usize) -> Vec<&Event> {
        self.events
            .iter()
            .rev()
            .filter(|e| key.is_none_or(|k| self.in_row(e.pid, k)))
            .filter(|e| {
                self.filter.matches(&Subject {
                    pid: e.pid,
                    comm: leader_comm(e).as_bytes(),
                    src_port: e.src.port(),
                    dst_port: e.dst.port(),
                    proto: e.proto,
                    unit: self.unit(e.pid),
                    state: event_state(e),
                })
            })
            .take(max)
            .collect()
    }
}

/// A TCP listener, or a UDP socket bound and not connected (it receives
/// from anyone: what `ss -l` lists too).
fn is_listener(s: &Sock) -> bool {
    s.state == "listen"
        || (s.proto == Proto::Udp
            && s.state == "bound"
            && s.dst.port() == 0
            && s.dst.ip().is_unspecified())
}

fn state_name(s: &str) -> &'static str {
    crate::top::filter::STATES
        .into_iter()
        .find(|n| *n == s)
        .unwrap_or("closing")
}

fn source_name(s: &str) -> &'static str {
    match s {
        "snapshot" => "snapshot",
        "inherited" => "inherited",
        _ => "event",
    }
}

/// One row of the Processes view.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcRow {
    pub key: RowKey,
    /// The processes in the row (one, unless grouped by unit).
    pub pids: Vec<u32>,
    /// Escaped for the terminal.
    pub name: String,
    pub conns: u64,
    pub listeners: u64,
    pub rates: Rates,
    /// Connections opened (connected or accepted) since counting began.
    pub total: u64,
}

impl Default for RowKey {
    fn default() -> Self {
        RowKey::Pid(0)
    }
}

/// One row of the Connections view.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnRow {
    pub inode: u64,
    pub pid: u32,
    pub proto: Proto,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: &'static str,
    pub age: Duration,
    pub before_start: bool,
    pub sent: u64,
    pub received: u64,
    /// Bytes are known for this connection even without flow records
    /// (a TCP close carries its totals).
    pub bytes_known: bool,
    pub source: &'static str,
    pub closed: bool,
    first_seen: Instant,
    closed_at: Option<Instant>,
}

/// One row of the Listeners view.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenRow {
    pub proto: Proto,
    pub local: SocketAddr,
    pub netns: u32,
    pub inode: u64,
    pub pid: u32,
    pub owners: usize,
    pub name: String,
    pub unit: Option<String>,
    pub source: &'static str,
}

#[cfg(test)]
mod tests;
