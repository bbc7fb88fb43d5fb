//! The state task: the one owner of the socket table.
//!
//! It applies kernel records in order, answers queries with copies
//! ([`super::view`]), hands each event to the subscribers whose filter it
//! passes (each has its own bounded queue, so a filtered subscriber never
//! suffers from traffic it did not ask for, and a slow one is cut off
//! alone), hands `/proc` work to the worker, and once a second rolls the
//! rate counters and turns new kernel-side losses into `lost` items.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sockmon_common::KernelCounter;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::{
    StateRequest, StreamItem, Subscription,
    life::Lives,
    proc_ctx::ProcContexts,
    stats::{Shared, Stats, TableStatus},
    worker::{Found, Job},
};
use crate::{
    clock::{BootClock, WallTime},
    event::{
        EventKind, Record,
        flow::{ExecCtx, TcpCounters},
        start_ticks,
    },
    filter::Filter,
    kernel::{Probes, reader::Batch},
    snapshot::{self, Snapshot},
    table::{SockState, SocketTable},
    view::{self, Viewer},
};

/// The state task's end of a [`Subscription`].
#[derive(Debug)]
pub struct Subscriber {
    filter: Filter,
    viewer: Viewer,
    on_lag: OnLag,
    /// `None` once cut off: its queue drains, then closes.
    tx: Option<mpsc::Sender<Arc<StreamItem>>>,
    lost: Arc<AtomicU64>,
    /// Events missed since the last `lost` item it was given (`Resume`).
    pending_lost: u64,
}

impl Subscriber {
    pub fn new(filter: Filter, queue: usize) -> (Subscriber, Subscription) {
        Self::with(filter, queue, Viewer::ROOT, OnLag::CutOff)
    }

    pub fn with(
        filter: Filter,
        queue: usize,
        viewer: Viewer,
        on_lag: OnLag,
    ) -> (Subscriber, Subscription) {
        let (tx, rx) = mpsc::channel(queue.max(2));
        let lost = Arc::new(AtomicU64::new(0));
        (
            Subscriber {
                filter,
                viewer,
                on_lag,
                tx: Some(tx),
                lost: lost.clone(),
                pending_lost: 0,
            },
            Subscription { rx, lost },
        )
    }

    /// Whether `item` passes its filter, as this viewer may see it: a
    /// `comm` filter never matches a name the viewer may not see (it would
    /// be an oracle for hidden names).
    fn wants(&self, item: &StreamItem) -> bool {
        match item {
            StreamItem::Event(e) => {
                self.filter.matches(e)
                    && (self.filter.comms.is_empty() || self.viewer.sees_names_of(Some(e.uid)))
            }
            StreamItem::Lost { .. } => true,
            StreamItem::Alert(a) => a.passes(&self.filter),
        }
    }

    /// Whether anyone still holds the other end.
    fn alive(&self) -> bool {
        match &self.tx {
            Some(tx) => !tx.is_closed(),
            None => Arc::strong_count(&self.lost) > 1,
        }
    }

    /// Queues `item` (wanted by this subscriber). Returns the number of
    /// events it missed by this call (0 or 1), and whether to keep it.
    fn offer(&mut self, item: &Arc<StreamItem>) -> (u64, bool) {
        let is_event = matches!(**item, StreamItem::Event(_));
        let Some(tx) = &self.tx else {
            // Cut off: every event it wanted until it is gone is counted.
            if !self.alive() {
                return (0, false);
            }
            if is_event {
                self.lost.fetch_add(1, Ordering::Relaxed);
                return (1, true);
            }
            return (0, true);
        };
        if self.pending_lost > 0 {
            // Resuming after losses: the `lost` notice goes first, in order.
            if tx.capacity() < 2 {
                return self.missed(is_event);
            }
            if let Some(cause) = self.on_lag.resume_cause() {
                let notice = StreamItem::Lost {
                    time: WallTime::now(),
                    cause,
                    count: self.pending_lost,
                };
                if tx.try_send(Arc::new(notice)).is_err() {
                    return self.missed(is_event);
                }
                self.pending_lost = 0;
            }
        }
        match tx.try_send(item.clone()) {
            Ok(()) => (0, true),
            Err(TrySendError::Full(_)) => self.missed(is_event),
            Err(TrySendError::Closed(_)) => (0, false),
        }
    }

    fn missed(&mut self, is_event: bool) -> (u64, bool) {
        let n = u64::from(is_event);
        self.lost.fetch_add(n, Ordering::Relaxed);
        match self.on_lag {
            OnLag::CutOff => self.tx = None,
            OnLag::Resume(_) | OnLag::ResumeSink => self.pending_lost += n,
        }
        (n, true)
    }
}

/// What happens to a subscriber whose queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnLag {
    /// Cut off: it gets what was queued, then its queue closes; `lost`
    /// counts every event it wanted from the overflow until it lets go.
    CutOff,
    /// Kept: the events it misses are counted (`subscriber_lagged`), and
    /// once its queue has room a `lost` item with this cause and the exact
    /// count goes first.
    Resume(&'static str),
    /// The sinks' subscription: kept and resumed the same way, with cause
    /// `sink_lagged`, and its misses counted as `sink_lagged`.
    ResumeSink,
}

impl OnLag {
    /// The cause of the `lost` item a resumed subscriber gets first.
    fn resume_cause(self) -> Option<&'static str> {
        match self {
            Self::CutOff => None,
            Self::Resume(cause) => Some(cause),
            Self::ResumeSink => Some("sink_lagged"),
        }
    }
}

/// How often connection starts of sockets the table dropped are pruned.
const LIVES_PRUNE: Duration = Duration::from_secs(30);

/// Processes whose shared sockets are verified in one re-check at most.
const VERIFY_PER_RECHECK: usize = 256;

/// Processes whose details are requested per second at most, beyond those
/// requested as they appear (bounds the worker queue after a big snapshot).
const DETAILS_PER_TICK: usize = 1024;

pub struct State {
    pub table: SocketTable,
    pub stats: Stats,
    pub probes: Probes,
    pub subscribers: Vec<Subscriber>,
    pub jobs: mpsc::Sender<Job>,
    pub shared: Arc<Shared>,
    pub boot: BootClock,
    /// Processes whose details were requested and not yet answered.
    pub requested: HashSet<(u32, u64)>,
    last_kernel: [u64; KernelCounter::ALL.len()],
    /// When to re-snapshot after losses (debounced so a burst ends first).
    reconcile_due: Option<Instant>,
    /// Cutoff of the reconciliation in flight.
    reconciling: Option<u64>,
    reconciled_tx: mpsc::Sender<Result<Snapshot, String>>,
    reconciled_rx: Option<mpsc::Receiver<Result<Snapshot, String>>>,
    last_recheck: Instant,
    /// Least time between two re-checks (`table.recheck_interval_ms`).
    pub recheck_interval: Duration,
    /// Whether the table started from a snapshot, so that a socket first
    /// seen at its release is drift rather than one opened before start.
    pub track_drift: bool,
    /// Whether the reconciliation in flight is a re-check (its additions
    /// are drift) rather than the healing after a counted loss.
    recheck_in_flight: bool,
    /// Flows (issue 13): connection starts and close counters, joined into `close` events.
    pub lives: Lives,
    last_lives_prune: Instant,
    /// Flows (issue 13): exe, args, parent, unit and container of acting processes.
    pub contexts: ProcContexts,
    /// Flows (issue 13): periodic samples of live TCP connections, when enabled.
    pub flows_rx: Option<mpsc::Receiver<super::flows::Round>>,
    flow_deltas: super::flows::Deltas,
    totals: super::totals::Totals,
    /// The policy thread, handed listeners as they open and close.
    pub policy: Option<crate::policy::PolicyHandle>,
}

/// The views see this state's exec records, connection starts and flow
/// samples through [`view::Joined`].
impl view::Joined for State {
    fn exec_of(&self, pid: u32, start_ticks: u64) -> Option<&ExecCtx> {
        self.contexts.exec_of(pid, start_ticks)
    }
    fn birth(&self, inode: u64) -> Option<(WallTime, bool)> {
        self.lives.birth(inode)
    }
    fn moved(&self, inode: u64) -> Option<&TcpCounters> {
        self.flow_deltas.totals(inode)
    }
}

impl State {
    pub fn new(
        table: SocketTable,
        probes: Probes,
        subscribers: Vec<Subscriber>,
        jobs: mpsc::Sender<Job>,
        shared: Arc<Shared>,
    ) -> Self {
        let last_kernel = probes.counters();
        let lives = Lives::new(table.cap());
        let (reconciled_tx, reconciled_rx) = mpsc::channel(1);
        Self {
            table,
            stats: Stats::default(),
            probes,
            subscribers,
            jobs,
            shared,
            boot: BootClock::sample(),
            requested: HashSet::new(),
            last_kernel,
            reconcile_due: None,
            reconciling: None,
            reconciled_tx,
            reconciled_rx: Some(reconciled_rx),
            last_recheck: Instant::now(),
            recheck_interval: super::DEFAULT_RECHECK,
            track_drift: false,
            recheck_in_flight: false,
            lives,
            last_lives_prune: Instant::now(),
            contexts: ProcContexts::new(crate::kernel::cgroup::v2_root().ok()),
            flows_rx: None,
            flow_deltas: Default::default(),
            totals: Default::default(),
            policy: None,
        }
    }

    /// Runs until a `Shutdown` command or until every input is closed.
    pub async fn run(
        mut self,
        mut batches: mpsc::Receiver<Batch>,
        mut commands: mpsc::Receiver<StateRequest>,
        mut found: mpsc::Receiver<Found>,
        mut alerts: mpsc::Receiver<crate::policy::Alert>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let Some(mut reconciled) = self.reconciled_rx.take() else {
            return; // already ran
        };
        let mut flows_rx = self.flows_rx.take();
        loop {
            tokio::select! {
                b = batches.recv() => match b {
                    Some(b) => self.on_batch(b),
                    None => break,
                },
                c = commands.recv() => match c {
                    Some(StateRequest::Shutdown(done)) => {
                        drop(self);
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.on_command(c),
                    None => break,
                },
                Some(f) = found.recv() => self.on_found(f),
                Some(snap) = reconciled.recv() => self.finish_reconcile(snap),
                Some(round) = super::flows::next(&mut flows_rx) => self.on_flow_round(round),
                Some(a) = alerts.recv() => self.publish(StreamItem::Alert(Box::new(a))),
                _ = tick.tick() => {
                    self.shared.table_sockets.store(self.table.len(), Ordering::Relaxed);
                    self.stats.tick();
                    self.report_losses();
                    self.recheck();
                    self.maybe_reconcile();
                    self.request_details(DETAILS_PER_TICK);
                    self.prune_lives();
                }
            }
        }
    }

    pub fn on_batch(&mut self, batch: Batch) {
        self.stats.decode_errors += batch.decode_errors;
        self.shared
            .table_sockets
            .store(self.table.len(), Ordering::Relaxed);
        for record in batch.events {
            match record {
                Record::Sock(mut e) => {
                    self.lives.on_event(&mut e);
                    self.contexts.annotate(&mut e, &self.table);
                    self.totals.record(&e);
                    self.stats.count(e.kind);
                    self.policy_before(&e);
                    let change = self.table.apply(&e);
                    self.note_release(&e, change);
                    self.policy_after(&e);
                    self.request_details_of(e.pid);
                    if !self.subscribers.is_empty() {
                        self.publish(StreamItem::Event(e));
                    }
                }
                Record::CloseStats(s) => self.lives.on_stats(s),
                Record::ExecInfo(x) => self.contexts.on_exec(*x),
                Record::Proc(p) => {
                    if let Some(req) = self.table.apply_proc(&p)
                        && self.jobs.try_send(Job::Verify(req)).is_err()
                    {
                        self.stats.worker_dropped += 1;
                    }
                    if p.kind == EventKind::Exit {
                        self.contexts.on_exit(p.pid);
                        // Its details are no longer wanted, whether asked for or not.
                        self.requested.remove(&(p.pid, start_ticks(p.start_ns)));
                    } else {
                        self.request_details_of(p.pid);
                    }
                }
            }
        }
    }

    /// A listener that closes leaves the policy's tracking.
    fn policy_before(&self, e: &crate::event::Event) {
        let Some(policy) = self.policy.as_ref().filter(|p| p.enabled()) else {
            return;
        };
        if e.kind == EventKind::Close
            && self.table.get(e.inode).is_some_and(|s| {
                s.state == SockState::Listening
                    || (s.state == SockState::Bound && s.key.proto() == crate::event::Proto::Udp)
            })
        {
            policy.closed(e.inode);
        }
    }

    /// A listener that opened goes to the policy with what the table knows of its owner.
    fn policy_after(&self, e: &crate::event::Event) {
        let Some(policy) = self.policy.as_ref().filter(|p| p.enabled()) else {
            return;
        };
        if !crate::policy::Candidate::is_listener(e) {
            return;
        }
        let p = self.table.process(e.pid);
        policy.offer(crate::policy::Candidate {
            inode: e.inode,
            netns: e.netns,
            proto: e.proto,
            ip: e.src.ip(),
            port: e.src.port(),
            pid: e.pid,
            start_ticks: start_ticks(e.start_ns),
            uid: e.uid,
            comm: e.process_comm,
            exe: p.and_then(|p| p.exe.clone()),
            unit: p.and_then(|p| p.unit.clone()),
            at_event: crate::policy::Candidate::identity_at_event(e),
        });
    }

    /// Hands every listener of the table (the start-up snapshot's) to the policy.
    pub fn offer_listeners(&self) {
        let Some(policy) = self.policy.as_ref().filter(|p| p.enabled()) else {
            return;
        };
        for s in self.table.iter() {
            let udp = s.key.proto() == crate::event::Proto::Udp;
            if !(s.state == SockState::Listening
                || (udp && s.state == SockState::Bound && s.key.src().port() != 0))
            {
                continue;
            }
            for o in &s.owners {
                let Some(p) = self.table.process(o.pid) else {
                    continue;
                };
                policy.offer(crate::policy::Candidate {
                    inode: s.inode,
                    netns: s.key.netns,
                    proto: s.key.proto(),
                    ip: s.key.src().ip(),
                    port: s.key.src().port(),
                    pid: o.pid,
                    start_ticks: p.start_ticks,
                    uid: p.uid,
                    comm: p.comm,
                    exe: p.exe.clone(),
                    unit: p.unit.clone(),
                    at_event: None,
                });
            }
        }
    }

    /// Queues `item` for every subscriber that wants it. A full queue cuts
    /// its subscriber off or makes it resume with a `lost` notice
    /// ([`OnLag`]); either way every missed event is counted.
    fn publish(&mut self, item: StreamItem) {
        let item = Arc::new(item);
        let shared = &self.shared;
        self.subscribers.retain_mut(|s| {
            if !s.wants(&item) {
                return s.alive();
            }
            let (missed, keep) = s.offer(&item);
            if missed > 0 {
                let counter = match s.on_lag {
                    OnLag::ResumeSink => &shared.sink_lagged,
                    OnLag::CutOff | OnLag::Resume(_) => &shared.subscriber_lagged,
                };
                counter.fetch_add(missed, Ordering::Relaxed);
            }
            keep
        });
    }

    /// Asks the worker for `pid`'s details if the table lacks them.
    fn request_details_of(&mut self, pid: u32) {
        let Some(p) = self.table.process(pid) else {
            return;
        };
        if p.exe.is_some() || !self.requested.insert((pid, p.start_ticks)) {
            return;
        }
        let job = Job::Enrich {
            pid,
            start_ticks: p.start_ticks,
        };
        if self.jobs.try_send(job).is_err() {
            self.requested.remove(&(pid, p.start_ticks));
        }
    }

    /// Requests details for up to `n` processes that still lack them.
    pub fn request_details(&mut self, n: usize) {
        let missing: Vec<u32> = self
            .table
            .processes()
            .filter(|p| p.exe.is_none() && !self.requested.contains(&(p.pid, p.start_ticks)))
            .map(|p| p.pid)
            .take(n)
            .collect();
        for pid in missing {
            self.request_details_of(pid);
        }
    }

    fn on_found(&mut self, f: Found) {
        match f {
            Found::Details {
                pid,
                start_ticks,
                details,
            } => {
                self.requested.remove(&(pid, start_ticks));
                self.table.set_process_details(pid, start_ticks, details);
            }
            Found::Held { req, held } => self.table.apply_verified(&req, &held),
            Found::Gone { pid, start_ticks } => {
                self.requested.remove(&(pid, start_ticks));
            }
        }
    }

    /// What the views join to the table (start times, and this state's
    /// exec records, connection starts and flow samples).
    fn joins(&self) -> view::Joins<'_> {
        view::Joins {
            boot: &self.boot,
            engine: Some(self),
        }
    }

    /// Re-checks, at most once per `recheck_interval`, what no hook on
    /// this kernel sees: a close of a descriptor that was not the last, and
    /// a receiver taking a descriptor with `recvmsg`.
    /// - The owners of shared sockets are verified against their
    ///   `/proc/PID/fd` on the `/proc` worker (bounded per round): one that
    ///   closed its copy leaves the owner list.
    /// - A socket that lost its last known owner since the previous round
    ///   (it exited, or closed its copy, while the kernel still holds the
    ///   socket) makes the table re-snapshot once, which finds
    ///   who holds them now (a silent SCM_RIGHTS receiver, a child forked
    ///   unseen), and heals an entry whose end was missed without any
    ///   counted loss. Sockets it finds that no event reported are drift.
    fn recheck(&mut self) {
        if self.last_recheck.elapsed() < self.recheck_interval {
            return;
        }
        self.last_recheck = Instant::now();
        for req in self.table.shared_holdings(VERIFY_PER_RECHECK) {
            if self.jobs.try_send(Job::Verify(req)).is_err() {
                self.stats.worker_dropped += 1;
            }
        }
        if self.reconcile_due.is_some() || self.reconciling.is_some() {
            return;
        }
        if self.table.take_orphaned() || self.stats.drift_pending {
            self.stats.drift_pending = false;
            self.recheck_in_flight = true;
            self.reconcile_due = Some(Instant::now());
        }
    }

    /// A TCP or UDP socket with a local address that the table first sees
    /// at its release: no event reported it (an `accept` without an
    /// address buffer in the socket mode, say). Counted, and it makes the
    /// table re-check itself at the next round.
    fn note_release(&mut self, e: &crate::event::Event, change: crate::table::Change) {
        if self.track_drift
            && e.kind == EventKind::Close
            && change == crate::table::Change::Unchanged
            && e.src.port() != 0
            && self.table.evictions() == 0
        {
            self.stats.drift += 1;
            self.stats.drift_pending = true;
        }
    }

    /// Flows (issue 13): one `flow` record per sampled connection the table
    /// knows, with the deltas since its previous record.
    fn on_flow_round(&mut self, round: super::flows::Round) {
        let mut alive = HashSet::with_capacity(round.samples.len());
        for s in &round.samples {
            alive.insert(s.inode);
            let delta = self.flow_deltas.delta(s);
            if self.subscribers.is_empty() {
                continue;
            }
            let Some(e) = super::flows::record(&self.table, s, delta, &round) else {
                continue;
            };
            self.publish(StreamItem::Event(e));
        }
        self.flow_deltas.retain(&alive);
    }

    /// Forgets connection starts of sockets the table dropped without a close.
    fn prune_lives(&mut self) {
        if self.last_lives_prune.elapsed() >= LIVES_PRUNE {
            self.last_lives_prune = Instant::now();
            self.lives.prune(&self.table);
        }
    }

    /// Starts a re-snapshot once losses have stopped for a second.
    fn maybe_reconcile(&mut self) {
        let Some(due) = self.reconcile_due else {
            return;
        };
        if self.reconciling.is_some() || Instant::now() < due {
            return;
        }
        self.reconcile_due = None;
        self.reconciling = Some(self.table.begin_reconcile());
        let tx = self.reconciled_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.blocking_send(snapshot::take().map_err(|e| e.to_string()));
        });
    }

    fn finish_reconcile(&mut self, snap: Result<Snapshot, String>) {
        let Some(cutoff) = self.reconciling.take() else {
            return;
        };
        match snap {
            Ok(snap) => {
                let r = self.table.finish_reconcile(&snap, cutoff);
                self.stats.reconciliations += 1;
                if std::mem::take(&mut self.recheck_in_flight) {
                    self.stats.drift += r.added_bound as u64;
                }
                tracing::info!(
                    "table reconciled after lost events: {} stale sockets removed, {} missing added, {} gone processes removed",
                    r.removed,
                    r.added,
                    r.processes_removed
                );
                self.request_details(DETAILS_PER_TICK);
            }
            Err(e) => {
                // Abandon the window; the next loss schedules another try.
                let _ = self.table.begin_reconcile();
                tracing::warn!("re-snapshot after lost events failed: {e}");
            }
        }
    }

    /// Publishes kernel-side losses since the last check as `lost` items.
    fn report_losses(&mut self) {
        let now = self.probes.counters();
        for (i, c) in KernelCounter::ALL.iter().enumerate() {
            let delta = now[i].saturating_sub(self.last_kernel[i]);
            if delta > 0 && c.is_loss() {
                self.reconcile_due = Some(Instant::now() + Duration::from_secs(1));
                tracing::warn!("{delta} events lost in the kernel ({})", c.name());
                self.publish(StreamItem::Lost {
                    time: WallTime::now(),
                    cause: c.name(),
                    count: delta,
                });
            }
        }
        self.last_kernel = now;
    }

    fn on_command(&mut self, c: StateRequest) {
        match c {
            StateRequest::Lookup {
                query,
                viewer,
                reply,
            } => {
                let _ = reply.send(view::lookup(&self.table, &query, viewer, self.joins()));
            }
            StateRequest::List {
                filter,
                viewer,
                reply,
            } => {
                let _ = reply.send(view::list(&self.table, &filter, viewer, self.joins()));
            }
            StateRequest::ListKeys {
                filter,
                viewer,
                reply,
            } => {
                let keys: Vec<(u32, u64)> = self
                    .table
                    .iter()
                    .filter(|e| view::matches_for(&filter, e, &self.table, viewer))
                    .map(|e| (e.key.netns, e.inode))
                    .collect();
                let _ = reply.send(keys);
            }
            StateRequest::ListRows {
                keys,
                from,
                filter,
                viewer,
                budget,
                reply,
            } => {
                let _ = reply.send(self.list_rows(&keys, from, &filter, viewer, budget));
            }
            StateRequest::Status(reply) => {
                let _ = reply.send(self.status());
            }
            StateRequest::Subscribe {
                filter,
                queue,
                viewer,
                on_lag,
                reply,
            } => {
                let (sub, subscription) = Subscriber::with(filter, queue, viewer, on_lag);
                if reply.send(subscription).is_ok() {
                    self.subscribers.push(sub);
                }
            }
            StateRequest::Shutdown(_) => {}
            StateRequest::Lost { cause, count } => self.publish(StreamItem::Lost {
                time: WallTime::now(),
                cause,
                count,
            }),
        }
    }

    /// Encodes the rows of `keys[from..]` that still exist and match, as
    /// JSON objects separated by commas, until about `budget` bytes; returns
    /// them and where the next step starts.
    fn list_rows(
        &self,
        keys: &[(u32, u64)],
        from: usize,
        filter: &Filter,
        viewer: Viewer,
        budget: usize,
    ) -> (Vec<u8>, usize) {
        let mut buf = Vec::with_capacity(budget.min(1 << 20) + 1024);
        let mut i = from;
        while i < keys.len() && buf.len() < budget {
            let (netns, inode) = keys[i];
            i += 1;
            let Some(e) = self.table.get(inode) else {
                continue;
            };
            if e.key.netns != netns || !view::matches_for(filter, e, &self.table, viewer) {
                continue;
            }
            if !buf.is_empty() {
                buf.push(b',');
            }
            let row = view::socket(e, &self.table, viewer, self.joins());
            if serde_json::to_writer(&mut buf, &row).is_err() {
                tracing::warn!("cannot encode socket {inode}");
            }
        }
        (buf, i)
    }

    pub fn status(&self) -> super::stats::Status {
        let table = TableStatus {
            sockets: self.table.len(),
            processes: self.table.process_count(),
            cap: self.table.cap(),
            evictions: self.table.evictions(),
        };
        let mut status = self.stats.status(
            &self.probes.counters(),
            table,
            &self.shared,
            super::stats::AttachStatus::of(&self.probes),
        );
        status
            .dropped
            .insert("close_stats_unmatched".into(), self.lives.unmatched);
        status
            .dropped
            .insert("exec_context_full".into(), self.contexts.dropped);
        status.units = self.totals.rows();
        status.policy = self.policy.as_ref().map(|p| p.counters.status());
        status
    }
}
