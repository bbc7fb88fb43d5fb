//! Merging the start-up snapshot into the table.
//!
//! The probes are attached before the snapshot is taken and the events that
//! arrive meanwhile wait in the reader's channel; the snapshot is merged
//! first, then those events are applied in order. Because sockets are keyed
//! by inode and owners by pid, nothing is counted twice: an event about a
//! socket the snapshot also saw refreshes the same entry, and a close that
//! happened after the snapshot saw a socket removes it.

use super::{Owner, OwnerSource, SockState, SocketTable, TupleKey};
use crate::{clock::WallTime, snapshot::Snapshot};

impl SocketTable {
    /// Merges `snap`; returns how many sockets it added.
    pub fn apply_snapshot(&mut self, snap: &Snapshot, time: WallTime) -> usize {
        for p in snap.processes.values() {
            self.note_process(p.pid, p.start_ticks, p.comm, p.uid);
        }
        let mut added = 0;
        for row in &snap.sockets {
            let key = TupleKey {
                netns: row.netns,
                proto: row.proto,
                src: row.src,
                dst: row.dst,
            };
            let state = SockState::from_kernel(row.state);
            let holders = snap
                .holders
                .get(&row.inode)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut inserted = false;
            if holders.is_empty() {
                inserted = self.upsert(row.inode, key, row.family, state, None, time)
                    == super::Change::Inserted;
            }
            for pid in holders {
                let Some(p) = snap.processes.get(pid) else {
                    continue;
                };
                let owner = Owner {
                    pid: *pid,
                    tid: *pid,
                    comm: p.comm,
                    source: OwnerSource::Snapshot,
                };
                let change = self.upsert(row.inode, key, row.family, state, Some(owner), time);
                inserted |= change == super::Change::Inserted;
            }
            added += inserted as usize;
        }
        added
    }
}
