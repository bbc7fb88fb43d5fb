//! The process registry behind the owners: identity (pid + start time),
//! names, and the sockets each process holds, kept in step with fork, exec
//! and exit.
//!
//! - fork: the child holds every socket of its parent (`Inherited`), listed
//!   where the socket has room (`max_owners`), counted where it has not;
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
    /// Inodes of the sockets it holds and is listed on as an owner.
    pub sockets: InodeSet,
    /// Inodes of the sockets it holds but is only counted on
    /// (`inherited_more`), the owner list being full. Shared with the
    /// siblings forked from the same parent in the same state.
    pub collapsed: Arc<InodeSet>,
    /// The set the last counted child of this process got, to share with
    /// the next one.
    pub(super) last_collapsed: Option<Arc<InodeSet>>,
    /// Executable path, once enrichment has read it.
    pub exe: Option<Arc<str>>,
    /// The systemd unit, once enrichment has read it.
    pub unit: Option<Arc<str>>,
    /// The container (full id), once enrichment has read it.
    pub container: Option<Arc<crate::cgroup_unit::Container>>,
    /// The table's change clock when an event last concerned it.
    pub(super) touched: u64,
}

/// What enrichment reads of a process from `/proc`: executable path,
/// systemd unit and container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    pub exe: Option<Arc<str>>,
    /// The systemd unit only (user-manager units as `user@UID:name`).
    pub unit: Option<Arc<str>>,
    /// The container, with its full id.
    pub container: Option<Arc<crate::cgroup_unit::Container>>,
}

/// Which of `inodes` does process `pid` (started at `start_ticks`) still hold?
/// Answered from `/proc/PID/fd` off the event path, then given to
/// [`SocketTable::apply_verified`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyRequest {
    pub pid: u32,
    pub start_ticks: u64,
    pub inodes: Vec<u64>,
    /// The table's change clock when it was asked: a socket an event
    /// touched since is left as that event made it.
    pub clock: u64,
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
                collapsed: Arc::default(),
                last_collapsed: None,
                exe: None,
                unit: None,
                container: None,
                touched: clock,
            },
        );
        true
    }

    /// `pid` no longer holds `inode`; a process holding nothing is forgotten.
    pub(super) fn forget_holding(&mut self, pid: u32, inode: u64) {
        if let Some(p) = self.processes.get_mut(&pid) {
            p.sockets.remove(&inode);
            if p.sockets.is_empty() && p.collapsed.is_empty() {
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
                    if e.owners.is_empty() {
                        self.note_orphan(inode);
                    }
                }
            }
            for inode in p.collapsed.iter() {
                if let Some(e) = self.by_inode.get_mut(inode) {
                    e.inherited_more = e.inherited_more.saturating_sub(1);
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
                let mut inodes = sorted(&p.sockets);
                inodes.extend(sorted(&p.collapsed));
                (!inodes.is_empty()).then_some(VerifyRequest {
                    pid: c.pid,
                    start_ticks: start,
                    inodes,
                    clock: self.clock,
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

    /// The child of a fork holds every socket of its parent: listed where
    /// the socket has room for another owner, counted where it has not.
    fn inherit(&mut self, parent: u32, child: u32, start: u64, comm: Comm) {
        let Some(pp) = self.processes.get(&parent) else {
            return;
        };
        let mut inodes = sorted(&pp.sockets);
        inodes.extend(sorted(&pp.collapsed));
        let uid = pp.uid;
        if inodes.is_empty() {
            return;
        }
        self.note_process(child, start, comm, uid);
        let Some(mut kid) = self.processes.remove(&child) else {
            return;
        };
        let owner = Owner {
            pid: child,
            tid: child,
            comm,
            source: OwnerSource::Inherited,
        };
        let mut counted = Vec::new();
        for inode in inodes {
            let Some(e) = self.by_inode.get_mut(&inode) else {
                continue;
            };
            if e.owners.iter().any(|o| o.pid == child) || e.owners.len() < self.max_owners {
                merge_owner(&mut e.owners, owner.clone());
                kid.sockets.insert(inode);
            } else if !kid.collapsed.contains(&inode) {
                e.inherited_more += 1;
                counted.push(inode);
            }
        }
        if !counted.is_empty() {
            if kid.collapsed.is_empty() {
                kid.collapsed = self.shared_collapsed(parent, counted);
            } else {
                Arc::make_mut(&mut kid.collapsed).extend(counted);
            }
        }
        self.processes.insert(child, kid);
    }

    /// A set of `counted`, the same `Arc` as the parent's last counted
    /// child got when it is equal (siblings of a pre-forking server).
    fn shared_collapsed(&mut self, parent: u32, counted: Vec<u64>) -> Arc<InodeSet> {
        let Some(pp) = self.processes.get_mut(&parent) else {
            return Arc::new(counted.into_iter().collect());
        };
        if let Some(last) = &pp.last_collapsed
            && last.len() == counted.len()
            && counted.iter().all(|i| last.contains(i))
        {
            return Arc::clone(last);
        }
        let set: Arc<InodeSet> = Arc::new(counted.into_iter().collect());
        pp.last_collapsed = Some(Arc::clone(&set));
        set
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
                if e.touched > req.clock {
                    continue;
                }
                e.owners.retain(|o| o.pid != req.pid);
                if e.owners.is_empty() {
                    self.note_orphan(*inode);
                }
            }
            self.uncount(req.pid, *inode);
            self.forget_holding(req.pid, *inode);
        }
    }

    /// Verify requests for the owners of shared sockets (two or more
    /// owners): one of them may have closed its copy, which no hook sees.
    /// At most `max` processes, those holding the most shared sockets
    /// first, so a round's cost is bounded whatever the table holds.
    pub fn shared_holdings(&self, max: usize) -> Vec<VerifyRequest> {
        let mut reqs: Vec<VerifyRequest> = self
            .processes
            .values()
            .filter_map(|p| {
                let mut inodes: Vec<u64> = p
                    .sockets
                    .iter()
                    .copied()
                    .filter(|i| self.by_inode.get(i).is_some_and(|e| e.owners.len() > 1))
                    .collect();
                if inodes.is_empty() {
                    return None;
                }
                inodes.sort_unstable();
                Some(VerifyRequest {
                    pid: p.pid,
                    start_ticks: p.start_ticks,
                    inodes,
                    clock: self.clock,
                })
            })
            .collect();
        reqs.sort_unstable_by(|a, b| b.inodes.len().cmp(&a.inodes.len()).then(a.pid.cmp(&b.pid)));
        reqs.truncate(max);
        reqs
    }

    /// Records what enrichment learned about a process (if it is still the same one).
    pub fn set_process_details(&mut self, pid: u32, start: u64, d: Details) {
        if let Some(p) = self.processes.get_mut(&pid)
            && p.start_ticks == start
        {
            p.exe = d.exe;
            p.unit = d.unit;
            p.container = d.container;
        }
    }
}
