//! Event stream sinks of the daemon: stdout (for journald or a log shipper)
//! and an append-only file with size-based rotation.
//!
//! Lines are never split: events are encoded into whole lines and the file
//! rotates only between lines, before one would push it past `max_bytes`. The sink has
//! its own bounded subscription; when it falls behind, a `lost` line says how
//! many events it missed.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::atomic::Ordering,
};

use tokio::sync::{mpsc, oneshot};

use super::config::SinksConfig;
use crate::{
    api::server::encode,
    clock::WallTime,
    engine::{EngineHandle, Subscription},
    filter::Filter,
    output::json,
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

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
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
    pub fn write_lines(&mut self, mut lines: &[u8]) -> io::Result<()> {
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
            lines = &lines[take..];
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
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

struct Sinks {
    stdout: bool,
    file: Option<RotatingFile>,
}

impl Sinks {
    fn open(cfg: &SinksConfig) -> Self {
        let file = cfg.file.path.as_ref().and_then(|p| {
            RotatingFile::open(p, cfg.file.max_bytes, cfg.file.keep)
                .map_err(|e| tracing::error!("event file sink {}: {e}", p.display()))
                .ok()
        });
        Self {
            stdout: cfg.stdout.enabled,
            file,
        }
    }

    fn is_empty(&self) -> bool {
        !self.stdout && self.file.is_none()
    }

    /// `file_only`: alert lines the journal has already (see `policy::journal`).
    fn write(&mut self, lines: &[u8], file_only: &[u8]) {
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_lines(file_only)
        {
            tracing::error!("event file sink: {e}");
        }
        if lines.is_empty() {
            return;
        }
        if self.stdout {
            let mut out = io::stdout().lock();
            if let Err(e) = out.write_all(lines).and_then(|()| out.flush()) {
                tracing::error!("stdout sink: {e}");
            }
        }
        if let Some(f) = &mut self.file
            && let Err(e) = f.write_lines(lines)
        {
            tracing::error!("event file sink: {e}");
        }
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            let _ = f.flush();
        }
    }
}

/// Queue of the sinks' subscription, in events.
const SINK_QUEUE: usize = 65_536;

/// Runs the sinks until told to stop. With no sink configured it holds no
/// subscription, so events cost nothing here. If the sinks fall so far
/// behind that their queue overflows, a `lost` line records how many events
/// they missed and they subscribe again.
pub async fn run(engine: EngineHandle, cfg: SinksConfig, mut control: mpsc::Receiver<SinkControl>) {
    let mut sinks = Sinks::open(&cfg);
    let mut sub = subscribe(&engine, &sinks).await;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut file_only = Vec::new();
    let journal = engine.policy.counters.clone();
    // Alerts already in the journal are left out of a stdout that is the journal.
    let stdout_is_journal = crate::policy::journal::stdout_is_journal();
    let encode = |item: &crate::engine::StreamItem, buf: &mut Vec<u8>, file_only: &mut Vec<u8>| {
        if matches!(item, crate::engine::StreamItem::Alert(_))
            && stdout_is_journal
            && journal.journal.load(Ordering::Relaxed)
        {
            encode(item, file_only);
        } else {
            encode(item, buf);
        }
    };
    loop {
        buf.clear();
        file_only.clear();
        let item = async {
            match &mut sub {
                Some(s) => s.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            item = item => {
                match item {
                    Some(item) => encode(&item, &mut buf, &mut file_only),
                    None => {
                        let lost = sub.as_ref().map_or(0, |s| s.lost.load(Ordering::Relaxed));
                        json::write_lost(&mut buf, WallTime::now(), "sink_lagged", lost);
                        sub = subscribe(&engine, &sinks).await;
                    }
                }
                if let Some(s) = &mut sub {
                    while buf.len() < 256 * 1024 {
                        match s.rx.try_recv() {
                            Ok(item) => encode(&item, &mut buf, &mut file_only),
                            Err(_) => break,
                        }
                    }
                }
                (sinks, buf, file_only) = write_off_thread(sinks, buf, file_only).await;
            }
            c = control.recv() => match c {
                Some(SinkControl::Reconfigure(cfg)) => {
                    sinks.flush();
                    sinks = Sinks::open(&cfg);
                    if sinks.is_empty() {
                        sub = None;
                    } else if sub.is_none() {
                        sub = subscribe(&engine, &sinks).await;
                    }
                }
                Some(SinkControl::Stop(done)) => {
                    // Whatever is already queued goes out before stopping.
                    if let Some(s) = &mut sub {
                        while let Ok(item) = s.rx.try_recv() {
                            encode(&item, &mut buf, &mut file_only);
                        }
                    }
                    let (mut sinks, _, _) = write_off_thread(sinks, buf, file_only).await;
                    sinks.flush();
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
async fn write_off_thread(
    mut sinks: Sinks,
    buf: Vec<u8>,
    file_only: Vec<u8>,
) -> (Sinks, Vec<u8>, Vec<u8>) {
    if sinks.is_empty() || (buf.is_empty() && file_only.is_empty()) {
        return (sinks, buf, file_only);
    }
    let (sinks, mut buf, mut file_only) = tokio::task::spawn_blocking(move || {
        sinks.write(&buf, &file_only);
        (sinks, buf, file_only)
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    buf.clear();
    file_only.clear();
    (sinks, buf, file_only)
}

async fn subscribe(engine: &EngineHandle, sinks: &Sinks) -> Option<Subscription> {
    if sinks.is_empty() {
        return None;
    }
    engine
        .subscribe(Filter::default(), Some(SINK_QUEUE))
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
