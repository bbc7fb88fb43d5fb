//! The API server: a Unix socket, one task per connection.
//!
//! Every connection is checked against the access rule first, then served
//! request by request (each line bounded in size and in time), until it
//! subscribes, after which it carries only the event stream. A misbehaving
//! client (malformed, oversized, never-finished requests, a subscriber that
//! stops reading) costs only its own connection: its queue is bounded, it
//! gets an error or a `lost` notice, and it is dropped.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};

use super::{
    access::{self, Peer},
    protocol::{self, ApiError, MAX_REQUEST, Request, Response},
};
use crate::{
    engine::{EngineHandle, StreamItem, view::Viewer},
    filter::Filter,
    output::json,
};

/// Default path of the API socket.
pub const DEFAULT_SOCKET: &str = "/run/sockmon/sockmon.sock";
/// Default number of simultaneous clients.
pub const DEFAULT_MAX_CLIENTS: usize = 256;
/// Time a client has to send a complete request line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a subscriber has to take a batch of events before it is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("another sockmon daemon is already serving {0}")]
    AlreadyRunning(PathBuf),
    #[error("cannot create the API socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
}

/// Settings that may change at run time (SIGHUP).
#[derive(Debug)]
pub struct Limits {
    pub max_clients: AtomicUsize,
}

/// Creates the socket at `path`: parent directory made, a stale socket of a
/// dead daemon replaced (a live one refused), mode `0660`, group `sockmon`
/// when it exists. A std listener, so it can be made before any runtime.
pub fn bind_std(path: &Path) -> Result<std::os::unix::net::UnixListener, ServerError> {
    let err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::AlreadyRunning(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
    if let Some(gid) = access::group_id(access::GROUP) {
        std::os::unix::fs::chown(path, Some(0), Some(gid)).map_err(err)?;
    }
    Ok(listener)
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
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accepting an API connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let clients = &engine.shared.clients;
        if clients.load(Ordering::Relaxed) >= limits.max_clients.load(Ordering::Relaxed) {
            tokio::spawn(refuse(
                stream,
                ApiError::new("busy", "too many clients; try again later"),
            ));
            continue;
        }
        clients.fetch_add(1, Ordering::Relaxed);
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, &engine, group, hidepid).await {
                tracing::debug!("API connection ended: {e}");
            }
            engine.shared.clients.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Answers the client's first request with `e`, then closes. Reading the
/// request first matters: closing a Unix socket with unread data resets the
/// peer, which could then lose the answer.
async fn refuse(stream: UnixStream, e: ApiError) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(1), read_line(&mut reader, &mut line)).await;
    let _ = write.write_all(&Response::error(&e).to_line()).await;
    let _ = write.shutdown().await;
}

async fn connection(
    stream: UnixStream,
    engine: &EngineHandle,
    group: Option<u32>,
    hidepid: bool,
) -> io::Result<()> {
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
            refuse(stream, e).await;
            return Ok(());
        }
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        match tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut reader, &mut line)).await {
            Err(_) => return Ok(()), // never finished: drop it
            Ok(Err(e)) => return Err(e),
            Ok(Ok(LineRead::Eof)) => return Ok(()),
            Ok(Ok(LineRead::TooLong)) => {
                let e = ApiError::new(
                    "too_large",
                    format!("a request line is at most {MAX_REQUEST} bytes"),
                );
                write.write_all(&Response::error(&e).to_line()).await?;
                return Ok(());
            }
            Ok(Ok(LineRead::Line)) => {}
        }
        let request = match protocol::parse(trim_newline(&line)) {
            Ok(r) => r,
            Err(e) => {
                write.write_all(&Response::error(&e).to_line()).await?;
                continue;
            }
        };
        let response = match request {
            Request::Subscribe(filter) => {
                write.write_all(&Response::subscribed().to_line()).await?;
                return stream_events(engine, filter, reader, write).await;
            }
            r => answer(engine, r, viewer).await,
        };
        write.write_all(&response.to_line()).await?;
    }
}

async fn answer(engine: &EngineHandle, r: Request, viewer: Viewer) -> Response {
    let gone = || Response::error(&ApiError::new("internal", "the daemon is shutting down"));
    match r {
        Request::Lookup(query) => engine
            .lookup(query, viewer)
            .await
            .map_or_else(|_| gone(), Response::sockets),
        Request::List(filter) => engine
            .list(filter, viewer)
            .await
            .map_or_else(|_| gone(), Response::sockets),
        Request::Status => engine
            .status()
            .await
            .map_or_else(|_| gone(), Response::status),
        Request::Subscribe(_) => gone(),
    }
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
    let mut limited = r.take(MAX_REQUEST as u64 + 1);
    let n = limited.read_until(b'\n', buf).await?;
    if n == 0 {
        return Ok(LineRead::Eof);
    }
    if buf.last() != Some(&b'\n') {
        return Ok(if buf.len() > MAX_REQUEST {
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

/// Streams events matching `filter` until the client goes away or is cut
/// off for falling behind (then a `lost` line says how many it missed).
async fn stream_events<R: AsyncRead + Unpin>(
    engine: &EngineHandle,
    filter: Filter,
    mut reader: BufReader<R>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) -> io::Result<()> {
    let Ok(mut sub) = engine.subscribe(filter, None).await else {
        return Ok(());
    };
    let shared = engine.shared.clone();
    shared.subscribers.fetch_add(1, Ordering::Relaxed);
    let _guard = Decrement(&shared.subscribers);
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
            let _ = tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buf)).await;
            return Ok(());
        };
        encode(&item, &mut buf);
        // Batch what is already queued into one write.
        while buf.len() < 64 * 1024 {
            match sub.rx.try_recv() {
                Ok(item) => encode(&item, &mut buf),
                Err(_) => break,
            }
        }
        // A subscriber that stopped reading is dropped, not waited on forever.
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&buf)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "subscriber stopped reading",
                ));
            }
        }
    }
}

/// Appends `item` as a line of the stream (schema v1).
pub fn encode(item: &StreamItem, buf: &mut Vec<u8>) {
    match item {
        StreamItem::Event(e) => json::write_event(buf, e),
        StreamItem::Lost { time, cause, count } => json::write_lost(buf, *time, cause, *count),
        StreamItem::Alert(a) => json::write_alert(buf, a),
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
