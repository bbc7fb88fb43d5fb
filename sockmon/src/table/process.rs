//! The process registry behind the owners: identity (pid + start time),
//! names, and the sockets each process holds, kept in step with fork, exec
//! and exit.
//!
//! - fork: the child holds every socket of its parent (`Inherited`);
//! - exec: close-on-exec descriptors are gone, so the holdings of the
//!   process are re-checked against `/proc/PID/fd` ([`VerifyRequest`]);
//! - exit: the process leaves every owner list. A socket left without owners
//!   stays until the kernel releases it (its close event).
//!
//! A PID whose start time differs from the registry's is a new process: the
//! old one's ownership is dropped first, never merged.

use std::{collections::HashSet, sync::Arc};

use super::{InodeSet, Owner, OwnerSource, SocketTable, merge_owner};
use crate::event::{Comm, EventKind, ProcChange, start_ticks};

/// A live process known to hold sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
    /// The leader's name.
    pub comm: Comm,
    pub uid: u32,
    /// Inodes of the sockets it holds.
    pub sockets: InodeSet,
    /// Executable path, once enrichment has read it.
    pub exe: Option<Arc<str>>,
    /// systemd unit or container, once enrichment has read it.
    pub unit: Option<Arc<str>>,
    /// The table's change clock when an event last concerned it.
    pub(super) touched: u64,
}

/// Which of `inodes` does process `pid` (started at `start_ticks`) still hold?
/// Answered from `/proc/PID/fd` off the event path, then given to
/// [`SocketTable::apply_verified`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRequest {
    pub pid: u32,
    pub start_ticks: u64,
    pub inodes: Vec<u64>,
}

/// The inodes of a set, in order (for requests and deterministic output).
fn sorted(set: &InodeSet) -> Vec<u64> {
    let mut v: Vec<u64> = set.iter().copied().collect();
    v.sort_unstable();
    v
}

impl SocketTable {
    /// Records that `pid` (started at `start`) exists; a different start time
    /// means the PID was reused and the old process's ownership is dropped.
    /// Returns whether the process is new to the registry.
    pub(super) fn note_process(&mut self, pid: u32, start: u64, comm: Comm, uid: u32) -> bool {
        let clock = self.clock;
        if let Some(p) = self.processes.get_mut(&pid) {
            if p.start_ticks == start || start == 0 {
                p.comm = comm;
                p.touched = clock;
                return false;
            }
            self.purge_process(pid);
        }
        self.processes.insert(
            pid,
            Process {
                pid,
                start_ticks: start,
                comm,
                uid,
                sockets: InodeSet::default(),
                exe: None,
                unit: None,
                touched: clock,
            },
        );
        true
    }

    /// `pid` no longer holds `inode`; a process holding nothing is forgotten.
    pub(super) fn forget_holding(&mut self, pid: u32, inode: u64) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.sockets.remove(&inode);
            if p.sockets.is_empty() {
                self.processes.remove(&pid);
            }
        }
    }

    /// Removes `pid` from the registry and from the owners of all its sockets.
    pub(super) fn purge_process(&mut self, pid: u32) {
        if let Some(p) = self.processes.remove(&pid) {
            for inode in p.sockets {
                if let Some(e) = self.by_inode.get_mut(&inode) {
                    e.owners.retain(|o| o.pid != pid);
                }
            }
        }
    }

    /// Applies a fork, exec or exit. An exec returns the holdings to verify.
    pub fn apply_proc(&mut self, c: &ProcChange) -> Option<VerifyRequest> {
        self.clock += 1;
        let start = start_ticks(c.start_ns);
        match c.kind {
            EventKind::Fork => {
                self.inherit(c.actor, c.pid, start, c.comm);
                None
            }
            EventKind::Exec => {
                let p = self.processes.get_mut(&c.pid)?;
                if p.start_ticks != start {
                    return None;
                }
                p.comm = c.comm;
                p.exe = None;
                (!p.sockets.is_empty()).then(|| VerifyRequest {
                    pid: c.pid,
                    start_ticks: start,
                    inodes: sorted(&p.sockets),
                })
            }
            EventKind::Exit => {
                if self
                    .processes
                    .get(&c.pid)
                    .is_some_and(|p| p.start_ticks == start)
                {
                    self.purge_process(c.pid);
                }
                None
            }
            _ => None,
        }
    }

    /// The child of a fork holds every socket of its parent.
    fn inherit(&mut self, parent: u32, child: u32, start: u64, comm: Comm) {
        let Some(pp) = self.processes.get(&parent) else {
            return;
        };
        let (inodes, uid) = (sorted(&pp.sockets), pp.uid);
        if inodes.is_empty() {
            return;
        }
        self.note_process(child, start, comm, uid);
        for inode in &inodes {
            if let Some(e) = self.by_inode.get_mut(inode) {
                let owner = Owner {
                    pid: child,
                    tid: child,
                    comm,
                    source: OwnerSource::Inherited,
                };
                merge_owner(&mut e.owners, owner);
            }
        }
        if let Some(p) = self.processes.get_mut(&child) {
            for inode in inodes {
                p.sockets.insert(inode);
            }
        }
    }

    /// Drops the holdings of `req` that the process no longer has (`held`
    /// lists the inodes still in its descriptor table).
    pub fn apply_verified(&mut self, req: &VerifyRequest, held: &HashSet<u64>) {
        if self
            .processes
            .get(&req.pid)
            .is_none_or(|p| p.start_ticks != req.start_ticks)
        {
            return;
        }
        for inode in req.inodes.iter().filter(|i| !held.contains(i)) {
            if let Some(e) = self.by_inode.get_mut(inode) {
                e.owners.retain(|o| o.pid != req.pid);
            }
            self.forget_holding(req.pid, *inode);
        }
    }

    /// Records what enrichment learned about a process (if it is still the same one).
    pub fn set_process_details(
        &mut self,
        pid: u32,
        start: u64,
        exe: Option<Arc<str>>,
        unit: Option<Arc<str>>,
    ) {
        if let Some(p) = self.processes.get_mut(&pid)
            && p.start_ticks == start
        {
            p.exe = exe;
            p.unit = unit;
        }
    }
}
