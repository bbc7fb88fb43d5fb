//! Healing the table after events were lost: compare it with a fresh
//! snapshot instead of letting it drift.
//!
//! [`SocketTable::begin_reconcile`] marks the moment the snapshot starts;
//! while it is taken, events keep being applied, and the table remembers
//! which sockets they removed. [`SocketTable::finish_reconcile`] then trusts
//! the snapshot only for what no event touched since that moment:
//!
//! - a socket untouched since, and absent from the snapshot, is gone (its
//!   close was lost): removed, unless its namespace could not be read (a
//!   namespace owner who stalls its dump must not make us forget sockets);
//! - a socket in the snapshot and missing from the table (its bind, connect
//!   or accept was lost) is added, unless an event removed it meanwhile;
//! - an untouched socket's owners become the snapshot's holders;
//! - a process untouched since, and holding nothing in the snapshot, is gone
//!   or holds nothing (its exit was lost): removed from every owner list;
//! - an untouched process counted on a socket (`inherited_more`) that the
//!   snapshot says it does not hold is taken off that count.

use std::collections::HashSet;

use super::SocketTable;
use crate::snapshot::Snapshot;

/// What a reconciliation changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub removed: usize,
    pub added: usize,
    /// Of `added`, the sockets with a local port (no event reported them).
    pub added_bound: usize,
    pub processes_removed: usize,
}

impl SocketTable {
    /// Starts a reconciliation window; returns its cutoff for `finish_reconcile`.
    pub fn begin_reconcile(&mut self) -> u64 {
        self.tombstones = Some(HashSet::new());
        self.clock += 1;
        self.clock
    }

    /// Applies `snap`, taken after `begin_reconcile` returned `cutoff`.
    pub fn finish_reconcile(&mut self, snap: &Snapshot, cutoff: u64) -> Reconciled {
        let tombstones = self.tombstones.take().unwrap_or_default();
        let mut done = Reconciled::default();
        let present: HashSet<u64> = snap.sockets.iter().map(|r| r.inode).collect();
        let unread: HashSet<u32> = snap.skipped_netns.iter().map(|(ino, _)| *ino).collect();
        let stale: Vec<u64> = self
            .by_inode
            .values()
            .filter(|e| {
                e.touched < cutoff && !present.contains(&e.inode) && !unread.contains(&e.key.netns)
            })
            .map(|e| e.inode)
            .collect();
        for inode in stale {
            self.remove(inode);
            done.removed += 1;
        }
        let gone: Vec<u32> = self
            .processes
            .values()
            .filter(|p| {
                p.touched < cutoff
                    && snap
                        .processes
                        .get(&p.pid)
                        .is_none_or(|s| s.start_ticks != p.start_ticks)
            })
            .map(|p| p.pid)
            .collect();
        for pid in gone {
            self.purge_process(pid);
            done.processes_removed += 1;
        }
        let counted: Vec<(u32, u64)> = self
            .processes
            .values()
            .filter(|p| p.touched < cutoff)
            .flat_map(|p| p.collapsed.iter().map(move |i| (p.pid, *i)))
            .filter(|(pid, inode)| {
                present.contains(inode)
                    && snap
                        .holders
                        .get(inode)
                        .is_none_or(|h| h.binary_search(pid).is_err())
            })
            .collect();
        for (pid, inode) in counted {
            self.uncount(pid, inode);
        }
        for p in snap.processes.values() {
            if self
                .processes
                .get(&p.pid)
                .is_none_or(|r| r.touched < cutoff)
            {
                self.note_process(p.pid, p.start_ticks, p.comm, p.uid);
            }
        }
        for row in &snap.sockets {
            if tombstones.contains(&row.inode) {
                continue;
            }
            let holders = snap
                .holders
                .get(&row.inode)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            match self.by_inode.get_mut(&row.inode) {
                Some(e) if e.touched >= cutoff => {}
                Some(e) => {
                    let dropped: Vec<u32> = e
                        .owners
                        .iter()
                        .map(|o| o.pid)
                        .filter(|pid| !holders.contains(pid))
                        .collect();
                    e.owners.retain(|o| holders.contains(&o.pid));
                    for pid in dropped {
                        self.forget_holding(pid, row.inode);
                    }
                    self.add_holders(row, snap);
                }
                None => {
                    self.add_holders(row, snap);
                    done.added += 1;
                    done.added_bound += usize::from(row.src.port() != 0);
                }
            }
        }
        done
    }
}
