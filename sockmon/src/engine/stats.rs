//! Counters the state task keeps for `status` and metrics: events by kind
//! (totals and a rolling per-second rate), losses by cause, snapshot facts.
//! Label sets are bounded: kinds and causes are fixed lists, never per pid or port.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sockmon_common::KernelCounter;

use crate::{
    clock::WallTime,
    event::{EventKind, SOCKET_KINDS, kind_name},
};

/// Seconds the per-second rates are averaged over.
const RATE_WINDOW: usize = 5;

/// Shared with the API server and sinks (they count; the state task reports).
#[derive(Debug, Default)]
pub struct Shared {
    pub clients: AtomicUsize,
    /// Sockets in the table (as of the last batch), for budgeting listings.
    pub table_sockets: AtomicUsize,
    pub subscribers: AtomicUsize,
    /// Events slow API subscribers lost (their queue overflowed).
    pub subscriber_lagged: AtomicU64,
    /// Events the sinks missed because their queue overflowed.
    pub sink_lagged: AtomicU64,
    /// Events a sink could not write (disk full, I/O error, not open).
    pub sink_write_failed: AtomicU64,
    /// Failed sink writes and opens (each retry that failed counts).
    pub sink_write_failures: AtomicU64,
    pub sink_open_failures: AtomicU64,
    /// Events sinks lost for causes of their own (e.g. `clickhouse_spool_full`),
    /// shown beside the other causes in `dropped`. Causes are fixed lists.
    pub sink_losses: std::sync::Mutex<BTreeMap<&'static str, u64>>,
}

impl Shared {
    /// Adds `count` events lost by a sink for `cause` (0 registers the cause).
    pub fn count_sink_loss(&self, cause: &'static str, count: u64) {
        let mut m = self
            .sink_losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *m.entry(cause).or_default() += count;
    }
}

/// Facts about the start-up snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub sockets: usize,
    pub duration_ms: f64,
    pub time: String,
    /// Where the sockets were read from: `sock_diag`, `proc_net`, or both
    /// joined with `+` (`snapshot::Snapshot::source_names`).
    #[serde(default)]
    pub source: String,
    /// Why sock_diag was not used where it was not (e.g. its kernel modules
    /// could not load); null when it answered everywhere.
    #[serde(default)]
    pub fallback: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableStatus {
    pub sockets: usize,
    pub processes: usize,
    pub cap: usize,
    pub evictions: u64,
}

/// Which hooks report what (`status.attach`; docs/api.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachStatus {
    /// The mode loaded: `socket` or `syscalls`.
    pub mode: String,
    /// Why `auto` did not choose `socket`, when it fell back.
    pub fallback: Option<String>,
    /// The hook family (`socket`, `syscalls`) that reports each event kind.
    pub kinds: BTreeMap<String, String>,
}

impl AttachStatus {
    pub fn of(probes: &crate::kernel::Probes) -> Self {
        Self {
            mode: probes.mode().name().to_string(),
            fallback: probes.fallback_reason().map(str::to_string),
            kinds: probes
                .kind_sources()
                .into_iter()
                .map(|k| (k.kind.to_string(), k.source.to_string()))
                .collect(),
        }
    }
}

/// The `status` answer (docs/api.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub uptime_s: f64,
    pub probes_attached: bool,
    /// Which hooks report what.
    #[serde(default)]
    pub attach: AttachStatus,
    pub events_total: BTreeMap<String, u64>,
    pub events_per_s: BTreeMap<String, f64>,
    pub dropped: BTreeMap<String, u64>,
    pub table: TableStatus,
    pub snapshot: Option<SnapshotStatus>,
    /// Times the table was re-synchronised with a fresh snapshot after losses.
    pub reconciliations: u64,
    /// Sockets with a local address that no event reported: first seen at
    /// their release, or found by a re-check (`table.recheck_interval_ms`).
    #[serde(default)]
    pub drift: u64,
    pub clients: usize,
    pub subscribers: usize,
    /// Flows (issue 13): what closed TCP connections moved, by systemd unit
    /// (the first units seen; later ones under `other`).
    #[serde(default)]
    pub units: BTreeMap<String, super::totals::UnitTotals>,
    /// Failures of the sinks (the events they cost are in `dropped`).
    #[serde(default)]
    pub sinks: SinkStatus,
    /// The policy of allowed listeners: alerts by reason, rule and port class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::policy::PolicyStatus>,
}

/// Sink failures: opens (at start, on SIGHUP, on each retry) and writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkStatus {
    pub open_failures: u64,
    pub write_failures: u64,
}

#[derive(Debug)]
pub struct Stats {
    started: Instant,
    totals: [u64; SOCKET_KINDS.len()],
    current: [u64; SOCKET_KINDS.len()],
    window: VecDeque<[u64; SOCKET_KINDS.len()]>,
    pub decode_errors: u64,
    pub worker_dropped: u64,
    pub snapshot: Option<SnapshotStatus>,
    /// Re-snapshots done after lost events.
    pub reconciliations: u64,
    /// Sockets with a local address that no event reported (first seen at
    /// their release, or found by a re-check).
    pub drift: u64,
    /// A drift seen at a release asks for a re-check at the next round.
    pub drift_pending: bool,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            totals: [0; SOCKET_KINDS.len()],
            current: [0; SOCKET_KINDS.len()],
            window: VecDeque::with_capacity(RATE_WINDOW),
            decode_errors: 0,
            worker_dropped: 0,
            snapshot: None,
            reconciliations: 0,
            drift: 0,
            drift_pending: false,
        }
    }
}

impl Stats {
    pub fn count(&mut self, kind: EventKind) {
        if let Some(i) = SOCKET_KINDS.iter().position(|k| *k == kind) {
            self.totals[i] += 1;
            self.current[i] += 1;
        }
    }

    /// Closes the current one-second bucket (call once a second).
    pub fn tick(&mut self) {
        if self.window.len() == RATE_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(self.current);
        self.current = [0; SOCKET_KINDS.len()];
    }

    pub fn record_snapshot(
        &mut self,
        sockets: usize,
        duration: Duration,
        (source, fallback): (String, Option<String>),
    ) {
        self.snapshot = Some(SnapshotStatus {
            sockets,
            duration_ms: duration.as_secs_f64() * 1e3,
            time: WallTime::now().rfc3339(),
            source,
            fallback,
        });
    }

    /// Builds the status answer.
    pub fn status(
        &self,
        kernel: &[u64; KernelCounter::ALL.len()],
        table: TableStatus,
        shared: &Shared,
        attach: AttachStatus,
    ) -> Status {
        let mut events_total = BTreeMap::new();
        let mut events_per_s = BTreeMap::new();
        for (i, k) in SOCKET_KINDS.iter().enumerate() {
            events_total.insert(kind_name(*k).to_string(), self.totals[i]);
            let sum: u64 = self.window.iter().map(|b| b[i]).sum();
            let secs = self.window.len().max(1) as f64;
            events_per_s.insert(kind_name(*k).to_string(), sum as f64 / secs);
        }
        let mut dropped: BTreeMap<String, u64> = KernelCounter::ALL
            .iter()
            .zip(kernel)
            .map(|(c, v)| (c.name().to_string(), *v))
            .collect();
        dropped.insert(
            "subscriber_lagged".into(),
            shared.subscriber_lagged.load(Ordering::Relaxed),
        );
        for (name, v) in [
            ("sink_lagged", &shared.sink_lagged),
            ("sink_write_failed", &shared.sink_write_failed),
        ] {
            dropped.insert(name.into(), v.load(Ordering::Relaxed));
        }
        dropped.insert("decode_error".into(), self.decode_errors);
        dropped.insert("worker_queue_full".into(), self.worker_dropped);
        let sinks = shared
            .sink_losses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (cause, n) in sinks.iter() {
            dropped.insert((*cause).to_string(), *n);
        }
        drop(sinks);
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            probes_attached: true,
            attach,
            events_total,
            events_per_s,
            dropped,
            table,
            snapshot: self.snapshot.clone(),
            reconciliations: self.reconciliations,
            drift: self.drift,
            clients: shared.clients.load(Ordering::Relaxed),
            subscribers: shared.subscribers.load(Ordering::Relaxed),
            units: BTreeMap::new(),
            sinks: SinkStatus {
                open_failures: shared.sink_open_failures.load(Ordering::Relaxed),
                write_failures: shared.sink_write_failures.load(Ordering::Relaxed),
            },
            policy: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableStatus {
        TableStatus {
            sockets: 3,
            processes: 1,
            cap: 10,
            evictions: 0,
        }
    }

    #[test]
    fn totals_and_rates_by_kind() {
        let mut s = Stats::default();
        for _ in 0..10 {
            s.count(EventKind::Connect);
        }
        s.count(EventKind::Close);
        s.tick();
        s.tick();
        let st = s.status(
            &[0; KernelCounter::ALL.len()],
            table(),
            &Shared::default(),
            AttachStatus::default(),
        );
        assert_eq!(st.events_total["connect"], 10);
        assert_eq!(st.events_total["close"], 1);
        assert_eq!(st.events_total["bind"], 0);
        assert_eq!(st.events_per_s["connect"], 5.0);
        assert_eq!(st.table.sockets, 3);
    }

    #[test]
    fn drops_name_every_cause() {
        let s = Stats::default();
        let shared = Shared::default();
        shared.subscriber_lagged.store(7, Ordering::Relaxed);
        let st = s.status(
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            table(),
            &shared,
            AttachStatus::default(),
        );
        assert_eq!(st.dropped["ring_full"], 1);
        assert_eq!(st.dropped["read_user_failed"], 5);
        assert_eq!(st.dropped["record_read_failed"], 7);
        assert_eq!(st.dropped["scratch_missing"], 8);
        assert_eq!(st.dropped["head_out_of_bounds"], 9);
        assert_eq!(st.dropped["pending_user_full"], 10);
        assert_eq!(st.dropped["subscriber_lagged"], 7);
        assert_eq!(st.dropped.len(), 15);
        shared.count_sink_loss("clickhouse_spool_full", 0);
        shared.count_sink_loss("clickhouse_spool_full", 3);
        let st = s.status(
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            table(),
            &shared,
            AttachStatus::default(),
        );
        assert_eq!(st.dropped["clickhouse_spool_full"], 3);
        assert_eq!(st.dropped.len(), 16);
    }
}
