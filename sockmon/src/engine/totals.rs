//! Per-unit totals of what connections moved (flows, issue 13), for
//! `status` and Prometheus.
//!
//! Counted at each TCP `close` from its counters, by the acting process's
//! systemd unit (`none` outside any). Cardinality is bounded: the first
//! [`UNIT_LABELS`] units seen since start get their own row; later ones
//! count under `other`, so every row only ever grows (monotonic counters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Event;

/// Units with a row of their own.
pub const UNIT_LABELS: usize = 64;

/// What the connections of one unit moved, totals since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTotals {
    /// TCP connections closed.
    pub connections: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub retransmits: u64,
}

#[derive(Debug, Default)]
pub struct Totals {
    units: BTreeMap<String, UnitTotals>,
    other: UnitTotals,
}

impl Totals {
    /// Counts `e` if it is a TCP close with counters.
    pub fn record(&mut self, e: &Event) {
        let Some(t) = e.life.as_deref().and_then(|l| l.tcp) else {
            return;
        };
        let unit = e
            .ctx
            .as_deref()
            .and_then(|c| c.unit.as_deref())
            .unwrap_or("none");
        let row = if let Some(row) = self.units.get_mut(unit) {
            row
        } else if self.units.len() < UNIT_LABELS {
            self.units.entry(unit.to_string()).or_default()
        } else {
            &mut self.other
        };
        row.connections += 1;
        row.bytes_sent += t.bytes_sent;
        row.bytes_received += t.bytes_received;
        row.retransmits += u64::from(t.total_retrans);
    }

    /// Every row, `other` included (once anything counted there).
    pub fn rows(&self) -> BTreeMap<String, UnitTotals> {
        let mut rows = self.units.clone();
        if self.other != UnitTotals::default() {
            rows.insert("other".into(), self.other);
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        EventKind,
        flow::{Life, ProcCtx, TcpCounters},
        testing,
    };

    fn close(unit: Option<&str>, sent: u64) -> Event {
        let mut e = testing::event(EventKind::Close, 1, 1, "10.0.0.1:1", "10.0.0.2:2");
        e.life = Some(Box::new(Life {
            tcp: Some(TcpCounters {
                bytes_sent: sent,
                bytes_received: 2 * sent,
                total_retrans: 1,
                ..Default::default()
            }),
            ..Default::default()
        }));
        e.ctx = Some(std::sync::Arc::new(ProcCtx {
            unit: unit.map(str::to_string),
            ..Default::default()
        }));
        e
    }

    #[test]
    fn first_units_get_rows_later_ones_count_as_other() {
        let mut t = Totals::default();
        t.record(&close(Some("nginx.service"), 10));
        t.record(&close(Some("nginx.service"), 5));
        t.record(&close(None, 1));
        for i in 0..UNIT_LABELS + 3 {
            t.record(&close(Some(&format!("u{i}.service")), 100));
        }
        let rows = t.rows();
        assert_eq!(
            rows["nginx.service"],
            UnitTotals {
                connections: 2,
                bytes_sent: 15,
                bytes_received: 30,
                retransmits: 2
            }
        );
        assert_eq!(rows["none"].connections, 1);
        // 2 units already had rows: UNIT_LABELS - 2 new ones fit, 5 are other.
        assert_eq!(rows["other"].connections, 5);
        assert_eq!(rows.len(), UNIT_LABELS + 1);
        // A close without counters counts nothing.
        let mut e = close(Some("x.service"), 1);
        e.life = None;
        t.record(&e);
        assert_eq!(t.rows(), rows);
    }
}
