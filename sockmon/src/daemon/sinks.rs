//! Event stream sinks of the daemon: stdout (for journald or a log shipper)
//! and an append-only file with size-based rotation.
//!
//! Lines are never split: events are encoded into whole lines and the file
//! rotates only between lines, before one would push it past `max_bytes`;
//! a write that fails part-way (disk full) is cut back to the last whole
//! line. Nothing is lost silently: the sinks have their own bounded
//! subscription, and events missed because it overflowed, or because the
//! file could not be written or opened (it is retried every second), are
//! counted (`status`, metrics) and said in the stream by a `lost` line with
//! the exact count. The file is created `0640` and never through a
//! symbolic link (the daemon runs as root).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use super::{clickhouse::ClickHouseSink, config::SinksConfig};
use crate::{
    api::server::encode,
    clock::WallTime,
    engine::{EngineHandle, OnLag, Subscription, stats::Shared},
    filter::Filter,
    output::json,
    view::Viewer,
};

/// Control messages for the sink task.
pub enum SinkControl {
    Reconfigure(SinksConfig),
    /// Flush and stop; answered when done.
    Stop(oneshot::Sender<()>),
}

/// A file that rotates by size.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

/// Opens `path` for appending, created `0640` (whatever the umask: the
/// unit's is 0077), never through a symbolic link.
fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::PermissionsExt as _;
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(io::Error::other(format!(
            "{} is a symbolic link; refusing to follow it",
            path.display()
        )));
    }
    let open = |create_new: bool| {
        OpenOptions::new()
            .create_new(create_new)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    let file = match open(true) {
        Ok(f) => {
            // Through the descriptor, not the path.
            f.set_permissions(fs::Permissions::from_mode(0o640))?;
            f
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => open(false)?,
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(file)
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file,
            size,
        })
    }

    /// Appends whole lines, rotating between lines so that no file grows
    /// past `max_bytes` (a single longer line gets a file of its own).
    ///
    /// On an error (disk full...) a line written in part is cut off again,
    /// so the file ends with a whole line; the error says how many bytes of
    /// `lines` were written whole before it.
    pub fn write_lines(&mut self, lines: &[u8]) -> Result<(), (usize, io::Error)> {
        let total = lines.len();
        let mut rest = lines;
        self.write_lines_inner(&mut rest).map_err(|e| {
            let _ = self.file.set_len(self.size);
            (total - rest.len(), e)
        })
    }

    fn write_lines_inner(&mut self, lines: &mut &[u8]) -> io::Result<()> {
        while !lines.is_empty() {
            let room = self.max_bytes.saturating_sub(self.size) as usize;
            let fit = lines[..room.min(lines.len())]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let take = if fit > 0 {
                fit
            } else if self.size > 0 {
                self.rotate()?;
                continue;
            } else {
                lines
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(lines.len(), |i| i + 1)
            };
            self.file.write_all(&lines[..take])?;
            self.size += take as u64;
            *lines = &lines[take..];
        }
        Ok(())
    }

    /// `path.N-1` → `path.N` … `path` → `path.1`, then a fresh `path`.
    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                fs::rename(&from, numbered(n + 1))?;
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The file sink: open, or waiting to be opened again.
struct FileSink {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<RotatingFile>,
    /// Events not written since the last `lost` line written to the file.
    missed: u64,
    next_open: Instant,
}

/// Time between attempts to open a file sink that failed, and to write
/// again after a write error.
const RETRY: Duration = Duration::from_secs(1);

impl FileSink {
    fn new(path: &Path, max_bytes: u64, keep: u32, shared: &Shared) -> Self {
        let mut sink = Self {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            file: None,
            missed: 0,
            next_open: Instant::now(),
        };
        sink.try_open(shared);
        sink
    }

    /// Opens the file if it is closed and its retry is due.
    fn try_open(&mut self, shared: &Shared) {
        if self.file.is_some() || Instant::now() < self.next_open {
            return;
        }
        match RotatingFile::open(&self.path, self.max_bytes, self.keep) {
            Ok(f) => {
                if self.missed > 0 {
                    tracing::info!("event file sink {} open again", self.path.display());
                }
                self.file = Some(f);
            }
            Err(e) => {
                shared.sink_open_failures.fetch_add(1, Ordering::Relaxed);
                self.next_open = Instant::now() + RETRY;
                tracing::error!(
                    "event file sink {}: {e} (retrying every {}s; the events meanwhile are counted as sink_write_failed)",
                    self.path.display(),
                    RETRY.as_secs()
                );
            }
        }
    }

    /// Writes `lines` (`events` of them events): the `lost` line for what
    /// was missed first, then the lines. What cannot be written is counted.
    fn write(&mut self, lines: &[u8], shared: &Shared) {
        self.try_open(shared);
        let Some(f) = &mut self.file else {
            self.miss(count_events(lines), shared);
            return;
        };
        if self.missed > 0 {
            let mut notice = Vec::new();
            json::write_lost(
                &mut notice,
                WallTime::now(),
                "sink_write_failed",
                self.missed,
            );
            if f.write_lines(&notice).is_ok() {
                self.missed = 0;
            } else {
                self.failed(lines, 0, shared);
                return;
            }
        }
        if let Err((done, e)) = f.write_lines(lines) {
            tracing::error!("event file sink {}: {e}", self.path.display());
            self.failed(lines, done, shared);
        }
    }

    fn failed(&mut self, lines: &[u8], done: usize, shared: &Shared) {
        shared.sink_write_failures.fetch_add(1, Ordering::Relaxed);
        self.miss(count_events(&lines[done..]), shared);
        // Closed and opened again after the retry delay: a removed or
        // replaced file, or a full disk, gets a fresh start.
        self.file = None;
        self.next_open = Instant::now() + RETRY;
    }

    fn miss(&mut self, n: u64, shared: &Shared) {
        self.missed += n;
        shared.sink_write_failed.fetch_add(n, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

/// Event lines in `lines` (`lost` lines are not events).
fn count_events(lines: &[u8]) -> u64 {
    const LOST: &[u8] = b"\"event\":\"lost\"";
    lines
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty() && !l.windows(LOST.len()).any(|w| w == LOST))
        .count() as u64
}

struct Sinks {
    stdout: bool,
    file: Option<FileSink>,
    shared: Arc<Shared>,
}

impl Sinks {
    fn open(cfg: &SinksConfig, shared: &Arc<Shared>) -> Self {
        let file = cfg
            .file
            .path
            .as_ref()
            .map(|p| FileSink::new(p, cfg.file.max_bytes, cfg.file.keep, shared));
        Self {
            stdout: cfg.stdout.enabled,
            file,
            shared: shared.clone(),
        }
    }

    fn is_empty(&self) -> bool {
        !self.stdout && self.file.is_none()
    }

    fn write(&mut self, batch: &Batch) {
        let lines = &batch.lines[..];
        if let Some(f) = &mut self.file {
            if lines.is_empty() {
                f.try_open(&self.shared); // the retry, even when idle
            } else {
                f.write(lines, &self.shared);
            }
        }
        if self.stdout && !lines.is_empty() {
            let lines = batch.for_stdout();
            let mut out = io::stdout().lock();
            if let Err(e) = out.write_all(&lines).and_then(|()| out.flush()) {
                self.shared
                    .sink_write_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.shared
                    .sink_write_failed
                    .fetch_add(count_events(&lines), Ordering::Relaxed);
                tracing::error!("stdout sink: {e}");
            }
        }
    }

    fn needs_retry(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.file.is_none())
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            f.flush();
        }
    }
}

/// Lines to write, and which of them stdout leaves out: alerts the policy
/// thread has already written to the journal, when stdout is the journal
/// too (see `policy::journal`). The file gets every line, in order.
#[derive(Default)]
struct Batch {
    lines: Vec<u8>,
    journaled: Vec<std::ops::Range<usize>>,
}

impl Batch {
    fn clear(&mut self) {
        self.lines.clear();
        self.journaled.clear();
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// The lines for stdout: all of them but the journaled ones.
    fn for_stdout(&self) -> std::borrow::Cow<'_, [u8]> {
        if self.journaled.is_empty() {
            return std::borrow::Cow::Borrowed(&self.lines);
        }
        let mut out = Vec::with_capacity(self.lines.len());
        let mut at = 0;
        for r in &self.journaled {
            out.extend_from_slice(&self.lines[at..r.start]);
            at = r.end;
        }
        out.extend_from_slice(&self.lines[at..]);
        std::borrow::Cow::Owned(out)
    }
}

pub use super::config::SINK_QUEUE;

/// Runs the sinks until told to stop. With no sink configured it holds no
/// subscription, so events cost nothing here. If the sinks fall behind and
/// their queue overflows, the events they miss are counted and, once they
/// catch up, a `lost` line (`sink_lagged`) says exactly how many; a sink
/// that cannot write or open is retried, and its misses are counted and
/// said the same way (`sink_write_failed`).
pub async fn run(engine: EngineHandle, cfg: SinksConfig, mut control: mpsc::Receiver<SinkControl>) {
    let shared = engine.shared.clone();
    let mut queue = cfg.queue;
    let mut sinks = Sinks::open(&cfg, &shared);
    // The ClickHouse sink runs on a thread of its own (a slow server must not stall these).
    let mut clickhouse = ClickHouseSink::start(&engine, &cfg.clickhouse).await;
    let mut sub = subscribe(&engine, &sinks, queue).await;
    let mut buf = Batch {
        lines: Vec::with_capacity(64 * 1024),
        journaled: Vec::new(),
    };
    let journal = engine.policy.counters.clone();
    // Alerts already in the journal are left out of a stdout that is the journal.
    let stdout_is_journal = crate::policy::journal::stdout_is_journal();
    let encode = |item: &crate::engine::StreamItem, buf: &mut Batch| {
        let start = buf.lines.len();
        encode(item, &mut buf.lines);
        if matches!(item, crate::engine::StreamItem::Alert(_))
            && stdout_is_journal
            && journal.journal.load(Ordering::Relaxed)
        {
            buf.journaled.push(start..buf.lines.len());
        }
    };
    let mut retry = tokio::time::interval(RETRY);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        buf.clear();
        let item = async {
            match &mut sub {
                Some(s) => s.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = item => {
                match item {
                    Some(item) => encode(&item, &mut buf),
                    None => {
                        // Only when the engine stops.
                        sub = None;
                        continue;
                    }
                }
                if let Some(s) = &mut sub {
                    while buf.len() < 256 * 1024 {
                        match s.rx.try_recv() {
                            Ok(item) => encode(&item, &mut buf),
                            Err(_) => break,
                        }
                    }
                }
                (sinks, buf) = write_off_thread(sinks, buf).await;
            }
            _ = retry.tick(), if sinks.needs_retry() => {
                (sinks, buf) = write_off_thread(sinks, buf).await;
            }
            c = control.recv() => match c {
                Some(SinkControl::Reconfigure(cfg)) => {
                    ClickHouseSink::reconfigure(&mut clickhouse, &engine, &cfg.clickhouse).await;
                    sinks.flush();
                    let missed = sinks.file.as_ref().map_or(0, |f| f.missed);
                    sinks = Sinks::open(&cfg, &shared);
                    if let Some(f) = &mut sinks.file {
                        f.missed += missed; // still to be said in the new file
                    }
                    if sinks.is_empty() {
                        sub = None;
                    } else if sub.is_none() || cfg.queue != queue {
                        queue = cfg.queue;
                        sub = subscribe(&engine, &sinks, queue).await;
                    }
                }
                Some(SinkControl::Stop(done)) => {
                    // Whatever is already queued goes out before stopping.
                    if let Some(s) = &mut sub {
                        while let Ok(item) = s.rx.try_recv() {
                            encode(&item, &mut buf);
                        }
                    }
                    let (mut sinks, _) = write_off_thread(sinks, buf).await;
                    sinks.flush();
                    if let Some(ch) = clickhouse.take() {
                        ch.stop().await;
                    }
                    let _ = done.send(());
                    return;
                }
                None => break,
            },
        }
    }
    sinks.flush();
}

/// Writes `buf` to the sinks on a blocking thread (a slow stdout reader or
/// disk must not stall the runtime) and hands both back.
async fn write_off_thread(mut sinks: Sinks, buf: Batch) -> (Sinks, Batch) {
    if sinks.is_empty() {
        return (sinks, buf);
    }
    let (sinks, mut buf) = tokio::task::spawn_blocking(move || {
        sinks.write(&buf);
        (sinks, buf)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    buf.clear();
    (sinks, buf)
}

async fn subscribe(engine: &EngineHandle, sinks: &Sinks, queue: usize) -> Option<Subscription> {
    if sinks.is_empty() {
        return None;
    }
    engine
        .subscribe_with(
            Filter::default(),
            Some(queue),
            Viewer::ROOT,
            OnLag::ResumeSink,
        )
        .await
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize, width: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            let body = format!("{{\"n\":{i}}}");
            v.extend_from_slice(format!("{body:<w$}\n", w = width - 1).as_bytes());
        }
        v
    }

    #[test]
    fn rotates_between_batches_and_never_splits_a_line() {
        let dir = std::env::temp_dir().join(format!("sockmon-sink-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("events.ndjson");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for _ in 0..5 {
            f.write_lines(&lines(2, 40)).unwrap(); // 80 bytes per batch
        }
        f.flush().unwrap();
        let cur = fs::read_to_string(&path).unwrap();
        let one = fs::read_to_string(dir.join("events.ndjson.1")).unwrap();
        let two = fs::read_to_string(dir.join("events.ndjson.2")).unwrap();
        assert!(
            !dir.join("events.ndjson.3").exists(),
            "keeps only 2 rotated files"
        );
        for text in [&cur, &one, &two] {
            assert_eq!(text.len(), 80);
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
                assert!(v["n"].is_u64());
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_large_batch_is_split_across_files_at_line_boundaries() {
        let dir = std::env::temp_dir().join(format!("sockmon-sink-split-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("e.ndjson");
        let mut f = RotatingFile::open(&path, 100, 3).unwrap();
        f.write_lines(&lines(5, 40)).unwrap(); // 200 bytes: 80 + 80 + 40
        f.write_lines(&lines(1, 150)).unwrap(); // longer than max_bytes: a file of its own
        f.flush().unwrap();
        let sizes: Vec<usize> = ["e.ndjson.3", "e.ndjson.2", "e.ndjson.1", "e.ndjson"]
            .iter()
            .map(|n| fs::read(dir.join(n)).unwrap().len())
            .collect();
        assert_eq!(sizes, vec![80, 80, 40, 150]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn counts_event_lines_but_not_lost_lines() {
        let text = b"{\"v\":2,\"event\":\"bind\"}\n{\"v\":2,\"event\":\"lost\",\"count\":3}\n{\"event\":\"close\"}\n";
        assert_eq!(count_events(text), 2);
        assert_eq!(count_events(b""), 0);
    }

    #[test]
    fn a_symlink_is_not_followed_and_files_are_0640() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sockmon-sink-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        fs::write(&target, b"").unwrap();
        let link = dir.join("events.ndjson");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = RotatingFile::open(&link, 4096, 1).err().unwrap();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        fs::remove_file(&link).unwrap();
        RotatingFile::open(&link, 4096, 1).unwrap();
        let mode = fs::metadata(&link).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn appends_to_an_existing_file() {
        let dir = std::env::temp_dir().join(format!("sockmon-sink-append-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("e.ndjson");
        RotatingFile::open(&path, 1000, 1)
            .unwrap()
            .write_lines(b"{\"a\":1}\n")
            .unwrap();
        RotatingFile::open(&path, 1000, 1)
            .unwrap()
            .write_lines(b"{\"a\":2}\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"a\":2}\n");
        let _ = fs::remove_dir_all(&dir);
    }
}
