//! The `/proc` worker: everything the state task wants to know from `/proc`
//! runs here, on its own thread, so the event path never waits on a file
//! system read.
//!
//! - enrich: a new process's executable path and systemd unit/container;
//! - verify: after an exec, which of a process's sockets it still holds.
//!
//! Requests arrive through a bounded channel the state task fills with
//! `try_send` (a full queue drops the request and counts it); every answer is
//! tagged with the process start time so an answer about a process that
//! exited (and whose PID was reused) meanwhile is ignored by the table.

use std::{collections::HashSet, fs, os::unix::ffi::OsStrExt as _, sync::Arc};

use tokio::sync::mpsc;

use crate::{cgroup_unit, escape, procfs, table::VerifyRequest};

/// Work for the worker.
#[derive(Debug)]
pub enum Job {
    Enrich { pid: u32, start_ticks: u64 },
    Verify(VerifyRequest),
}

/// What the worker found.
#[derive(Debug)]
pub enum Found {
    Details {
        pid: u32,
        start_ticks: u64,
        details: Details,
    },
    Held {
        req: VerifyRequest,
        held: HashSet<u64>,
    },
    /// The process had exited (or its pid was reused) before it was read.
    Gone { pid: u32, start_ticks: u64 },
}

/// Queue length of the worker (requests beyond it are dropped and counted).
pub const QUEUE: usize = 4096;

/// Starts the worker thread; it ends when the job sender is dropped.
pub fn spawn() -> std::io::Result<(mpsc::Sender<Job>, mpsc::Receiver<Found>)> {
    let (job_tx, mut job_rx) = mpsc::channel::<Job>(QUEUE);
    let (found_tx, found_rx) = mpsc::channel::<Found>(QUEUE);
    std::thread::Builder::new()
        .name("sockmon-procfs".into())
        .spawn(move || {
            while let Some(job) = job_rx.blocking_recv() {
                let found = match job {
                    Job::Enrich { pid, start_ticks } => enrich(pid, start_ticks),
                    Job::Verify(req) => verify(req),
                };
                if let Some(f) = found
                    && found_tx.blocking_send(f).is_err()
                {
                    break;
                }
            }
        })?;
    Ok((job_tx, found_rx))
}

/// Always answers, so the state task can forget the request either way.
fn enrich(pid: u32, start_ticks: u64) -> Option<Found> {
    Some(match details(pid, start_ticks) {
        Some(details) => Found::Details {
            pid,
            start_ticks,
            details,
        },
        None => Found::Gone { pid, start_ticks },
    })
}

pub use crate::table::Details;

/// The [`Details`] of `pid`, if it is still the process that started at `start_ticks`.
pub fn details(pid: u32, start_ticks: u64) -> Option<Details> {
    let exe = fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        // Not lossy: bytes that are not UTF-8 in the JSON name encoding.
        .map(|p| Arc::from(escape::for_json(p.as_os_str().as_bytes()).as_ref()));
    let placement = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|t| cgroup_unit::from_proc_cgroup(&t))
        .unwrap_or_default();
    // Read the start time last: if it still matches, the answers above are
    // about the process we were asked about, not a successor with its PID.
    if procfs::start_ticks_of(pid)? != start_ticks {
        return None;
    }
    Some(Details {
        exe,
        unit: placement.unit.map(Arc::from),
        container: placement.container.map(Arc::new),
    })
}

fn verify(req: VerifyRequest) -> Option<Found> {
    let held = procfs::socket_inodes_of(req.pid)?;
    if procfs::start_ticks_of(req.pid)? != req.start_ticks {
        return None;
    }
    Some(Found::Held { req, held })
}
