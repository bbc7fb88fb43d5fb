//! What each event adds to its process's counters: connects, failed
//! connects, connections opened, bytes.
//!
//! One rule, used in two places: `top` counts the raw stream with it, and
//! the API's `counters` subscription counts in the daemon with it and sends
//! only the sums (so a client that wants per-process rates does not decode
//! every event). Both must agree to the event, so the rule lives here, below
//! both.
//!
//! Every counter only grows, so sums over any windows add up: a connect
//! under way (`EINPROGRESS`) counts as a connect; if its `connect_result`
//! fails later, that adds a failure, and connections opened are
//! `connects + accepts - failed`.

use std::collections::HashSet;

use super::{Event, EventKind};

/// Counts of one process (or one window of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Connect attempts (`connect`, TCP Fast Open, io_uring connects).
    pub connects: u64,
    /// Of those, the ones that failed (at once or in their `connect_result`).
    pub failed: u64,
    /// Accepted connections.
    pub accepts: u64,
    /// Bytes sent and received, from `flow` records.
    pub sent: u64,
    pub received: u64,
}

impl Counts {
    /// Connections opened (connected or accepted).
    pub fn opened(&self) -> u64 {
        (self.connects + self.accepts).saturating_sub(self.failed)
    }

    pub fn add(&mut self, o: &Counts) {
        self.connects += o.connects;
        self.failed += o.failed;
        self.accepts += o.accepts;
        self.sent += o.sent;
        self.received += o.received;
    }
}

/// Most connect sockets remembered as failed at their connect.
const FAILED_KEPT: usize = 10_000;

/// The counting rule, with the one thing it must remember: which connects
/// failed at once, so that their failed `connect_result` (the socket layer
/// reports one too) is not counted twice.
#[derive(Debug, Default)]
pub struct Tally {
    failed_at_connect: HashSet<u64>,
}

impl Tally {
    /// What `e` adds to its process.
    pub fn event(&mut self, e: &Event) -> Counts {
        match e.kind {
            EventKind::Connect => {
                let failed = e.error.is_some_and(|err| err != libc::EINPROGRESS);
                if failed && e.inode != 0 {
                    if self.failed_at_connect.len() >= FAILED_KEPT {
                        self.failed_at_connect.clear();
                    }
                    self.failed_at_connect.insert(e.inode);
                }
                Counts {
                    connects: 1,
                    failed: u64::from(failed),
                    ..Counts::default()
                }
            }
            EventKind::Accept if e.error.is_none() => Counts {
                accepts: 1,
                ..Counts::default()
            },
            EventKind::ConnectResult => self.connect_result(e.inode, e.error.is_some()),
            EventKind::Flow => {
                e.life
                    .as_ref()
                    .and_then(|l| l.tcp)
                    .map_or_else(Counts::default, |t| Counts {
                        sent: t.bytes_sent,
                        received: t.bytes_received,
                        ..Counts::default()
                    })
            }
            _ => Counts::default(),
        }
    }

    /// What the outcome of a connect on socket `inode` adds.
    pub fn connect_result(&mut self, inode: u64, failed: bool) -> Counts {
        let counted = self.failed_at_connect.remove(&inode);
        Counts {
            failed: u64::from(failed && !counted),
            ..Counts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing;

    fn connect(inode: u64, error: Option<i32>) -> Event {
        Event {
            error,
            ..testing::event(
                EventKind::Connect,
                inode,
                9,
                "127.0.0.1:40000",
                "127.0.0.1:80",
            )
        }
    }

    #[test]
    fn a_connect_refused_later_is_one_connect_one_failure_nothing_opened() {
        let mut t = Tally::default();
        let mut c = t.event(&connect(5, Some(libc::EINPROGRESS)));
        assert_eq!(c.opened(), 1);
        c.add(&t.event(&Event {
            kind: EventKind::ConnectResult,
            error: Some(libc::ECONNREFUSED),
            ..connect(5, None)
        }));
        assert_eq!((c.connects, c.failed, c.opened()), (1, 1, 0));
    }

    #[test]
    fn a_connect_that_failed_at_once_is_not_failed_again_by_its_result() {
        let mut t = Tally::default();
        let mut c = t.event(&connect(7, Some(libc::ECONNREFUSED)));
        c.add(&t.connect_result(7, true));
        assert_eq!((c.connects, c.failed, c.opened()), (1, 1, 0));
        // A later socket reusing the inode is counted again.
        c.add(&t.connect_result(7, true));
        assert_eq!(c.failed, 2);
    }

    #[test]
    fn accepts_count_only_when_they_succeed_and_sums_add_up_over_windows() {
        let mut t = Tally::default();
        let ok = testing::event(EventKind::Accept, 3, 9, "127.0.0.1:80", "127.0.0.1:40000");
        let bad = Event {
            error: Some(libc::EMFILE),
            ..ok.clone()
        };
        let mut total = Counts::default();
        for e in [&ok, &bad, &ok] {
            total.add(&t.event(e));
        }
        assert_eq!((total.accepts, total.opened()), (2, 2));
        assert_eq!(t.event(&bad), Counts::default());
    }
}
