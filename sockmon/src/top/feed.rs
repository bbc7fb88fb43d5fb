//! Where `top`'s data comes from: a running daemon (its `counters` or
//! `subscribe` stream and a periodic `list`), or an engine of its own (the
//! probes loaded in this process, like `watch` without a daemon, plus a
//! start-up snapshot so that listeners opened before `top` are seen).
//!
//! From a daemon, `top` reads only what the view on screen needs
//! ([`Want`]): per-process sums once a frame (`counters`) while it shows
//! processes or listeners, and events (of the selected process where it can
//! say so to the daemon) while it shows connections or the stream. Decoding
//! every event's JSON cost 5.7% of a core at 10k events/s; the sums cost the
//! same whatever the rate (BENCHMARKS.md, `top`). Switching between the two
//! closes one subscription and opens the other: the events of that moment
//! are counted by neither.
//!
//! Either way the data arrives on one bounded channel, in batches (all the
//! events read together), and is applied by the UI thread between frames.
//! A full channel is never waited on silently: the daemon cuts off a
//! subscriber that does not keep up and says how many events it missed (a
//! `lost` record, shown in the header), and the local engine's queue counts
//! what `top` dropped the same way.

use std::{
    io::{BufRead as _, BufReader, ErrorKind, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
    time::{Duration, Instant},
};

use super::decode::{self, Update};
use crate::{
    api::{
        client::Client,
        protocol::{COUNTERS_EVERY_MAX, COUNTERS_EVERY_MIN, Request},
    },
    engine::{Prepared, StreamItem, Subscription},
    filter::Filter,
    view::{SocketView, Viewer},
};

/// The table is re-read this often, or less often when reading it takes
/// long (at most 5% of the time is spent listing).
pub const LIST_EVERY: Duration = Duration::from_secs(2);
/// Most events in one batch.
const BATCH: usize = 4096;
/// Batches waiting for the UI thread.
const QUEUE: usize = 256;

/// One message from a source.
#[derive(Debug)]
pub enum Input {
    Updates(Vec<Update>),
    /// The whole table, as asked for at `asked`.
    Table {
        sockets: Vec<SocketView>,
        asked: Instant,
    },
    /// Something to show in the header (empty: clear it).
    Notice(String),
    /// The source stopped for good.
    Fatal(String),
}

/// What the view on screen needs from a daemon's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    /// Per-process sums, once per interval.
    Counters,
    /// Every event matching this filter.
    Events(Filter),
}

/// The UI's side of [`Want`]: the stream thread follows what is set here
/// (within [`SWITCH_WITHIN`]). A change bumps a generation, so the stream
/// thread checks one atomic between reads, not the want itself.
#[derive(Clone, Debug)]
pub struct Wanted(Arc<WantedInner>);

#[derive(Debug)]
struct WantedInner {
    want: Mutex<Want>,
    generation: AtomicU64,
}

impl Wanted {
    fn new(want: Want) -> Self {
        Self(Arc::new(WantedInner {
            want: Mutex::new(want),
            generation: AtomicU64::new(0),
        }))
    }

    /// Sets what the view needs; only a change makes the stream switch.
    pub fn set(&self, want: Want) {
        let mut w = self.0.want.lock().unwrap_or_else(|p| p.into_inner());
        if *w != want {
            *w = want;
            self.0.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// What is wanted now, and its generation.
    fn get(&self) -> (Want, u64) {
        let w = self.0.want.lock().unwrap_or_else(|p| p.into_inner());
        (w.clone(), self.0.generation.load(Ordering::Acquire))
    }

    fn changed_since(&self, generation: u64) -> bool {
        self.0.generation.load(Ordering::Acquire) != generation
    }
}

/// Longest time the stream thread takes to notice a new [`Want`].
const SWITCH_WITHIN: Duration = Duration::from_millis(200);

/// Reads a daemon's API at `socket` (a thread for the stream, one for
/// `list`); sums come every `every`. The stream starts with `first` (what
/// the first frame needs, so it does not switch at once) and follows the
/// returned handle.
pub fn daemon(socket: &Path, every: Duration, first: Want) -> (Receiver<Input>, Wanted) {
    let (tx, rx) = sync_channel(QUEUE);
    let (s1, s2) = (socket.to_path_buf(), socket.to_path_buf());
    let t2 = tx.clone();
    let wanted = Wanted::new(first);
    let w = wanted.clone();
    let every = every.clamp(COUNTERS_EVERY_MIN, COUNTERS_EVERY_MAX);
    let _ = thread::Builder::new()
        .name("top-stream".into())
        .spawn(move || stream_loop(&s1, &tx, &w, every));
    let _ = thread::Builder::new()
        .name("top-list".into())
        .spawn(move || list_loop(&s2, &t2));
    (rx, wanted)
}

/// How a subscription ended without an error.
enum End {
    /// The UI is gone.
    UiGone,
    /// The UI wants something else.
    Switch,
}

fn stream_loop(socket: &Path, tx: &SyncSender<Input>, wanted: &Wanted, every: Duration) {
    loop {
        let (e, was_subscribed) = match subscribe(socket, tx, wanted, every) {
            Ok(End::UiGone) => return,
            Ok(End::Switch) => continue,
            Err(e) => e,
        };
        if tx
            .send(Input::Notice(format!("stream: {e}; reconnecting")))
            .is_err()
        {
            return;
        }
        // Cut off after a `lost` record: back at once (every event missed
        // meanwhile is one more lost); a daemon that is not there: wait.
        if !was_subscribed {
            thread::sleep(Duration::from_secs(1));
        }
    }
}

/// One subscription, until it ends (`Err`, and whether it had begun), the
/// UI wants something else, or the UI goes away.
fn subscribe(
    socket: &Path,
    tx: &SyncSender<Input>,
    wanted: &Wanted,
    every: Duration,
) -> Result<End, (String, bool)> {
    let before = |e: std::io::Error| (e.to_string(), false);
    let (want, generation) = wanted.get();
    let request = match &want {
        Want::Counters => Request::Counters {
            filter: Filter::default(),
            every,
        },
        Want::Events(f) => Request::Subscribe(f.clone()),
    };
    let mut stream = UnixStream::connect(socket).map_err(before)?;
    stream.write_all(&request.to_line()).map_err(before)?;
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(before)?;
    let v: serde_json::Value = serde_json::from_str(&line)
        .map_err(|_| (format!("bad answer {:?}", line.trim()), false))?;
    if v["ok"] != true {
        return Err((format!("refused: {}", v["error"]), false));
    }
    let after = |e: std::io::Error| (e.to_string(), true);
    if tx.send(Input::Notice(String::new())).is_err() {
        return Ok(End::UiGone);
    }
    // Wake up now and then to see whether the UI wants something else.
    reader
        .get_ref()
        .set_read_timeout(Some(SWITCH_WITHIN))
        .map_err(after)?;
    let mut batch = Vec::with_capacity(BATCH);
    // Bytes, not a String: a read cut by the timeout keeps its part of a line.
    let mut buf = Vec::with_capacity(4096);
    loop {
        let n = match reader.read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if wanted.changed_since(generation) {
                    return Ok(End::Switch);
                }
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(after(e)),
        };
        if n > 0 && buf.last() == Some(&b'\n') {
            if let Ok(text) = std::str::from_utf8(&buf) {
                match want {
                    Want::Counters => {
                        if let Some((sums, lost)) = decode::counters_line(text) {
                            batch.push(sums);
                            batch.extend(lost);
                        }
                    }
                    Want::Events(_) => batch.extend(decode::line(text)),
                }
            }
            buf.clear();
        }
        if (n == 0 || reader.buffer().is_empty() || batch.len() >= BATCH)
            && !batch.is_empty()
            && tx.send(Input::Updates(std::mem::take(&mut batch))).is_err()
        {
            return Ok(End::UiGone);
        }
        if n == 0 {
            return Err(("the daemon closed the stream".into(), true));
        }
        if reader.buffer().is_empty() && wanted.changed_since(generation) {
            return Ok(End::Switch);
        }
    }
}

fn list_loop(socket: &Path, tx: &SyncSender<Input>) {
    loop {
        let asked = Instant::now();
        let msg = match Client::connect(socket).and_then(|mut c| c.list(Filter::default())) {
            Ok(sockets) => Input::Table { sockets, asked },
            Err(e) => Input::Notice(format!("list: {e}")),
        };
        if tx.send(msg).is_err() {
            return;
        }
        thread::sleep(LIST_EVERY.max(asked.elapsed() * 20));
    }
}

/// A local engine's thread; [`Local::stop`] detaches the probes and waits.
pub struct Local {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Local {
    pub fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `prepared` (probes attached, snapshot merged) on a thread of its own.
pub fn local(prepared: Prepared, sub: Subscription) -> std::io::Result<(Receiver<Input>, Local)> {
    let (tx, rx) = sync_channel(QUEUE);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let thread = thread::Builder::new()
        .name("top-engine".into())
        .spawn(move || rt.block_on(engine_loop(prepared, sub, tx, stop_rx)))?;
    Ok((
        rx,
        Local {
            stop: Some(stop_tx),
            thread: Some(thread),
        },
    ))
}

async fn engine_loop(
    prepared: Prepared,
    mut sub: Subscription,
    tx: SyncSender<Input>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let engine = match prepared.run().await {
        Ok(e) => e,
        Err(e) => {
            let _ = tx.send(Input::Fatal(e.to_string()));
            return;
        }
    };
    let mut list = tokio::time::interval(LIST_EVERY);
    let mut dropped = 0u64;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            item = sub.rx.recv() => {
                let mut batch = Vec::with_capacity(64);
                match item {
                    Some(item) => {
                        push(&mut batch, &item);
                        while batch.len() < BATCH {
                            match sub.rx.try_recv() {
                                Ok(item) => push(&mut batch, &item),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        batch.push(Update::Lost {
                            cause: "top_lagged".into(),
                            count: sub.lost.load(Ordering::Relaxed),
                        });
                        match engine.handle.subscribe(Filter::default(), None).await {
                            Ok(s) => sub = s,
                            Err(_) => {
                                let _ = tx.send(Input::Fatal("the event pipeline stopped".into()));
                                break;
                            }
                        }
                    }
                }
                if dropped > 0 {
                    batch.push(Update::Lost { cause: "top_lagged".into(), count: dropped });
                    dropped = 0;
                }
                // Never block the engine (it shares this thread): count instead.
                match tx.try_send(Input::Updates(batch)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(Input::Updates(b))) => {
                        dropped += b.iter().filter(|u| !matches!(u, Update::Lost { .. })).count() as u64;
                    }
                    Err(_) => break,
                }
            }
            _ = list.tick() => {
                let asked = Instant::now();
                let Ok(sockets) = engine.handle.list(Filter::default(), Viewer::ROOT).await else {
                    let _ = tx.send(Input::Fatal("the event pipeline stopped".into()));
                    break;
                };
                if let Err(TrySendError::Disconnected(_)) = tx.try_send(Input::Table { sockets, asked }) {
                    break;
                }
                if engine.is_finished() {
                    let _ = tx.send(Input::Fatal("the event pipeline stopped unexpectedly".into()));
                    break;
                }
            }
        }
    }
    engine.shutdown().await;
}

fn push(batch: &mut Vec<Update>, item: &StreamItem) {
    batch.push(match item {
        // Policy verdicts are `watch`'s and the sinks' business, not the live picture's.
        StreamItem::Alert(_) => return,
        // The same updates as the daemon's stream gives (`decode`).
        StreamItem::Event(e) if e.kind == crate::event::EventKind::Flow => {
            let (sent, received) = e
                .life
                .as_ref()
                .and_then(|l| l.tcp)
                .map_or((0, 0), |t| (t.bytes_sent, t.bytes_received));
            Update::Flow {
                pid: e.pid,
                netns: e.netns,
                inode: e.inode,
                sent,
                received,
            }
        }
        StreamItem::Event(e) if e.kind == crate::event::EventKind::ConnectResult => {
            Update::ConnectResult {
                pid: e.pid,
                inode: e.inode,
                failed: e.error.is_some(),
            }
        }
        StreamItem::Event(e) => Update::Event(e.clone()),
        StreamItem::Lost { cause, count, .. } => Update::Lost {
            cause: (*cause).to_string(),
            count: *count,
        },
    });
}

/// The daemon's socket path, for the header.
pub fn describe(socket: &Path) -> String {
    format!("daemon {}", PathBuf::from(socket).display())
}
