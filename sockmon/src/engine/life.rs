//! Joins what the kernel read from a socket at release with the socket's
//! `close`, and adds how long the connection lived.
//!
//! The kernel writes a socket's counters ([`CloseStats`]) just before its
//! `close` record; they wait here, keyed by inode, until the close arrives
//! (usually the next record; possibly in the next batch). The start of a
//! connection is the time of its `connect` (also `EINPROGRESS`) or `accept`
//! event; a socket known from the start-up snapshot counts from the end of
//! the snapshot and says its duration is a lower bound.
//!
//! Bounded: births only for sockets the table holds (pruned with the
//! table's periodic check), at most as many as the table's cap; counters
//! waiting for a close at most [`PENDING_CAP`] (more means closes were lost:
//! they are dropped and counted as `close_stats_unmatched`).

use std::collections::HashMap;

use crate::{
    clock::WallTime,
    event::{
        Event, EventKind,
        flow::{CloseStats, Life},
    },
    table::{SockState, SocketTable},
};

/// Counters that may wait for their close at once.
const PENDING_CAP: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Birth {
    time: WallTime,
    lower_bound: bool,
}

#[derive(Debug, Default)]
pub struct Lives {
    births: HashMap<u64, Birth>,
    pending: HashMap<u64, CloseStats>,
    cap: usize,
    /// Counters whose close never came (dropped), and closes without counters.
    pub unmatched: u64,
}

impl Lives {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            ..Self::default()
        }
    }

    /// Every connected socket of a freshly merged snapshot lived at least
    /// since `now` (the end of the snapshot).
    pub fn seed_from_snapshot(&mut self, table: &SocketTable, now: WallTime) {
        for e in table.iter() {
            if matches!(e.state, SockState::Connected | SockState::Closing)
                && self.births.len() < self.cap
            {
                self.births.entry(e.inode).or_insert(Birth {
                    time: now,
                    lower_bound: true,
                });
            }
        }
    }

    pub fn on_stats(&mut self, s: CloseStats) {
        if self.pending.len() >= PENDING_CAP {
            self.unmatched += self.pending.len() as u64;
            self.pending.clear();
        }
        self.pending.insert(s.inode, s);
    }

    /// Notes a connection's start, or gives a `close` its [`Life`].
    pub fn on_event(&mut self, e: &mut Event) {
        if e.inode == 0 {
            return;
        }
        match e.kind {
            EventKind::Connect | EventKind::Accept
                if e.error.is_none_or(|err| err == libc::EINPROGRESS)
                    && self.births.len() < self.cap =>
            {
                self.births.entry(e.inode).or_insert(Birth {
                    time: e.time,
                    lower_bound: false,
                });
            }
            EventKind::Close => {
                let stats = self.pending.remove(&e.inode);
                if stats.is_none() {
                    self.unmatched += 1;
                }
                let birth = self.births.remove(&e.inode);
                e.life = Some(Box::new(Life {
                    duration_ns: birth.map(|b| e.time.0.saturating_sub(b.time.0).max(0) as u64),
                    duration_is_lower_bound: birth.is_some_and(|b| b.lower_bound),
                    final_state: stats.map(|s| s.state),
                    tcp: stats.and_then(|s| s.tcp),
                    drops: stats.and_then(|s| s.drops),
                    interval_ms: None,
                }));
            }
            _ => {}
        }
    }

    /// When connection `inode` began (its connect or accept), and whether
    /// that is a lower bound (known from the start-up snapshot).
    pub fn birth(&self, inode: u64) -> Option<(WallTime, bool)> {
        self.births.get(&inode).map(|b| (b.time, b.lower_bound))
    }

    /// Forgets starts of sockets the table no longer has (their close was
    /// lost, or they were evicted).
    pub fn prune(&mut self, table: &SocketTable) {
        self.births.retain(|inode, _| table.get(*inode).is_some());
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.births.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{flow::TcpCounters, testing};

    fn stats(inode: u64) -> CloseStats {
        CloseStats {
            time: WallTime(0),
            inode,
            state: 8,
            tcp: Some(TcpCounters {
                bytes_sent: 10,
                bytes_acked: 11,
                bytes_received: 20,
                segs_in: 3,
                segs_out: 4,
                total_retrans: 1,
                srtt_us: 50,
            }),
            drops: Some(0),
        }
    }

    fn at(mut e: Event, ns: i64) -> Event {
        e.time = WallTime(ns);
        e
    }

    #[test]
    fn close_gets_counters_and_duration_from_connect() {
        let mut l = Lives::new(100);
        let mut c = at(
            testing::event(EventKind::Connect, 5, 1, "10.0.0.1:1", "10.0.0.2:2"),
            1_000,
        );
        l.on_event(&mut c);
        assert!(c.life.is_none());
        l.on_stats(stats(5));
        let mut close = at(
            testing::event(EventKind::Close, 5, 1, "10.0.0.1:1", "10.0.0.2:2"),
            3_500_000,
        );
        l.on_event(&mut close);
        let life = close.life.unwrap();
        assert_eq!(life.duration_ns, Some(3_499_000));
        assert!(!life.duration_is_lower_bound);
        assert_eq!(life.final_state, Some(8));
        assert_eq!(life.tcp.unwrap().bytes_received, 20);
        assert_eq!((l.unmatched, l.tracked()), (0, 0));
    }

    #[test]
    fn close_without_stats_or_start_is_counted_and_null() {
        let mut l = Lives::new(100);
        let mut close = at(
            testing::event(EventKind::Close, 9, 1, "10.0.0.1:1", "10.0.0.2:2"),
            5,
        );
        l.on_event(&mut close);
        let life = close.life.unwrap();
        assert_eq!(
            (life.duration_ns, life.final_state, life.tcp),
            (None, None, None)
        );
        assert_eq!(l.unmatched, 1);
    }

    #[test]
    fn failed_connect_starts_nothing_and_pending_is_bounded() {
        let mut l = Lives::new(100);
        let mut c = testing::event(EventKind::Connect, 5, 1, "10.0.0.1:1", "10.0.0.2:2");
        c.error = Some(libc::ECONNREFUSED);
        l.on_event(&mut c);
        assert_eq!(l.tracked(), 0);
        for i in 0..PENDING_CAP as u64 + 1 {
            l.on_stats(stats(1000 + i));
        }
        assert_eq!(l.unmatched, PENDING_CAP as u64);
        assert_eq!(l.pending.len(), 1);
    }

    #[test]
    fn snapshot_sockets_are_lower_bounds_and_pruned_with_the_table() {
        let mut t = SocketTable::new(10);
        t.apply(&testing::event(
            EventKind::Connect,
            7,
            1,
            "10.0.0.1:1",
            "10.0.0.2:2",
        ));
        let mut l = Lives::new(100);
        l.seed_from_snapshot(&t, WallTime(1_000));
        let mut close = at(
            testing::event(EventKind::Close, 7, 1, "10.0.0.1:1", "10.0.0.2:2"),
            2_000,
        );
        l.on_event(&mut close);
        let life = close.life.unwrap();
        assert_eq!(life.duration_ns, Some(1_000));
        assert!(life.duration_is_lower_bound);
        let mut c = testing::event(EventKind::Accept, 8, 1, "10.0.0.1:1", "10.0.0.2:3");
        l.on_event(&mut c);
        assert_eq!(l.tracked(), 1);
        l.prune(&t);
        assert_eq!(l.tracked(), 0);
    }
}
