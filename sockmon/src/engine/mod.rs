//! The engine: probes, reader, state task and `/proc` worker wired together,
//! shared by `watch`, `daemon` and the tests.
//!
//! ```text
//! kernel ring ─▶ reader task ─▶ (bounded mpsc) ─▶ state task ─┬▶ filtered queues ─▶ subscribers
//!                                                  ▲   │        └▶ query replies (copies)
//!                                  commands (mpsc) ┘   └▶ /proc worker ─▶ results ─┘
//! ```
//!
//! Start-up order gives the snapshot its guarantee (nothing lost, nothing
//! counted twice): the probes are attached first, so every event from then
//! on waits in the kernel ring buffer; then the snapshot is taken and
//! merged ([`Engine::prepare`], synchronous, so the daemon can drop
//! capabilities before any thread exists); only then do the reader and the
//! state task start ([`Prepared::run`]) and apply those events in order.

pub mod flows;
mod life;
mod proc_ctx;
mod state;
pub mod stats;
pub mod totals;
pub(crate) mod worker;

use std::{sync::Arc, time::Duration, time::Instant};

use thiserror::Error;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

pub use crate::cgroup_unit::{Placement, from_proc_cgroup};
pub use state::OnLag;
use state::State;
use stats::{Shared, Status};

use crate::{
    clock::WallTime,
    event::Event,
    filter::Filter,
    kernel::{LoadError, LoadOptions, Probes, reader},
    snapshot::{self, SnapshotError},
    table::{self, SocketTable},
    view::{Lookup, SocketView, Viewer},
};

/// Default queue of each subscriber, in events (after its filter): about
/// 0.4 s of a loopback connection loop at full speed on 2 cores (v2 events
/// are ~900 bytes of JSON, five per connection with `connect_result`), so a
/// reader that keeps up on average survives being descheduled. 4096 cut the
/// benchmark's own reader off within 0.3 s (BENCHMARKS.md). It holds
/// pointers to events shared by every queue: 256 KiB a subscriber.
pub const STREAM_QUEUE: usize = 32_768;
/// Batches that may wait between the reader and the state task. Small on
/// purpose: when the state task is behind, events wait in the kernel ring
/// buffer (bounded, counted when full) rather than in process memory.
const BATCH_QUEUE: usize = 16;

/// One item of the live stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    Event(Event),
    /// `count` events were lost for `cause` (a kernel counter name).
    Lost {
        time: WallTime,
        cause: &'static str,
        count: u64,
    },
    /// The policy's verdict on a listener (see `policy`).
    Alert(Box<crate::policy::Alert>),
}

/// A request to the state task.
#[derive(Debug)]
pub enum StateRequest {
    Lookup {
        query: Lookup,
        viewer: Viewer,
        reply: oneshot::Sender<Vec<SocketView>>,
    },
    List {
        filter: Filter,
        viewer: Viewer,
        reply: oneshot::Sender<Vec<SocketView>>,
    },
    /// The (netns, inode) of every socket passing the filter, for a `list`
    /// written step by step ([`StateRequest::ListRows`]).
    ListKeys {
        filter: Filter,
        viewer: Viewer,
        reply: oneshot::Sender<Vec<(u32, u64)>>,
    },
    /// One step of a `list`: rows of `keys[from..]`, about `budget` bytes.
    ListRows {
        keys: Arc<[(u32, u64)]>,
        from: usize,
        filter: Arc<Filter>,
        viewer: Viewer,
        budget: usize,
        reply: oneshot::Sender<(Vec<u8>, usize)>,
    },
    Status(oneshot::Sender<Status>),
    Subscribe {
        filter: Filter,
        queue: usize,
        viewer: Viewer,
        on_lag: OnLag,
        reply: oneshot::Sender<Subscription>,
    },
    Shutdown(oneshot::Sender<()>),
    /// A sink lost `count` events for `cause`: tell every subscriber.
    Lost {
        cause: &'static str,
        count: u64,
    },
}

/// A subscriber's end of the live stream: events that pass its filter (and
/// every `Lost` notice), in a queue of its own. A subscriber that lets its
/// queue fill is cut off ([`OnLag::CutOff`]: its channel closes once drained
/// and `lost` counts every event it wanted from then until it drops this)
/// or resumes with an exact `lost` item ([`OnLag::Resume`]).
#[derive(Debug)]
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<StreamItem>>,
    pub lost: Arc<std::sync::atomic::AtomicU64>,
}

/// The runtime of the long-running commands and the daemon: one thread.
/// The work is one pipeline whose stages hand each other small messages;
/// on one thread those hand-offs cost no cross-thread wake-ups, which is
/// what dominates a lookup's latency on a small, busy machine. (Blocking
/// work, `/proc` reads and sink writes, runs on threads of its own.)
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Default least time between two re-checks of holders no event shows
/// (see `State::recheck`): seconds, so a passed or half-closed socket is
/// not misattributed for long, and never more often, so no user can turn
/// re-checks into a load.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(3);

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub load: LoadOptions,
    pub drain_interval: Duration,
    pub table_cap: usize,
    /// Most owners listed per socket (`table.max_owners`).
    pub max_owners: usize,
    /// Least time between two re-checks of holders no event shows
    /// (`table.recheck_interval_ms`).
    pub recheck_interval: Duration,
    /// Take the start-up snapshot (the daemon does; `watch` needs not).
    pub snapshot: bool,
    pub stream_queue: usize,
    /// Flows (issue 13): emit a `flow` record per live TCP connection this often.
    pub flow_interval: Option<Duration>,
    /// The policy of allowed listeners (`None`: judge nothing until a reload sets one).
    pub policy: Option<Arc<crate::policy::Policy>>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            load: LoadOptions::default(),
            drain_interval: reader::DEFAULT_DRAIN_INTERVAL,
            table_cap: table::DEFAULT_CAP,
            max_owners: table::DEFAULT_MAX_OWNERS,
            recheck_interval: DEFAULT_RECHECK,
            snapshot: true,
            stream_queue: STREAM_QUEUE,
            flow_interval: None,
            policy: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("start-up snapshot failed: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("cannot start a task: {0}")]
    Io(#[from] std::io::Error),
    #[error("a start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

impl EngineError {
    pub fn is_privileges(&self) -> bool {
        matches!(self, Self::Load(e) if e.is_privileges())
    }
}

/// The state task stopped (the engine is shutting down).
#[derive(Debug, Error)]
#[error("the sockmon engine has stopped")]
pub struct EngineGone;

/// A cheap, cloneable way to talk to the engine.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    commands: mpsc::Sender<StateRequest>,
    pub shared: Arc<Shared>,
    queue: usize,
    /// The policy thread (reload with `policy.reload`).
    pub policy: crate::policy::PolicyHandle,
}

/// A running engine.
pub struct Engine {
    pub handle: EngineHandle,
    state: JoinHandle<()>,
    reader: JoinHandle<std::io::Result<()>>,
}

impl Engine {
    /// Attaches the probes, (optionally) merges the snapshot, starts the tasks.
    pub async fn start(opts: EngineOptions) -> Result<Engine, EngineError> {
        Engine::prepare(opts)?.run().await
    }

    /// The privileged, blocking half of start-up: attaches the probes, then
    /// takes and merges the snapshot. Events that happen meanwhile wait in
    /// the kernel ring buffer and are applied after the snapshot, so nothing
    /// is lost or counted twice. No thread is started, so a caller can drop
    /// capabilities afterwards for the whole process (they are per thread).
    pub fn prepare(opts: EngineOptions) -> Result<Prepared, EngineError> {
        let probes = Probes::load(opts.load)?;
        let mut table = SocketTable::new(opts.table_cap);
        table.set_max_owners(opts.max_owners);
        let mut snapshot = None;
        if opts.snapshot {
            let started = Instant::now();
            let snap = snapshot::take()?;
            table.apply_snapshot(&snap);
            let source = (snap.source_names(), snap.fallback.clone());
            snapshot = Some((snap.sockets.len(), started.elapsed(), source));
        }
        Ok(Prepared {
            probes,
            table,
            snapshot,
            opts,
            early: Vec::new(),
        })
    }

    /// Stops the state task (which detaches every program) and the reader.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .commands
            .send(StateRequest::Shutdown(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        self.reader.abort();
        let _ = self.state.await;
    }

    /// Whether the reader or the state task has died (a fatal error).
    pub fn is_finished(&self) -> bool {
        self.reader.is_finished() || self.state.is_finished()
    }
}

/// An engine whose probes are attached and snapshot merged, not yet running.
pub struct Prepared {
    probes: Probes,
    table: SocketTable,
    /// Sockets, time taken, and (source names, why sock_diag was not used).
    snapshot: Option<(usize, Duration, (String, Option<String>))>,
    opts: EngineOptions,
    early: Vec<state::Subscriber>,
}

impl Prepared {
    /// Which hooks report what, as loaded.
    pub fn attach(&self) -> stats::AttachStatus {
        stats::AttachStatus::of(&self.probes)
    }

    /// A subscription that will see every event since the probes were
    /// attached (one made later through the handle starts when it is made).
    pub fn subscribe(&mut self, filter: Filter) -> Subscription {
        let (sub, subscription) = state::Subscriber::new(filter, self.opts.stream_queue);
        self.early.push(sub);
        subscription
    }

    /// Like [`Prepared::subscribe`], with a policy for falling behind.
    pub fn subscribe_with(&mut self, filter: Filter, on_lag: OnLag) -> Subscription {
        let (sub, subscription) =
            state::Subscriber::with(filter, self.opts.stream_queue, Viewer::ROOT, on_lag);
        self.early.push(sub);
        subscription
    }

    /// Starts the reader, the `/proc` worker and the state task.
    pub async fn run(self) -> Result<Engine, EngineError> {
        let Prepared {
            mut probes,
            table,
            snapshot,
            opts,
            early,
        } = self;
        let ring = probes.take_ring()?;
        let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
        let reader = tokio::spawn(reader::run(ring, batch_tx, opts.drain_interval));
        let (jobs, found) = worker::spawn()?;
        let shared = Arc::new(Shared::default());
        let (policy, alerts) = crate::policy::spawn(opts.policy.clone())?;
        let mut state = State::new(table, probes, early, jobs, shared.clone());
        state.policy = Some(policy.clone());
        state.recheck_interval = opts.recheck_interval;
        // Drift is judged against a table that started from a snapshot.
        state.track_drift = snapshot.is_some();
        state.offer_listeners();
        if let Some((sockets, took, source)) = snapshot {
            state.stats.record_snapshot(sockets, took, source);
            state
                .lives
                .seed_from_snapshot(&state.table, WallTime::now());
            state.request_details(usize::MAX);
        }
        if let Some(every) = opts.flow_interval {
            state.flows_rx = Some(flows::spawn_poller(every)); // flows (issue 13)
        }
        let (commands, command_rx) = mpsc::channel(1024);
        let state = tokio::spawn(state.run(batch_rx, command_rx, found, alerts));
        Ok(Engine {
            handle: EngineHandle {
                commands,
                shared,
                queue: opts.stream_queue,
                policy,
            },
            state,
            reader,
        })
    }
}

impl EngineHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> StateRequest,
    ) -> Result<T, EngineGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| EngineGone)?;
        rx.await.map_err(|_| EngineGone)
    }

    /// Every socket that answers `query`.
    pub async fn lookup(
        &self,
        query: Lookup,
        viewer: Viewer,
    ) -> Result<Vec<SocketView>, EngineGone> {
        self.ask(|reply| StateRequest::Lookup {
            query,
            viewer,
            reply,
        })
        .await
    }

    /// Every socket passing `filter`, ordered by (netns, inode).
    pub async fn list(
        &self,
        filter: Filter,
        viewer: Viewer,
    ) -> Result<Vec<SocketView>, EngineGone> {
        self.ask(|reply| StateRequest::List {
            filter,
            viewer,
            reply,
        })
        .await
    }

    /// The sorted (netns, inode) keys of the sockets passing `filter`.
    pub async fn list_keys(
        &self,
        filter: Filter,
        viewer: Viewer,
    ) -> Result<Vec<(u32, u64)>, EngineGone> {
        self.ask(|reply| StateRequest::ListKeys {
            filter,
            viewer,
            reply,
        })
        .await
    }

    /// One step of a listing: see [`StateRequest::ListRows`].
    pub async fn list_rows(
        &self,
        keys: Arc<[(u32, u64)]>,
        from: usize,
        filter: Arc<Filter>,
        viewer: Viewer,
        budget: usize,
    ) -> Result<(Vec<u8>, usize), EngineGone> {
        self.ask(|reply| StateRequest::ListRows {
            keys,
            from,
            filter,
            viewer,
            budget,
            reply,
        })
        .await
    }

    pub async fn status(&self) -> Result<Status, EngineGone> {
        self.ask(StateRequest::Status).await
    }

    /// Tells every subscriber (a `lost` record in the stream) that a sink
    /// lost `count` events for `cause`. Never waits: if the command queue is
    /// full the notice is skipped (the sink's counters in `status` still
    /// have it).
    pub fn report_lost(&self, cause: &'static str, count: u64) {
        let _ = self.commands.try_send(StateRequest::Lost { cause, count });
    }

    /// A new subscription to the live stream (events passing `filter`),
    /// with a queue of `queue` events (default: [`STREAM_QUEUE`]).
    pub async fn subscribe(
        &self,
        filter: Filter,
        queue: Option<usize>,
    ) -> Result<Subscription, EngineGone> {
        self.subscribe_with(filter, queue, Viewer::ROOT, OnLag::CutOff)
            .await
    }

    /// A subscription for `viewer` (events it may not see names of are
    /// never matched by a `comm` filter), with a policy for falling behind.
    pub async fn subscribe_with(
        &self,
        filter: Filter,
        queue: Option<usize>,
        viewer: Viewer,
        on_lag: OnLag,
    ) -> Result<Subscription, EngineGone> {
        let queue = queue.unwrap_or(self.queue);
        self.ask(|reply| StateRequest::Subscribe {
            filter,
            queue,
            viewer,
            on_lag,
            reply,
        })
        .await
    }
}
