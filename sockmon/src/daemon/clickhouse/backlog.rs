//! Batches waiting for ClickHouse: a bounded in-memory queue, and behind it
//! an optional bounded on-disk spool for outages. Synchronous and
//! self-contained, so every bound and loss is unit-tested.
//!
//! Memory holds at most `buffer_rows` events, counting the batch being sent.
//! When a new batch would pass that, the oldest batches in memory move to the
//! spool; when the spool is off or full, they are dropped and reported as a
//! loss (`clickhouse_buffer_full`, `clickhouse_spool_full`,
//! `clickhouse_spool_error`). The sender sends spooled batches first (they
//! are the oldest), so an outage drains in order as far as it can; order does
//! not matter to the table (its ORDER BY sorts).
//!
//! Spool format (documented in README, "ClickHouse"): one file per batch in
//! `spool_dir`, named `SEQ-ROWS.jsonl` (SEQ a 20-digit sequence number, ROWS
//! the number of events), holding the batch's `JSONEachRow` lines exactly as
//! they are POSTed. A file is written as `*.tmp`, synced, then renamed, so a
//! crash leaves either the whole batch or none of it; `*.tmp` leftovers are
//! removed at start. Files left by an earlier run are sent first. The spool
//! takes no new file that would bring its files past `spool_max_bytes`.

use std::{
    collections::VecDeque,
    fs,
    io::{self, Write as _},
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
};

use bytes::Bytes;

/// A loss cause with its event count.
pub type Loss = (&'static str, u64);

pub const BUFFER_FULL: &str = "clickhouse_buffer_full";
pub const SPOOL_FULL: &str = "clickhouse_spool_full";
pub const SPOOL_ERROR: &str = "clickhouse_spool_error";

/// Encoded rows, ready to POST.
#[derive(Clone, Debug)]
pub struct Batch {
    pub body: Bytes,
    pub rows: u64,
}

/// Where the batch being sent came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Memory,
    Spool(PathBuf),
}

pub struct Backlog {
    mem: VecDeque<Batch>,
    mem_rows: u64,
    cap_rows: u64,
    in_flight: Option<(Origin, Batch)>,
    spool: Option<Spool>,
}

impl Backlog {
    pub fn new(cap_rows: u64, spool: Option<Spool>) -> Self {
        Self {
            mem: VecDeque::new(),
            mem_rows: 0,
            cap_rows,
            in_flight: None,
            spool,
        }
    }

    /// Events in memory, the batch being sent from memory included.
    pub fn memory_rows(&self) -> u64 {
        self.mem_rows
    }

    /// Whether nothing waits (in memory, in flight or in the spool).
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
            && self.in_flight.is_none()
            && self.spool.as_ref().is_none_or(|s| s.files.is_empty())
    }

    /// Queues `batch`, moving the oldest batches in memory to the spool (or
    /// dropping them) to stay within the bound. Returns what was lost.
    pub fn push(&mut self, batch: Batch) -> Vec<Loss> {
        self.mem_rows += batch.rows;
        self.mem.push_back(batch);
        let mut lost = Vec::new();
        while self.mem_rows > self.cap_rows {
            let Some(old) = self.mem.pop_front() else {
                break;
            };
            self.mem_rows -= old.rows;
            if let Some(loss) = self.spill(&old) {
                lost.push(loss);
            }
        }
        lost
    }

    /// Writes `batch` to the spool; the loss if it cannot.
    fn spill(&mut self, batch: &Batch) -> Option<Loss> {
        let Some(spool) = &mut self.spool else {
            return Some((BUFFER_FULL, batch.rows));
        };
        match spool.write(batch) {
            Ok(true) => None,
            Ok(false) => Some((SPOOL_FULL, batch.rows)),
            Err(e) => {
                tracing::error!("clickhouse spool {}: {e}", spool.dir.display());
                Some((SPOOL_ERROR, batch.rows))
            }
        }
    }

    /// The next batch to send (spooled ones first), marked in flight. A spool
    /// file that cannot be read is removed and reported as lost.
    pub fn take(&mut self) -> (Option<Batch>, Vec<Loss>) {
        debug_assert!(self.in_flight.is_none(), "one batch in flight at a time");
        let mut lost = Vec::new();
        if let Some(spool) = &mut self.spool {
            while let Some((path, rows)) = spool.oldest() {
                match fs::read(&path) {
                    Ok(body) => {
                        let batch = Batch {
                            body: Bytes::from(body),
                            rows,
                        };
                        self.in_flight = Some((Origin::Spool(path), batch.clone()));
                        return (Some(batch), lost);
                    }
                    Err(e) => {
                        tracing::error!("clickhouse spool: cannot read {}: {e}", path.display());
                        spool.remove(&path);
                        lost.push((SPOOL_ERROR, rows));
                    }
                }
            }
        }
        let batch = self.mem.pop_front();
        if let Some(b) = &batch {
            self.in_flight = Some((Origin::Memory, b.clone()));
        }
        (batch, lost)
    }

    /// The batch in flight was inserted (or is given up): forget it.
    pub fn done(&mut self) {
        match self.in_flight.take() {
            Some((Origin::Memory, b)) => self.mem_rows -= b.rows,
            Some((Origin::Spool(path), _)) => {
                if let Some(s) = &mut self.spool {
                    s.remove(&path);
                }
            }
            None => {}
        }
    }

    /// The batch in flight failed: it goes first again.
    pub fn put_back(&mut self) {
        if let Some((Origin::Memory, b)) = self.in_flight.take() {
            self.mem.push_front(b);
        }
        // A spooled batch never left its file.
    }

    /// At stop: everything still in memory goes to the spool, or is lost.
    pub fn spool_all(&mut self) -> Vec<Loss> {
        self.put_back();
        let mut lost = Vec::new();
        while let Some(b) = self.mem.pop_front() {
            self.mem_rows -= b.rows;
            if let Some((cause, n)) = self.spill(&b) {
                let cause = if cause == BUFFER_FULL {
                    UNSENT_AT_STOP
                } else {
                    cause
                };
                lost.push((cause, n));
            }
        }
        lost
    }
}

/// Memory still held at stop, with no spool to keep it.
pub const UNSENT_AT_STOP: &str = "clickhouse_unsent_at_stop";

/// The on-disk spool (see the module docs for the format).
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    bytes: u64,
    /// (seq, path, rows, size), oldest first.
    files: VecDeque<(u64, PathBuf, u64, u64)>,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating, mode 0700) `dir` and takes over the files found there.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Spool> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut files = Vec::new();
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some((seq, rows)) = name
                .strip_suffix(".jsonl")
                .and_then(|s| s.split_once('-'))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            else {
                continue;
            };
            let size = entry.metadata().map_or(0, |m| m.len());
            files.push((seq, entry.path(), rows, size));
        }
        files.sort_unstable_by_key(|f| f.0);
        let next_seq = files.last().map_or(0, |f| f.0 + 1);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: files.iter().map(|f| f.3).sum(),
            files: files.into(),
            next_seq,
        })
    }

    /// Events waiting in the spool.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.2).sum()
    }

    /// Writes one batch as one file; `Ok(false)` when it would not fit.
    fn write(&mut self, batch: &Batch) -> io::Result<bool> {
        let size = batch.body.len() as u64;
        if self.bytes + size > self.max_bytes {
            return Ok(false);
        }
        let seq = self.next_seq;
        let path = self.dir.join(format!("{seq:020}-{}.jsonl", batch.rows));
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&batch.body)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.next_seq += 1;
        self.bytes += size;
        self.files.push_back((seq, path, batch.rows, size));
        Ok(true)
    }

    fn oldest(&self) -> Option<(PathBuf, u64)> {
        self.files.front().map(|f| (f.1.clone(), f.2))
    }

    fn remove(&mut self, path: &Path) {
        let Some(i) = self.files.iter().position(|f| f.1 == path) else {
            return;
        };
        if let Some((_, p, _, size)) = self.files.remove(i) {
            self.bytes -= size;
            if let Err(e) = fs::remove_file(&p)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::error!("clickhouse spool: cannot remove {}: {e}", p.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: u64) -> Batch {
        Batch {
            body: Bytes::from(vec![b'x'; rows as usize * 10]),
            rows,
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockmon-spool-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn memory_only_drops_the_oldest_beyond_the_bound() {
        let mut b = Backlog::new(10, None);
        assert!(b.push(batch(4)).is_empty());
        assert!(b.push(batch(4)).is_empty());
        assert_eq!(b.push(batch(4)), vec![(BUFFER_FULL, 4)]);
        assert_eq!(b.memory_rows(), 8);
        // In flight still counts against the bound.
        let (sent, _) = b.take();
        assert_eq!(sent.unwrap().rows, 4);
        assert_eq!(b.push(batch(3)), vec![(BUFFER_FULL, 4)]);
        assert_eq!(b.memory_rows(), 7);
        b.put_back();
        assert_eq!(
            b.take().0.unwrap().rows,
            4,
            "a failed batch goes first again"
        );
        b.done();
        assert_eq!(b.memory_rows(), 3);
        assert_eq!(b.take().0.unwrap().rows, 3);
        b.done();
        assert!(b.is_empty());
        assert_eq!(b.spool_all(), vec![]);
    }

    #[test]
    fn overflow_goes_to_the_spool_until_it_is_full_and_is_sent_first() {
        let d = dir("full");
        // 100 bytes: room for two 4-row batches (40 bytes each), not three.
        let mut b = Backlog::new(4, Some(Spool::open(&d, 100).unwrap()));
        assert!(b.push(batch(4)).is_empty());
        assert!(b.push(batch(4)).is_empty(), "first to the spool");
        assert!(b.push(batch(4)).is_empty(), "second to the spool");
        assert_eq!(b.push(batch(4)), vec![(SPOOL_FULL, 4)]);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2);
        let (first, lost) = b.take();
        assert!(lost.is_empty());
        assert_eq!(first.unwrap().body.len(), 40);
        assert!(matches!(b.in_flight, Some((Origin::Spool(_), _))));
        b.put_back();
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            2,
            "a failed send keeps the file"
        );
        b.take();
        b.done();
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        b.take();
        b.done();
        assert!(matches!(b.take(), (Some(_), _)), "then memory");
        assert!(matches!(b.in_flight, Some((Origin::Memory, _))));
        b.done();
        assert!(b.is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_new_run_takes_over_the_spool_and_stop_spools_memory() {
        let d = dir("reopen");
        let mut b = Backlog::new(100, Some(Spool::open(&d, 1 << 20).unwrap()));
        b.push(batch(2));
        b.push(batch(5));
        b.take();
        assert!(
            b.spool_all().is_empty(),
            "in flight and queued both spooled"
        );
        fs::write(d.join("00000000000000000009-1.tmp"), b"half").unwrap();
        let s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.rows(), 7);
        assert_eq!(s.next_seq, 2);
        assert!(
            !d.join("00000000000000000009-1.tmp").exists(),
            "partial file removed"
        );
        let mut b = Backlog::new(100, Some(s));
        assert_eq!(b.take().0.unwrap().rows, 2, "oldest first");
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn without_a_spool_stop_reports_what_memory_held() {
        let mut b = Backlog::new(100, None);
        b.push(batch(2));
        b.push(batch(5));
        b.take();
        assert_eq!(
            b.spool_all(),
            vec![(UNSENT_AT_STOP, 2), (UNSENT_AT_STOP, 5)]
        );
        assert_eq!(b.memory_rows(), 0);
    }
}
