//! The engine: probes, reader, state task and `/proc` worker wired together,
//! shared by `watch`, `daemon` and the tests.
//!
//! ```text
//! kernel ring ─▶ reader task ─▶ (bounded mpsc) ─▶ state task ─┬▶ broadcast ─▶ subscribers
//!                                                  ▲   │        └▶ query replies (copies)
//!                                  commands (mpsc) ┘   └▶ /proc worker ─▶ results ─┘
//! ```
//!
//! Start-up order gives the snapshot its guarantee (nothing lost, nothing
//! counted twice): the probes are attached and the reader started first, so
//! every event from then on waits in the channel; then the snapshot is taken
//! and merged; only then does the state task start consuming events.

mod cgroup_unit;
pub mod local;
mod state;
pub mod stats;
pub mod view;
mod worker;

use std::{net::SocketAddr, sync::Arc, time::Duration, time::Instant};

use thiserror::Error;
use tokio::{
    sync::{broadcast, mpsc, oneshot},
    task::JoinHandle,
};

pub use cgroup_unit::{Placement, from_proc_cgroup};
use state::State;
use stats::{Shared, Status};
use view::{SocketView, Viewer};

use crate::{
    clock::WallTime,
    event::{Event, Proto},
    filter::Filter,
    kernel::{LoadError, LoadOptions, Probes, reader},
    snapshot::{self, SnapshotError},
    table::{self, SocketTable},
};

/// Default queue of each subscriber, in events.
pub const STREAM_QUEUE: usize = 4096;
/// Batches that may wait between the reader and the state task.
const BATCH_QUEUE: usize = 1024;

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
}

/// A request to the state task.
#[derive(Debug)]
pub enum Command {
    Lookup {
        proto: Option<Proto>,
        src: SocketAddr,
        dst: SocketAddr,
        netns: Option<u32>,
        viewer: Viewer,
        reply: oneshot::Sender<Vec<SocketView>>,
    },
    List {
        filter: Filter,
        viewer: Viewer,
        reply: oneshot::Sender<Vec<SocketView>>,
    },
    Status(oneshot::Sender<Status>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Clone, Debug)]
pub struct EngineOptions {
    pub load: LoadOptions,
    pub drain_interval: Duration,
    pub table_cap: usize,
    /// Take the start-up snapshot (the daemon does; `watch` needs not).
    pub snapshot: bool,
    pub stream_queue: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            load: LoadOptions::default(),
            drain_interval: reader::DEFAULT_DRAIN_INTERVAL,
            table_cap: table::DEFAULT_CAP,
            snapshot: true,
            stream_queue: STREAM_QUEUE,
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
    commands: mpsc::Sender<Command>,
    stream: broadcast::Sender<Arc<StreamItem>>,
    pub shared: Arc<Shared>,
}

/// A running engine.
pub struct Engine {
    pub handle: EngineHandle,
    /// A subscription made before the first event was applied (see [`Engine::take_subscriber`]).
    first: Option<broadcast::Receiver<Arc<StreamItem>>>,
    state: JoinHandle<()>,
    reader: JoinHandle<std::io::Result<()>>,
}

impl Engine {
    /// Attaches the probes, (optionally) merges the snapshot, starts the tasks.
    pub async fn start(opts: EngineOptions) -> Result<Engine, EngineError> {
        let mut probes = Probes::load(opts.load)?;
        let ring = probes.take_ring()?;
        let (batch_tx, batch_rx) = mpsc::channel(BATCH_QUEUE);
        let reader = tokio::spawn(reader::run(ring, batch_tx, opts.drain_interval));
        let mut table = SocketTable::new(opts.table_cap);
        let mut snapshot_facts = None;
        if opts.snapshot {
            let started = Instant::now();
            let snap = tokio::task::spawn_blocking(snapshot::take).await??;
            table.apply_snapshot(&snap, WallTime::now());
            snapshot_facts = Some((snap.sockets.len(), started.elapsed()));
        }
        let (jobs, found) = worker::spawn()?;
        let (stream, first) = broadcast::channel(opts.stream_queue.max(1));
        let shared = Arc::new(Shared::default());
        let mut state = State::new(table, probes, stream.clone(), jobs, shared.clone());
        if let Some((sockets, took)) = snapshot_facts {
            state.stats.record_snapshot(sockets, took);
            state.request_details(usize::MAX);
        }
        let (commands, command_rx) = mpsc::channel(1024);
        let state = tokio::spawn(state.run(batch_rx, command_rx, found));
        Ok(Engine {
            handle: EngineHandle {
                commands,
                stream,
                shared,
            },
            first: Some(first),
            state,
            reader,
        })
    }

    /// A subscription that has seen every event since the probes were
    /// attached (a later `subscribe` may miss the first few). Once.
    pub fn take_subscriber(&mut self) -> Option<broadcast::Receiver<Arc<StreamItem>>> {
        self.first.take()
    }

    /// Stops the state task (which detaches every program) and the reader.
    pub async fn shutdown(self) {
        let (tx, rx) = oneshot::channel();
        if self
            .handle
            .commands
            .send(Command::Shutdown(tx))
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

impl EngineHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineGone> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| EngineGone)?;
        rx.await.map_err(|_| EngineGone)
    }

    /// Every socket named `src → dst` (in any namespace unless `netns`).
    pub async fn lookup(
        &self,
        proto: Option<Proto>,
        src: SocketAddr,
        dst: SocketAddr,
        netns: Option<u32>,
        viewer: Viewer,
    ) -> Result<Vec<SocketView>, EngineGone> {
        self.ask(|reply| Command::Lookup {
            proto,
            src,
            dst,
            netns,
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
        self.ask(|reply| Command::List {
            filter,
            viewer,
            reply,
        })
        .await
    }

    pub async fn status(&self) -> Result<Status, EngineGone> {
        self.ask(Command::Status).await
    }

    /// A new subscription to the live stream, with its own bounded queue.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StreamItem>> {
        self.stream.subscribe()
    }
}
