//! The API server: a Unix socket, one task per connection.
//!
//! Every connection is checked against the access rule first, then served
//! request by request (each line bounded in size and in time), until it
//! subscribes, after which it carries only the event stream. A misbehaving
//! client (malformed, oversized, never-finished requests, a subscriber that
//! stops reading, a client that never reads its answers) costs only its own
//! connection: every write has a deadline, a `list` is written in bounded
//! steps, its queue is bounded, it gets an error or a `lost` notice, and it
//! is dropped. Slots are bounded in total and per uid, and refusing a
//! client costs a bounded number of tasks (see SECURITY.md).

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    sync::{Semaphore, watch},
};

use super::{
    access::{self, Peer},
    counters::Window,
    protocol::{self, ApiError, MAX_REQUEST, Request, Response},
};
use crate::{
    engine::{EngineHandle, OnLag, StreamItem, Subscription},
    filter::Filter,
    output::json,
    view::Viewer,
};

/// Default path of the API socket.
pub const DEFAULT_SOCKET: &str = "/run/sockmon/sockmon.sock";
/// Default number of simultaneous clients.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Default number of simultaneous clients of one uid other than root.
pub const DEFAULT_MAX_CLIENTS_PER_UID: usize = 32;
/// Default time a client has to take each write of a response.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Default bound on the distinct values of one filter list.
pub const DEFAULT_MAX_FILTER_VALUES: usize = 256;
/// Time a client has to send a complete request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused connections answered at once (`busy`, `forbidden`), each for at
/// most 2 s and about 1 KiB (fewer if the descriptor limit is lower: see
/// `daemon::limits::refusals`); beyond this, a refused connection is closed
/// without an answer, so refusing costs a bounded number of tasks and
/// descriptors whatever the rate of connections.
pub const MAX_REFUSALS: usize = 1024;
/// Time a refused client has to send its request and take the answer.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of `list` rows the state task encodes per step: a listing never
/// holds more than this of encoded rows, and the runtime thread serves
/// others between steps.
pub const LIST_STEP_BYTES: usize = 64 * 1024;
/// Keys (16 bytes each) all `list` responses in progress may hold together
/// (16 MiB): a full listing at the default table cap, or many small ones at
/// once; more wait their turn.
pub const LIST_KEY_BUDGET: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("another sockmon daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot create the API socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("refusing the API socket path {path}: {reason}")]
    Unsafe { path: PathBuf, reason: String },
}

/// Settings that may change at run time (SIGHUP).
#[derive(Debug)]
pub struct Limits {
    pub max_clients: AtomicUsize,
    /// Refusals answered at once (read when serving starts).
    pub max_refusals: AtomicUsize,
    pub max_clients_per_uid: AtomicUsize,
    pub write_timeout_ms: AtomicU64,
    pub max_filter_values: AtomicUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: AtomicUsize::new(DEFAULT_MAX_CLIENTS),
            max_refusals: AtomicUsize::new(MAX_REFUSALS),
            max_clients_per_uid: AtomicUsize::new(DEFAULT_MAX_CLIENTS_PER_UID),
            write_timeout_ms: AtomicU64::new(DEFAULT_WRITE_TIMEOUT_MS),
            max_filter_values: AtomicUsize::new(DEFAULT_MAX_FILTER_VALUES),
        }
    }
}

impl Limits {
    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.load(Ordering::Relaxed))
    }
}

/// Creates the socket at `path`: parent directory made, a stale socket of a
/// dead daemon replaced (a live one refused), mode `0660`, group `sockmon`
/// when it exists. A std listener, so it can be made before any runtime.
///
/// Nothing at `path` is followed: a symbolic link, or anything that is not
/// a socket, is refused rather than replaced, and a parent directory that
/// others may write to is refused (they could swap the socket under us).
pub fn bind_std(path: &Path) -> Result<std::os::unix::net::UnixListener, ServerError> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let unsafe_path = |reason: String| ServerError::Unsafe {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
        let meta = std::fs::symlink_metadata(dir).map_err(err)?;
        if !meta.is_dir() {
            return Err(unsafe_path(format!(
                "{} is not a directory (a symbolic link is not followed)",
                dir.display()
            )));
        }
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if (meta.uid() != me && meta.uid() != 0) || meta.mode() & 0o022 != 0 {
            return Err(unsafe_path(format!(
                "{} may be written by others (owner uid {}, mode {:o})",
                dir.display(),
                meta.uid(),
                meta.mode() & 0o7777
            )));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServerError::AlreadyRunning(path.to_path_buf()));
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Ok(meta) => {
            let what = if meta.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a socket"
            };
            return Err(unsafe_path(format!("it exists and is {what}")));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    // Created 0660 from the start (no window with a wider mode), and never
    // chmod-ed or chown-ed through a path that could have been swapped.
    // SAFETY: umask only changes this process's file mode mask; the daemon
    // is single-threaded here.
    let old = unsafe { libc::umask(0o117) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(err)?;
    if let Some(gid) = access::group_id(access::GROUP) {
        std::os::unix::fs::lchown(path, Some(0), Some(gid)).map_err(err)?;
    }
    Ok(listener)
}

/// Who holds the connection slots: the total is in `engine.shared.clients`,
/// per uid (other than root) here.
#[derive(Debug, Default)]
struct Slots {
    per_uid: Mutex<HashMap<u32, usize>>,
}

/// A taken slot, given back when the connection ends.
struct Slot {
    slots: Arc<Slots>,
    uid: Option<u32>,
    shared: Arc<crate::engine::stats::Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.clients.fetch_sub(1, Ordering::Relaxed);
        if let Some(uid) = self.uid {
            let mut m = self.slots.per_uid.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&uid);
                }
            }
        }
    }
}

impl Slots {
    /// Takes a slot for a client of `uid`, or says why not.
    fn take(
        self: &Arc<Self>,
        uid: Option<u32>,
        limits: &Limits,
        shared: &Arc<crate::engine::stats::Shared>,
    ) -> Result<Slot, ApiError> {
        let max = limits.max_clients.load(Ordering::Relaxed);
        if shared.clients.load(Ordering::Relaxed) >= max {
            return Err(ApiError::new("busy", "too many clients; try again later"));
        }
        // Root is trusted (it could stop the daemon); everyone else shares
        // the slots fairly, so one user cannot hold them all.
        let counted = uid.filter(|u| *u != 0);
        if let Some(u) = counted {
            let quota = limits.max_clients_per_uid.load(Ordering::Relaxed);
            let mut m = self.per_uid.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(u).or_insert(0);
            if *n >= quota {
                return Err(ApiError::new(
                    "busy",
                    format!(
                        "uid {u} already has {quota} connections (api.max_clients_per_uid); close one first"
                    ),
                ));
            }
            *n += 1;
        }
        shared.clients.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            slots: self.clone(),
            uid: counted,
            shared: shared.clone(),
        })
    }
}

/// Serves `listener` until `shutdown` turns true.
pub async fn serve(
    listener: UnixListener,
    engine: EngineHandle,
    limits: Arc<Limits>,
    mut shutdown: watch::Receiver<bool>,
) {
    let group = access::group_id(access::GROUP);
    let hidepid = access::proc_hidepid();
    let slots = Arc::new(Slots::default());
    let refusals = Arc::new(Semaphore::new(
        limits
            .max_refusals
            .load(Ordering::Relaxed)
            .clamp(1, MAX_REFUSALS),
    ));
    let list_budget = Arc::new(Semaphore::new(LIST_KEY_BUDGET));
    let mut backoff = Duration::from_millis(10);
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => {
                    backoff = Duration::from_millis(10);
                    s
                }
                Err(e) => {
                    // Out of descriptors or memory: wait, longer each time,
                    // rather than spin the runtime thread.
                    tracing::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        limit_send_buffer(&stream);
        let uid = stream.peer_cred().ok().map(|c| c.uid());
        let slot = match slots.take(uid, &limits, &engine.shared) {
            Ok(slot) => slot,
            Err(e) => {
                refuse_bounded(&refusals, stream, e);
                continue;
            }
        };
        let engine = engine.clone();
        let limits = limits.clone();
        let refusals = refusals.clone();
        let list_budget = list_budget.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let ctx = Ctx {
                engine: &engine,
                limits: &limits,
                refusals: &refusals,
                list_budget: &list_budget,
            };
            if let Err(e) = connection(stream, &ctx, group, hidepid).await {
                tracing::debug!("API connection ended: {e}");
            }
        });
    }
}

/// What the kernel holds for one client that does not read (it doubles
/// the value asked): with the write deadline, this bounds what such a
/// client costs in kernel memory and in encoding per deadline.
const SEND_BUFFER: libc::c_int = 32 * 1024;

/// A subscriber's: the stream is v2 events of ~900 bytes, five per
/// connection; with the 32 KiB of a request connection each wake-up of the
/// reader carried ~70 events, and on a busy machine a reader that keeps up
/// on average was cut off within a second (BENCHMARKS.md). Its queue is
/// bounded on its own; this bounds the kernel's part.
const SUBSCRIBER_SEND_BUFFER: libc::c_int = 512 * 1024;

fn limit_send_buffer(stream: &UnixStream) {
    use std::os::fd::AsRawFd as _;
    set_send_buffer(stream.as_raw_fd(), SEND_BUFFER);
}

fn set_send_buffer(fd: std::os::fd::RawFd, size: libc::c_int) {
    // SAFETY: setsockopt on a live descriptor with a pointer to a local int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&raw const size).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::debug!(
            "cannot set SO_SNDBUF on an API connection: {}",
            io::Error::last_os_error()
        );
    }
}

/// Answers with `e` in a task of its own if fewer than [`MAX_REFUSALS`]
/// are in flight; otherwise closes the connection at once.
fn refuse_bounded(refusals: &Arc<Semaphore>, stream: UnixStream, e: ApiError) {
    match refusals.clone().try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                refuse(stream, e).await;
                drop(permit);
            });
        }
        Err(_) => drop(stream),
    }
}

/// Answers the client's first request with `e`, then closes. Reading the
/// request first matters: closing a Unix socket with unread data resets the
/// peer, which could then lose the answer. Both steps are bounded in time.
async fn refuse(stream: UnixStream, e: ApiError) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::with_capacity(256, read);
    let mut line = Vec::new();
    // A request longer than this costs the client its answer, not us memory.
    let _ =
        tokio::time::timeout(REFUSAL_TIMEOUT, read_line_max(&mut reader, &mut line, 1024)).await;
    drop(line);
    let _ = write_within(&mut write, &Response::error(&e).to_line(), REFUSAL_TIMEOUT).await;
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, write.shutdown()).await;
}

/// Writes all of `buf` within `limit`, or fails: a client that does not
/// read its responses loses its connection instead of holding it forever.
async fn write_within(w: &mut OwnedWriteHalf, buf: &[u8], limit: Duration) -> io::Result<()> {
    match tokio::time::timeout(limit, w.write_all(buf)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not take its response in time",
        )),
    }
}

/// What a connection's task shares with the others.
struct Ctx<'a> {
    engine: &'a EngineHandle,
    limits: &'a Limits,
    refusals: &'a Arc<Semaphore>,
    list_budget: &'a Arc<Semaphore>,
}

async fn connection(
    stream: UnixStream,
    ctx: &Ctx<'_>,
    group: Option<u32>,
    hidepid: bool,
) -> io::Result<()> {
    let Ctx {
        engine,
        limits,
        refusals,
        ..
    } = *ctx;
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
    };
    let viewer = match access::check(peer, group, access::proc_groups, hidepid) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(
                "refused API client uid {} pid {:?}: {}",
                peer.uid,
                peer.pid,
                e.message
            );
            if let Ok(_permit) = refusals.clone().try_acquire_owned() {
                refuse(stream, e).await;
            }
            return Ok(());
        }
    };
    let raw_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let timeout = limits.write_timeout();
        match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut reader, &mut line)).await {
            Err(_) => return Ok(()), // never finished: drop it
            Ok(Err(e)) => return Err(e),
            Ok(Ok(LineRead::Eof)) => return Ok(()),
            Ok(Ok(LineRead::TooLong)) => {
                let e = ApiError::new(
                    "too_large",
                    format!("a request line is at most {MAX_REQUEST} bytes"),
                );
                write_within(&mut write, &Response::error(&e).to_line(), timeout).await?;
                return Ok(());
            }
            Ok(Ok(LineRead::Line)) => {}
        }
        let max_values = limits.max_filter_values.load(Ordering::Relaxed);
        let request = protocol::parse(trim_newline(&line)).and_then(|r| {
            match &r {
                Request::List(f) | Request::Subscribe(f) | Request::Counters { filter: f, .. } => {
                    protocol::check_filter_len(f, max_values)?;
                }
                Request::Lookup(_) | Request::Status => {}
            }
            Ok(r)
        });
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                write_within(&mut write, &Response::error(&e).to_line(), timeout).await?;
                continue;
            }
        };
        let response = match request {
            Request::Subscribe(filter) => {
                // The halves keep the descriptor open.
                set_send_buffer(raw_fd, SUBSCRIBER_SEND_BUFFER);
                write_within(&mut write, &Response::subscribed().to_line(), timeout).await?;
                return stream_events(engine, filter, viewer, timeout, reader, write).await;
            }
            Request::Counters { filter, every } => {
                write_within(&mut write, &Response::subscribed().to_line(), timeout).await?;
                return stream_counters(engine, filter, every, viewer, timeout, reader, write)
                    .await;
            }
            Request::List(filter) => {
                write_list(ctx, filter, viewer, &mut write, timeout).await?;
                continue;
            }
            r => answer(engine, r, viewer).await,
        };
        write_within(&mut write, &response.to_line(), timeout).await?;
    }
}

fn gone() -> Response {
    Response::error(&ApiError::new("internal", "the daemon is shutting down"))
}

async fn answer(engine: &EngineHandle, r: Request, viewer: Viewer) -> Response {
    match r {
        Request::Lookup(query) => engine
            .lookup(query, viewer)
            .await
            .map_or_else(|_| gone(), Response::sockets),
        Request::Status => engine
            .status()
            .await
            .map_or_else(|_| gone(), Response::status),
        Request::List(_) | Request::Subscribe(_) | Request::Counters { .. } => gone(),
    }
}

/// Writes a `list` response, one line as for any response, step by step:
/// the matching keys first (16 bytes a socket, reserved against
/// [`LIST_KEY_BUDGET`]), then rows encoded by the
/// state task about [`LIST_STEP_BYTES`] at a time, each written within the
/// write deadline. A socket that goes away meanwhile is left out; one
/// that appears meanwhile may be.
async fn write_list(
    ctx: &Ctx<'_>,
    filter: Filter,
    viewer: Viewer,
    write: &mut OwnedWriteHalf,
    timeout: Duration,
) -> io::Result<()> {
    let engine = ctx.engine;
    // The keys' memory is reserved first, against the shared budget.
    let want = engine
        .shared
        .table_sockets
        .load(Ordering::Relaxed)
        .clamp(1, LIST_KEY_BUDGET);
    let reserve = ctx
        .list_budget
        .clone()
        .acquire_many_owned(u32::try_from(want).unwrap_or(u32::MAX));
    // Waiting for the budget is bounded too, or waiting listings would
    // hold their slots for as long as others take to read theirs.
    let _reserved = match tokio::time::timeout(timeout, reserve).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return write_within(write, &gone().to_line(), timeout).await,
        Err(_) => {
            let e = ApiError::new("busy", "too many listings in progress; try again later");
            write_within(write, &Response::error(&e).to_line(), timeout).await?;
            return Err(io::Error::new(io::ErrorKind::TimedOut, "list budget"));
        }
    };
    let Ok(mut keys) = engine.list_keys(filter.clone(), viewer).await else {
        return write_within(write, &gone().to_line(), timeout).await;
    };
    if keys.len() > 4096 {
        keys = tokio::task::spawn_blocking(move || {
            keys.sort_unstable();
            keys
        })
        .await
        .map_err(io::Error::other)?;
    } else {
        keys.sort_unstable();
    }
    let keys: Arc<[(u32, u64)]> = keys.into();
    let filter = Arc::new(filter);
    write_within(write, br#"{"ok":true,"sockets":["#, timeout).await?;
    let (mut from, mut first) = (0, true);
    while from < keys.len() {
        let (rows, next) = engine
            .list_rows(keys.clone(), from, filter.clone(), viewer, LIST_STEP_BYTES)
            .await
            .map_err(|_| io::Error::other("the daemon is shutting down"))?;
        from = next;
        if rows.is_empty() {
            continue;
        }
        if !first {
            write_within(write, b",", timeout).await?;
        }
        first = false;
        write_within(write, &rows, timeout).await?;
    }
    write_within(write, b"]}\n", timeout).await
}

enum LineRead {
    Line,
    Eof,
    TooLong,
}

/// Reads one `\n`-terminated line of at most [`MAX_REQUEST`] bytes.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> io::Result<LineRead> {
    read_line_max(r, buf, MAX_REQUEST).await
}

/// Reads one `\n`-terminated line of at most `max` bytes.
async fn read_line_max<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<LineRead> {
    let mut limited = r.take(max as u64 + 1);
    let n = limited.read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(if buf.len() > max {
            LineRead::TooLong
        } else {
            LineRead::Eof // a last line without newline: the client went away
        });
    }
    Ok(LineRead::Line)
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Streams events matching `filter`, redacted for `viewer`, until the
/// client goes away or is cut off for falling behind (then a `lost` line
/// says how many matching events it missed from the overflow on).
async fn stream_events<R: AsyncRead + Unpin>(
    engine: &EngineHandle,
    filter: Filter,
    viewer: Viewer,
    timeout: Duration,
    mut reader: BufReader<R>,
    mut write: OwnedWriteHalf,
) -> io::Result<()> {
    let Some((mut sub, _counted)) = subscribe(engine, filter, viewer, OnLag::CutOff).await else {
        return Ok(());
    };
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut sink = [0u8; 256];
    loop {
        buf.clear();
        let item = tokio::select! {
            item = sub.rx.recv() => item,
            // Anything the client sends now is ignored; EOF means it left.
            n = reader.read(&mut sink) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => continue,
            },
        };
        let Some(item) = item else {
            let n = sub.lost.load(Ordering::Relaxed);
            json::write_lost(
                &mut buf,
                crate::clock::WallTime::now(),
                "subscriber_lagged",
                n,
            );
            let _ = write_within(&mut write, &buf, timeout).await;
            return Ok(());
        };
        encode_for(&item, viewer, &mut buf);
        // Batch what is already queued into one write.
        while buf.len() < 64 * 1024 {
            match sub.rx.try_recv() {
                Ok(item) => encode_for(&item, viewer, &mut buf),
                Err(_) => break,
            }
        }
        // A subscriber that stopped reading is dropped, not waited on forever.
        write_within(&mut write, &buf, timeout).await?;
    }
}

/// Counts the events matching `filter` per process and writes what each
/// interval added as one line (`counters` in docs/api.md), so the client's
/// cost does not grow with the event rate. Falling behind is counted
/// (`lost` in the next line), never a reason to cut the client off: the
/// sums are cheap to keep up with.
async fn stream_counters<R: AsyncRead + Unpin>(
    engine: &EngineHandle,
    filter: Filter,
    every: Duration,
    viewer: Viewer,
    timeout: Duration,
    mut reader: BufReader<R>,
    mut write: OwnedWriteHalf,
) -> io::Result<()> {
    let on_lag = OnLag::Resume("counters_lagged");
    let Some((mut sub, _counted)) = subscribe(engine, filter, viewer, on_lag).await else {
        return Ok(());
    };
    let mut window = Window::new(viewer);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let interval_ms = every.as_millis() as u64;
    let mut sink = [0u8; 256];
    loop {
        tokio::select! {
            item = sub.rx.recv() => {
                let Some(item) = item else { return Ok(()) }; // the engine stopped
                window.count(&item);
                // Take what is queued in one go, bounded so the tick is not starved.
                for _ in 0..4096 {
                    match sub.rx.try_recv() {
                        Ok(item) => window.count(&item),
                        Err(_) => break,
                    }
                }
            }
            _ = tick.tick() => {
                let line = window.take(crate::clock::WallTime::now(), interval_ms);
                write_within(&mut write, &line.to_line(), timeout).await?;
            }
            // Anything the client sends now is ignored; EOF means it left.
            n = reader.read(&mut sink) => match n {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
}

/// Appends `item` as a line of the stream (schema v2).
pub fn encode(item: &StreamItem, buf: &mut Vec<u8>) {
    encode_for(item, Viewer::ROOT, buf);
}

/// [`encode`] as `viewer` may see it (names hidden as `list` hides them).
pub fn encode_for(item: &StreamItem, viewer: Viewer, buf: &mut Vec<u8>) {
    match item {
        StreamItem::Event(e) => match viewer.redact_event(e) {
            Some(redacted) => json::write_event(buf, &redacted),
            None => json::write_event(buf, e),
        },
        StreamItem::Lost { time, cause, count } => json::write_lost(buf, *time, cause, *count),
        StreamItem::Alert(a) => json::write_alert(buf, a),
    }
}

/// A stream client's subscription, counted in `status.subscribers` for as
/// long as the returned guard lives (`None`: the engine is gone).
async fn subscribe(
    engine: &EngineHandle,
    filter: Filter,
    viewer: Viewer,
    on_lag: OnLag,
) -> Option<(Subscription, Counted)> {
    let sub = engine
        .subscribe_with(filter, None, viewer, on_lag)
        .await
        .ok()?;
    engine.shared.subscribers.fetch_add(1, Ordering::Relaxed);
    Some((sub, Counted(engine.shared.clone())))
}

/// Uncounts a subscriber when its stream ends.
struct Counted(Arc<crate::engine::stats::Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
