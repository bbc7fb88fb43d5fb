//! The soak's accounts, once the streams have ended: the events the churn
//! and the server caused, by kind, against those delivered and those the
//! daemon counted as dropped; `missing` is what is in neither.

use std::collections::{BTreeMap, BTreeSet};

use super::{churn::Churn, streams::Tally};

/// Causes in `status.dropped` that do not lose events.
const NOT_EVENTS: [&str; 1] = ["worker_queue_full"];

/// Expected, delivered, dropped and missing, in all and by kind or cause.
#[derive(Debug)]
pub(super) struct Counts {
    pub expected: u64,
    pub expected_by_kind: BTreeMap<String, u64>,
    pub delivered: u64,
    /// Every cause of `status.dropped` (before vs after) and `lost` lines.
    pub dropped: u64,
    pub dropped_by_cause: BTreeMap<String, u64>,
    /// Those of `dropped` that are lost events.
    pub dropped_events: u64,
    /// `expected − delivered − dropped_events`.
    pub missing: i64,
    pub missing_by_kind: BTreeMap<String, i64>,
}

impl Counts {
    /// `expected` by kind; what the streams carried; the daemon's own drops
    /// since the streams opened (`kernel`).
    pub fn new(
        expected: BTreeMap<String, u64>,
        tally: &Tally,
        kernel: BTreeMap<String, u64>,
    ) -> Self {
        let mut dropped_by_cause = tally.lost.clone();
        for (k, v) in kernel {
            *dropped_by_cause.entry(k).or_default() += v;
        }
        let dropped = dropped_by_cause.values().sum::<u64>();
        let dropped_events = dropped_by_cause
            .iter()
            .filter(|(k, _)| !NOT_EVENTS.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum::<u64>();
        let delivered = tally.by_kind.values().sum::<u64>();
        let expected_total = total(&expected);
        Self {
            missing: expected_total as i64 - delivered as i64 - dropped_events as i64,
            missing_by_kind: by_kind_difference(&expected, &tally.by_kind),
            expected: expected_total,
            expected_by_kind: expected,
            delivered,
            dropped,
            dropped_by_cause,
            dropped_events,
        }
    }
}

/// Events the churn causes, by kind (the server's two closes are added
/// when it stops). Every connect has its `connect_result`, also a failed
/// one; a failed connect has no close of its own: the socket's close no
/// longer carries the port.
pub(super) fn expected_events(c: &Churn) -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("connect".into(), c.conns + c.failed),
        ("connect_result".into(), c.conns + c.failed),
        ("accept".into(), c.conns),
        ("close".into(), 2 * c.conns + c.udp_sent),
        ("bind".into(), c.udp_sent),
    ])
}

pub(super) fn total(m: &BTreeMap<String, u64>) -> u64 {
    m.values().sum()
}

/// Expected − delivered for every kind either side has.
fn by_kind_difference(
    expected: &BTreeMap<String, u64>,
    delivered: &BTreeMap<String, u64>,
) -> BTreeMap<String, i64> {
    let kinds: BTreeSet<&String> = expected.keys().chain(delivered.keys()).collect();
    kinds
        .into_iter()
        .map(|k| {
            let get = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0) as i64;
            (k.clone(), get(expected) - get(delivered))
        })
        .collect()
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_events_per_connection_and_send() {
        let c = Churn {
            conns: 10,
            failed: 1,
            udp_sent: 5,
            ..Churn::default()
        };
        let e = expected_events(&c);
        assert_eq!(e["connect"], 11);
        assert_eq!(e["connect_result"], 11);
        assert_eq!(e["accept"], 10);
        assert_eq!(e["close"], 25);
        assert_eq!(e["bind"], 5);
        assert_eq!(total(&e), 62);
        let delivered = BTreeMap::from([("connect".into(), 11), ("close".into(), 26)]);
        let d = by_kind_difference(&e, &delivered);
        assert_eq!((d["close"], d["accept"], d["connect"]), (-1, 10, 0));
    }

    #[test]
    fn drops_that_lose_no_event_are_not_missing() {
        let expected = BTreeMap::from([("connect".into(), 10)]);
        let tally = Tally {
            by_kind: BTreeMap::from([("connect".into(), 7)]),
            lost: BTreeMap::from([("subscriber_lagged".into(), 2)]),
            ..Tally::default()
        };
        let kernel = BTreeMap::from([("ring_full".into(), 1), ("worker_queue_full".into(), 5)]);
        let c = Counts::new(expected, &tally, kernel);
        assert_eq!((c.expected, c.delivered), (10, 7));
        assert_eq!((c.dropped, c.dropped_events, c.missing), (8, 3, 0));
        assert_eq!(c.missing_by_kind["connect"], 3);
    }
}
