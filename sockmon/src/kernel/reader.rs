//! The ring-buffer reader: one task that drains the kernel's records,
//! decodes them and hands batches to the state task over a bounded channel.
//!
//! The kernel wakes this reader only when the backlog passes a threshold
//! (see `emit.rs`); otherwise it drains on a short timer. When the consumer
//! falls behind, the channel fills, the reader stops draining and the kernel
//! counts what no longer fits as `ring_full`: memory stays bounded and every
//! loss is counted.

use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::mpsc, time};

use crate::{
    clock::Clock,
    event::{Record, decode},
};

/// Records drained together, in the order the kernel wrote them.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Record>,
    /// Records that could not be decoded (a kernel/user ABI mismatch).
    pub decode_errors: u64,
}

/// How often the ring is drained when the kernel has not woken the reader.
pub const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_millis(10);
/// Largest batch handed over at once (small enough that batches are
/// recycled by the allocator instead of growing the heap in bursts).
const MAX_BATCH: usize = 512;

/// Reads `ring` until `tx` is closed.
pub async fn run(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<Batch>,
    drain_interval: Duration,
) -> std::io::Result<()> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged
    // for as long as the AsyncFd (which owns the RingBuf) lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(std::io::Error::from)?;
    let mut tick = time::interval(drain_interval);
    tick.set_missed_tick_behavior(time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                if !drain_into(guard.get_inner_mut(), &tx).await {
                    return Ok(());
                }
                guard.clear_ready();
            }
            _ = tick.tick() => {
                if !drain_into(fd.get_mut(), &tx).await {
                    return Ok(());
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// Drains everything available, in batches. False when the receiver is gone.
async fn drain_into(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<Batch>) -> bool {
    loop {
        let batch = drain(ring, MAX_BATCH);
        let full = batch.events.len() + batch.decode_errors as usize >= MAX_BATCH;
        if batch.events.is_empty() && batch.decode_errors == 0 {
            return true;
        }
        if tx.send(batch).await.is_err() {
            return false;
        }
        if !full {
            return true;
        }
    }
}

/// Takes up to `max` records off the ring.
pub fn drain(ring: &mut RingBuf<MapData>, max: usize) -> Batch {
    let clock = Clock::sample();
    let mut batch = Batch::default();
    while batch.events.len() + (batch.decode_errors as usize) < max {
        let Some(item) = ring.next() else { break };
        match decode::decode(&item, &clock) {
            Ok(ev) => batch.events.push(ev),
            Err(e) => {
                batch.decode_errors += 1;
                tracing::warn!("undecodable kernel record: {e}");
            }
        }
    }
    batch
}
