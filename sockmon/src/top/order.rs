//! Row order of the Processes view: rows keep their place while the numbers
//! change, and are re-sorted at most once a second, by a stable sort, so
//! rows that tie keep the order they had. New rows go to the bottom until
//! the next re-sort; rows that are gone leave without moving the others.

use std::{
    cmp::Ordering,
    collections::HashMap,
    time::{Duration, Instant},
};

use super::model::{ProcRow, RowKey};

/// Rows are re-sorted at most this often.
pub const RESORT_EVERY: Duration = Duration::from_secs(1);

/// What the Processes view is sorted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortKey {
    #[default]
    Conns,
    Listeners,
    Connects,
    Failed,
    Sent,
    Received,
    Total,
    Pid,
    Name,
}

impl SortKey {
    pub const ALL: [SortKey; 9] = [
        SortKey::Conns,
        SortKey::Listeners,
        SortKey::Connects,
        SortKey::Failed,
        SortKey::Sent,
        SortKey::Received,
        SortKey::Total,
        SortKey::Pid,
        SortKey::Name,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            SortKey::Conns => "conns",
            SortKey::Listeners => "listen",
            SortKey::Connects => "conn/s",
            SortKey::Failed => "fail/s",
            SortKey::Sent => "sent/s",
            SortKey::Received => "recv/s",
            SortKey::Total => "total",
            SortKey::Pid => "pid",
            SortKey::Name => "name",
        }
    }

    /// The next key (`s`), or the previous one (`S`).
    pub fn cycle(self, forward: bool) -> SortKey {
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        let n = Self::ALL.len();
        Self::ALL[if forward {
            (i + 1) % n
        } else {
            (i + n - 1) % n
        }]
    }

    /// Numbers sort biggest first, names and pids smallest first.
    fn compare(self, a: &ProcRow, b: &ProcRow) -> Ordering {
        let f = |x: f64, y: f64| y.partial_cmp(&x).unwrap_or(Ordering::Equal);
        match self {
            SortKey::Conns => b.conns.cmp(&a.conns),
            SortKey::Listeners => b.listeners.cmp(&a.listeners),
            SortKey::Connects => f(a.rates.connects, b.rates.connects),
            SortKey::Failed => f(a.rates.failed, b.rates.failed),
            SortKey::Sent => f(a.rates.sent, b.rates.sent),
            SortKey::Received => f(a.rates.received, b.rates.received),
            SortKey::Total => b.total.cmp(&a.total),
            SortKey::Pid => a.pids.first().cmp(&b.pids.first()),
            SortKey::Name => a.name.cmp(&b.name),
        }
    }
}

/// The current order and when it was last sorted.
#[derive(Debug, Default)]
pub struct Order {
    keys: Vec<RowKey>,
    sorted_at: Option<Instant>,
    sorted_by: Option<(SortKey, bool)>,
}

impl Order {
    /// Puts `rows` in display order: the kept order, re-sorted by `key`
    /// (reversed if `reverse`) when a second has passed or the sort changed.
    pub fn arrange(
        &mut self,
        rows: Vec<ProcRow>,
        key: SortKey,
        reverse: bool,
        now: Instant,
    ) -> Vec<ProcRow> {
        let mut by_key: HashMap<RowKey, ProcRow> =
            rows.into_iter().map(|r| (r.key.clone(), r)).collect();
        let mut out: Vec<ProcRow> = Vec::with_capacity(by_key.len());
        for k in &self.keys {
            if let Some(r) = by_key.remove(k) {
                out.push(r);
            }
        }
        // New rows, in a deterministic order (the map's is not).
        let mut new: Vec<ProcRow> = by_key.into_values().collect();
        new.sort_by(|a, b| key.compare(a, b).then_with(|| a.key.cmp(&b.key)));
        out.extend(new);
        let due = self
            .sorted_at
            .is_none_or(|t| now.duration_since(t) >= RESORT_EVERY);
        if due || self.sorted_by != Some((key, reverse)) {
            // `sort_by` is stable: ties keep their current order.
            out.sort_by(|a, b| {
                let o = key.compare(a, b);
                if reverse { o.reverse() } else { o }
            });
            self.sorted_at = Some(now);
            self.sorted_by = Some((key, reverse));
        }
        self.keys = out.iter().map(|r| r.key.clone()).collect();
        out
    }

    /// Forget the order (grouping changed: the keys are different).
    pub fn reset(&mut self) {
        *self = Order::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, conns: u64) -> ProcRow {
        ProcRow {
            key: RowKey::Pid(pid),
            pids: vec![pid],
            name: format!("p{pid}"),
            conns,
            ..ProcRow::default()
        }
    }

    fn pids(rows: &[ProcRow]) -> Vec<u32> {
        rows.iter().map(|r| r.pids[0]).collect()
    }

    #[test]
    fn sorts_at_most_once_a_second_and_ties_keep_their_order() {
        let t0 = Instant::now();
        let mut o = Order::default();
        let r = o.arrange(
            vec![row(3, 1), row(1, 5), row(2, 1), row(4, 1)],
            SortKey::Conns,
            false,
            t0,
        );
        // New rows of equal count are placed by key, then sorted stably.
        assert_eq!(pids(&r), vec![1, 2, 3, 4]);
        // The numbers change within the second: nobody moves; a new row goes last.
        let r = o.arrange(
            vec![row(1, 0), row(2, 1), row(3, 9), row(4, 1), row(5, 7)],
            SortKey::Conns,
            false,
            t0 + Duration::from_millis(500),
        );
        assert_eq!(pids(&r), vec![1, 2, 3, 4, 5]);
        // A second later: re-sorted; 2 and 4 tie and keep their order.
        let r = o.arrange(
            vec![row(1, 0), row(2, 1), row(3, 9), row(4, 1), row(5, 7)],
            SortKey::Conns,
            false,
            t0 + Duration::from_millis(1000),
        );
        assert_eq!(pids(&r), vec![3, 5, 2, 4, 1]);
        // A row leaves: the others keep their places.
        let r = o.arrange(
            vec![row(1, 9), row(2, 1), row(4, 1), row(5, 7)],
            SortKey::Conns,
            false,
            t0 + Duration::from_millis(1200),
        );
        assert_eq!(pids(&r), vec![5, 2, 4, 1]);
        // Changing the sort applies at once.
        let r = o.arrange(
            vec![row(1, 9), row(2, 1), row(4, 1), row(5, 7)],
            SortKey::Pid,
            true,
            t0 + Duration::from_millis(1300),
        );
        assert_eq!(pids(&r), vec![5, 4, 2, 1]);
    }

    #[test]
    fn sort_keys_cycle_both_ways() {
        let mut k = SortKey::Conns;
        for _ in 0..SortKey::ALL.len() {
            k = k.cycle(true);
        }
        assert_eq!(k, SortKey::Conns);
        assert_eq!(SortKey::Conns.cycle(false), SortKey::Name);
    }
}
