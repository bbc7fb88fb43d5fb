//! Without a daemon: the table from one snapshot, enriched in place. This is
//! what `sockmon ls` and `lookup` show when no daemon runs (like `ss`, a
//! picture of this moment, with every owner learned from `/proc`).

use crate::{
    clock::BootClock,
    engine::worker,
    snapshot::{self, SnapshotError},
    table::SocketTable,
};

/// The table of this moment and the clock to show its start times.
pub struct TableNow {
    pub table: SocketTable,
    pub boot: BootClock,
}

/// Takes a snapshot and reads every owner's details.
pub fn table_now() -> Result<TableNow, SnapshotError> {
    let snap = snapshot::take()?;
    let mut table = SocketTable::new(snap.sockets.len().max(1));
    table.apply_snapshot(&snap);
    let processes: Vec<(u32, u64)> = table.processes().map(|p| (p.pid, p.start_ticks)).collect();
    for (pid, start) in processes {
        if let Some(d) = worker::details(pid, start) {
            table.set_process_details(pid, start, d);
        }
    }
    Ok(TableNow {
        table,
        boot: BootClock::sample(),
    })
}
