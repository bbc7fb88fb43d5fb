//! Merging a snapshot into the table: at start-up ([`SocketTable::apply_snapshot`])
//! and during a reconciliation (`reconcile.rs`).
//!
//! At start-up the probes are attached before the snapshot is taken and the
//! events that happen meanwhile wait in the kernel ring buffer; the snapshot
//! is merged first, then those events are applied in order. Because sockets
//! are keyed by inode and owners by pid, nothing is counted twice: an event
//! about a socket the snapshot also saw refreshes the same entry, and a close
//! that happened after the snapshot saw a socket removes it.

use super::{Change, Owner, OwnerSource, SockState, SocketTable, TupleKey};
use crate::snapshot::{Snapshot, SockRow};

impl SocketTable {
    /// Merges `snap`; returns how many sockets it added.
    pub fn apply_snapshot(&mut self, snap: &Snapshot) -> usize {
        for p in snap.processes.values() {
            self.note_process(p.pid, p.start_ticks, p.comm, p.uid);
        }
        snap.sockets
            .iter()
            .filter(|row| self.add_holders(row, snap))
            .count()
    }

    /// Inserts or updates `row`, with every process holding it in `snap` as
    /// a snapshot owner (owners it has already are kept as they are).
    /// Returns whether the socket is new to the table.
    pub(super) fn add_holders(&mut self, row: &SockRow, snap: &Snapshot) -> bool {
        let key = TupleKey::new(row.netns, row.proto, row.src, row.dst);
        let state = SockState::from_kernel(row.state);
        let holders = snap
            .holders
            .get(&row.inode)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut inserted = false;
        let mut any = false;
        for pid in holders {
            let Some(p) = snap.processes.get(pid) else {
                continue;
            };
            any = true;
            let owner = Owner {
                pid: *pid,
                tid: *pid,
                comm: p.comm,
                source: OwnerSource::Snapshot,
            };
            inserted |= self.upsert(row.inode, key, state, Some(owner)) == Change::Inserted;
        }
        if !any {
            inserted = self.upsert(row.inode, key, state, None) == Change::Inserted;
        }
        inserted
    }
}
